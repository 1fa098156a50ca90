//! Landmark drift end to end through the real binary: `acufarm drift` on real face images
//! (scikit-image's astronaut, from the MediaPipe test environment that scripts/setup.sh installs)
//! moved, relit and damaged in known ways; and the QA gate in `acufarm run` on the tiny bundle,
//! whose outputs are noise (no face), so every face source is re-generated and then fails `qa`.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use image::{Rgb, RgbImage, imageops::FilterType};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::dataset::astronaut;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The image moved by (dx, dy) pixels, edges replicated.
fn shift(img: &RgbImage, dx: i32, dy: i32) -> RgbImage {
    let (w, h) = (img.width() as i32, img.height() as i32);
    RgbImage::from_fn(img.width(), img.height(), |x, y| *img.get_pixel((x as i32 - dx).clamp(0, w - 1) as u32, (y as i32 - dy).clamp(0, h - 1) as u32))
}

fn map_levels(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let lut: Vec<u8> = (0..=255).map(|v| f(v as f32 / 255.0).mul_add(255.0, 0.5).clamp(0.0, 255.0) as u8).collect();
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y);
        Rgb([lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]])
    })
}

/// `img` scaled by `s` and pasted at (x, y) on a gray 512² canvas.
fn on_canvas(img: &RgbImage, s: f32, x: i64, y: i64) -> RgbImage {
    let small = image::imageops::resize(img, (img.width() as f32 * s) as u32, (img.height() as f32 * s) as u32, FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(512, 512, Rgb([128, 128, 128]));
    image::imageops::replace(&mut canvas, &small, x, y);
    canvas
}

struct Pairs {
    dir: tempfile::TempDir,
}

impl Pairs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("orig")).unwrap();
        std::fs::create_dir_all(dir.path().join("aug")).unwrap();
        Self { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn put(&self, name: &str, original: &RgbImage, augmented: &RgbImage) {
        original.save(self.path("orig").join(name)).unwrap();
        augmented.save(self.path("aug").join(name)).unwrap();
    }
    fn drift(&self) -> (Output, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_acufarm"))
            .args(["drift", "--original"])
            .arg(self.path("orig"))
            .arg("--augmented")
            .arg(self.path("aug"))
            .arg("--out")
            .arg(self.path("report"))
            .output()
            .unwrap();
        let report = std::fs::read(self.path("report/drift.json")).ok().map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or(Value::Null);
        (out, report)
    }
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn pair<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["pair_results"].as_array().unwrap().iter().find(|p| p["original"] == name).unwrap_or_else(|| panic!("no pair {name} in {report}"))
}

fn drifts(pair: &Value) -> Vec<f64> {
    pair["drift_px"].as_object().unwrap().values().filter_map(Value::as_f64).collect()
}

