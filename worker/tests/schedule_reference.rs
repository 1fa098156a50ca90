//! Schedules against reference vectors written independently from ComfyUI's formulas by
//! tests/reference/make_schedules.py (S ∈ {1, 20, 28, 32}, t0 ∈ {0, 0.3, 0.5}, denoise ∈ {1, 0.6},
//! plus S = 7, denoise = 0.07, for every scheduler).

use acufarm_worker::pipeline::schedule::{self, Partial, SchedulerKind, SigmaTable};
use serde_json::Value;

#[test]
fn schedules_match_reference_vectors() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/reference/schedules.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let table = SigmaTable::sd15();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 63);
    for case in cases {
        let kind: SchedulerKind = case["scheduler"].as_str().unwrap().parse().unwrap();
        let steps = case["steps"].as_u64().unwrap() as u32;
        let partial = Partial::from_options(case["t0"].as_f64(), case["denoise"].as_f64());
        let label = format!("{kind} S={steps} {partial:?}");
        let sigmas = schedule::schedule(&table, kind, steps, partial).unwrap();
        let want: Vec<f64> = case["sigmas"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(sigmas.len(), want.len(), "{label}: length");
        for (i, (&got, &want)) in sigmas.iter().zip(&want).enumerate() {
            let rel = if want == 0.0 { got.abs() as f64 } else { ((got as f64 - want) / want).abs() };
            assert!(rel <= 1e-6, "{label}: sigma[{i}] = {got}, reference {want} (rel {rel:e})");
        }
        let timesteps = schedule::timesteps(&table, &sigmas);
        for (i, (got, candidates)) in timesteps.iter().zip(case["timesteps"].as_array().unwrap()).enumerate() {
            let ok: Vec<u64> = candidates.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert!(ok.contains(&(*got as u64)), "{label}: timestep[{i}] = {got}, reference {ok:?}");
        }
    }
}
