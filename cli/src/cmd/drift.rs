//! `acufarm landmarks IMAGE…` (the 8 points, or the whole mesh, of single images) and
//! `acufarm drift --original DIR --augmented DIR` (the seed paper's landmark-drift report over
//! image pairs: drift.json, drift.csv, drift.md and PNG plots).

use super::drift_plot;
use acufarm_core::manifest::{self, ManifestRow};
use acufarm_core::resolve::is_image;
use acufarm_worker::drift::points::{self as pts, NAMES};
use acufarm_worker::drift::stats::{Accumulator, Statistics};
use acufarm_worker::drift::{FaceMesh, FaceResult, Outcome, Points};
use acufarm_worker::pipeline::image_io;
use acufarm_worker::pipeline::runtime::{Runtime, RuntimeOptions};
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(clap::Args)]
pub struct LandmarksArgs {
    /// Images (PNG or JPEG; transparent ones are flattened onto white).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Also print all 468 Face Mesh points.
    #[arg(long)]
    mesh: bool,
}

#[derive(clap::Args)]
pub struct DriftArgs {
    /// Folder of the original images.
    #[arg(long)]
    original: PathBuf,
    /// Folder of the augmented images; pairs are matched by relative path unless --manifest is given.
    #[arg(long)]
    augmented: PathBuf,
    /// A run's manifest.jsonl: pairs each row's source (under --original) with its output (under
    /// --augmented).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Where to write the report [default: the current directory].
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Images measured at once [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Print the summary (counts and per-point statistics) as JSON on stdout instead of drift.md.
    #[arg(long)]
    json: bool,
    /// Pairs drawn in worst_pairs.png.
    #[arg(long, default_value_t = 6)]
    worst: usize,
}

fn runtime() -> anyhow::Result<Runtime> {
    // One thread per session: images are measured in parallel instead.
    Ok(Runtime::new(RuntimeOptions { intra_threads: 1, ..RuntimeOptions::default() })?)
}

fn load(path: &Path) -> Result<image::RgbImage, String> {
    image_io::load(path).map(|s| s.rgb).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct PointsJson<'a> {
    detection_score: Option<f32>,
    presence: Option<f32>,
    face_width: Option<f32>,
    found: usize,
    points: BTreeMap<&'a str, Option<[f32; 2]>>,
}

fn points_json(p: &Points) -> PointsJson<'static> {
    PointsJson {
        detection_score: p.detection_score,
        presence: p.presence,
        face_width: p.face_width,
        found: p.found(),
        points: NAMES.iter().copied().zip(p.points).collect(),
    }
}

pub fn landmarks(args: LandmarksArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let mut mesh = FaceMesh::new(&runtime)?;
    let mut failed = 0;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &args.images {
        let mut line = serde_json::Map::new();
        line.insert("image".into(), path.display().to_string().into());
        match load(path) {
            Err(e) => {
                failed += 1;
                line.insert("error".into(), e.into());
            }
            Ok(img) => {
                let result = mesh.run(&img)?;
                let p = pts::points(&result, img.width(), img.height());
                line.insert("width".into(), img.width().into());
                line.insert("height".into(), img.height().into());
                if let serde_json::Value::Object(fields) = serde_json::to_value(points_json(&p))? {
                    line.extend(fields);
                }
                if args.mesh {
                    let mesh_points = match &result {
                        FaceResult::Face(face) if face.present() => serde_json::to_value(&face.landmarks)?,
                        _ => serde_json::Value::Null,
                    };
                    line.insert("mesh".into(), mesh_points);
                }
            }
        }
        writeln!(out, "{}", serde_json::Value::Object(line))?;
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be read (see their `error` lines); fix or remove them", args.images.len());
    }
    Ok(())
}

/// One pair to measure: paths relative to the two roots.
#[derive(Debug, Clone, PartialEq)]
struct Pair {
    original: String,
    augmented: String,
}

