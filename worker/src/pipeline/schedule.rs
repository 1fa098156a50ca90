//! Noise schedules of SD1.5's discrete EPS model, with ComfyUI's semantics (DESIGN §4).
//!
//! The sigma table is built in f64 and stored as f32 like ComfyUI's `ModelSamplingDiscrete`;
//! schedulers return f32 sigmas ending in 0, as ComfyUI's `FloatTensor` does.

const TRAIN_STEPS: usize = 1000;
const BETA_START: f64 = 0.00085;
const BETA_END: f64 = 0.012;

/// SD1.5's 1000 training sigmas and their logs.
#[derive(Debug, Clone)]
pub struct SigmaTable {
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
}

impl Default for SigmaTable {
    fn default() -> Self {
        Self::sd15()
    }
}

impl SigmaTable {
    /// `β = linspace(√0.00085, √0.012, 1000)²`, `ᾱ = cumprod(1−β)`, `σ = √((1−ᾱ)/ᾱ)`.
    pub fn sd15() -> Self {
        let (start, end) = (BETA_START.sqrt(), BETA_END.sqrt());
        let step = (end - start) / (TRAIN_STEPS - 1) as f64;
        let mut alpha_cumprod = 1.0f64;
        let mut sigmas = Vec::with_capacity(TRAIN_STEPS);
        let mut log_sigmas = Vec::with_capacity(TRAIN_STEPS);
        for i in 0..TRAIN_STEPS {
            let root = if i == TRAIN_STEPS - 1 { end } else { start + step * i as f64 };
            alpha_cumprod *= 1.0 - root * root;
            let sigma = ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt();
            sigmas.push(sigma as f32);
            log_sigmas.push(sigma.ln() as f32);
        }
        Self { sigmas, log_sigmas }
    }

    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    pub fn sigma_max(&self) -> f32 {
        self.sigmas[TRAIN_STEPS - 1]
    }

    /// Log-linear interpolation of the table at a fractional timestep.
    pub fn sigma(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, (TRAIN_STEPS - 1) as f64);
        let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        ((1.0 - w) * self.log_sigmas[lo] as f64 + w * self.log_sigmas[hi] as f64).exp()
    }

    /// The integer training timestep nearest to `sigma` in log space (ties go to the lower index,
    /// like `argmin`).
    pub fn timestep(&self, sigma: f64) -> u32 {
        let log_sigma = sigma.ln();
        let mut best = (f64::INFINITY, 0usize);
        for (i, &ls) in self.log_sigmas.iter().enumerate() {
            let d = (log_sigma - ls as f64).abs();
            if d < best.0 {
                best = (d, i);
            }
        }
        best.1 as u32
    }
}

/// The scheduler names are defined once, in core (specs and job specs carry them).
pub use acufarm_core::choice::Scheduler as SchedulerKind;

/// How much of the schedule runs: all of it, a splice at step ⌊S·t0⌋, or KSampler's `denoise`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partial {
    Full,
    StartAt(f64),
    Denoise(f64),
}

