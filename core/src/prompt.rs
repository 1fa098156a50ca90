//! Prompt-set choice: which of the four prompt sets (female, male, bald female, bald male) a
//! sample gets, from its parsed id and the spec's list of bald hair codes.

use crate::sample_id::{Gender, SampleId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptCategory {
    Female,
    Male,
    BaldFemale,
    BaldMale,
}

impl PromptCategory {
    /// The set a sample gets: bald when its hair code is one of `bald_hair` (case-insensitive).
    pub fn for_sample(id: &SampleId, bald_hair: &[String]) -> Self {
        let bald = bald_hair.iter().any(|code| code.eq_ignore_ascii_case(&id.hair));
        match (id.gender, bald) {
            (Gender::Female, false) => Self::Female,
            (Gender::Male, false) => Self::Male,
            (Gender::Female, true) => Self::BaldFemale,
            (Gender::Male, true) => Self::BaldMale,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Female => "female",
            Self::Male => "male",
            Self::BaldFemale => "bald_female",
            Self::BaldMale => "bald_male",
        }
    }
}

/// A positive prompt and the negative prompt used for the unconditional branch of CFG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PromptPair {
    pub positive: String,
    #[serde(default)]
    pub negative: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdGrammar;

    #[test]
    fn four_sets_from_gender_and_hair() {
        let g = IdGrammar::default();
        let bald = vec!["BD".to_string()];
        let cases = [
            ("F_Grace_N_HA_0001.png", PromptCategory::Female),
            ("M_Asher_N_HD_0001.png", PromptCategory::Male),
            ("F_Grace_N_bd_0001.png", PromptCategory::BaldFemale),
            ("M.Novak.S.BD.O.0002.png", PromptCategory::BaldMale),
        ];
        for (name, want) in cases {
            assert_eq!(PromptCategory::for_sample(&g.parse(name).unwrap(), &bald), want, "{name}");
        }
    }
}
