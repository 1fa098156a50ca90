//! Any evaluation config text (`acufarm evaluate --config`): reading it never panics, every refusal
//! names the file, and what it accepts passes its own checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match acufarm_core::evaluate::from_toml(text, "configs/fuzz eval.toml") {
        Ok((section, _)) => assert!(section.problems().is_empty()),
        Err(e) => assert!(e.to_string().starts_with("configs/fuzz eval.toml: "), "{e}"),
    }
});
