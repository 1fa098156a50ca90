//! k-diffusion samplers over flat f32 latents (DESIGN §4).
//!
//! The sampler sees the model only as `denoised = D(x, σ)`; EPS scaling, CFG and conditioning live
//! in the caller, so the update rules stay pure and unit-testable.

/// The sampler names are defined once, in core (specs and job specs carry them).
pub use acufarm_core::choice::Sampler as SamplerKind;

/// Walks `sigmas` from `x`, calling `denoise(x, σ_i, i)` once per step; returns the final latents.
pub fn sample<E>(
    kind: SamplerKind,
    mut x: Vec<f32>,
    sigmas: &[f32],
    mut denoise: impl FnMut(&[f32], f32, usize) -> Result<Vec<f32>, E>,
) -> Result<Vec<f32>, E> {
    let mut previous: Option<Vec<f32>> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let (s, s_next) = (sigmas[i] as f64, sigmas[i + 1] as f64);
        let d = denoise(&x, sigmas[i], i)?;
        debug_assert_eq!(d.len(), x.len());
        match kind {
            SamplerKind::Euler => {
                // x ← x + (x − D)/σ · (σ_next − σ)
                let ratio = ((s_next - s) / s) as f32;
                x.iter_mut().zip(&d).for_each(|(x, d)| *x += (*x - d) * ratio);
            }
            SamplerKind::DpmPp2m => {
                if s_next == 0.0 {
                    // t(0) = ∞: the update collapses to x = D.
                    x.copy_from_slice(&d);
                } else {
                    let t = -s.ln();
                    let h = -s_next.ln() - t;
                    let a = (s_next / s) as f32;
                    let b = (-h).exp_m1() as f32;
                    match &previous {
                        Some(prev) => {
                            let r = (t - -(sigmas[i - 1] as f64).ln()) / h;
                            let (c1, c2) = ((1.0 + 1.0 / (2.0 * r)) as f32, (1.0 / (2.0 * r)) as f32);
                            x.iter_mut().zip(d.iter().zip(prev)).for_each(|(x, (d, p))| *x = a * *x - b * (c1 * d - c2 * p));
                        }
                        None => x.iter_mut().zip(&d).for_each(|(x, d)| *x = a * *x - b * d),
                    }
                }
                previous = Some(d);
            }
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// With a model whose clean estimate is always the same D, every sampler must land on D.
    #[test]
    fn constant_denoiser_lands_on_target() {
        let sigmas = [14.6f32, 6.0, 2.0, 0.5, 0.0];
        for kind in [SamplerKind::DpmPp2m, SamplerKind::Euler] {
            let x = vec![3.0f32, -2.0];
            let out = sample(kind, x, &sigmas, |_, _, _| Ok::<_, Infallible>(vec![0.25, 0.5])).unwrap();
            assert!((out[0] - 0.25).abs() < 1e-6 && (out[1] - 0.5).abs() < 1e-6, "{kind}: {out:?}");
        }
    }

    /// Reference values computed by hand from k-diffusion's update rules (f64), for D(x) = x/2.
    #[test]
    fn matches_hand_computed_steps() {
        let sigmas = [4.0f32, 2.0, 1.0, 0.0];
        let half = |x: &[f32], _: f32, _: usize| Ok::<_, Infallible>(x.iter().map(|v| v * 0.5).collect::<Vec<_>>());
        // Euler: x1 = 1 + (1-0.5)/4·(2-4) = 0.75; x2 = 0.75 + 0.375/2·(1-2) = 0.5625; x3 = 0.5625 - 0.28125 = 0.28125
        let e = sample(SamplerKind::Euler, vec![1.0], &sigmas, half).unwrap();
        assert!((e[0] - 0.28125).abs() < 1e-6, "{e:?}");
        // DPM++ 2M: step 0: h = ln2, x1 = 0.5·1 + 0.5·0.5 = 0.75.
        // step 1: D = 0.375, prev 0.5, r = 1 → D' = 1.5·0.375 − 0.5·0.5 = 0.3125, x2 = 0.5·0.75 + 0.5·0.3125 = 0.53125.
        // step 2: σ_next = 0 → x = D = 0.265625.
        let d = sample(SamplerKind::DpmPp2m, vec![1.0], &sigmas, half).unwrap();
        assert!((d[0] - 0.265625).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn names() {
        assert_eq!("dpmpp_2m".parse::<SamplerKind>().unwrap(), SamplerKind::DpmPp2m);
        assert!("ddim".parse::<SamplerKind>().unwrap_err().to_string().contains("euler"));
    }
}