/// The PNG and JPEG files under `root`, relative to it, sorted.
fn list_images(root: &Path) -> anyhow::Result<Vec<String>> {
    if !root.is_dir() {
        bail!("{} is not a folder; pass the folder holding the images", root.display());
    }
    let files = acufarm_storage::list_folder(root).with_context(|| format!("cannot list {}; check its permissions", root.display()))?;
    Ok(files.into_iter().filter(|f| is_image(f)).collect())
}

/// Pairs by identical relative path; returns the pairs and the unmatched paths of each side.
fn pair_by_path(original: &[String], augmented: &[String]) -> (Vec<Pair>, Vec<String>, Vec<String>) {
    let aug: std::collections::BTreeSet<&String> = augmented.iter().collect();
    let orig: std::collections::BTreeSet<&String> = original.iter().collect();
    let pairs = original.iter().filter(|p| aug.contains(p)).map(|p| Pair { original: p.clone(), augmented: p.clone() }).collect();
    let only_original = original.iter().filter(|p| !aug.contains(p)).cloned().collect();
    let only_augmented = augmented.iter().filter(|p| !orig.contains(p)).cloned().collect();
    (pairs, only_original, only_augmented)
}

fn pair_by_manifest(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}; pass a run's {}", path.display(), manifest::MANIFEST))?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: ManifestRow = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{} line {} is not a manifest row ({e}); pass an acufarm manifest.jsonl", path.display(), i + 1))?;
        pairs.push(Pair { original: row.source.path, augmented: row.output.path });
    }
    if pairs.is_empty() {
        bail!("{} lists no outputs; the run produced nothing to measure", path.display());
    }
    Ok(pairs)
}

/// What measuring one pair gave.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per image pair, held briefly; boxing buys nothing
enum Measured {
    Pair { original: Points, augmented: Points, outcome: Outcome },
    Unreadable { side: &'static str, reason: String },
}

/// Measures every pair on `--threads` threads (one FaceMesh each); also returns the seconds spent
/// decoding and measuring (model loading excluded).
fn measure_all(pairs: &[Pair], args: &DriftArgs, busy: &Busy) -> anyhow::Result<(Vec<Measured>, f64)> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, pairs.len().max(1));
    let runtime = runtime()?;
    let meshes = (0..threads).map(|_| FaceMesh::new(&runtime)).collect::<Result<Vec<_>, _>>()?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Measured>>> = Mutex::new(vec![None; pairs.len()]);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for mut mesh in meshes {
            let (next, results, failure) = (&next, &results, &failure);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(pair) = pairs.get(i) else { break };
                    let measured = match measure_pair(&mut mesh, pair, args, busy) {
                        Ok(m) => m,
                        Err(e) => {
                            *failure.lock().unwrap() = Some(e);
                            next.store(pairs.len(), Ordering::Relaxed);
                            break;
                        }
                    };
                    results.lock().unwrap()[i] = Some(measured);
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((results.into_inner().unwrap().into_iter().map(|m| m.expect("every pair measured")).collect(), seconds))
}

/// Nanoseconds spent decoding and measuring, summed over threads (for the closing timing line).
#[derive(Default)]
struct Busy {
    decode: AtomicU64,
    measure: AtomicU64,
}

fn measure_pair(mesh: &mut FaceMesh, pair: &Pair, args: &DriftArgs, busy: &Busy) -> anyhow::Result<Measured> {
    let started = std::time::Instant::now();
    let original = match load(&args.original.join(&pair.original)) {
        Ok(img) => img,
        Err(reason) => return Ok(Measured::Unreadable { side: "original", reason }),
    };
    let augmented = match load(&args.augmented.join(&pair.augmented)) {
        Ok(img) => img,
        Err(reason) => return Ok(Measured::Unreadable { side: "augmented", reason }),
    };
    let decoded = std::time::Instant::now();
    let original = mesh.points(&original)?;
    let augmented = mesh.points(&augmented)?;
    busy.decode.fetch_add((decoded - started).as_nanos() as u64, Ordering::Relaxed);
    busy.measure.fetch_add(decoded.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let outcome = pts::compare(&original, &augmented);
    Ok(Measured::Pair { original, augmented, outcome })
}

#[derive(Serialize)]
struct PairJson<'a> {
    original: &'a str,
    augmented: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift_px: Option<BTreeMap<&'static str, Option<f32>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift_per_iod: Option<BTreeMap<&'static str, Option<f32>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_drift_px: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points_original: Option<PointsJson<'static>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points_augmented: Option<PointsJson<'static>>,
}

