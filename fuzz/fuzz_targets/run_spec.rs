//! Any run spec text: parsing never panics, and every refusal names the spec file (or, for an id
//! pattern, the `sample_id.patterns` key it came from).
#![no_main]

use acufarm_core::RunSpec;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    if let Err(e) = RunSpec::parse(text, Path::new("specs/fuzz run.toml")) {
        let message = e.to_string();
        assert!(message.contains("specs/fuzz run.toml") || message.contains("sample_id.patterns"), "{message}");
    }
});
