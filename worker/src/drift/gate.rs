//! The QA gate of a run (`[qa]`, DESIGN §8): an output is measured against its source. It fails
//! when the largest drift of the 8 points (or one point's own limit) is exceeded, when its face is
//! lost, or when it hardly changed outside the face (no augmentation). A source without a
//! measurable face cannot be judged on drift: the output passes as `unmeasured` with the reason.

use super::face::{FaceResult, Roi};
use super::points::{self, Outcome, Points};
use acufarm_core::qa::{DRIFT_POINTS, QaLimits, QaRecord, QaVerdict};
use image::RgbImage;
use image::imageops::FilterType;

/// A measured source: its face (for the region excluded from the change rule) and its points.
#[derive(Debug, Clone)]
pub struct SourceFace {
    pub roi: Option<Roi>,
    pub points: Points,
}

impl SourceFace {
    pub fn new(result: &FaceResult, width: u32, height: u32) -> Self {
        let roi = match result {
            FaceResult::Face(face) => Some(face.roi),
            FaceResult::NoFace => None,
        };
        Self { roi, points: points::points(result, width, height) }
    }
}

/// Whether pixel centre (x, y) lies inside the rotated rectangle.
fn inside(roi: &Roi, x: f32, y: f32) -> bool {
    let (sin, cos) = roi.rotation.sin_cos();
    let (dx, dy) = (x - roi.cx, y - roi.cy);
    // Into the rectangle's own axes (inverse rotation).
    let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
    u.abs() <= roi.width / 2.0 && v.abs() <= roi.height / 2.0
}

/// Mean absolute difference per channel (0–255) between source and output over the pixels outside
/// the face rectangle (the whole image without a face; 0 when the face covers everything). The
/// output is compared at the source's size.
pub fn change_outside_face(source: &RgbImage, output: &RgbImage, face: Option<&Roi>) -> f32 {
    let resized;
    let output = if output.dimensions() == source.dimensions() {
        output
    } else {
        resized = image::imageops::resize(output, source.width(), source.height(), FilterType::Triangle);
        &resized
    };
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y, p) in source.enumerate_pixels() {
        if face.is_some_and(|roi| inside(roi, x as f32, y as f32)) {
            continue;
        }
        let q = output.get_pixel(x, y);
        sum += (0..3).map(|c| (p[c] as i32 - q[c] as i32).unsigned_abs() as u64).sum::<u64>();
        n += 3;
    }
    if n == 0 { 0.0 } else { (sum as f64 / n as f64) as f32 }
}

/// The points found, by name.
fn named(points: &Points) -> std::collections::BTreeMap<String, [f32; 2]> {
    points.points.iter().enumerate().filter_map(|(i, p)| Some((DRIFT_POINTS[i].to_string(), (*p)?))).collect()
}

