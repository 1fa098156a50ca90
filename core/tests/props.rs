//! Property tests of core's parsers of user input: sample ids (both spellings and user grammars),
//! view filters (against a naive set) and label JSON. Case counts stay modest so the suite stays
//! fast; `PROPTEST_CASES` raises them for a longer campaign (scripts/fuzz.sh does).

use acufarm_core::manifest::{Keypoint, parse_label};
use acufarm_core::views::ViewFilter;
use acufarm_core::{Gender, IdGrammar, SampleId};
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::collections::BTreeSet;

fn config() -> Config {
    Config { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256), failure_persistence: None, ..Config::default() }
}

/// Ids the built-in spellings can carry: names and hair codes from their alphabets, any frame.
fn sample_id() -> impl Strategy<Value = SampleId> {
    (any::<bool>(), "[A-Za-z][A-Za-z0-9-]{0,11}", prop::sample::select(vec!['F', 'N', 'S']), "[A-Za-z0-9]{1,6}", any::<u32>())
        .prop_map(|(male, name, size, hair, frame)| SampleId { gender: if male { Gender::Male } else { Gender::Female }, name, size, hair, eyes: None, frame })
}

fn letter(gender: Gender) -> char {
    if gender == Gender::Male { 'M' } else { 'F' }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn display_parses_back_to_the_same_id(id in sample_id(), dir in "([a-z0-9_]{1,6}/){0,3}", ext in prop::sample::select(vec!["", ".png", ".PNG", ".jpg", ".jpeg", ".webp"])) {
        let g = IdGrammar::default();
        let printed = id.to_string();
        prop_assert_eq!(g.parse(&printed).unwrap(), id.clone());
        prop_assert_eq!(g.parse(&format!("{dir}{printed}{ext}")).unwrap(), id);
    }

    #[test]
    fn dotted_spelling_parses_with_its_eyes(id in sample_id(), eyes in prop::sample::select(vec!['O', 'C'])) {
        let dotted = format!("{}.{}.{}.{}.{eyes}.{:04}.jpg", letter(id.gender), id.name, id.size, id.hair, id.frame);
        let parsed = IdGrammar::default().parse(&dotted).unwrap();
        prop_assert_eq!(parsed.to_string(), id.to_string());
        prop_assert_eq!(parsed, SampleId { eyes: Some(eyes), ..id });
    }

    /// A user grammar with its own separator and field order reads back every id written in it.
    #[test]
    fn configured_grammars_read_their_own_spelling(
        id in sample_id(),
        order in Just(vec!["gender", "name", "size", "hair", "frame"]).prop_shuffle(),
        sep in prop::sample::select(vec!["-", "+", "~", "=", "__", " "]),
    ) {
        let id = SampleId { name: id.name.replace('-', ""), ..id };
        let group = |field: &str| match field {
            "gender" => r"(?P<gender>[MFmf])",
            "name" => r"(?P<name>[A-Za-z][A-Za-z0-9]*)",
            "size" => r"(?P<size>[FNSfns])",
            "hair" => r"(?P<hair>[A-Za-z0-9]+)",
            _ => r"(?P<frame>[0-9]+)",
        };
        let pattern = format!("^{}$", order.iter().map(|f| group(f)).collect::<Vec<_>>().join(&regex_escape(sep)));
        let value = |field: &str| match field {
            "gender" => letter(id.gender).to_ascii_lowercase().to_string(),
            "name" => id.name.clone(),
            "size" => id.size.to_ascii_lowercase().to_string(),
            "hair" => id.hair.clone(),
            _ => format!("{:06}", id.frame),
        };
        let name = order.iter().map(|f| value(f)).collect::<Vec<_>>().join(sep);
        let grammar = IdGrammar::new(std::slice::from_ref(&pattern)).unwrap();
        prop_assert_eq!(grammar.parse(&format!("shots/{name}.png")).unwrap(), id, "{} on {}", pattern, name);
    }

    #[test]
    fn any_name_parses_or_names_the_id(name in "\\PC{0,40}|[MF_.NSH0-9C/]{0,30}") {
        match IdGrammar::default().parse(&name) {
            Ok(id) => prop_assert_eq!(IdGrammar::default().parse(&id.to_string()).unwrap(), SampleId { eyes: None, ..id }),
            Err(e) => prop_assert!(e.to_string().contains("sample id"), "{}", e),
        }
    }

    #[test]
    fn any_pattern_builds_or_is_refused_with_a_reason(pattern in "[()?P<>a-z\\[\\]\\\\d+*.^$|{}0-9]{0,40}", name in "\\PC{0,20}") {
        match IdGrammar::new(std::slice::from_ref(&pattern)) {
            Ok(g) => { let _ = g.parse(&name); }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(&pattern) && (message.contains("sample_id.patterns") || message.contains("every pattern needs")), "{}", message);
            }
        }
    }
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == ' ' || c == '_' { c.to_string() } else { format!("\\{c}") }).collect()
}

