//! Property tests of the `[evaluate]` reader (`acufarm evaluate --config`): any valid section
//! written as TOML reads back equal; edited or arbitrary text is read or refused with the file
//! named, never a panic.

use acufarm_core::evaluate::{Arm, Backbone, Device, EvaluateSection, GroupBy, from_toml};
use proptest::prelude::*;
use proptest::test_runner::Config;

const FULL: &str = include_str!("../../fuzz/seeds/evaluate_config/full.toml");

fn config() -> Config {
    Config { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128), failure_persistence: None, ..Config::default() }
}

fn section() -> impl Strategy<Value = EvaluateSection> {
    (
        prop::sample::subsequence(Arm::ALL.to_vec(), 1..=3),
        prop::sample::select(Backbone::ALL.to_vec()),
        prop::sample::select(Device::ALL.to_vec()),
        prop::sample::select(GroupBy::ALL.to_vec()),
        (1u32..500, 16u32..2048, 1u32..128, 1u32..10, 1u32..8),
        (1e-7f64..1.0, 0.0f64..0.1, 0.01f64..0.99, 0.01f64..0.99, any::<u64>()),
        prop::option::of("[a-z/]{1,20}\\.pth"),
    )
        .prop_map(|(train, backbone, device, group_by, (epochs, image_size, batch_size, seeds, folds), (lr, wd, test, val, split_seed), weights)| {
            EvaluateSection {
                train,
                backbone,
                device,
                group_by,
                epochs,
                image_size,
                batch_size,
                seeds,
                folds,
                learning_rate: lr,
                weight_decay: wd,
                test_fraction: test,
                val_fraction: val,
                split_seed: split_seed >> 1,
                weights,
                ..EvaluateSection::default()
            }
        })
}

#[derive(serde::Serialize)]
struct File<'a> {
    evaluate: &'a EvaluateSection,
}

fn refused_with_the_file(text: &str) -> Result<(), TestCaseError> {
    match from_toml(text, "cfg/eval one.toml") {
        Ok((s, _)) => prop_assert!(s.problems().is_empty()),
        Err(e) => prop_assert!(e.to_string().starts_with("cfg/eval one.toml: "), "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_written_section_reads_back_equal(s in section()) {
        let text = toml::to_string(&File { evaluate: &s }).unwrap();
        let (back, patterns) = from_toml(&text, "e.toml").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, s);
        prop_assert!(patterns.is_empty());
    }

    #[test]
    fn edited_configs_are_read_or_refused_with_the_file(drop in prop::collection::vec(any::<prop::sample::Index>(), 0..4), value in "[0-9a-z\"\\[\\]., -]{0,12}", at in any::<prop::sample::Index>()) {
        let mut lines: Vec<String> = FULL.lines().map(String::from).collect();
        for i in drop {
            let n = lines.len();
            lines.remove(i.index(n));
        }
        let n = lines.len();
        let line = &mut lines[at.index(n)];
        if let Some((key, _)) = line.split_once(" = ") {
            *line = format!("{key} = {value}");
        }
        refused_with_the_file(&lines.join("\n"))?;
    }

    #[test]
    fn arbitrary_text_is_read_or_refused_with_the_file(text in "\\PC{0,200}|[\\[\\]a-z_=\" .0-9,{}\n#-]{0,200}") {
        refused_with_the_file(&text)?;
    }
}
