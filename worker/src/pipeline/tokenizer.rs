//! CLIP's byte-level BPE tokenizer (the one SD1.5 uses), read from a Hugging Face `tokenizer.json`.
//!
//! The ids equal those of transformers' slow, pure-Python `CLIPTokenizer` (4.x; transformers 5
//! dropped it) in an environment without `ftfy`, which is how ComfyUI and diffusers tokenize SD1.5
//! prompts by default. Without ftfy that tokenizer cleans text with its `BasicTokenizer`
//! (`strip_accents=False`, `do_split_on_punc=False`), and this file follows it step by step:
//! 1. special tokens written in the raw text (`<|startoftext|>`, `<|endoftext|>`, exact case) are cut
//!    out first (the base class's added-token trie) and each piece between them is tokenized alone;
//! 2. `_clean_text`: NUL, U+FFFD and every character of a `C*` category (control, format such as
//!    U+200B, private use, unassigned) except tab, newline and carriage return are dropped; tab,
//!    newline, carriage return and every `Zs` space become a plain space;
//! 3. `_tokenize_chinese_chars`: a space on each side of every CJK ideograph, so each is its own word;
//! 4. NFC normalization (so `e` + U+0301 and `é` give the same ids);
//! 5. split on whitespace, lower-case each word (full Unicode lower-casing, final sigma included),
//!    join with single spaces;
//! 6. CLIP's regex split, byte-to-unicode mapping, BPE merges by rank with `</w>` marking word ends.
//!
//! Ids are wrapped as `<|startoftext|> … <|endoftext|>` and padded with `<|endoftext|>` to the
//! context length (SD1.5's tokenizer and ComfyUI both pad with the end token); longer prompts keep
//! their first `length - 2` tokens, as `truncation=True` does. `tests/reference/tokenizer_ids.json`
//! holds transformers' ids for a table of awkward prompts, regenerated and compared by
//! `tests/reference/test_tokenizer_ids.py`. Character categories come from the regex crate's Unicode
//! tables and Python's from its `unicodedata`, so a code point assigned after the reference Python's
//! Unicode version (3.11: Unicode 14) is dropped there as unassigned and kept here.

use regex::Regex;
use std::collections::HashMap;
use std::path::Path;
use unicode_normalization::UnicodeNormalization;

/// CLIP's split regex, which transformers compiles with `re.IGNORECASE` (Python's `regex` module).
/// After lower-casing that shows in two places, both rows of the reference table: `ſ` folds to `s`,
/// so `'ſ` is a contraction and `<|ſtartoftext|>` one piece (then BPE'd as text: only the exact
/// spelling is the special token); and U+0345, a combining mark that folds to a letter, is matched
/// by neither class and vanishes. A global `(?i)` would make `\p{L}+` swallow U+0345, hence the
/// narrow one.
const SPLIT: &str = r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";
/// The added tokens, matched in the raw text before any cleaning (case-sensitive, like the trie).
const SPECIAL: &str = r"<\|startoftext\|>|<\|endoftext\|>";
/// `_clean_text`'s dropped characters: `_is_control` (any `C*` category but \t \n \r), NUL and U+FFFD.
const DROPPED: &str = r"[\p{C}\x{FFFD}--[\t\n\r]]";
/// `_clean_text`'s `_is_whitespace`: \t \n \r and the `Zs` spaces, each replaced by one space.
const SPACES: &str = r"[\t\n\r\p{Zs}]";
/// `_is_chinese_char`'s code point ranges (CJK Unified Ideographs, extensions A to E, compatibility ideographs).
const CJK: &str =
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer {path}: {reason}; re-export the bundle with models/export.py")]
    Invalid { path: String, reason: String },
}

pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    byte_chars: [char; 256],
    split: Regex,
    special: Regex,
    dropped: Regex,
    spaces: Regex,
    cjk: Regex,
    bos: u32,
    eos: u32,
}

/// Prompt token ids, and whether the prompt was cut to fit.
pub struct Encoded {
    pub ids: Vec<i32>,
    pub truncated: bool,
}

