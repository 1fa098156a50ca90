//! BlazeFace short-range detection, as MediaPipe's `face_detection_short_range` graph runs it:
//! SSD anchors for a 128×128 input, box and keypoint decoding relative to each anchor, a sigmoid
//! score with a 0.5 threshold, then weighted non-maximum suppression (overlapping detections are
//! averaged by score instead of dropped). Coordinates are normalized to the detector input
//! ([0, 1] on both axes).

/// Detector input side in pixels.
pub const INPUT_SIZE: usize = 128;
/// Anchors (= rows of the detector's outputs).
pub const ANCHORS: usize = 896;
/// Values per anchor in `regressors`: box (cx, cy, w, h) then 6 keypoints (x, y).
pub const REGRESSOR_WIDTH: usize = 16;
/// Keypoints per detection: right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion.
pub const KEYPOINTS: usize = 6;
/// Scores below this are not faces (MediaPipe's `min_score_thresh`).
pub const MIN_SCORE: f32 = 0.5;
/// Detections overlapping more than this (IoU) are merged (`min_suppression_threshold`).
pub const SUPPRESSION_IOU: f32 = 0.3;
/// Raw scores are clipped to ±this before the sigmoid (`score_clipping_thresh`).
const SCORE_CLIP: f32 = 100.0;

/// An anchor centre; short-range anchors all have size 1 (`fixed_anchor_size`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub x: f32,
    pub y: f32,
}

/// MediaPipe's SSD anchor layout for this model: 4 layers with strides 8, 16, 16, 16; layers of
/// equal stride share one grid, and each layer puts 2 anchors per cell (aspect ratio 1 plus the
/// interpolated scale), so the 16×16 grid holds 512 anchors and the 8×8 grid 384.
pub fn anchors() -> Vec<Anchor> {
    const STRIDES: [usize; 4] = [8, 16, 16, 16];
    let mut out = Vec::with_capacity(ANCHORS);
    let mut layer = 0;
    while layer < STRIDES.len() {
        let stride = STRIDES[layer];
        let mut per_cell = 0;
        while layer < STRIDES.len() && STRIDES[layer] == stride {
            per_cell += 2;
            layer += 1;
        }
        let cells = INPUT_SIZE.div_ceil(stride);
        for y in 0..cells {
            for x in 0..cells {
                let anchor = Anchor { x: (x as f32 + 0.5) / cells as f32, y: (y as f32 + 0.5) / cells as f32 };
                out.extend(std::iter::repeat_n(anchor, per_cell));
            }
        }
    }
    out
}

/// A face box with its keypoints, normalized to the detector input.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f32,
    /// Box corners (xmin, ymin, xmax, ymax).
    pub bbox: [f32; 4],
    pub keypoints: [[f32; 2]; KEYPOINTS],
}

impl Detection {
    fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }

    /// Intersection over union of two boxes (0 when either is empty).
    pub fn iou(&self, other: &Detection) -> f32 {
        let w = (self.bbox[2].min(other.bbox[2]) - self.bbox[0].max(other.bbox[0])).max(0.0);
        let h = (self.bbox[3].min(other.bbox[3]) - self.bbox[1].max(other.bbox[1])).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-SCORE_CLIP, SCORE_CLIP)).exp())
}

/// Decodes the detector's raw outputs (`regressors` [896 × 16], `classificators` [896]) into the
/// detections scoring at least [`MIN_SCORE`], before suppression. Offsets are in input pixels
/// relative to the anchor centre.
pub fn decode(regressors: &[f32], scores: &[f32], anchors: &[Anchor]) -> Vec<Detection> {
    assert_eq!(regressors.len(), anchors.len() * REGRESSOR_WIDTH, "regressors must hold 16 values per anchor");
    assert_eq!(scores.len(), anchors.len(), "one score per anchor");
    let scale = INPUT_SIZE as f32;
    let mut out = Vec::new();
    for (i, anchor) in anchors.iter().enumerate() {
        let score = sigmoid(scores[i]);
        if score < MIN_SCORE {
            continue;
        }
        let raw = &regressors[i * REGRESSOR_WIDTH..(i + 1) * REGRESSOR_WIDTH];
        let (cx, cy) = (raw[0] / scale + anchor.x, raw[1] / scale + anchor.y);
        let (w, h) = (raw[2] / scale, raw[3] / scale);
        let mut keypoints = [[0.0; 2]; KEYPOINTS];
        for (k, point) in keypoints.iter_mut().enumerate() {
            *point = [raw[4 + 2 * k] / scale + anchor.x, raw[5 + 2 * k] / scale + anchor.y];
        }
        out.push(Detection { score, bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], keypoints });
    }
    out
}

