//! Sample ids: the structured name of one rendered view of one anatomical model.
//!
//! AcuSim spells ids two ways (DESIGN §6): `M_Asher_N_HD_0017.png` and `F.Brisen.F.HA.C.0141.jpg`.
//! The grammar is a list of regexes with named groups so other datasets fit without code changes.

use regex::Regex;
use std::fmt;

/// Regex for `M_Asher_N_HD_0017` (gender_name_size_hair_frame).
pub const UNDERSCORE_PATTERN: &str = r"^(?P<gender>[MF])_(?P<name>[A-Za-z][A-Za-z0-9-]*)_(?P<size>[FNS])_(?P<hair>[A-Za-z0-9]+)_(?P<frame>\d+)$";
/// Regex for `F.Brisen.F.HA.C.0141` (gender.name.size.hair.eyes.frame).
pub const DOTTED_PATTERN: &str =
    r"^(?P<gender>[MF])\.(?P<name>[A-Za-z][A-Za-z0-9-]*)\.(?P<size>[FNS])\.(?P<hair>[A-Za-z0-9]+)\.(?P<eyes>[OC])\.(?P<frame>\d+)$";

/// Group names a grammar must define; `eyes` is optional.
const REQUIRED_GROUPS: [&str; 5] = ["gender", "name", "size", "hair", "frame"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Gender {
    Female,
    Male,
}

/// One parsed sample id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct SampleId {
    pub gender: Gender,
    /// Anatomical model name, e.g. `Asher`.
    pub name: String,
    /// Body size code: F (fat), N (normal), S (slim).
    pub size: char,
    /// Hairstyle code; which codes mean bald is part of the run spec.
    pub hair: String,
    /// Eye state (O open, C closed) when the spelling carries it.
    pub eyes: Option<char>,
    /// View number, counted from 0.
    pub frame: u32,
}

impl SampleId {
    /// The model folder name in the underscore spelling, e.g. `M_Asher_N_HD`.
    pub fn model_key(&self) -> String {
        let g = match self.gender {
            Gender::Female => 'F',
            Gender::Male => 'M',
        };
        format!("{g}_{}_{}_{}", self.name, self.size, self.hair)
    }
}

impl fmt::Display for SampleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{:04}", self.model_key(), self.frame)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IdGrammarError {
    #[error("sample id pattern `{pattern}` is not a valid regex ({reason}); fix `sample_id.patterns` in the run spec")]
    BadRegex { pattern: String, reason: String },
    #[error(
        "sample id pattern `{pattern}` lacks the named group `{group}`; every pattern needs (?P<gender>…), (?P<name>…), (?P<size>…), (?P<hair>…) and (?P<frame>…)"
    )]
    MissingGroup { pattern: String, group: &'static str },
    #[error(
        "sample id `{id}` matches none of the id patterns ({patterns}); rename the file or add a matching pattern under `sample_id.patterns` in the run spec"
    )]
    NoMatch { id: String, patterns: String },
    #[error("sample id `{id}`: {field} `{value}` is not valid ({expected}); rename the file or fix the id pattern in the run spec")]
    BadField { id: String, field: &'static str, value: String, expected: &'static str },
}

/// An ordered list of id patterns; the first that matches wins.
#[derive(Debug, Clone)]
pub struct IdGrammar {
    patterns: Vec<Regex>,
}

impl Default for IdGrammar {
    fn default() -> Self {
        Self::new(&[UNDERSCORE_PATTERN.to_string(), DOTTED_PATTERN.to_string()]).expect("built-in id patterns are valid")
    }
}

