//! Value checks of a parsed run spec. Each problem is one sentence naming the key and what is
//! allowed; all of them are collected, none stops the others.

use super::{Param, RunSpec};

/// The run-name grammar, for messages: a name becomes a storage prefix (`_staging/<name>/`,
/// `_acufarm/<name>/`) and a file name (`<state-dir>/<name>.sqlite`), so it may not hold `/`, `..`
/// or anything a shell or URL would mangle.
pub const RUN_NAME_RULE: &str = "a lower-case letter or digit followed by up to 62 of a-z, 0-9, `.`, `_` and `-`, without `..`";

/// Checks a run name against [`RUN_NAME_RULE`].
pub fn check_run_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 63 && !name.contains("..") {
        Ok(())
    } else {
        Err(format!("`run.name` {name:?} is not a valid run name; use {RUN_NAME_RULE} (e.g. \"acusim-relight\")"))
    }
}

/// A path the farm joins under a storage root: relative, no `..`, no empty or `.` parts.
fn plain_relative(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/') && !path.contains('\\') && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Checks a numeric parameter: every end in the allowed set, and `lo ≤ hi`.
fn param<T: Copy + PartialOrd + std::fmt::Display>(problems: &mut Vec<String>, key: &str, p: Option<Param<T>>, ok: impl Fn(T) -> bool, allowed: &str) {
    let Some(p) = p else { return };
    for v in p.ends() {
        if !ok(v) {
            problems.push(format!("`{key}` is {v}, but it must be {allowed}"));
        }
    }
    if let Param::Range([lo, hi]) = p
        && lo > hi
    {
        problems.push(format!("`{key}` range [{lo}, {hi}] runs backwards; write [low, high]"));
    }
}

pub(super) fn check(spec: &RunSpec, problems: &mut Vec<String>) {
    if let Err(message) = check_run_name(&spec.run.name) {
        problems.push(message);
    }
    if !(1..=1000).contains(&spec.run.variants) {
        problems.push(format!("`run.variants` is {}, but it must be from 1 to 1000", spec.run.variants));
    }
    if let Some(dataset) = &spec.dataset {
        for (key, url) in [("dataset.input", &dataset.input), ("dataset.output", &dataset.output)] {
            if !(url.starts_with("file://") || url.starts_with("s3://")) {
                problems.push(format!("`{key}` is {url:?}; give a `file:///abs/path`, `file://relative/path` or `s3://bucket/prefix` URL"));
            }
        }
        if dataset.images.is_empty() {
            problems.push("`dataset.images` is empty; list the folders (relative to the input root) whose images are rendered".into());
        }
        for (key, list) in [("dataset.images", &dataset.images), ("dataset.copy", &dataset.copy)] {
            for path in list.iter().filter(|p| !plain_relative(p)) {
                problems.push(format!("`{key}` names {path:?}, which is not a plain relative path; write it relative to the input root, without `..`"));
            }
        }
    }
    for file in spec.shipped_files().iter().filter(|p| !plain_relative(p)) {
        problems.push(format!(
            "the spec names the file {file:?}, which is not a plain relative path; give scene and background images relative to the spec, without `..`"
        ));
    }

    let s = &spec.sampler;
    if s.t0.is_some() && s.denoise.is_some() {
        problems.push("set either `sampler.t0` or `sampler.denoise`, not both".into());
    }
    param(problems, "sampler.steps", s.steps, |v| (1..=10_000).contains(&v), "from 1 to 10000");
    param(problems, "sampler.t0", s.t0, |v| (0.0..1.0).contains(&v), "in [0, 1) (the fraction of the schedule skipped)");
    param(problems, "sampler.denoise", s.denoise, |v| v > 0.0 && v <= 1.0, "in (0, 1] (1 runs the full schedule)");
    param(problems, "sampler.cfg", s.cfg, |v| v > 0.0 && v.is_finite(), "a finite number above 0");
    let c = &spec.conditioning;
    param(problems, "conditioning.ipa_weight", c.ipa_weight, |v| v >= 0.0 && v.is_finite(), "a finite number ≥ 0");
    param(problems, "conditioning.ic_multiplier", c.ic_multiplier, |v| v >= 0.0 && v.is_finite(), "a finite number ≥ 0");

    let r = &spec.retry;
    if r.max_attempts == 0 {
        problems.push("`retry.max_attempts` is 0, but it must be at least 1".into());
    }
    for (key, v) in [("retry.backoff_base_s", r.backoff_base_s), ("retry.backoff_max_s", r.backoff_max_s)] {
        if !(v >= 0.0 && v.is_finite()) {
            problems.push(format!("`{key}` is {v}, but it must be a finite number of seconds ≥ 0"));
        }
    }
    if r.backoff_base_s > r.backoff_max_s {
        problems.push(format!(
            "`retry.backoff_base_s` ({}) is above `retry.backoff_max_s` ({}); the first delay cannot exceed the largest",
            r.backoff_base_s, r.backoff_max_s
        ));
    }
    if let Some(qa) = &spec.qa {
        qa.validate(problems);
    }
    if let Err(e) = crate::views::ViewFilter::parse(&spec.filters.views) {
        problems.push(format!("`filters.views`: {e}"));
    }
    if let Err(e) = spec.grammar() {
        problems.push(format!("`sample_id.patterns`: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names() {
        for good in ["a", "acusim-relight", "run_2.b", "0", &"x".repeat(63)] {
            assert!(check_run_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "a..b", "x y", "-a", ".a", "_a", "A", "Ünï", &"x".repeat(64), "a\\b", "a\0"] {
            let err = check_run_name(bad).unwrap_err();
            assert!(err.contains("`run.name`") && err.contains("not a valid run name"), "{err}");
        }
    }

    #[test]
    fn relative_paths() {
        for good in ["scenes/warm_room.png", "a.png", "x/y/z.jpg"] {
            assert!(plain_relative(good), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x.png", "scenes/../../x.png", "a//b.png", "./a.png", "c:\\x.png"] {
            assert!(!plain_relative(bad), "{bad}");
        }
    }
}
