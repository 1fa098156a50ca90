//! MediaPipe Face Mesh (static-image mode, refinement off) around the two ONNX models in
//! `models/facemesh/`, compiled into the binary:
//!
//! 1. the whole image, letterboxed to 128×128 (zero border), into the short-range detector;
//!    detections decoded, merged by weighted NMS, letterbox removed; the best one is the face;
//! 2. the face rectangle: the detection box centre, rotated so the eye keypoints (0 → 1) are level,
//!    made square on its long side and scaled by 1.5;
//! 3. that rotated square resampled to 192×192 (edge pixels replicated) into the landmark model;
//!    the presence logit through a sigmoid; 468 points projected back to image pixels.
//!
//! Each step follows the calculators of MediaPipe's CPU graph (`ImageToTensorCalculator`,
//! `TensorsToDetectionsCalculator`, `DetectionLetterboxRemovalCalculator`,
//! `DetectionsToRectsCalculator`, `RectTransformationCalculator`, `LandmarkProjectionCalculator`),
//! including their pixel conventions, so the landmarks agree with `mediapipe.solutions.face_mesh`.

use super::detect::{self, Anchor, Detection};
use crate::pipeline::runtime::{Runtime, RuntimeError};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

static DETECTOR_ONNX: &[u8] = include_bytes!("../../../models/facemesh/face_detection_short_range.onnx");
static LANDMARK_ONNX: &[u8] = include_bytes!("../../../models/facemesh/face_landmark.onnx");

/// Landmark model input side in pixels.
pub const CROP_SIZE: usize = 192;
/// Points in one face mesh.
pub const MESH_POINTS: usize = 468;
/// A face is present when the landmark model's presence score reaches this (MediaPipe's default
/// `min_tracking_confidence`, which static mode uses as the presence threshold).
pub const MIN_PRESENCE: f32 = 0.5;
/// The face rectangle is this many times the detection box (`RectTransformationCalculator` scale).
const ROI_SCALE: f32 = 1.5;

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the face model {graph} failed: {reason}; this is a bug or a damaged ONNX Runtime install, so report it with the image")]
    Inference { graph: &'static str, reason: String },
}

/// A rotated rectangle in image pixels (`rotation` in radians, clockwise on screen, as MediaPipe's).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Roi {
    pub cx: f32,
    pub cy: f32,
    pub width: f32,
    pub height: f32,
    pub rotation: f32,
}

/// What Face Mesh found on one image.
#[derive(Debug, Clone)]
pub enum FaceResult {
    /// The detector found no face scoring at least 0.5.
    NoFace,
    /// A face was detected; `landmarks` is empty when the landmark model's presence score is below
    /// [`MIN_PRESENCE`] (MediaPipe then reports no face mesh).
    Face(Face),
}

#[derive(Debug, Clone)]
pub struct Face {
    pub detection_score: f32,
    pub presence: f32,
    pub roi: Roi,
    /// 468 points in image pixels (x, y) when present, else empty.
    pub landmarks: Vec<[f32; 2]>,
}

impl Face {
    pub fn present(&self) -> bool {
        self.presence >= MIN_PRESENCE && !self.landmarks.is_empty()
    }
}

#[derive(Clone, Copy)]
enum Border {
    Zero,
    Replicate,
}

