//! The CLIP tokenizer against ids produced by transformers' CLIPTokenizerFast on the committed
//! tokenizer.json (the real CLIP BPE vocabulary).

use acufarm_worker::pipeline::tokenizer::ClipTokenizer;
use std::path::Path;

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/common/tokenizer.json")).unwrap()
}

#[test]
fn matches_transformers_ids() {
    let t = tokenizer();
    assert_eq!(t.vocab_size(), 49408);
    let cases: [(&str, &[u32]); 6] = [
        ("a photo of a cat", &[320, 1125, 539, 320, 2368]),
        (
            "Photo of a BALD man,   35mm f/1.8; it's warm!!",
            &[1125, 539, 320, 14875, 786, 267, 274, 276, 2848, 325, 270, 272, 269, 279, 282, 585, 568, 3616, 748],
        ),
        ("don't stop 1990s", &[847, 713, 1691, 272, 280, 280, 271, 338]),
        ("café naïve résumé", &[15304, 1097, 35689, 563, 29106, 7054, 4166]),
        ("<|startoftext|>hello", &[49406, 3306]),
        ("", &[]),
    ];
    for (prompt, want) in cases {
        assert_eq!(t.tokenize(prompt), want, "{prompt:?}");
    }
}

#[test]
fn pads_with_end_token_and_truncates() {
    let t = tokenizer();
    let e = t.encode("a photo of a cat", 77);
    assert_eq!(e.ids.len(), 77);
    assert_eq!(&e.ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(e.ids[7..].iter().all(|&id| id == 49407));
    assert!(!e.truncated);
    let long = t.encode(&"cat ".repeat(100), 77);
    assert!(long.truncated);
    assert_eq!((long.ids[0], long.ids[75], long.ids[76]), (49406, 2368, 49407));
}
