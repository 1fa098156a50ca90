//! Property tests of the run spec parser through its public entry point only
//! (`RunSpec::parse(text, path)`): whatever the text — the example spec with lines dropped, doubled,
//! cut, or values swapped for other TOML values, or arbitrary text — parsing returns, never panics,
//! and every refusal names the spec file, so the user knows which file to fix, in one line or one
//! line per problem.

use acufarm_core::RunSpec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../examples/acusim.toml");

fn config() -> Config {
    Config { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128), failure_persistence: None, ..Config::default() }
}

/// What a refusal must say: the spec's path, or for an id pattern (an error of the grammar itself)
/// the spec key it came from.
fn check_refusal(text: &str, path: &Path) -> Result<(), TestCaseError> {
    if let Err(e) = RunSpec::parse(text, path) {
        let message = e.to_string();
        let named = message.contains(&path.display().to_string()) || message.contains("sample_id.patterns");
        prop_assert!(named, "refusal does not name the spec: {}", message);
        prop_assert!(!message.trim().is_empty());
        // One line, or a head line and one `  - ` line per problem when there are several; a line
        // break elsewhere only where the user's own text (a key or value echoed back) held one.
        let listed = message.lines().skip(1).all(|line| line.starts_with("  - ")) && message.lines().count() == e.problems().len() + 1;
        prop_assert!(!message.contains('\n') || listed || text.contains("\\n") || text.contains('\u{2028}'), "{}", message);
    }
    Ok(())
}

/// TOML values of every type, including ones no key of the spec accepts.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1",
            "4294967296",
            "1e400",
            "nan",
            "inf",
            "-0.0",
            "0.5",
            "1.0",
            "true",
            "[]",
            "{}",
            "[1, 2]",
            "[2, 1]",
            "[0.9, 0.1]",
            "[\"a\", 1]",
            "1979-05-27T07:32:00Z"
        ])
        .prop_map(String::from),
        "\"[ -~]{0,12}\"",
        "\\[(-?[0-9]{1,3}(\\.[0-9])?, ?){0,3}\\]",
        prop::sample::select(vec![
            "\"dpmpp2m\"",
            "\"\"",
            "\"a/b\"",
            "\"..\"",
            "\"x y\"",
            "\"1-4000000000\"",
            "\"0-4294967295,7\"",
            "\"(\"",
            "\"(?P<gender>[MF])\""
        ])
        .prop_map(String::from),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Drop(prop::sample::Index),
    Double(prop::sample::Index),
    /// Give the key of a `key = value` line another value.
    Value(prop::sample::Index, String),
    /// Add a key (known to some section or not) under a line.
    Insert(prop::sample::Index, String, String),
    /// Uncomment a line (the example's commented `[qa]` section and depth template).
    Uncomment(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let key = prop::sample::select(vec![
        "name",
        "seed",
        "steps",
        "t0",
        "denoise",
        "cfg",
        "views",
        "patterns",
        "variants",
        "max_attempts",
        "max_lost",
        "sampler",
        "unknown_key",
        "[qa]",
    ]);
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Drop),
        any::<prop::sample::Index>().prop_map(Edit::Double),
        (any::<prop::sample::Index>(), toml_value()).prop_map(|(i, v)| Edit::Value(i, v)),
        (any::<prop::sample::Index>(), key.prop_map(String::from), toml_value()).prop_map(|(i, k, v)| Edit::Insert(i, k, v)),
        any::<prop::sample::Index>().prop_map(Edit::Uncomment),
    ]
}

fn apply(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = EXAMPLE.lines().map(String::from).collect();
    for e in edits {
        match e {
            Edit::Drop(i) if !lines.is_empty() => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Double(i) if !lines.is_empty() => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Edit::Value(i, value) if !lines.is_empty() => {
                let at = i.index(lines.len());
                if let Some((key, _)) = lines[at].split_once(" = ") {
                    lines[at] = format!("{key} = {value}");
                }
            }
            Edit::Insert(i, key, value) => {
                let at = i.index(lines.len() + 1);
                lines.insert(at, if key.starts_with('[') { key.clone() } else { format!("{key} = {value}") });
            }
            Edit::Uncomment(i) if !lines.is_empty() => {
                let at = i.index(lines.len());
                lines[at] = lines[at].trim_start_matches(['#', ' ']).to_string();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn edited_example_specs_parse_or_name_the_file(edits in prop::collection::vec(edit(), 1..6)) {
        check_refusal(&apply(&edits), Path::new("specs/my run.toml"))?;
    }

    #[test]
    fn cut_specs_parse_or_name_the_file(cut in any::<prop::sample::Index>()) {
        let mut at = cut.index(EXAMPLE.len() + 1);
        while !EXAMPLE.is_char_boundary(at) {
            at -= 1;
        }
        check_refusal(&EXAMPLE[..at], Path::new("cut.toml"))?;
    }

    #[test]
    fn arbitrary_text_parses_or_names_the_file(text in "\\PC{0,200}|[\\[\\]a-z_=\" .0-9,{}\n#-]{0,200}", dir in "[a-zé ]{1,8}") {
        check_refusal(&text, &Path::new(&dir).join("run spec.toml"))?;
    }
}

#[test]
fn deeply_nested_values_are_refused_not_overflowed() {
    // A stack overflow would abort the coordinator's submit handler, not just refuse the spec.
    for depth in [1_000, 100_000] {
        for (open, close) in [("[", "]"), ("{ a = ", " }")] {
            let text = format!("{}\nx = {}1{}\n", EXAMPLE, open.repeat(depth), close.repeat(depth));
            let message = RunSpec::parse(&text, Path::new("deep.toml")).unwrap_err().to_string();
            assert!(message.contains("deep.toml"), "{message}");
        }
    }
}

#[test]
fn many_view_ranges_parse_at_once() {
    // Ten thousand copies of a million-frame range once meant ten billion set insertions (a hang);
    // kept as ranges they merge into one. The bound is loose: it only has to tell a hang from work.
    let views = vec!["0-1000000"; 10_000].join(",");
    let text = EXAMPLE.replace("views = \"1-11,30-45,108-118,138-143\"", &format!("views = \"{views},1-4000000000\""));
    let started = std::time::Instant::now();
    let result = RunSpec::parse(&text, Path::new("views.toml"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    if let Err(e) = result {
        assert!(e.to_string().contains("views.toml"), "{e}");
    }
}
