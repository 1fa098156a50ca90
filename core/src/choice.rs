//! The named choices of a run spec and a job: sampler, scheduler, foreground source and `fbc`
//! background. Defined once here; specs, job specs (stored as JSON), the CLI flags and the worker's
//! pipeline all use these types, so a typo is refused when a spec is read, never on a worker.
//! Each serializes as the same lower-case string users write.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A choice that is not one of the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`; choose one of {allowed}")]
pub struct UnknownChoice {
    pub what: &'static str,
    pub given: String,
    pub allowed: &'static str,
}

/// Declares a closed set of names: the enum, its `NAMES`, `FromStr`, `Display`, serde as a string
/// and a JSON Schema `enum`.
macro_rules! named_choice {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every accepted name, in the order they are documented.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// The accepted names, one per variant (for flag parsers).
            pub const STRS: &'static [&'static str] = &[$($text),+];
            /// The accepted names, for messages and help texts.
            pub const NAMES: &'static str = concat!($($text, ", "),+);

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            fn allowed() -> &'static str {
                Self::NAMES.trim_end_matches(", ")
            }
        }

        impl FromStr for $name {
            type Err = UnknownChoice;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(UnknownChoice { what: $what, given: other.to_string(), allowed: Self::allowed() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use named_choice;

named_choice!(
    /// The k-diffusion sampler of every UNet step.
    Sampler, "sampler", {
        /// DPM-Solver++(2M), ComfyUI's `dpmpp_2m` (the workflow's sampler).
        DpmPp2m => "dpmpp_2m",
        Euler => "euler",
    }
);

named_choice!(
    /// How the sigma schedule is spaced (ComfyUI's scheduler names).
    Scheduler, "scheduler", {
        /// Uniform in timestep, ComfyUI's `sgm_uniform` (the workflow's scheduler).
        SgmUniform => "sgm_uniform",
        Normal => "normal",
        Karras => "karras",
    }
);

named_choice!(
    /// Where IC-Light's foreground mask comes from.
    Foreground, "foreground mode", {
        /// Pixels close to the border's median colour are background (alpha when the image has one).
        ColorKey => "color_key",
        /// `depth > 0` is foreground; needs `dataset.depth_template`.
        Depth => "depth",
        /// The whole image is foreground.
        None => "none",
    }
);

/// The `fbc` bundles' background latent: the job's scene, flat gray, or an image file (a path
/// relative to the spec, shipped with it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Background {
    Scene,
    Gray,
    Image(String),
}

impl Background {
    /// The file it names, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::Image(path) => Some(path),
            _ => None,
        }
    }
}

impl From<String> for Background {
    fn from(s: String) -> Self {
        match s.as_str() {
            "scene" => Self::Scene,
            "gray" => Self::Gray,
            _ => Self::Image(s),
        }
    }
}

impl From<Background> for String {
    fn from(b: Background) -> Self {
        b.to_string()
    }
}

impl fmt::Display for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Scene => "scene",
            Self::Gray => "gray",
            Self::Image(path) => path,
        })
    }
}

impl schemars::JsonSchema for Background {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Background".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "`scene` (the job's scene image), `gray`, or an image path relative to the spec"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_typos_name_the_choices() {
        for s in Sampler::ALL {
            assert_eq!(s.as_str().parse::<Sampler>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in Scheduler::ALL {
            assert_eq!(s.to_string().parse::<Scheduler>().unwrap(), *s);
        }
        let err = "dpmpp2m".parse::<Sampler>().unwrap_err().to_string();
        assert_eq!(err, "unknown sampler `dpmpp2m`; choose one of dpmpp_2m, euler");
        let err = "colour_key".parse::<Foreground>().unwrap_err().to_string();
        assert_eq!(err, "unknown foreground mode `colour_key`; choose one of color_key, depth, none");
    }

    #[test]
    fn background_is_a_plain_string_in_json() {
        for (text, want) in [("scene", Background::Scene), ("gray", Background::Gray), ("bg/wall.png", Background::Image("bg/wall.png".into()))] {
            let json = format!("\"{text}\"");
            assert_eq!(serde_json::from_str::<Background>(&json).unwrap(), want);
            assert_eq!(serde_json::to_string(&want).unwrap(), json);
        }
    }
}
