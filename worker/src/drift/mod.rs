//! Landmark-drift QA (DESIGN §8): MediaPipe's face detector and Face Mesh re-implemented around the
//! ONNX copies in `models/facemesh/` (compiled into the binary), the seed paper's 8 points and
//! discard rules, per-point statistics, and the QA gate that runs use.
//!
//! - `detect`: BlazeFace anchors, decoding, weighted NMS;
//! - `face`: letterbox → detector → rotated face crop → landmark model → image pixels;
//! - `points`: the 8 points, face width, "found", discard rules, drift of a pair;
//! - `stats`: per-point n / mean / median / p95 / max, in pixels and per inter-ocular distance;
//! - `gate`: the run-time check of an output against its source.

pub mod detect;
pub mod face;
pub mod gate;
pub mod points;
pub mod stats;

pub use face::{FaceError, FaceMesh, FaceResult};
pub use points::{Discard, Drift, Outcome, Points, Side};

use image::RgbImage;

impl FaceMesh {
    /// The 8 points of one image.
    pub fn points(&mut self, img: &RgbImage) -> Result<Points, FaceError> {
        Ok(points::points(&self.run(img)?, img.width(), img.height()))
    }
}