#[derive(Serialize)]
struct Report<'a> {
    original: String,
    augmented: String,
    pairs: usize,
    measured: usize,
    discarded: usize,
    unreadable: usize,
    original_only: &'a [String],
    augmented_only: &'a [String],
    statistics: &'a Statistics,
    pair_results: Vec<PairJson<'a>>,
}

fn named(values: [Option<f32>; 8]) -> BTreeMap<&'static str, Option<f32>> {
    NAMES.iter().copied().zip(values).collect()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

fn markdown(report: &Report<'_>) -> String {
    let s = report.statistics;
    let mut md = String::new();
    md.push_str("# Landmark drift\n\n");
    md.push_str(&format!(
        "Original `{}` vs augmented `{}`: {} pairs, {} measured, {} discarded, {} unreadable; {} originals and {} augmented images without a counterpart.\n\n",
        report.original,
        report.augmented,
        report.pairs,
        report.measured,
        report.discarded,
        report.unreadable,
        report.original_only.len(),
        report.augmented_only.len()
    ));
    md.push_str("| # | point | n | mean px | median px | p95 px | max px | mean /IOD | median /IOD | p95 /IOD | max /IOD |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, p) in s.points.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            p.point,
            p.px.n,
            fmt_opt(p.px.mean, 2),
            fmt_opt(p.px.median, 2),
            fmt_opt(p.px.p95, 2),
            fmt_opt(p.px.max, 2),
            fmt_opt(p.normalized.mean, 4),
            fmt_opt(p.normalized.median, 4),
            fmt_opt(p.normalized.p95, 4),
            fmt_opt(p.normalized.max, 4),
        ));
    }
    let m = &s.max_of_points;
    md.push_str(&format!(
        "| | largest of the 8 | {} | {} | {} | {} | {} | | | | |\n\n",
        m.n,
        fmt_opt(m.mean, 2),
        fmt_opt(m.median, 2),
        fmt_opt(m.p95, 2),
        fmt_opt(m.max, 2)
    ));
    md.push_str("IOD: inter-ocular distance (points 33 ↔ 263) on the original image.\n\n");
    if s.discards.is_empty() {
        md.push_str("Discards: none.\n");
    } else {
        md.push_str("| discarded because | original | augmented | both |\n|---|---:|---:|---:|\n");
        for reason in [pts::Discard::NoFace, pts::Discard::SmallFace, pts::Discard::FewPoints] {
            if let Some(sides) = s.discards.get(reason.as_str()) {
                let n = |side: &str| sides.get(side).copied().unwrap_or(0);
                md.push_str(&format!("| {} | {} | {} | {} |\n", reason.describe(), n("original"), n("augmented"), n("both")));
            }
        }
    }
    md
}

