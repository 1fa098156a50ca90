//! Landmark-drift QA (DESIGN §8): MediaPipe's face detector and Face Mesh, re-implemented around
//! the ONNX copies in `models/facemesh/`. This module grows in steps; so far it holds the
//! detector's anchor layout, its output decoding and the weighted non-maximum suppression.

pub mod detect;
