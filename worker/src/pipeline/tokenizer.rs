//! CLIP's byte-level BPE tokenizer (the one SD1.5 uses), read from a Hugging Face `tokenizer.json`.
//!
//! Text is cleaned like CLIP's own tokenizer (whitespace collapsed, lower-cased), split with CLIP's
//! regex, byte-mapped, merged by BPE rank with `</w>` marking word ends, then wrapped as
//! `<|startoftext|> … <|endoftext|>` and padded with `<|endoftext|>` to the context length
//! (ComfyUI and SD1.5's tokenizer both pad with the end token). Longer prompts are truncated.

use regex::Regex;
use std::collections::HashMap;
use std::path::Path;

const SPLIT: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

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
        Ok(Self { bos: special("<|startoftext|>")?, eos: special("<|endoftext|>")?, vocab, ranks, byte_chars: byte_to_unicode(), split: Regex::new(SPLIT).expect("static regex") })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Token ids without start/end markers.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let mut ids = Vec::new();
        for piece in self.split.find_iter(&clean) {
            // Special tokens written in the text stand for themselves, as in CLIP's tokenizer.
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
            for token in self.bpe(&word) {
                // Every BPE output is in the vocabulary by construction; guard anyway.
                if let Some(&id) = self.vocab.get(&token) {
                    ids.push(id);
                }
            }
        }
        ids
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
