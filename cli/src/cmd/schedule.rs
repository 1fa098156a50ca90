//! `acufarm schedule`: the sigmas and UNet timesteps of a schedule, for checking against other tools.

use acufarm_worker::pipeline::schedule::{self, Partial, SchedulerKind, SigmaTable};

#[derive(clap::Args)]
pub struct Args {
    /// sgm_uniform, normal or karras.
    #[arg(long, default_value = "sgm_uniform", value_parser = super::choice::<SchedulerKind>(SchedulerKind::STRS))]
    scheduler: SchedulerKind,
    /// Steps of the full schedule.
    #[arg(long)]
    steps: u32,
    /// Skip the first ⌊steps·t0⌋ steps (KSamplerAdvanced start_at_step).
    #[arg(long, conflicts_with = "denoise", allow_negative_numbers = true)]
    t0: Option<f64>,
    /// KSampler-style partial denoise in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    denoise: Option<f64>,
    /// Print {"sigmas": […], "timesteps": […]} instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kind = args.scheduler;
    let table = SigmaTable::sd15();
    let sigmas = schedule::schedule(&table, kind, args.steps, Partial::from_options(args.t0, args.denoise))?;
    let timesteps = schedule::timesteps(&table, &sigmas);
    if args.json {
        // f32 values printed through f64 so the text round-trips to the same f32.
        let sigmas: Vec<f64> = sigmas.iter().map(|&s| s as f64).collect();
        println!("{}", serde_json::json!({ "sigmas": sigmas, "timesteps": timesteps }));
    } else {
        println!("{:>4}  {:>12}  {:>8}", "step", "sigma", "timestep");
        for (i, s) in sigmas.iter().enumerate() {
            let t = timesteps.get(i).map(|t| t.to_string()).unwrap_or_else(|| "-".into());
            println!("{i:>4}  {s:>12.6}  {t:>8}");
        }
    }
    Ok(())
}
