//! The CLIP tokenizer against transformers' slow CLIPTokenizer without ftfy (the reference ComfyUI
//! and diffusers use for SD1.5) on the committed tokenizer.json, OpenAI CLIP's BPE vocabulary.

use acufarm_worker::pipeline::tokenizer::ClipTokenizer;
use std::path::Path;

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/common/tokenizer.json")).unwrap()
}

#[derive(serde::Deserialize)]
struct Fixture {
    reference: String,
    context: usize,
    rows: Vec<Row>,
}

#[derive(serde::Deserialize)]
struct Row {
    name: String,
    prompt: String,
    /// All of the prompt's ids, untruncated, without start/end markers.
    tokens: Vec<u32>,
    /// `tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids`.
    ids: Vec<i32>,
}

/// Every row of tests/reference/tokenizer_ids.json (made by make_tokenizer_ids.py with transformers).
#[test]
fn matches_the_reference_table_on_every_row() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/tokenizer_ids.json");
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(fixture.reference.contains("no ftfy"), "{}", fixture.reference);
    assert!(fixture.rows.len() >= 40, "the table lost rows");
    let t = tokenizer();
    let mut wrong = Vec::new();
    for row in &fixture.rows {
        let tokens = t.tokenize(&row.prompt);
        let encoded = t.encode(&row.prompt, fixture.context);
        if tokens != row.tokens || encoded.ids != row.ids || encoded.truncated != (row.tokens.len() > fixture.context - 2) {
            wrong.push(format!("{}: {:?}\n  want {:?}\n  got  {:?}", row.name, row.prompt, row.tokens, tokens));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows differ from transformers:\n{}", wrong.len(), fixture.rows.len(), wrong.join("\n"));
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
