pub mod admin;
pub mod augment;
pub mod client;
pub mod coordinator;
pub mod drift;
mod drift_plot;
pub mod evaluate;
pub mod exit;
pub mod migrate;
pub mod schedule;
pub mod secrets;
pub mod verify;
pub mod worker;

/// A flag parser for one of core's named choices (sampler, scheduler, …): `--help` lists the names
/// and a typo is refused by clap with them.
pub fn choice<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse::<T>().unwrap_or_else(|e| unreachable!("{e}")))
}