impl IdGrammar {
    pub fn new(patterns: &[String]) -> Result<Self, IdGrammarError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let regex = Regex::new(pattern)
                .map_err(|e| IdGrammarError::BadRegex { pattern: pattern.clone(), reason: e.to_string().lines().last().unwrap_or("").trim().to_string() })?;
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            if let Some(group) = REQUIRED_GROUPS.iter().find(|g| !names.contains(g)) {
                return Err(IdGrammarError::MissingGroup { pattern: pattern.clone(), group });
            }
            compiled.push(regex);
        }
        Ok(Self { patterns: compiled })
    }

    /// Parses a file name (with or without directories and extension) into a sample id.
    pub fn parse(&self, file_name: &str) -> Result<SampleId, IdGrammarError> {
        let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
        let stem = match base.rfind('.') {
            // Only strip a real image extension: dotted ids contain dots themselves.
            Some(dot) if is_image_extension(&base[dot + 1..]) => &base[..dot],
            _ => base,
        };
        let caps = self.patterns.iter().find_map(|re| re.captures(stem)).ok_or_else(|| IdGrammarError::NoMatch {
            id: stem.to_string(),
            patterns: self.patterns.iter().map(|r| format!("`{}`", r.as_str())).collect::<Vec<_>>().join(", "),
        })?;
        let field = |name: &str| caps.name(name).map(|m| m.as_str()).unwrap_or("");
        let bad = |field: &'static str, value: &str, expected: &'static str| IdGrammarError::BadField {
            id: stem.to_string(),
            field,
            value: value.to_string(),
            expected,
        };
        let gender = match field("gender") {
            "M" | "m" => Gender::Male,
            "F" | "f" => Gender::Female,
            other => return Err(bad("gender", other, "M or F")),
        };
        let name = field("name");
        if name.is_empty() {
            return Err(bad("name", name, "a non-empty model name"));
        }
        let size = single_char(field("size"), "FNS").ok_or_else(|| bad("size", field("size"), "F, N or S"))?;
        let hair = field("hair");
        if hair.is_empty() {
            return Err(bad("hair", hair, "a non-empty hairstyle code"));
        }
        let eyes = match caps.name("eyes").map(|m| m.as_str()) {
            None | Some("") => None,
            Some(e) => Some(single_char(e, "OC").ok_or_else(|| bad("eyes", e, "O or C"))?),
        };
        let frame_text = field("frame");
        let frame = frame_text.parse::<u32>().map_err(|_| bad("frame", frame_text, "a view number"))?;
        Ok(SampleId { gender, name: name.to_string(), size, hair: hair.to_string(), eyes, frame })
    }
}

fn single_char(text: &str, allowed: &str) -> Option<char> {
    let mut chars = text.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && allowed.contains(c)).then_some(c)
}

fn is_image_extension(ext: &str) -> bool {
    matches!(ext.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "webp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let g = IdGrammar::default();
        let a = g.parse("train/image/img_512/M_Asher_N_HD_0017.png").unwrap();
        assert_eq!(a.gender, Gender::Male);
        assert_eq!((a.name.as_str(), a.size, a.hair.as_str(), a.eyes, a.frame), ("Asher", 'N', "HD", None, 17));
        assert_eq!(a.model_key(), "M_Asher_N_HD");
        let b = g.parse("F.Brisen.F.HA.C.0141.jpg").unwrap();
        assert_eq!(b.gender, Gender::Female);
        assert_eq!((b.name.as_str(), b.size, b.hair.as_str(), b.eyes, b.frame), ("Brisen", 'F', "HA", Some('C'), 141));
        assert_eq!(b.to_string(), "F_Brisen_F_HA_0141");
    }

    #[test]
    fn table_of_rejections() {
        let g = IdGrammar::default();
        for bad in [
            "",
            ".png",
            "M_Asher_N_HD.png",
            "X_Asher_N_HD_0017.png",
            "M_Asher_Q_HD_0017.png",
            "M_Asher_N_HD_00x7.png",
            "M_Asher_N_HD_99999999999.png",
            "F.Brisen.F.HA.X.0141.jpg",
            "F.Brisen.F.HA.0141.jpg",
            "M__N_HD_0017.png",
            "M_Asher_N_HD_0017_extra.png",
            "ü_Asher_N_HD_0017.png",
        ] {
            let err = g.parse(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("sample id"), "{bad}: {msg}");
        }
    }

    #[test]
    fn custom_grammar_with_named_groups() {
        let g = IdGrammar::new(&[r"^(?P<name>\w+)-(?P<gender>[mf])-(?P<size>[fns])-(?P<hair>\w+)-v(?P<frame>\d+)$".into()]).unwrap();
        let id = g.parse("dave-m-n-bald-v3.png").unwrap();
        assert_eq!((id.gender, id.size, id.hair.as_str(), id.frame), (Gender::Male, 'N', "bald", 3));
    }

    #[test]
    fn grammar_errors_name_the_problem() {
        let err = IdGrammar::new(&["(?P<gender>[MF]".into()]).unwrap_err();
        assert!(matches!(err, IdGrammarError::BadRegex { .. }), "{err}");
        let err = IdGrammar::new(&["(?P<gender>[MF])_(?P<name>\\w+)".into()]).unwrap_err();
        assert_eq!(err, IdGrammarError::MissingGroup { pattern: "(?P<gender>[MF])_(?P<name>\\w+)".into(), group: "size" });
    }

    #[test]
    fn arbitrary_names_never_panic() {
        // A cheap deterministic fuzz: every byte pattern of short names either parses or errors.
        let g = IdGrammar::default();
        let alphabet = ["M", "F", "_", ".", "N", "0", "1", "HD", "C", "é", "png", "/", "Asher"];
        let mut state = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            let mut name = String::new();
            for _ in 0..(state % 12) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                name.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = g.parse(&name);
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
    }
}
