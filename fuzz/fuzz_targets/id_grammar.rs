//! A user's id pattern (first line) and a file name (the rest): building the grammar and parsing
//! never panic, and an accepted pattern always yields ids whose fields come from the name.
#![no_main]

use acufarm_core::IdGrammar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let (pattern, name) = input.split_once('\n').unwrap_or((input, ""));
    // Long patterns only measure the regex crate's compile time, not this parser.
    if pattern.len() > 256 {
        return;
    }
    let Ok(grammar) = IdGrammar::new(&[pattern.to_string()]) else { return };
    if let Ok(id) = grammar.parse(name) {
        assert!(!id.name.is_empty() && !id.hair.is_empty(), "{pattern:?} on {name:?}: {id:?}");
        assert!("FNS".contains(id.size), "{id:?}");
        assert!(name.contains(&id.name) && name.contains(&id.hair), "{pattern:?} on {name:?}: {id:?}");
    }
});
