//! The seed paper's 8 facial points, the face width and the discard rules (DESIGN §8), on top of
//! the 468-point mesh. Pure logic: no models here.

use super::face::{FaceResult, MIN_PRESENCE};
use serde::Serialize;

/// The 8 points, in report order.
pub const NAMES: [&str; 8] = acufarm_core::qa::DRIFT_POINTS;
/// Mesh indices of the first 7 points; the 8th (NasalBridgeMid) is the midpoint of 133 and 362.
const MESH_INDEX: [usize; 7] = [33, 133, 362, 263, 61, 291, 0];
/// The face-oval indices whose x-span is the face width.
pub const FACE_OVAL: [usize; 36] = [
    10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379,
    389, 397, 400, 454,
];
/// Faces narrower than this (pixels) on either image discard the pair.
pub const MIN_FACE_WIDTH: f32 = 80.0;
/// A pair needs at least this many of the 8 points found on both images.
pub const MIN_POINTS: usize = 6;

/// The 8 points of one image, as far as they were found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Points {
    /// Detection score of the face (absent when no face was detected).
    pub detection_score: Option<f32>,
    /// Landmark-model face-presence score.
    pub presence: Option<f32>,
    /// x-span of the face oval in pixels (absent without a mesh).
    pub face_width: Option<f32>,
    /// Pixel positions in [`NAMES`] order; `None` where the point was not found.
    pub points: [Option<[f32; 2]>; 8],
}

impl Points {
    pub fn detected(&self) -> bool {
        self.detection_score.is_some()
    }

    pub fn found(&self) -> usize {
        self.points.iter().filter(|p| p.is_some()).count()
    }

    /// Distance between the outer eye corners (33 ↔ 263), when both were found.
    pub fn inter_ocular(&self) -> Option<f32> {
        Some(dist(self.points[0]?, self.points[3]?))
    }
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// The 8 points from a Face Mesh result on an image of `width`×`height`: a point is found when the
/// presence score is at least 0.5 and it lies inside the image; NasalBridgeMid when 133 and 362 are.
pub fn points(result: &FaceResult, width: u32, height: u32) -> Points {
    let FaceResult::Face(face) = result else {
        return Points { detection_score: None, presence: None, face_width: None, points: [None; 8] };
    };
    let mut out = Points { detection_score: Some(face.detection_score), presence: Some(face.presence), face_width: None, points: [None; 8] };
    if face.presence < MIN_PRESENCE || face.landmarks.is_empty() {
        return out;
    }
    let mesh = &face.landmarks;
    let (lo, hi) = FACE_OVAL.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &i| (lo.min(mesh[i][0]), hi.max(mesh[i][0])));
    out.face_width = Some(hi - lo);
    let inside = |p: [f32; 2]| p[0] >= 0.0 && p[1] >= 0.0 && p[0] < width as f32 && p[1] < height as f32;
    for (slot, &i) in out.points.iter_mut().zip(&MESH_INDEX) {
        *slot = Some(mesh[i]).filter(|&p| inside(p));
    }
    out.points[7] = match (out.points[1], out.points[2]) {
        (Some(a), Some(b)) => Some([(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]),
        _ => None,
    };
    out
}

/// Why a pair is left out of the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discard {
    /// Face detection failed.
    NoFace,
    /// The face is narrower than 80 px.
    SmallFace,
    /// Fewer than 6 of the 8 points were found on both images.
    FewPoints,
}

impl Discard {
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::NoFace => "no_face",
            Discard::SmallFace => "small_face",
            Discard::FewPoints => "few_points",
        }
    }

    /// The rule as it applies to one image.
    pub fn describe_image(self) -> &'static str {
        match self {
            Discard::FewPoints => "fewer than 6 of 8 points found",
            other => other.describe(),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Discard::NoFace => "no face detected",
            Discard::SmallFace => "face narrower than 80 px",
            Discard::FewPoints => "fewer than 6 of 8 points found on both images",
        }
    }
}

