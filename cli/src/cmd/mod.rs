pub mod augment;
pub mod schedule;
pub mod verify;

use acufarm_worker::pipeline::schedule::Partial;

/// `--t0` / `--denoise` (mutually exclusive, enforced by clap) to a partial-denoise setting.
pub fn partial(t0: Option<f64>, denoise: Option<f64>) -> Partial {
    match (t0, denoise) {
        (Some(t0), _) => Partial::StartAt(t0),
        (None, Some(d)) => Partial::Denoise(d),
        (None, None) => Partial::Full,
    }
}