#[test]
fn a_shift_is_reported_as_its_length_and_the_report_files_are_written() {
    let face = astronaut();
    let p = Pairs::new();
    let shifts = [("right.png", 5, 0), ("up.png", 0, -8), ("diagonal.png", 6, 8), ("still.png", 0, 0)];
    for (name, dx, dy) in shifts {
        p.put(name, &face, &shift(&face, dx, dy));
    }
    let (out, report) = p.drift();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report["measured"], 4, "{report}");
    for (name, dx, dy) in shifts {
        let expected = ((dx * dx + dy * dy) as f64).sqrt();
        let d = drifts(pair(&report, name));
        assert_eq!(d.len(), 8, "{name}: all 8 points found");
        for v in &d {
            assert!((v - expected).abs() <= 1.0, "{name}: drift {v:.2} px for a shift of {expected:.2} px ({d:?})");
        }
    }
    // The summary table, the CSV (one row per pair and point) and the plots.
    let md = std::fs::read_to_string(p.path("report/drift.md")).unwrap();
    assert!(md.contains("| 7 | Philtrum | 4 |"), "{md}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("| 8 | NasalBridgeMid | 4 |"));
    let csv = std::fs::read_to_string(p.path("report/drift.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 8);
    assert!(csv.lines().any(|l| l.starts_with("right.png,right.png,measured,,,RE_outer,")), "{csv}");
    for plot in ["drift_points.png", "worst_pairs.png"] {
        let img = image::open(p.path("report").join(plot)).unwrap_or_else(|e| panic!("{plot}: {e}"));
        assert!(img.width() > 100 && img.height() > 100);
    }
    let io = report["statistics"]["points"][0]["normalized"]["max"].as_f64().unwrap();
    assert!(io > 0.0 && io < 0.5, "drift per inter-ocular distance is a small fraction: {io}");
}

#[test]
fn brightness_and_gamma_barely_move_the_landmarks() {
    let face = astronaut();
    let p = Pairs::new();
    let cases: [(&str, Box<dyn Fn(f32) -> f32>); 4] = [
        ("dark.png", Box::new(|v| v * 0.7)),
        ("bright.png", Box::new(|v| v * 1.3)),
        ("gamma_0.8.png", Box::new(|v| v.powf(0.8))),
        ("gamma_1.25.png", Box::new(|v| v.powf(1.25))),
    ];
    for (name, f) in &cases {
        p.put(name, &face, &map_levels(&face, f));
    }
    let (out, report) = p.drift();
    assert!(out.status.success(), "{}", text(&out));
    for (name, _) in &cases {
        let d = drifts(pair(&report, name));
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!(d.len() == 8 && mean <= 1.0, "{name}: mean drift {mean:.2} px ({d:?})");
    }
}

#[test]
fn each_discard_rule_is_counted_with_its_side() {
    let face = astronaut();
    let gray = RgbImage::from_pixel(512, 512, Rgb([128, 128, 128]));
    let p = Pairs::new();
    // No face on the augmented side.
    p.put("no_face.png", &face, &gray);
    // The face shrunk to 3/4 (about 69 px wide; the short-range detector still finds it).
    let small = on_canvas(&face, 0.75, 20, 20);
    p.put("small.png", &small, &small);
    // A face so small (~30 px) that the detector still fires but the landmark model's presence
    // score is far below 0.5: no point counts as found.
    p.put("faint.png", &face, &on_canvas(&face, 0.3, 180, 180));
    let (out, report) = p.drift();
    assert!(out.status.success(), "{}", text(&out));
    let status = |name: &str| {
        let r = pair(&report, name);
        (r["status"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap_or("").to_string(), r["side"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(status("no_face.png"), ("discarded".into(), "no_face".into(), "augmented".into()));
    assert_eq!(status("small.png"), ("discarded".into(), "small_face".into(), "both".into()), "{}", pair(&report, "small.png"));
    assert_eq!(status("faint.png"), ("discarded".into(), "few_points".into(), "augmented".into()), "{}", pair(&report, "faint.png"));
    assert_eq!(report["discarded"], 3);
    let md = std::fs::read_to_string(p.path("report/drift.md")).unwrap();
    for line in
        ["| no face detected | 0 | 1 | 0 |", "| face narrower than 80 px | 0 | 0 | 1 |", "| fewer than 6 of 8 points found on both images | 0 | 1 | 0 |"]
    {
        assert!(md.contains(line), "{line}\n{md}");
    }
}

#[test]
fn bad_inputs_give_counts_and_clear_messages() {
    let face = astronaut();
    let p = Pairs::new();
    p.put("good.png", &face, &shift(&face, 2, 0));
    std::fs::write(p.path("orig/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    face.save(p.path("aug/broken.png")).unwrap();
    face.save(p.path("orig/only_here.png")).unwrap();
    face.save(p.path("aug/elsewhere.jpg")).unwrap();
    std::fs::write(p.path("aug/notes.txt"), "not an image").unwrap();
    let (out, report) = p.drift();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((report["pairs"].as_u64(), report["measured"].as_u64(), report["unreadable"].as_u64()), (Some(2), Some(1), Some(1)), "{report}");
    assert_eq!(report["original_only"], serde_json::json!(["only_here.png"]));
    assert_eq!(report["augmented_only"], serde_json::json!(["elsewhere.jpg"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreadable: broken.png (original): cannot decode image"), "{err}");
    assert!(err.contains("1 originals and 1 augmented images have no counterpart"), "{err}");

    // An empty folder, folders without a common path, and a missing folder end in one sentence.
    let empty = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    face.save(other.path().join("different.png")).unwrap();
    let run = |orig: &Path, aug: &Path| {
        Command::new(env!("CARGO_BIN_EXE_acufarm"))
            .args(["drift", "--original"])
            .arg(orig)
            .arg("--augmented")
            .arg(aug)
            .arg("--out")
            .arg(p.path("r2"))
            .output()
            .unwrap()
    };
    for (orig, aug, needle) in [
        (p.path("orig"), empty.path().to_path_buf(), "holds no PNG or JPEG images; pass the folder that holds them"),
        (p.path("orig"), other.path().to_path_buf(), "has a counterpart at the same relative path"),
        (p.path("nope"), p.path("aug"), "is not a folder"),
    ] {
        let out = run(&orig, &aug);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle) && !err.contains("panicked"), "{needle}: {err}");
    }
}

#[test]
fn landmarks_prints_the_points_and_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    astronaut().save(dir.path().join("face.png")).unwrap();
    std::fs::write(dir.path().join("bad.png"), b"nope").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_acufarm")).arg("landmarks").arg(dir.path().join("face.png")).arg(dir.path().join("bad.png")).output().unwrap();
    assert!(!out.status.success(), "an unreadable image fails the command after the others are printed");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["found"], 8, "{}", lines[0]);
    let re = lines[0]["points"]["RE_outer"].as_array().unwrap();
    let le = lines[0]["points"]["LE_outer"].as_array().unwrap();
    assert!(re[0].as_f64().unwrap() < le[0].as_f64().unwrap(), "the subject's right eye is on the image's left");
    assert!(lines[1]["error"].as_str().unwrap().contains("cannot decode image"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 images could not be read"));
}

/// An AcuSim-layout dataset of astronaut views (moved and scaled) plus one faceless image.
fn face_dataset(root: &Path) {
    let face = astronaut();
    let images = root.join("data/train/image/img_512");
    let labels = root.join("data/train/label/label");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let views = [shift(&face, 0, 0), shift(&face, 12, -6), on_canvas(&face, 0.9, 20, 30)];
    for (i, view) in views.iter().enumerate() {
        let frame = i + 1;
        view.save(images.join(format!("M_Asher_N_HD_{frame:04}.png"))).unwrap();
    }
    let sky = RgbImage::from_fn(512, 512, |x, y| Rgb([(x / 2) as u8, (y / 2) as u8, 200]));
    sky.save(images.join("M_Asher_N_HD_0004.png")).unwrap();
    for frame in 1..=4 {
        std::fs::write(labels.join(format!("M_Asher_N_HD_{frame:04}.json")), r#"{"label":[{"name":"GV20","coordinate":{"x":0.5,"y":0.2}}]}"#).unwrap();
    }
    std::fs::write(root.join("data/map.txt"), "GV20\n").unwrap();
    std::fs::create_dir_all(root.join("scenes")).unwrap();
    std::fs::copy(repo().join("examples/scenes/warm_room.png"), root.join("scenes/warm_room.png")).unwrap();
    let spec = std::fs::read_to_string(repo().join("examples/acusim.toml"))
        .unwrap()
        .replace("file://examples/acusim-mini", &format!("file://{}", root.join("data").display()))
        .replace("file://out/acusim-mini-relit", &format!("file://{}", root.join("out").display()))
        .replace("steps = 28", "steps = 2");
    let spec = format!("{spec}\n[qa]\nmax_drift_px = 12.0\nmax_point_drift_px = {{ Philtrum = 15.0 }}\nmin_change = 2.0\nmax_retries = 2\n");
    std::fs::write(root.join("spec.toml"), spec).unwrap();
}

#[test]
fn the_qa_gate_regenerates_then_fails_faces_it_loses_and_passes_faceless_sources() {
    let dir = tempfile::tempdir().unwrap();
    face_dataset(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_acufarm"))
        .arg("run")
        .arg(dir.path().join("spec.toml"))
        .arg("--bundle")
        .arg(repo().join("models/tiny/fc"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--quiet")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the face sources fail QA: {}", text(&out));
    // Each face source: tries 0, 1 and 2, each losing the face (the tiny bundle paints noise).
    for frame in 1..=3 {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("M_Asher_N_HD_{frame:04}.png failed the landmark-drift QA gate on all 3 tries")))
            .unwrap_or_else(|| panic!("frame {frame}: {err}"));
        for t in 0..3 {
            assert!(line.contains(&format!("try {t} (seed ")), "{line}");
        }
        assert!(line.contains("output: no face detected while its source's face is measurable"), "{line}");
    }
    assert!(err.contains("1 succeeded, 3 failed"), "{err}");
    // The faceless source passes with its reason; its manifest row records the check.
    let manifest = std::fs::read_to_string(dir.path().join("out/manifest.jsonl")).unwrap();
    let rows: Vec<Value> = manifest.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1);
    let qa = rows[0]["qa"].as_array().unwrap();
    assert_eq!(qa.len(), 1);
    assert_eq!(qa[0]["verdict"], "unmeasured");
    assert_eq!(qa[0]["reason"], "source: no face detected");
    assert!(qa[0]["change_outside_face"].as_f64().unwrap() > 2.0);
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/manifest.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["failures_by_class"]["qa"], 3, "{summary}");
    assert_eq!((summary["qa"]["checked"].as_u64(), summary["qa"]["failed"].as_u64()), (Some(1), Some(3)), "{summary}");
    assert_eq!(summary["qa"]["unmeasured"]["source: no face detected"], 1, "{summary}");
    assert!(err.contains("qa: 1 passed (1 on the first try, 0 re-generated, 1 unmeasured: no measurable face in the source), 3 failed the gate"), "{err}");

    // `acufarm drift --manifest` pairs each row's source with its output.
    let report = dir.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_acufarm"))
        .args(["drift", "--manifest"])
        .arg(dir.path().join("out/manifest.jsonl"))
        .arg("--original")
        .arg(dir.path().join("data"))
        .arg("--augmented")
        .arg(dir.path().join("out"))
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let drift: Value = serde_json::from_slice(&std::fs::read(report.join("drift.json")).unwrap()).unwrap();
    let only = &drift["pair_results"][0];
    assert_eq!(
        (only["original"].as_str(), only["augmented"].as_str()),
        (Some("train/image/img_512/M_Asher_N_HD_0004.png"), Some("train/image/img_512/M_Asher_N_HD_0004.png"))
    );
    assert_eq!((only["reason"].as_str(), only["side"].as_str()), (Some("no_face"), Some("both")), "{only}");
}

/// The gate itself on known pairs of real images: a small move with relighting passes, the same
/// image fails the minimum change, a large move fails the drift limit.
#[test]
fn the_gate_passes_small_moves_and_fails_large_or_unchanged_outputs() {
    use acufarm_core::qa::{QaLimits, QaVerdict};
    use acufarm_worker::drift::FaceMesh;
    use acufarm_worker::drift::gate::{SourceFace, change_outside_face, judge};
    use acufarm_worker::pipeline::runtime::{Runtime, RuntimeOptions};

    let runtime = Runtime::new(RuntimeOptions { intra_threads: 1, ..RuntimeOptions::default() }).unwrap();
    let mut mesh = FaceMesh::new(&runtime).unwrap();
    let face = astronaut();
    let source = SourceFace::new(&mesh.run(&face).unwrap(), 512, 512);
    assert_eq!(source.points.found(), 8);
    let limits = QaLimits { max_drift_px: Some(6.0), max_point_drift_px: Default::default(), min_change: 2.0 };
    let mut check = |output: &RgbImage| {
        let points = mesh.points(output).unwrap();
        judge(&limits, &source, &points, change_outside_face(&face, output, source.roi.as_ref()), 0, 1)
    };
    let relit = map_levels(&shift(&face, 2, 1), |v| v.powf(0.8));
    let r = check(&relit);
    assert_eq!(r.verdict, QaVerdict::Pass, "{r:?}");
    assert!(r.max_drift_px.unwrap() < 4.0 && r.change_outside_face > 2.0, "{r:?}");
    let r = check(&face);
    assert_eq!(r.verdict, QaVerdict::Fail, "{r:?}");
    assert!(r.reason.as_deref().unwrap().contains("under qa.min_change = 2"), "{r:?}");
    let r = check(&shift(&face, 15, 0));
    assert_eq!(r.verdict, QaVerdict::Fail, "{r:?}");
    assert!(r.reason.as_deref().unwrap().contains("over qa.max_drift_px = 6"), "{r:?}");
}
