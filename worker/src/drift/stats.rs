//! Per-point drift statistics over many pairs: n, mean, median, p95, max in pixels and divided by
//! the inter-ocular distance, plus discard counts by reason and side.

use super::points::{Discard, NAMES, Outcome, Side};
pub use acufarm_core::qa::{Distribution, quantile};
use serde::Serialize;
use std::collections::BTreeMap;

/// One point's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointStats {
    pub point: &'static str,
    pub px: Distribution,
    /// Drift divided by the inter-ocular distance of the original.
    pub normalized: Distribution,
}

/// Accumulates pair outcomes.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    px: [Vec<f64>; 8],
    normalized: [Vec<f64>; 8],
    max: Vec<f64>,
    discards: BTreeMap<(Discard, Side), usize>,
}

/// The whole-sample statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statistics {
    pub measured: usize,
    pub discarded: usize,
    /// Discard counts: reason → side → pairs.
    pub discards: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    pub points: Vec<PointStats>,
    /// The largest of the 8 drifts per pair.
    pub max_of_points: Distribution,
}

impl Accumulator {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Measured(drift) => {
                for (i, (d, n)) in drift.px.iter().zip(drift.normalized()).enumerate() {
                    if let Some(d) = d {
                        self.px[i].push(*d as f64);
                    }
                    if let Some(n) = n {
                        self.normalized[i].push(n as f64);
                    }
                }
                self.max.push(drift.max() as f64);
            }
            Outcome::Discarded { reason, side } => *self.discards.entry((*reason, *side)).or_default() += 1,
        }
    }

    /// The raw per-point drifts in pixels (for plots).
    pub fn samples(&self) -> &[Vec<f64>; 8] {
        &self.px
    }

    pub fn finish(&self) -> Statistics {
        let mut discards: BTreeMap<&'static str, BTreeMap<&'static str, usize>> = BTreeMap::new();
        for ((reason, side), n) in &self.discards {
            *discards.entry(reason.as_str()).or_default().entry(side.as_str()).or_default() += n;
        }
        Statistics {
            measured: self.max.len(),
            discarded: self.discards.values().sum(),
            discards,
            points: NAMES
                .iter()
                .enumerate()
                .map(|(i, &point)| PointStats { point, px: Distribution::of(&self.px[i]), normalized: Distribution::of(&self.normalized[i]) })
                .collect(),
            max_of_points: Distribution::of(&self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::points::Drift;

    #[test]
    fn accumulates_points_and_discards() {
        let mut acc = Accumulator::default();
        let mut px = [Some(2.0f32); 8];
        px[6] = None;
        acc.add(&Outcome::Measured(Drift { px, inter_ocular: Some(40.0) }));
        acc.add(&Outcome::Measured(Drift { px: [Some(4.0); 8], inter_ocular: None }));
        acc.add(&Outcome::Discarded { reason: Discard::NoFace, side: Side::Augmented });
        acc.add(&Outcome::Discarded { reason: Discard::NoFace, side: Side::Augmented });
        let stats = acc.finish();
        assert_eq!((stats.measured, stats.discarded), (2, 2));
        assert_eq!(stats.discards["no_face"]["augmented"], 2);
        assert_eq!(stats.points[0].px.mean, Some(3.0));
        assert_eq!(stats.points[6].px.n, 1);
        // Only the first pair had an inter-ocular distance.
        assert_eq!(stats.points[0].normalized.n, 1);
        assert!((stats.points[0].normalized.mean.unwrap() - 0.05).abs() < 1e-7);
        assert_eq!(stats.max_of_points.max, Some(4.0));
    }
}
