//! Property tests of the worker's parsers of user input: `.npy` files (`--noise-in`) and prompts
//! (the CLIP tokenizer). Case counts stay modest; `PROPTEST_CASES` raises them (scripts/fuzz.sh).

use acufarm_worker::pipeline::npy;
use acufarm_worker::pipeline::tokenizer::ClipTokenizer;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::Path;
use std::sync::LazyLock;
use unicode_normalization::UnicodeNormalization;

fn config() -> Config {
    Config { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256), failure_persistence: None, ..Config::default() }
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..7, 0..5)
}

fn array() -> impl Strategy<Value = (Vec<usize>, Vec<f32>)> {
    shape().prop_flat_map(|shape| {
        let n = shape.iter().product::<usize>();
        (Just(shape), prop::collection::vec(any::<f32>(), n))
    })
}

/// The header text as numpy (or another writer) could put it: any key order, any spacing, with or
/// without the trailing comma, in format versions 1 to 3.
fn written(shape: &[usize], data: &[f32], order: &[usize], space: &str, trailing: bool, version: u8) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(&format!(",{space}"))),
    };
    let entries = [format!("'descr':{space}'<f4'"), format!("'fortran_order':{space}False"), format!("'shape':{space}{dims}")];
    let mut header =
        format!("{{{}{}}}", order.iter().map(|&i| entries[i].clone()).collect::<Vec<_>>().join(&format!(",{space}")), if trailing { ", " } else { "" });
    let prefix = if version == 1 { 10 } else { 12 };
    while (prefix + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn npy_round_trips_every_bit((shape, data) in array()) {
        let bytes = npy::encode(&shape, &data);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        prop_assert_eq!((10 + header_len) % 64, 0);
        prop_assert_eq!(bytes[10 + header_len - 1], b'\n');
        let back = npy::decode(&bytes, "a.npy").unwrap();
        prop_assert_eq!(&back.shape, &shape);
        prop_assert!(same_bits(&back.data, &data));
    }

    #[test]
    fn npy_headers_in_any_layout_decode(
        (shape, data) in array(),
        order in Just(vec![0usize, 1, 2]).prop_shuffle(),
        space in prop::sample::select(vec!["", " ", "  "]),
        trailing in any::<bool>(),
        version in 1u8..=3,
    ) {
        let back = npy::decode(&written(&shape, &data, &order, space, trailing, version), "b.npy").unwrap();
        prop_assert_eq!(&back.shape, &shape);
        prop_assert!(same_bits(&back.data, &data));
    }

    #[test]
    fn damaged_npy_is_refused_naming_the_file((shape, data) in array(), hits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let mut bytes = npy::encode(&shape, &data);
        for (at, byte) in &hits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        match npy::decode(&bytes, "noise/bad.npy") {
            Ok(array) => prop_assert_eq!(array.data.len(), array.shape.iter().product::<usize>()),
            Err(e) => prop_assert!(e.to_string().contains("noise/bad.npy"), "{}", e),
        }
    }

    #[test]
    fn any_bytes_are_decoded_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        for input in [&bytes, &with_magic] {
            if let Err(e) = npy::decode(input, "any.npy") {
                prop_assert!(e.to_string().contains("any.npy"), "{}", e);
            }
        }
    }
}

static TOKENIZER: LazyLock<ClipTokenizer> =
    LazyLock::new(|| ClipTokenizer::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/common/tokenizer.json")).unwrap());

const BOS: i32 = 49406;
const EOS: i32 = 49407;

/// Prompts with the characters that make tokenizers disagree: accents in both forms, CJK, emoji,
/// controls, odd spaces, apostrophes and special-token fragments.
fn prompt() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z]{1,8}",
        "[0-9]{1,4}",
        prop::sample::select(vec![
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "\u{200b}",
            "\u{200d}",
            "\u{feff}",
            "\u{0}",
            "\u{7}",
            "\u{fffd}",
            "e\u{301}",
            "é",
            "ñ",
            "Å",
            "ß",
            "İ",
            "Σ",
            "ſ",
            "猫",
            "東京",
            "\u{f900}",
            "한",
            "カ",
            "🐱",
            "👍🏽",
            "🇯🇵",
            "❤\u{fe0f}",
            "'s",
            "'T",
            "’",
            "!!",
            ",",
            "(",
            ":1.2)",
            "<|endoftext|>",
            "<|startoftext|>",
            "<|",
            "|>",
            "\u{e000}",
            "\u{378}",
        ])
        .prop_map(String::from),
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..30).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_prompt_encodes_to_exactly_the_context(prompt in prompt(), length in 2usize..100) {
        let t = &*TOKENIZER;
        let tokens = t.tokenize(&prompt);
        prop_assert!(tokens.iter().all(|&id| (id as usize) < t.vocab_size()));
        let encoded = t.encode(&prompt, length);
        let kept = tokens.len().min(length - 2);
        prop_assert_eq!(encoded.ids.len(), length);
        prop_assert_eq!(encoded.truncated, tokens.len() > length - 2);
        prop_assert_eq!(encoded.ids[0], BOS);
        prop_assert!(encoded.ids[1..=kept].iter().zip(&tokens).all(|(&a, &b)| a == b as i32));
        prop_assert!(encoded.ids[kept + 1..].iter().all(|&id| id == EOS));
    }

    /// NFC is applied, so a prompt typed with combining accents gives the ids of its composed form.
    #[test]
    fn nfd_and_nfc_spellings_give_the_same_ids(prompt in prompt()) {
        let t = &*TOKENIZER;
        let nfc: String = prompt.nfc().collect();
        let nfd: String = prompt.nfd().collect();
        prop_assert_eq!(t.tokenize(&nfd), t.tokenize(&nfc));
    }

    /// Runs of any whitespace between words count as one space; ASCII case does not matter.
    #[test]
    fn whitespace_runs_and_ascii_case_do_not_change_ids(words in prop::collection::vec("[a-zA-Z0-9,.!'()]{1,10}", 1..12), gaps in prop::collection::vec("[ \t\n\r\u{a0}\u{2003}\u{3000}]{1,4}", 11)) {
        let t = &*TOKENIZER;
        let plain = words.join(" ");
        let spaced: String = words.iter().enumerate().map(|(i, w)| if i == 0 { w.clone() } else { format!("{}{w}", gaps[i - 1]) }).collect();
        let want = t.tokenize(&plain.to_ascii_lowercase());
        prop_assert_eq!(t.tokenize(&format!("  {spaced}\n")), want.clone());
        prop_assert_eq!(t.tokenize(&plain.to_ascii_uppercase()), want);
    }
}
