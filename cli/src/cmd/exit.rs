//! How a command ends: the documented exit codes and the error report with its whole cause chain.
//!
//! 0 ok · 1 error · 2 usage (clap's own code for bad flags) · 3 verification found problems ·
//! 4 timed out waiting.

use std::fmt::Write as _;

/// `acufarm verify` (or a check like it) found problems; the report has already been printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProblemsFound(pub String);

/// A wait (`status --wait`) ran out of time; nothing was lost, the run goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

pub const ERROR: u8 = 1;
pub const PROBLEMS: u8 = 3;
pub const TIMED_OUT: u8 = 4;

/// The exit code of a failed command.
pub fn code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ProblemsFound>().is_some() {
        PROBLEMS
    } else if err.downcast_ref::<TimedOut>().is_some() {
        TIMED_OUT
    } else {
        ERROR
    }
}

/// `error: …` with every cause below it, so no context is lost (a cause the message already
/// ends with is not repeated).
pub fn report(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    let mut shown = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if text.is_empty() || shown.contains(&text) {
            continue;
        }
        let _ = write!(out, "\n  caused by: {text}");
        shown = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_cause_chain_is_printed_once_each() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let err = Err::<(), _>(io).context("cannot read run spec x.toml; check the path").context("submit failed").unwrap_err();
        assert_eq!(
            report(&err),
            "error: submit failed\n  caused by: cannot read run spec x.toml; check the path\n  caused by: No such file or directory (os error 2)"
        );
        assert_eq!(code(&err), ERROR);
        let repeated = anyhow::anyhow!("outer: inner").context("outer: inner");
        assert_eq!(report(&repeated), "error: outer: inner");
    }

    #[test]
    fn codes() {
        assert_eq!(code(&anyhow::Error::new(ProblemsFound("2 problems".into()))), PROBLEMS);
        assert_eq!(code(&anyhow::Error::new(TimedOut("waited".into())).context("status")), TIMED_OUT);
    }
}
