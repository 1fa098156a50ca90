//! Any label file bytes: parsing never panics, a refusal names the file, and accepted keypoints
//! written back as an AcuSim label parse to the same keypoints (names and coordinates exact).
#![no_main]

use acufarm_core::manifest::{Keypoint, parse_label};
use libfuzzer_sys::fuzz_target;

fn label_json(points: &[Keypoint]) -> Vec<u8> {
    let label: Vec<_> = points
        .iter()
        .map(|p| {
            let mut c = serde_json::json!({"x": p.x, "y": p.y});
            if let Some(n) = p.n {
                c["n"] = n.into();
            }
            if let Some(h) = p.h {
                c["h"] = h.into();
            }
            serde_json::json!({"name": p.name, "coordinate": c})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "label": label })).expect("serialisable")
}

fuzz_target!(|bytes: &[u8]| {
    match parse_label(bytes, "train/label/fuzz.json") {
        Ok(points) => {
            let again = parse_label(&label_json(&points), "again.json").expect("a written label parses");
            assert_eq!(again, points);
        }
        Err(e) => assert!(e.to_string().contains("train/label/fuzz.json"), "{e}"),
    }
});