fn write_csv(path: &Path, pairs: &[Pair], measured: &[Measured]) -> anyhow::Result<()> {
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot write {}; check that --out is writable", path.display()))?);
    writeln!(out, "original,augmented,status,reason,side,point,x_original,y_original,x_augmented,y_augmented,drift_px,drift_per_iod")?;
    let num = |v: Option<f32>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let quote = |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    for (pair, m) in pairs.iter().zip(measured) {
        let (o, a) = (quote(&pair.original), quote(&pair.augmented));
        match m {
            Measured::Unreadable { side, .. } => {
                for name in NAMES {
                    writeln!(out, "{o},{a},unreadable,unreadable,{side},{name},,,,,,")?;
                }
            }
            Measured::Pair { original, augmented, outcome } => {
                let (status, reason, side, px, per) = match outcome {
                    Outcome::Measured(d) => ("measured", "", "", d.px, d.normalized()),
                    Outcome::Discarded { reason, side } => ("discarded", reason.as_str(), side.as_str(), [None; 8], [None; 8]),
                };
                for (i, name) in NAMES.iter().enumerate() {
                    let po = original.points[i];
                    let pa = augmented.points[i];
                    writeln!(
                        out,
                        "{o},{a},{status},{reason},{side},{name},{},{},{},{},{},{}",
                        num(po.map(|p| p[0])),
                        num(po.map(|p| p[1])),
                        num(pa.map(|p| p[0])),
                        num(pa.map(|p| p[1])),
                        num(px[i]),
                        per[i].map_or(String::new(), |v| format!("{v:.5}"))
                    )?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

pub fn drift(args: DriftArgs) -> anyhow::Result<()> {
    let (pairs, only_original, only_augmented) = match &args.manifest {
        Some(manifest) => {
            for dir in [&args.original, &args.augmented] {
                if !dir.is_dir() {
                    bail!("{} is not a folder; with --manifest, --original is the run's input root and --augmented its output root", dir.display());
                }
            }
            (pair_by_manifest(manifest)?, Vec::new(), Vec::new())
        }
        None => {
            let original = list_images(&args.original)?;
            let augmented = list_images(&args.augmented)?;
            for (dir, list) in [(&args.original, &original), (&args.augmented, &augmented)] {
                if list.is_empty() {
                    bail!("{} holds no PNG or JPEG images; pass the folder that holds them", dir.display());
                }
            }
            let (pairs, o, a) = pair_by_path(&original, &augmented);
            if pairs.is_empty() {
                bail!(
                    "no image in {} has a counterpart at the same relative path in {} ({} and {} images); pass matching folders, or --manifest to pair a run's sources with its outputs",
                    args.original.display(),
                    args.augmented.display(),
                    original.len(),
                    augmented.len()
                );
            }
            (pairs, o, a)
        }
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}; check that --out is writable", args.out.display()))?;
    let busy = Busy::default();
    let (measured, seconds) = measure_all(&pairs, &args, &busy)?;

    let mut acc = Accumulator::default();
    let mut unreadable = Vec::new();
    let mut pair_results = Vec::with_capacity(pairs.len());
    for (pair, m) in pairs.iter().zip(&measured) {
        let mut row = PairJson {
            original: &pair.original,
            augmented: &pair.augmented,
            status: "measured",
            reason: None,
            side: None,
            drift_px: None,
            drift_per_iod: None,
            max_drift_px: None,
            points_original: None,
            points_augmented: None,
        };
        match m {
            Measured::Unreadable { side, reason } => {
                unreadable.push(format!("{} ({side}): {reason}", pair.original));
                row.status = "unreadable";
                row.reason = Some(reason.clone());
                row.side = Some(side);
            }
            Measured::Pair { original, augmented, outcome } => {
                acc.add(outcome);
                row.points_original = Some(points_json(original));
                row.points_augmented = Some(points_json(augmented));
                match outcome {
                    Outcome::Measured(d) => {
                        row.drift_px = Some(named(d.px));
                        row.drift_per_iod = Some(named(d.normalized()));
                        row.max_drift_px = Some(d.max());
                    }
                    Outcome::Discarded { reason, side } => {
                        row.status = "discarded";
                        row.reason = Some(reason.as_str().to_string());
                        row.side = Some(side.as_str());
                    }
                }
            }
        }
        pair_results.push(row);
    }
    let statistics = acc.finish();
    let report = Report {
        original: args.original.display().to_string(),
        augmented: args.augmented.display().to_string(),
        pairs: pairs.len(),
        measured: statistics.measured,
        discarded: statistics.discarded,
        unreadable: unreadable.len(),
        original_only: &only_original,
        augmented_only: &only_augmented,
        statistics: &statistics,
        pair_results,
    };
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let path = args.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}; check that --out is writable", path.display()))
    };
    write("drift.json", &serde_json::to_vec_pretty(&report)?)?;
    write_csv(&args.out.join("drift.csv"), &pairs, &measured)?;
    let md = markdown(&report);
    write("drift.md", md.as_bytes())?;
    drift_plot::distributions(&args.out.join("drift_points.png"), acc.samples())?;
    let worst = worst_pairs(&pairs, &measured, args.worst);
    let wrote_worst = !worst.is_empty();
    if wrote_worst {
        let mut panels = Vec::new();
        for (pair, original, augmented, max) in worst {
            if let Ok(img) = load(&args.augmented.join(&pair.augmented)) {
                panels.push(drift_plot::Panel {
                    name: pair.augmented.clone(),
                    image: img,
                    original: original.points,
                    augmented: augmented.points,
                    max_drift: max,
                });
            }
        }
        drift_plot::overlay(&args.out.join("worst_pairs.png"), &panels)?;
    }
    if args.json {
        let summary = serde_json::json!({
            "pairs": report.pairs,
            "measured": report.measured,
            "discarded": report.discarded,
            "unreadable": report.unreadable,
            "original_only": report.original_only.len(),
            "augmented_only": report.augmented_only.len(),
            "statistics": report.statistics,
            "report": args.out.join("drift.json"),
        });
        println!("{summary}");
    } else {
        print!("{md}");
    }
    let per_image = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e6 / (2 * pairs.len()) as f64;
    eprintln!(
        "measured {} pairs in {seconds:.3} s ({:.1} pairs/s; per image {:.2} ms decoding, {:.2} ms face mesh)",
        pairs.len(),
        pairs.len() as f64 / seconds.max(1e-9),
        per_image(&busy.decode),
        per_image(&busy.measure)
    );
    for line in unreadable.iter().take(10) {
        eprintln!("unreadable: {line}");
    }
    if only_original.len() + only_augmented.len() > 0 {
        eprintln!(
            "{} originals and {} augmented images have no counterpart (listed in drift.json as original_only / augmented_only)",
            only_original.len(),
            only_augmented.len()
        );
    }
    eprintln!("wrote drift.json, drift.csv, drift.md, drift_points.png{} to {}", if wrote_worst { ", worst_pairs.png" } else { "" }, args.out.display());
    Ok(())
}

/// The measured pairs with the largest drift, worst first.
fn worst_pairs<'a>(pairs: &'a [Pair], measured: &'a [Measured], n: usize) -> Vec<(&'a Pair, &'a Points, &'a Points, f32)> {
    let mut out: Vec<_> = pairs
        .iter()
        .zip(measured)
        .filter_map(|(pair, m)| match m {
            Measured::Pair { original, augmented, outcome: Outcome::Measured(d) } => Some((pair, original, augmented, d.max())),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| b.3.total_cmp(&a.3));
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_by_relative_path_reports_the_unmatched() {
        let o = vec!["a/1.png".to_string(), "a/2.png".to_string(), "b.jpg".to_string()];
        let a = vec!["a/2.png".to_string(), "b.jpg".to_string(), "c.png".to_string()];
        let (pairs, only_o, only_a) = pair_by_path(&o, &a);
        assert_eq!(pairs.iter().map(|p| p.original.as_str()).collect::<Vec<_>>(), ["a/2.png", "b.jpg"]);
        assert_eq!(only_o, ["a/1.png"]);
        assert_eq!(only_a, ["c.png"]);
    }

    #[test]
    fn manifest_pairing_refuses_bad_or_empty_manifests_in_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.jsonl");
        for (text, needle) in [
            ("", "lists no outputs"),
            ("\n\n", "lists no outputs"),
            ("{not json}\n", "line 1 is not a manifest row"),
            ("{\"run\": \"r\"}\n", "line 1 is not a manifest row"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = pair_by_manifest(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let err = pair_by_manifest(&dir.path().join("absent.jsonl")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read") && err.contains("pass a run's manifest.jsonl"), "{err}");
    }

    #[test]
    fn only_png_and_jpeg_count_as_images() {
        for (name, ok) in [("x.png", true), ("x.PNG", true), ("x.jpeg", true), ("x.jpg", true), ("x.json", false), ("x", false), ("x.png.txt", false)] {
            assert_eq!(is_image(name), ok, "{name}");
        }
    }
}