/// Resamples the rotated rectangle `roi` of `img` to `out_w`×`out_h` the way OpenCV's
/// `warpPerspective` does in MediaPipe's converter: the rectangle's corners map to the output's
/// corners (0 and `out_w`), each output pixel samples bilinearly at its integer coordinate with
/// source pixel centres at integers, the result is rounded to 8 bits, then scaled to floats
/// `value · scale + offset` (interleaved RGB, row-major).
fn warp(img: &RgbImage, roi: &Roi, out_w: usize, out_h: usize, border: Border, scale: f32, offset: f32, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(out_w * out_h * 3);
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let (sin, cos) = roi.rotation.sin_cos();
    let pixel = |x: i64, y: i64| -> Option<[u8; 3]> {
        let (x, y) = match border {
            Border::Zero if x < 0 || y < 0 || x >= w || y >= h => return None,
            Border::Zero => (x, y),
            Border::Replicate => (x.clamp(0, w - 1), y.clamp(0, h - 1)),
        };
        let i = ((y * w + x) * 3) as usize;
        Some([raw[i], raw[i + 1], raw[i + 2]])
    };
    for v in 0..out_h {
        let ly = (v as f32 / out_h as f32 - 0.5) * roi.height;
        for u in 0..out_w {
            let lx = (u as f32 / out_w as f32 - 0.5) * roi.width;
            let sx = roi.cx + cos * lx - sin * ly;
            let sy = roi.cy + sin * lx + cos * ly;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let taps = [
                (pixel(x0, y0), (1.0 - fx) * (1.0 - fy)),
                (pixel(x0 + 1, y0), fx * (1.0 - fy)),
                (pixel(x0, y0 + 1), (1.0 - fx) * fy),
                (pixel(x0 + 1, y0 + 1), fx * fy),
            ];
            for c in 0..3 {
                let mut acc = 0.0f32;
                for (p, wgt) in &taps {
                    if let Some(p) = p {
                        acc += p[c] as f32 * wgt;
                    }
                }
                let q = (acc + 0.5).floor().clamp(0.0, 255.0);
                out.push(q * scale + offset);
            }
        }
    }
}

/// MediaPipe's `NormalizeRadians`: into [-π, π).
fn normalize_radians(angle: f32) -> f32 {
    use std::f32::consts::PI;
    angle - 2.0 * PI * ((angle + PI) / (2.0 * PI)).floor()
}

/// The face rectangle from a detection normalized to the image (DetectionsToRects with the eye
/// keypoints as the rotation vector and target angle 0, then RectTransformation: square on the
/// long side, scaled 1.5). Returned in pixels.
pub fn face_roi(d: &Detection, width: u32, height: u32) -> Roi {
    let (w, h) = (width as f32, height as f32);
    let [xmin, ymin, xmax, ymax] = d.bbox;
    let (x0, y0) = (d.keypoints[0][0] * w, d.keypoints[0][1] * h);
    let (x1, y1) = (d.keypoints[1][0] * w, d.keypoints[1][1] * h);
    // target angle 0 minus the eye vector's angle with y pointing up.
    let rotation = normalize_radians(0.0 - (y0 - y1).atan2(x1 - x0));
    let long_side = ((xmax - xmin) * w).max((ymax - ymin) * h);
    Roi { cx: (xmin + xmax) / 2.0 * w, cy: (ymin + ymax) / 2.0 * h, width: long_side * ROI_SCALE, height: long_side * ROI_SCALE, rotation }
}

/// Maps landmark-model outputs (crop pixels of a `CROP_SIZE` square) back to image pixels through
/// `roi`, as LandmarkProjectionCalculator does on normalized coordinates.
pub fn project(raw: &[f32], roi: &Roi, width: u32, height: u32) -> Vec<[f32; 2]> {
    let (w, h) = (width as f32, height as f32);
    let (sin, cos) = roi.rotation.sin_cos();
    let (rw, rh) = (roi.width / w, roi.height / h);
    let (cx, cy) = (roi.cx / w, roi.cy / h);
    raw.chunks_exact(3)
        .map(|p| {
            let x = p[0] / CROP_SIZE as f32 - 0.5;
            let y = p[1] / CROP_SIZE as f32 - 0.5;
            let nx = (cos * x - sin * y) * rw + cx;
            let ny = (sin * x + cos * y) * rh + cy;
            [nx * w, ny * h]
        })
        .collect()
}

/// Both face models with their sessions and scratch buffers. One per thread: `run` needs `&mut`.
pub struct FaceMesh {
    detector: Session,
    landmarker: Session,
    anchors: Vec<Anchor>,
    buffer: Vec<f32>,
}