impl Partial {
    /// The two ways users speak: `t0` (wins when both are given) or `denoise`; neither runs it all.
    pub fn from_options(t0: Option<f64>, denoise: Option<f64>) -> Self {
        match (t0, denoise) {
            (Some(t0), _) => Self::StartAt(t0),
            (None, Some(d)) => Self::Denoise(d),
            (None, None) => Self::Full,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("steps must be at least 1 (got {0}); pass --steps 1 or more")]
    NoSteps(u32),
    #[error("t0 must be in [0, 1) (got {0}); t0 is the fraction of the schedule to skip")]
    BadT0(f64),
    #[error("denoise must be in (0, 1] (got {0}); 1 runs the full schedule")]
    BadDenoise(f64),
}

/// Sigmas of a scheduler, always ending in 0.
pub fn full_schedule(table: &SigmaTable, kind: SchedulerKind, steps: usize) -> Vec<f32> {
    let mut sigmas: Vec<f32> = match kind {
        SchedulerKind::SgmUniform | SchedulerKind::Normal => {
            let start = table.timestep(table.sigma_max() as f64) as f64;
            let end = table.timestep(table.sigma_min() as f64) as f64;
            // sgm_uniform: linspace over S+1 points without the last; normal: over S points.
            let (points, keep) = match kind {
                SchedulerKind::SgmUniform => (steps + 1, steps),
                _ => (steps, steps),
            };
            linspace(start, end, points).into_iter().take(keep).map(|t| table.sigma(t) as f32).collect()
        }
        SchedulerKind::Karras => {
            const RHO: f64 = 7.0;
            let min_inv = (table.sigma_min() as f64).powf(1.0 / RHO);
            let max_inv = (table.sigma_max() as f64).powf(1.0 / RHO);
            linspace(0.0, 1.0, steps).into_iter().map(|ramp| (max_inv + ramp * (min_inv - max_inv)).powf(RHO) as f32).collect()
        }
    };
    sigmas.push(0.0);
    sigmas
}

/// The sigmas a sampler walks for `steps` steps with partial denoise applied.
pub fn schedule(table: &SigmaTable, kind: SchedulerKind, steps: u32, partial: Partial) -> Result<Vec<f32>, ScheduleError> {
    if steps == 0 {
        return Err(ScheduleError::NoSteps(steps));
    }
    let s = steps as usize;
    match partial {
        Partial::Full => Ok(full_schedule(table, kind, s)),
        Partial::StartAt(t0) => {
            if !(0.0..1.0).contains(&t0) {
                return Err(ScheduleError::BadT0(t0));
            }
            let k = (s as f64 * t0).floor() as usize;
            Ok(full_schedule(table, kind, s)[k..].to_vec())
        }
        Partial::Denoise(d) => {
            if !(d > 0.0 && d <= 1.0) {
                return Err(ScheduleError::BadDenoise(d));
            }
            if d > 0.9999 {
                return Ok(full_schedule(table, kind, s));
            }
            // ComfyUI: new_steps = int(steps / denoise), truncating in f64.
            let expanded = (s as f64 / d) as usize;
            let all = full_schedule(table, kind, expanded);
            Ok(all[all.len() - (s + 1)..].to_vec())
        }
    }
}

/// The UNet timestep of every sigma but the final 0.
pub fn timesteps(table: &SigmaTable, sigmas: &[f32]) -> Vec<u32> {
    sigmas.iter().filter(|&&s| s > 0.0).map(|&s| table.timestep(s as f64)).collect()
}

/// numpy-style linspace: `start + i·step`, with the last point exactly `end`.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n).map(|i| if i == n - 1 { end } else { start + step * i as f64 }).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_endpoints() {
        let t = SigmaTable::sd15();
        assert!((t.sigma_min() - 0.029167).abs() < 1e-6, "{}", t.sigma_min());
        assert!((t.sigma_max() - 14.614641).abs() < 1e-5, "{}", t.sigma_max());
        assert_eq!(t.timestep(t.sigma_max() as f64), 999);
        assert_eq!(t.timestep(t.sigma_min() as f64), 0);
    }

    #[test]
    fn partial_denoise_bounds() {
        let t = SigmaTable::sd15();
        let k = SchedulerKind::SgmUniform;
        assert_eq!(schedule(&t, k, 20, Partial::StartAt(1.0)), Err(ScheduleError::BadT0(1.0)));
        assert_eq!(schedule(&t, k, 20, Partial::StartAt(-0.1)), Err(ScheduleError::BadT0(-0.1)));
        assert_eq!(schedule(&t, k, 20, Partial::Denoise(0.0)), Err(ScheduleError::BadDenoise(0.0)));
        assert!(schedule(&t, k, 20, Partial::Denoise(f64::NAN)).unwrap_err().to_string().contains("denoise"));
        assert_eq!(schedule(&t, k, 0, Partial::Full), Err(ScheduleError::NoSteps(0)));
        assert_eq!(schedule(&t, k, 20, Partial::StartAt(0.4)).unwrap().len(), 13);
        assert_eq!(schedule(&t, k, 20, Partial::Denoise(0.6)).unwrap().len(), 21);
        assert!("ddim".parse::<SchedulerKind>().unwrap_err().to_string().contains("sgm_uniform"));
    }
}