/// A filter part as the user writes it: one frame or an inclusive range.
#[derive(Debug, Clone)]
enum Part {
    One(u32),
    Range(u32, u32),
}

fn parts(max: u32) -> impl Strategy<Value = Vec<Part>> {
    let part = prop_oneof![(0..=max).prop_map(Part::One), (0..=max, 0..=max).prop_map(|(a, b)| Part::Range(a.min(b), a.max(b)))];
    prop::collection::vec(part, 1..12)
}

/// The filter text with the spaces users put around numbers and commas.
fn render(parts: &[Part], spaces: &[usize]) -> String {
    let pad = |i: usize| " ".repeat(spaces.get(i % spaces.len().max(1)).copied().unwrap_or(0));
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Part::One(n) => format!("{}{n}{}", pad(i), pad(i + 1)),
            Part::Range(a, b) => format!("{}{a}{}-{}{b}{}", pad(i), pad(i + 2), pad(i + 3), pad(i + 1)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn naive(parts: &[Part]) -> BTreeSet<u32> {
    parts
        .iter()
        .flat_map(|p| match *p {
            Part::One(n) => n..=n,
            Part::Range(a, b) => a..=b,
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn views_match_a_naive_set(parts in parts(300), spaces in prop::collection::vec(0usize..3, 1..5)) {
        let text = render(&parts, &spaces);
        let filter = ViewFilter::parse(&text).unwrap();
        let set = naive(&parts);
        prop_assert_eq!(filter.len(), Some(set.len()));
        for frame in 0..=310 {
            prop_assert_eq!(filter.contains(frame), set.contains(&frame), "frame {} in {:?}", frame, text);
        }
        // The canonical ranges written back are the same filter.
        let canonical = filter.ranges().unwrap().iter().map(|r| format!("{}-{}", r.start(), r.end())).collect::<Vec<_>>().join(",");
        prop_assert_eq!(ViewFilter::parse(&canonical).unwrap(), filter);
    }

    /// Ranges anywhere in u32 (up to 4 billion views) cost what their text costs.
    #[test]
    fn huge_views_stay_exact_and_cheap(parts in parts(u32::MAX)) {
        let text = render(&parts, &[0]);
        let filter = ViewFilter::parse(&text).unwrap();
        let ranges = filter.ranges().unwrap();
        prop_assert!(ranges.len() <= parts.len());
        prop_assert!(ranges.windows(2).all(|w| u64::from(*w[0].end()) + 1 < u64::from(*w[1].start())), "{:?}", ranges);
        let inside = |f: u32| parts.iter().any(|p| match *p { Part::One(n) => n == f, Part::Range(a, b) => (a..=b).contains(&f) });
        for p in &parts {
            let (a, b) = match *p { Part::One(n) => (n, n), Part::Range(a, b) => (a, b) };
            for f in [Some(a), Some(b), Some(a + (b - a) / 2), a.checked_sub(1), b.checked_add(1)].into_iter().flatten() {
                prop_assert_eq!(filter.contains(f), inside(f), "frame {} in {:?}", f, text);
            }
        }
    }

    #[test]
    fn any_view_text_parses_or_is_refused_naming_it(text in "[0-9 ,\\-]{0,30}|\\PC{0,20}") {
        if let Err(e) = ViewFilter::parse(&text) {
            let message = e.to_string();
            prop_assert!(message.contains(&format!("`{text}`")) && message.contains("write frame numbers"), "{}", message);
            prop_assert!(!message.contains('\n') || text.contains('\n'), "{}", message);
        }
    }
}

fn keypoint() -> impl Strategy<Value = Keypoint> {
    let coordinate = prop_oneof![-2.0f64..2.0, any::<f64>().prop_filter("JSON numbers are finite", |v| v.is_finite())];
    ("\\PC{0,16}", coordinate.clone(), coordinate.clone(), prop::option::of(coordinate.clone()), prop::option::of(coordinate))
        .prop_map(|(name, x, y, n, h)| Keypoint { name, x, y, n, h })
}

/// An AcuSim label file holding these keypoints, with extra fields the parser must ignore.
fn label_text(points: &[Keypoint]) -> String {
    let label: Vec<_> = points
        .iter()
        .map(|p| {
            let mut c = serde_json::json!({"x": p.x, "y": p.y, "visible": true});
            if let Some(n) = p.n {
                c["n"] = n.into();
            }
            if let Some(h) = p.h {
                c["h"] = h.into();
            }
            serde_json::json!({"name": p.name, "coordinate": c, "group": "face"})
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({"image": "x.png", "label": label})).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn labels_round_trip_exactly(points in prop::collection::vec(keypoint(), 0..20)) {
        prop_assert_eq!(parse_label(label_text(&points).as_bytes(), "train/label/a.json").unwrap(), points);
    }

    #[test]
    fn damaged_labels_are_refused_naming_the_file(points in prop::collection::vec(keypoint(), 1..6), cut in any::<prop::sample::Index>(), byte in any::<u8>(), at in any::<prop::sample::Index>()) {
        let mut bytes = label_text(&points).into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Err(e) = parse_label(&bytes, "train/label/damaged.json") {
            let message = e.to_string();
            prop_assert!(message.contains("train/label/damaged.json") && !message.contains('\n'), "{}", message);
        }
    }

    #[test]
    fn any_json_value_parses_or_is_refused(value in json_value()) {
        let text = serde_json::to_vec(&value).unwrap();
        if let Ok(points) = parse_label(&text, "any.json") {
            let list = value["label"].as_array().unwrap();
            prop_assert_eq!(points.len(), list.len());
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-10.0f64..10.0).prop_map(serde_json::Value::from),
        "[a-z]{0,4}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let key = prop::sample::select(vec!["label", "name", "coordinate", "x", "y", "n", "h", "other"]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.prop_map(String::from), inner, 0..5).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn deeply_nested_labels_are_refused_not_overflowed() {
    // serde_json's recursion limit turns this into an error rather than a stack overflow.
    let text = format!("{{\"label\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let message = parse_label(text.as_bytes(), "deep.json").unwrap_err().to_string();
    assert!(message.contains("deep.json") && message.contains("recursion limit"), "{message}");
}

#[test]
fn label_coordinates_parse_to_the_exact_f64() {
    // Found by labels_round_trip_exactly: serde_json's default float parser returned 3.897372282543752e96
    // for 3.8973722825437523e96 (one ulp off), so metadata.jsonl disagreed with the label file.
    for value in [3.8973722825437523e96f64, 0.30000000000000004, 2.2250738585072014e-308, 5e-324, 1.7976931348623157e308, 0.6171875, -0.9072265625e-7] {
        let text = format!(r#"{{"label": [{{"name": "p", "coordinate": {{"x": {value:e}, "y": {value}, "n": {value:?}}}}}]}}"#);
        let point = &parse_label(text.as_bytes(), "exact.json").unwrap()[0];
        assert_eq!((point.x.to_bits(), point.y.to_bits(), point.n.map(f64::to_bits)), (value.to_bits(), value.to_bits(), Some(value.to_bits())), "{text}");
    }
}