fn infer(session: &mut Session, graph: &'static str, input: &str, shape: [usize; 4], data: &[f32], outputs: &[&str]) -> Result<Vec<Vec<f32>>, FaceError> {
    let fail = |e: ort::Error| FaceError::Inference { graph, reason: e.to_string() };
    let tensor = TensorRef::from_array_view((shape.to_vec(), data)).map_err(fail)?;
    let result = session.run(ort::inputs![input => tensor]).map_err(fail)?;
    outputs.iter().map(|name| Ok(result[*name].try_extract_tensor::<f32>().map_err(fail)?.1.to_vec())).collect()
}

impl FaceMesh {
    /// Opens both models on `runtime`'s execution providers.
    pub fn new(runtime: &Runtime) -> Result<Self, FaceError> {
        Ok(Self {
            detector: runtime.session_from_memory("face_detection_short_range.onnx", DETECTOR_ONNX)?,
            landmarker: runtime.session_from_memory("face_landmark.onnx", LANDMARK_ONNX)?,
            anchors: detect::anchors(),
            buffer: Vec::new(),
        })
    }

    /// The best face detection, normalized to the image, or `None`.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Option<Detection>, FaceError> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        // Letterbox: the square of the long side, centred; padding as fractions of that square.
        let side = w.max(h);
        let (pad_x, pad_y) = ((1.0 - w / side) / 2.0, (1.0 - h / side) / 2.0);
        let roi = Roi { cx: w / 2.0, cy: h / 2.0, width: side, height: side, rotation: 0.0 };
        let size = detect::INPUT_SIZE;
        let mut buffer = std::mem::take(&mut self.buffer);
        warp(img, &roi, size, size, Border::Zero, 2.0 / 255.0, -1.0, &mut buffer);
        let out = infer(&mut self.detector, "face_detection_short_range.onnx", "input", [1, size, size, 3], &buffer, &["regressors", "classificators"]);
        self.buffer = buffer;
        let out = out?;
        let found = detect::weighted_nms(detect::decode(&out[0], &out[1], &self.anchors));
        Ok(found.into_iter().next().map(|mut d| {
            let (sx, sy) = (1.0 - 2.0 * pad_x, 1.0 - 2.0 * pad_y);
            for (i, v) in d.bbox.iter_mut().enumerate() {
                *v = if i % 2 == 0 { (*v - pad_x) / sx } else { (*v - pad_y) / sy };
            }
            for k in d.keypoints.iter_mut() {
                *k = [(k[0] - pad_x) / sx, (k[1] - pad_y) / sy];
            }
            d
        }))
    }

    /// Detection, face rectangle and landmarks for one image.
    pub fn run(&mut self, img: &RgbImage) -> Result<FaceResult, FaceError> {
        let Some(detection) = self.detect(img)? else { return Ok(FaceResult::NoFace) };
        let roi = face_roi(&detection, img.width(), img.height());
        let mut buffer = std::mem::take(&mut self.buffer);
        warp(img, &roi, CROP_SIZE, CROP_SIZE, Border::Replicate, 1.0 / 255.0, 0.0, &mut buffer);
        let out = infer(&mut self.landmarker, "face_landmark.onnx", "input_1", [1, CROP_SIZE, CROP_SIZE, 3], &buffer, &["conv2d_21", "conv2d_31"]);
        self.buffer = buffer;
        let out = out?;
        let presence = 1.0 / (1.0 + (-out[1][0]).exp());
        let landmarks = if presence >= MIN_PRESENCE { project(&out[0], &roi, img.width(), img.height()) } else { Vec::new() };
        Ok(FaceResult::Face(Face { detection_score: detection.score, presence, roi, landmarks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warp_of_the_whole_image_samples_at_scaled_integer_coordinates() {
        // 8×8 gradient (value = 10·x) warped to 4×4: output u samples source x = 2u exactly.
        let img = RgbImage::from_fn(8, 8, |x, _| image::Rgb([10 * x as u8, 0, 255]));
        let roi = Roi { cx: 4.0, cy: 4.0, width: 8.0, height: 8.0, rotation: 0.0 };
        let mut out = Vec::new();
        warp(&img, &roi, 4, 4, Border::Zero, 1.0, 0.0, &mut out);
        let row: Vec<f32> = out[..12].chunks(3).map(|p| p[0]).collect();
        assert_eq!(row, [0.0, 20.0, 40.0, 60.0]);
        assert_eq!(out[2], 255.0);
    }

    #[test]
    fn warp_borders_zero_or_replicate() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        // A rectangle twice the image: the first output pixel samples (-2, -2).
        let roi = Roi { cx: 2.0, cy: 2.0, width: 8.0, height: 8.0, rotation: 0.0 };
        let mut out = Vec::new();
        warp(&img, &roi, 4, 4, Border::Zero, 1.0, 0.0, &mut out);
        assert_eq!(out[0], 0.0);
        warp(&img, &roi, 4, 4, Border::Replicate, 1.0, 0.0, &mut out);
        assert_eq!(out[0], 100.0);
    }

    #[test]
    fn rotated_warp_turns_the_picture() {
        // A quarter turn: output (u, v) samples source (9 - v, u), so the bright pixel lands at (4, 1).
        let mut img = RgbImage::new(9, 9);
        img.put_pixel(8, 4, image::Rgb([255, 255, 255])); // right-middle
        let roi = Roi { cx: 4.5, cy: 4.5, width: 9.0, height: 9.0, rotation: std::f32::consts::FRAC_PI_2 };
        let mut out = Vec::new();
        warp(&img, &roi, 9, 9, Border::Zero, 1.0, 0.0, &mut out);
        assert_eq!(out[(9 + 4) * 3], 255.0);
    }

    #[test]
    fn roi_is_square_scaled_and_level_with_the_eyes() {
        let d = Detection { score: 0.9, bbox: [0.4, 0.3, 0.6, 0.6], keypoints: [[0.45, 0.4], [0.55, 0.5], [0.5, 0.5], [0.5, 0.55], [0.4, 0.45], [0.6, 0.45]] };
        let roi = face_roi(&d, 200, 100);
        assert!((roi.cx - 100.0).abs() < 1e-4 && (roi.cy - 45.0).abs() < 1e-4);
        // Box 40×30 px: long side 40, ×1.5.
        assert!((roi.width - 60.0).abs() < 1e-4 && (roi.height - 60.0).abs() < 1e-4);
        // Eyes from (90, 40) to (110, 50): the face is tilted +26.57° on screen; rotation undoes it.
        assert!((roi.rotation - (10.0f32 / 20.0).atan()).abs() < 1e-5, "{}", roi.rotation);
        assert!((normalize_radians(3.5 * std::f32::consts::PI) + 0.5 * std::f32::consts::PI).abs() < 1e-5);
    }

    #[test]
    fn projection_inverts_the_crop() {
        let roi = Roi { cx: 50.0, cy: 60.0, width: 40.0, height: 40.0, rotation: 0.3 };
        // The crop's centre is the roi centre; its top-left corner is the rotated corner.
        let pts = project(&[96.0, 96.0, 0.0, 0.0, 0.0, 0.0], &roi, 100, 100);
        assert!((pts[0][0] - 50.0).abs() < 1e-4 && (pts[0][1] - 60.0).abs() < 1e-4);
        let (s, c) = 0.3f32.sin_cos();
        let corner = [50.0 + c * -20.0 - s * -20.0, 60.0 + s * -20.0 + c * -20.0];
        assert!((pts[1][0] - corner[0]).abs() < 1e-3 && (pts[1][1] - corner[1]).abs() < 1e-3, "{:?}", pts[1]);
    }
}