/// Judges one output. `qa_try` and `seed` identify the render; `change` is
/// [`change_outside_face`] of it.
pub fn judge(limits: &QaLimits, source: &SourceFace, output: &Points, change: f32, qa_try: u32, seed: u64) -> QaRecord {
    let mut record = QaRecord {
        qa_try,
        seed,
        verdict: QaVerdict::Pass,
        reason: None,
        drift_px: Default::default(),
        max_drift_px: None,
        inter_ocular_px: source.points.inter_ocular(),
        change_outside_face: change,
        source_points: named(&source.points),
        output_points: named(output),
        source_size: None,
        output_size: None,
    };
    let mut failures = Vec::new();
    // The source alone decides whether drift can be measured at all.
    if let Some(reason) = points::unusable(&source.points) {
        record.verdict = QaVerdict::Unmeasured;
        record.reason = Some(format!("source: {}", reason.describe_image()));
    } else {
        match points::compare(&source.points, output) {
            Outcome::Discarded { reason, .. } => failures.push(format!("output: {} while its source's face is measurable", reason.describe_image())),
            Outcome::Measured(drift) => {
                for (i, d) in drift.px.iter().enumerate() {
                    if let Some(d) = d {
                        record.drift_px.insert(DRIFT_POINTS[i].to_string(), *d);
                    }
                }
                record.max_drift_px = Some(drift.max());
                // The worst point relative to its limit names the failure.
                let worst = drift
                    .px
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| Some((i, (*d)?, limits.limit(i)?)))
                    .filter(|(_, d, limit)| d > limit)
                    .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)));
                if let Some((i, d, limit)) = worst {
                    let key = if limits.max_point_drift_px.get(DRIFT_POINTS[i]).is_some_and(|own| *own <= limit) {
                        format!("qa.max_point_drift_px.{}", DRIFT_POINTS[i])
                    } else {
                        "qa.max_drift_px".to_string()
                    };
                    failures.push(format!("{} drifted {d:.1} px, over {key} = {limit}", DRIFT_POINTS[i]));
                }
            }
        }
    }
    if change < limits.min_change {
        failures.push(format!(
            "output differs from its source by {change:.2} levels outside the face, under qa.min_change = {}: not an augmentation",
            limits.min_change
        ));
    }
    if !failures.is_empty() {
        record.verdict = QaVerdict::Fail;
        record.reason = Some(failures.join("; "));
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pts(offset: f32, found: usize) -> Points {
        let mut points = [None; 8];
        for (i, p) in points.iter_mut().enumerate().take(found) {
            *p = Some([100.0 + 10.0 * i as f32 + offset, 100.0]);
        }
        Points { detection_score: Some(0.9), presence: Some(0.99), face_width: Some(150.0), points }
    }

    fn no_face() -> Points {
        Points { detection_score: None, presence: None, face_width: None, points: [None; 8] }
    }

    fn limits(max: Option<f32>, per_point: &[(&str, f32)], min_change: f32) -> QaLimits {
        QaLimits { max_drift_px: max, max_point_drift_px: per_point.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(), min_change }
    }

    fn source(points: Points) -> SourceFace {
        SourceFace { roi: None, points }
    }

    #[test]
    fn a_small_drift_with_a_real_change_passes() {
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(pts(0.0, 8)), &pts(2.0, 8), 12.0, 0, 7);
        assert_eq!(r.verdict, QaVerdict::Pass, "{r:?}");
        assert_eq!(r.max_drift_px, Some(2.0));
        assert_eq!(r.drift_px.len(), 8);
        assert_eq!((r.qa_try, r.seed), (0, 7));
    }

    #[test]
    fn drift_over_the_overall_or_a_point_limit_fails_naming_the_key() {
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(pts(0.0, 8)), &pts(6.0, 8), 12.0, 1, 7);
        assert_eq!(r.verdict, QaVerdict::Fail);
        assert!(r.reason.as_deref().unwrap().contains("over qa.max_drift_px = 5"), "{r:?}");
        let r = judge(&limits(Some(10.0), &[("Philtrum", 3.0)], 1.0), &source(pts(0.0, 8)), &pts(4.0, 8), 12.0, 0, 7);
        assert_eq!(r.verdict, QaVerdict::Fail);
        assert!(r.reason.as_deref().unwrap().starts_with("Philtrum drifted 4.0 px, over qa.max_point_drift_px.Philtrum = 3"), "{r:?}");
    }

    #[test]
    fn an_unchanged_output_fails_the_minimum_change() {
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(pts(0.0, 8)), &pts(0.0, 8), 0.2, 0, 7);
        assert_eq!(r.verdict, QaVerdict::Fail);
        assert!(r.reason.as_deref().unwrap().contains("under qa.min_change"), "{r:?}");
    }

    #[test]
    fn a_lost_face_fails_and_a_faceless_source_passes_unmeasured() {
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(pts(0.0, 8)), &no_face(), 30.0, 0, 7);
        assert_eq!(r.verdict, QaVerdict::Fail);
        assert_eq!(r.reason.as_deref(), Some("output: no face detected while its source's face is measurable"));
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(no_face()), &no_face(), 30.0, 0, 7);
        assert_eq!(r.verdict, QaVerdict::Unmeasured);
        assert_eq!(r.reason.as_deref(), Some("source: no face detected"));
        assert!(r.passed());
        // A source whose face is too small is unmeasured too, whatever the output shows.
        let mut small = pts(0.0, 8);
        small.face_width = Some(60.0);
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(small), &no_face(), 30.0, 0, 7);
        assert_eq!((r.verdict, r.reason.as_deref()), (QaVerdict::Unmeasured, Some("source: face narrower than 80 px")));
        // ...but an unchanged output still fails even then.
        let r = judge(&limits(Some(5.0), &[], 1.0), &source(no_face()), &no_face(), 0.0, 0, 7);
        assert_eq!(r.verdict, QaVerdict::Fail);
    }

    #[test]
    fn change_is_measured_outside_the_face_only() {
        let src = RgbImage::from_pixel(10, 10, image::Rgb([100, 100, 100]));
        let mut out = src.clone();
        // Change everything inside a 4×4 face square centred at (5, 5) by 50 levels.
        let face = Roi { cx: 5.0, cy: 5.0, width: 4.0, height: 4.0, rotation: 0.0 };
        for y in 3..=7 {
            for x in 3..=7 {
                out.put_pixel(x, y, image::Rgb([150, 150, 150]));
            }
        }
        assert_eq!(change_outside_face(&src, &out, Some(&face)), 0.0);
        assert!(change_outside_face(&src, &out, None) > 10.0);
        // Outside pixels +8: the mean outside is 8.
        let shifted =
            RgbImage::from_fn(10, 10, |x, y| if inside(&face, x as f32, y as f32) { image::Rgb([100, 100, 100]) } else { image::Rgb([108, 108, 108]) });
        assert!((change_outside_face(&src, &shifted, Some(&face)) - 8.0).abs() < 1e-6);
    }
}
