//! Any file name: parsing never panics, an error names the sample id, and an accepted id prints
//! (Display) to a name that parses back to the same id (the eye state is not part of that spelling).
#![no_main]

use acufarm_core::IdGrammar;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static GRAMMAR: LazyLock<IdGrammar> = LazyLock::new(IdGrammar::default);

fuzz_target!(|name: &str| {
    match GRAMMAR.parse(name) {
        Ok(id) => {
            let printed = id.to_string();
            let again = GRAMMAR.parse(&printed).unwrap_or_else(|e| panic!("{name:?} parsed, but its Display {printed:?} does not: {e}"));
            assert_eq!(again, acufarm_core::SampleId { eyes: None, ..id }, "{name:?} → {printed:?}");
        }
        Err(e) => assert!(e.to_string().contains("sample id"), "{e}"),
    }
});
