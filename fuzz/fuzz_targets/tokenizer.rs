//! Any prompt: tokenizing never panics, every id is in the vocabulary, and the encoded prompt is
//! exactly the context length, `<|startoftext|>` first, the prompt's leading tokens, then end tokens.
#![no_main]

use acufarm_worker::pipeline::tokenizer::ClipTokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static TOKENIZER: LazyLock<ClipTokenizer> = LazyLock::new(|| {
    ClipTokenizer::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tiny/common/tokenizer.json").as_ref()).expect("the committed tokenizer loads")
});

fuzz_target!(|prompt: &str| {
    let t = &*TOKENIZER;
    let tokens = t.tokenize(prompt);
    assert!(tokens.iter().all(|&id| (id as usize) < t.vocab_size()), "{prompt:?}: {tokens:?}");
    let encoded = t.encode(prompt, 77);
    let kept = tokens.len().min(75);
    assert_eq!(encoded.ids.len(), 77);
    assert_eq!(encoded.truncated, tokens.len() > 75);
    assert_eq!(encoded.ids[0], 49406);
    assert!(encoded.ids[1..=kept].iter().zip(&tokens).all(|(&a, &b)| a == b as i32));
    assert!(encoded.ids[kept + 1..].iter().all(|&id| id == 49407));
});