/// Weighted non-maximum suppression as MediaPipe's `WEIGHTED` algorithm: take the best remaining
/// detection, gather every remaining one overlapping it by more than [`SUPPRESSION_IOU`]
/// (itself included), and emit their score-weighted mean box and keypoints with the best score.
/// Returns detections best first.
pub fn weighted_nms(mut detections: Vec<Detection>) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some(best) = detections.first().cloned() {
        let (cluster, rest): (Vec<Detection>, Vec<Detection>) = detections.into_iter().partition(|d| best.iou(d) > SUPPRESSION_IOU || *d == best);
        detections = rest;
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mut merged = Detection { score: best.score, bbox: [0.0; 4], keypoints: [[0.0; 2]; KEYPOINTS] };
        for d in &cluster {
            let w = d.score / total;
            for (m, v) in merged.bbox.iter_mut().zip(d.bbox) {
                *m += w * v;
            }
            for (m, v) in merged.keypoints.iter_mut().zip(d.keypoints) {
                m[0] += w * v[0];
                m[1] += w * v[1];
            }
        }
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout_matches_the_model() {
        let anchors = anchors();
        assert_eq!(anchors.len(), ANCHORS);
        // 16×16 grid, 2 per cell: the first two anchors share the first cell's centre.
        assert_eq!(anchors[0], Anchor { x: 0.5 / 16.0, y: 0.5 / 16.0 });
        assert_eq!(anchors[1], anchors[0]);
        assert_eq!(anchors[2], Anchor { x: 1.5 / 16.0, y: 0.5 / 16.0 });
        assert_eq!(anchors[511], Anchor { x: 15.5 / 16.0, y: 15.5 / 16.0 });
        // Then the 8×8 grid, 6 per cell (three stride-16 layers).
        assert_eq!(anchors[512], Anchor { x: 0.5 / 8.0, y: 0.5 / 8.0 });
        assert_eq!(anchors[517], anchors[512]);
        assert_eq!(anchors[518], Anchor { x: 1.5 / 8.0, y: 0.5 / 8.0 });
        assert_eq!(anchors[895], Anchor { x: 7.5 / 8.0, y: 7.5 / 8.0 });
    }

    fn raw(anchors: usize, rows: &[(usize, [f32; REGRESSOR_WIDTH], f32)]) -> (Vec<f32>, Vec<f32>) {
        let mut regressors = vec![0.0; anchors * REGRESSOR_WIDTH];
        let mut scores = vec![-10.0; anchors];
        for (i, values, score) in rows {
            regressors[i * REGRESSOR_WIDTH..(i + 1) * REGRESSOR_WIDTH].copy_from_slice(values);
            scores[*i] = *score;
        }
        (regressors, scores)
    }

    #[test]
    fn decoding_offsets_boxes_and_keypoints_from_the_anchor() {
        let anchors = [Anchor { x: 0.25, y: 0.75 }, Anchor { x: 0.5, y: 0.5 }];
        let mut values = [0.0; REGRESSOR_WIDTH];
        // Centre 12.8 px right of the anchor, 64 px wide and 32 px tall; right eye 6.4 px left.
        values[..4].copy_from_slice(&[12.8, 0.0, 64.0, 32.0]);
        values[4] = -6.4;
        let (regressors, scores) = raw(2, &[(0, values, 2.0)]);
        let found = decode(&regressors, &scores, &anchors);
        assert_eq!(found.len(), 1, "the second anchor scores below the threshold");
        let d = &found[0];
        assert!((d.score - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        let expected = [0.35 - 0.25, 0.75 - 0.125, 0.35 + 0.25, 0.75 + 0.125];
        for (got, want) in d.bbox.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", d.bbox);
        }
        assert!((d.keypoints[0][0] - 0.2).abs() < 1e-6 && (d.keypoints[0][1] - 0.75).abs() < 1e-6);
        assert_eq!(d.keypoints[1], [0.25, 0.75]);
    }

    #[test]
    fn scores_are_clipped_and_thresholded() {
        assert_eq!(sigmoid(1e9), sigmoid(SCORE_CLIP));
        assert!(sigmoid(0.0) >= MIN_SCORE, "a logit of 0 is exactly the threshold and counts");
    }

    fn det(score: f32, bbox: [f32; 4]) -> Detection {
        Detection { score, bbox, keypoints: [[bbox[0], bbox[1]]; KEYPOINTS] }
    }

    #[test]
    fn weighted_nms_averages_overlaps_and_keeps_separate_faces() {
        let a = det(0.9, [0.0, 0.0, 0.4, 0.4]);
        let b = det(0.6, [0.04, 0.0, 0.44, 0.4]); // IoU with a ≈ 0.82
        let far = det(0.7, [0.6, 0.6, 0.9, 0.9]);
        let out = weighted_nms(vec![b.clone(), far.clone(), a.clone()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        let xmin = (0.9 * 0.0 + 0.6 * 0.04) / 1.5;
        assert!((out[0].bbox[0] - xmin).abs() < 1e-6 && (out[0].keypoints[0][0] - xmin).abs() < 1e-6, "{:?}", out[0]);
        assert_eq!(out[1], far);
        assert!(weighted_nms(Vec::new()).is_empty());
    }

    #[test]
    fn iou_of_disjoint_and_identical_boxes() {
        let a = det(1.0, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&det(1.0, [2.0, 2.0, 3.0, 3.0])), 0.0);
        assert_eq!(det(1.0, [0.5, 0.5, 0.5, 0.5]).iou(&det(1.0, [0.5, 0.5, 0.5, 0.5])), 0.0);
    }
}