impl ClipTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let invalid = |reason: String| TokenizerError::Invalid { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot be read ({e})")))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(format!("is not JSON ({e})")))?;
        let model = &json["model"];
        if model["type"] != "BPE" {
            return Err(invalid("model.type is not BPE".into()));
        }
        let vocab: HashMap<String, u32> = model["vocab"]
            .as_object()
            .ok_or_else(|| invalid("model.vocab is missing".into()))?
            .iter()
            .map(|(k, v)| v.as_u64().map(|id| (k.clone(), id as u32)).ok_or_else(|| invalid(format!("vocab entry `{k}` has no integer id"))))
            .collect::<Result<_, _>>()?;
        let merges = model["merges"].as_array().ok_or_else(|| invalid("model.merges is missing".into()))?;
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            // tokenizers ≥ 0.20 writes ["a", "b"]; older versions write "a b".
            let pair = match merge {
                serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(a) if a.len() == 2 => Some((a[0].as_str().unwrap_or("").into(), a[1].as_str().unwrap_or("").into())),
                _ => None,
            };
            let pair = pair.ok_or_else(|| invalid(format!("merge #{rank} is malformed")))?;
            ranks.insert(pair, rank as u32);
        }
        let special = |name: &str| vocab.get(name).copied().ok_or_else(|| invalid(format!("vocabulary lacks {name}")));
        let regex = |pattern: &str| Regex::new(pattern).expect("static regex");
        Ok(Self {
            bos: special("<|startoftext|>")?,
            eos: special("<|endoftext|>")?,
            vocab,
            ranks,
            byte_chars: byte_to_unicode(),
            split: regex(SPLIT),
            special: regex(SPECIAL),
            dropped: regex(DROPPED),
            spaces: regex(SPACES),
            cjk: regex(CJK),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Token ids without start/end markers.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = 0;
        for special in self.special.find_iter(text) {
            self.tokenize_piece(&text[rest..special.start()], &mut ids);
            ids.push(if special.as_str() == "<|startoftext|>" { self.bos } else { self.eos });
            rest = special.end();
        }
        self.tokenize_piece(&text[rest..], &mut ids);
        ids
    }

    /// `CLIPTokenizer._tokenize` of text holding no raw special token (steps 2 to 6 above).
    fn tokenize_piece(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let kept = self.dropped.replace_all(text, "");
        let spaced = self.spaces.replace_all(&kept, " ");
        let split_cjk = self.cjk.replace_all(&spaced, " $0 ");
        let normalized: String = split_cjk.nfc().collect();
        // Lower-cased word by word, as BasicTokenizer does: final sigma looks no further than its word.
        let clean = normalized.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ");
        for piece in self.split.find_iter(&clean) {
            // Cleaning can form a special token (`<|endo\u{200B}ftext|>`); CLIP's BPE cache maps it to itself.
            match piece.as_str() {
                "<|startoftext|>" => {
                    ids.push(self.bos);
                    continue;
                }
                "<|endoftext|>" => {
                    ids.push(self.eos);
                    continue;
                }
                _ => {}
            }
            let word: String = piece.as_str().bytes().map(|b| self.byte_chars[b as usize]).collect();
            // Every BPE output is in the vocabulary by construction; a miss maps to the unknown token
            // (`<|endoftext|>`), as `_convert_token_to_id` does.
            ids.extend(self.bpe(&word).iter().map(|token| self.vocab.get(token).copied().unwrap_or(self.eos)));
        }
    }

    /// `[bos] tokens [eos] eos…` of exactly `length` ids.
    pub fn encode(&self, text: &str, length: usize) -> Encoded {
        let mut tokens = self.tokenize(text);
        let room = length.saturating_sub(2);
        let truncated = tokens.len() > room;
        tokens.truncate(room);
        let mut ids = Vec::with_capacity(length);
        ids.push(self.bos as i32);
        ids.extend(tokens.iter().map(|&t| t as i32));
        ids.push(self.eos as i32);
        ids.resize(length, self.eos as i32);
        Encoded { ids, truncated }
    }

    fn bpe(&self, word: &str) -> Vec<String> {
        let mut parts: Vec<String> = word.chars().map(String::from).collect();
        if let Some(last) = parts.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = parts
                .windows(2)
                .filter_map(|w| self.ranks.get(&(w[0].clone(), w[1].clone())).map(|&r| (r, w[0].clone(), w[1].clone())))
                .min_by_key(|candidate| candidate.0);
            // Merge every occurrence of the best pair, left to right (as CLIP's bpe() does).
            let Some((_, a, b)) = best else { break };
            let mut merged = Vec::with_capacity(parts.len());
            let mut i = 0;
            while i < parts.len() {
                if i + 1 < parts.len() && parts[i] == a && parts[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut parts[i]));
                    i += 1;
                }
            }
            parts = merged;
        }
        parts
    }
}

/// GPT-2/CLIP's reversible byte → printable-character map.
fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    table
}