/// Which image of a pair a discard rule fired on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Original,
    Augmented,
    Both,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Original => "original",
            Side::Augmented => "augmented",
            Side::Both => "both",
        }
    }

    fn of(original: bool, augmented: bool) -> Option<Side> {
        match (original, augmented) {
            (true, true) => Some(Side::Both),
            (true, false) => Some(Side::Original),
            (false, true) => Some(Side::Augmented),
            (false, false) => None,
        }
    }
}

/// The drift of one measured pair.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drift {
    /// ‖p_aug − p_orig‖₂ in pixels per point, `None` where the point was not found on both.
    pub px: [Option<f32>; 8],
    /// Inter-ocular distance (33 ↔ 263) on the original, the normalizer of `px`.
    pub inter_ocular: Option<f32>,
}

impl Drift {
    /// The largest of the measured drifts.
    pub fn max(&self) -> f32 {
        self.px.iter().flatten().fold(0.0, |m, &d| m.max(d))
    }

    /// The drifts divided by the inter-ocular distance.
    pub fn normalized(&self) -> [Option<f32>; 8] {
        self.px.map(|d| Some(d? / self.inter_ocular.filter(|&io| io > 0.0)?))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Measured(Drift),
    Discarded { reason: Discard, side: Side },
}

/// The first discard rule that rules out one image on its own (detection, width, points found).
pub fn unusable(p: &Points) -> Option<Discard> {
    if !p.detected() {
        Some(Discard::NoFace)
    } else if p.face_width.is_some_and(|w| w < MIN_FACE_WIDTH) {
        Some(Discard::SmallFace)
    } else if p.found() < MIN_POINTS {
        Some(Discard::FewPoints)
    } else {
        None
    }
}

/// Applies the discard rules in DESIGN §8's order (detection, width, points) and measures the rest.
pub fn compare(original: &Points, augmented: &Points) -> Outcome {
    let (o, a) = (unusable(original), unusable(augmented));
    for reason in [Discard::NoFace, Discard::SmallFace] {
        if let Some(side) = Side::of(o == Some(reason), a == Some(reason)) {
            return Outcome::Discarded { reason, side };
        }
    }
    let mut px = [None; 8];
    for (i, slot) in px.iter_mut().enumerate() {
        if let (Some(a), Some(b)) = (original.points[i], augmented.points[i]) {
            *slot = Some(dist(a, b));
        }
    }
    let both = px.iter().filter(|d| d.is_some()).count();
    if both < MIN_POINTS {
        // Each image may have enough points of its own and still too few in common.
        let side = Side::of(o == Some(Discard::FewPoints), a == Some(Discard::FewPoints)).unwrap_or(Side::Both);
        return Outcome::Discarded { reason: Discard::FewPoints, side };
    }
    Outcome::Measured(Drift { px, inter_ocular: original.inter_ocular() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::face::{Face, Roi};

    /// A synthetic mesh: every point at (100, 100) except the 8-point indices and the oval's ends.
    fn mesh(shift: f32, width: f32) -> Vec<[f32; 2]> {
        let mut m = vec![[100.0 + shift, 100.0]; 468];
        for (k, &i) in MESH_INDEX.iter().enumerate() {
            m[i] = [60.0 + 10.0 * k as f32 + shift, 90.0 + k as f32];
        }
        m[234] = [100.0 - width / 2.0 + shift, 100.0];
        m[454] = [100.0 + width / 2.0 + shift, 100.0];
        m
    }

    fn face(landmarks: Vec<[f32; 2]>, presence: f32) -> FaceResult {
        FaceResult::Face(Face { detection_score: 0.9, presence, roi: Roi { cx: 0.0, cy: 0.0, width: 0.0, height: 0.0, rotation: 0.0 }, landmarks })
    }

    #[test]
    fn eight_points_and_face_width() {
        let p = points(&face(mesh(0.0, 120.0), 0.99), 300, 300);
        assert_eq!(p.found(), 8);
        assert_eq!(p.points[0], Some([60.0, 90.0]));
        assert_eq!(p.points[6], Some([120.0, 96.0]));
        // NasalBridgeMid = midpoint of 133 (k=1) and 362 (k=2).
        assert_eq!(p.points[7], Some([75.0, 91.5]));
        assert_eq!(p.face_width, Some(120.0));
        assert_eq!(p.inter_ocular(), Some(dist([60.0, 90.0], [90.0, 93.0])));
    }

    #[test]
    fn points_outside_the_image_or_without_presence_are_not_found() {
        // Image 80 px wide: points at x ≥ 80 (k ≥ 2) are outside; 362 gone takes NasalBridgeMid too.
        let p = points(&face(mesh(0.0, 120.0), 0.99), 80, 300);
        assert_eq!(p.points.iter().map(Option::is_some).collect::<Vec<_>>(), [true, true, false, false, false, false, false, false]);
        let absent = points(&face(mesh(0.0, 120.0), 0.3), 300, 300);
        assert_eq!(absent.found(), 0);
        assert!(absent.detected() && absent.face_width.is_none());
        assert!(!points(&FaceResult::NoFace, 300, 300).detected());
    }

    #[test]
    fn a_shift_drifts_every_point_by_its_length() {
        let a = points(&face(mesh(0.0, 120.0), 0.99), 300, 300);
        let b = points(&face(mesh(3.0, 120.0), 0.99), 300, 300);
        let Outcome::Measured(d) = compare(&a, &b) else { panic!("measured") };
        assert!(d.px.iter().all(|&v| v == Some(3.0)));
        assert_eq!(d.max(), 3.0);
        let io = a.inter_ocular().unwrap();
        assert!((d.normalized()[0].unwrap() - 3.0 / io).abs() < 1e-6);
    }

    #[test]
    fn each_discard_rule_fires_with_its_side() {
        let good = points(&face(mesh(0.0, 120.0), 0.99), 300, 300);
        let none = points(&FaceResult::NoFace, 300, 300);
        let narrow = points(&face(mesh(0.0, 79.0), 0.99), 300, 300);
        let cut = points(&face(mesh(0.0, 120.0), 0.99), 80, 300);
        let absent = points(&face(mesh(0.0, 120.0), 0.2), 300, 300);
        assert_eq!(compare(&none, &good), Outcome::Discarded { reason: Discard::NoFace, side: Side::Original });
        assert_eq!(compare(&none, &none), Outcome::Discarded { reason: Discard::NoFace, side: Side::Both });
        assert_eq!(compare(&good, &narrow), Outcome::Discarded { reason: Discard::SmallFace, side: Side::Augmented });
        assert_eq!(compare(&good, &cut), Outcome::Discarded { reason: Discard::FewPoints, side: Side::Augmented });
        assert_eq!(compare(&absent, &good), Outcome::Discarded { reason: Discard::FewPoints, side: Side::Original });
        // Detection failure is checked before width.
        assert_eq!(compare(&narrow, &none), Outcome::Discarded { reason: Discard::NoFace, side: Side::Augmented });
    }

    #[test]
    fn six_points_in_common_are_enough() {
        let good = points(&face(mesh(0.0, 120.0), 0.99), 300, 300);
        let mut two_missing = good.clone();
        two_missing.points[4] = None;
        two_missing.points[5] = None;
        let Outcome::Measured(d) = compare(&good, &two_missing) else { panic!("6 of 8 is measured") };
        assert_eq!(d.px.iter().flatten().count(), 6);
        let mut three_missing = two_missing.clone();
        three_missing.points[6] = None;
        assert!(matches!(compare(&good, &three_missing), Outcome::Discarded { reason: Discard::FewPoints, .. }));
    }
}
