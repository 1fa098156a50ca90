//! A generated AcuSim-layout dataset (64×64 PNGs, one label per image, map.txt) and its run spec,
//! on the local filesystem or in a moto S3 bucket. The files are always generated in a local
//! folder first, which stays the test's reference copy; on S3 they are then uploaded.

use super::block_on;
use super::services::Moto;
use acufarm_storage::Storage;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The views the example spec keeps ("1-11,30-45,108-118,138-143"): 44 per model.
pub fn kept_frames() -> Vec<u32> {
    (1..=11).chain(30..=45).chain(108..=118).chain(138..=143).collect()
}

/// scikit-image's astronaut.png (512², public domain), centre-cropped and resized to 512².
pub fn astronaut() -> image::RgbImage {
    let home = std::env::var("ACUFARM_HOME").unwrap_or_else(|_| format!("{}/.cache/acufarm", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let lib = Path::new(&home).join("mediapipe/lib");
    let path = std::fs::read_dir(&lib)
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("site-packages/skimage/data/astronaut.png")).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("astronaut.png not found under {}; run scripts/setup.sh dev (it installs scikit-image there)", lib.display()));
    let img = image::open(&path).unwrap().to_rgb8();
    let side = img.width().min(img.height());
    let cropped = image::imageops::crop_imm(&img, (img.width() - side) / 2, (img.height() - side) / 2, side, side).to_image();
    image::imageops::resize(&cropped, 512, 512, image::imageops::FilterType::Lanczos3)
}

pub const IMAGES: &str = "train/image/img_512";
pub const LABELS: &str = "train/label/label";

pub fn png(frame: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let d = (x as i32 - 32).pow(2) + (y as i32 - 28 - (frame % 5) as i32).pow(2);
        if d < 260 { image::Rgb([200, 150, 120]) } else { image::Rgb([236, 236, 236]) }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn label(frame: u32) -> String {
    format!(r#"{{"label":[{{"name":"GV20_百会","coordinate":{{"x":0.5,"y":{},"n":-0.9,"h":0.8}}}}]}}"#, 0.1 + frame as f64 / 1000.0)
}

/// Where a scenario's dataset and outputs live.
pub enum Backend {
    Fs,
    S3(Moto),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Fs => "fs",
            Backend::S3(_) => "s3",
        }
    }

    /// The `AWS_*` variables the farm's processes need for this backend.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::Fs => Vec::new(),
            Backend::S3(moto) => moto.env(),
        }
    }
}

pub struct Dataset {
    /// Spec files, scenes, and the local reference copy of the input under `data/`.
    pub dir: PathBuf,
    pub input_url: String,
    pub output_url: String,
    pub input: Storage,
    pub output: Storage,
    /// Input images the run must render (relative to the input root), sorted.
    pub expected: BTreeSet<String>,
    s3: bool,
}

impl Dataset {
    /// Generates `models` × `frames` images plus two views the spec's filter drops (0 and 12) per
    /// model, their labels and map.txt, under `dir/data` (and uploads them to
    /// `s3://acufarm-<tag>/datasets/acusim` on S3); the output root is `dir/out` or
    /// `s3://acufarm-<tag>/out/relit`.
    pub fn generate(backend: &Backend, dir: &Path, tag: &str, models: &[&str], frames: &[u32]) -> Dataset {
        let data = dir.join("data");
        std::fs::create_dir_all(data.join(IMAGES)).unwrap();
        std::fs::create_dir_all(data.join(LABELS)).unwrap();
        std::fs::create_dir_all(dir.join("scenes")).unwrap();
        std::fs::copy(super::repo().join("examples/scenes/warm_room.png"), dir.join("scenes/warm_room.png")).unwrap();
        let (input_url, output_url, input, output) = match backend {
            Backend::Fs => {
                let i = format!("file://{}", data.display());
                let o = format!("file://{}", dir.join("out").display());
                let (si, so) = (Storage::open(&i).unwrap(), Storage::open(&o).unwrap());
                (i, o, si, so)
            }
            Backend::S3(moto) => {
                let bucket = format!("acufarm-{tag}");
                moto.create_bucket(&bucket);
                let i = format!("s3://{bucket}/datasets/acusim");
                let o = format!("s3://{bucket}/out/relit");
                let (si, so) = (Storage::open_with(&i, moto.storage_options()).unwrap(), Storage::open_with(&o, moto.storage_options()).unwrap());
                (i, o, si, so)
            }
        };
        let mut d = Dataset { dir: dir.to_path_buf(), input_url, output_url, input, output, expected: BTreeSet::new(), s3: matches!(backend, Backend::S3(_)) };
        let mut files: Vec<(String, Vec<u8>)> = vec![("map.txt".to_string(), "GV20_百会\n".as_bytes().to_vec())];
        for model in models {
            for &frame in frames.iter().chain(&[0, 12]) {
                files.push((format!("{IMAGES}/{model}_{frame:04}.png"), png(frame)));
                files.push((format!("{LABELS}/{model}_{frame:04}.json"), label(frame).into_bytes()));
                if frame != 0 && frame != 12 {
                    d.expected.insert(format!("{IMAGES}/{model}_{frame:04}.png"));
                }
            }
        }
        d.write_inputs(files);
        d
    }

    /// Writes input files (local reference copy, and the bucket on S3), many at once.
    pub fn write_inputs(&self, files: Vec<(String, Vec<u8>)>) {
        for (rel, bytes) in &files {
            let path = self.dir.join("data").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        if self.s3 {
            let input = self.input.clone();
            block_on(async move {
                let puts = files.into_iter().map(|(rel, bytes)| {
                    let input = input.clone();
                    async move { input.put(&rel, Bytes::from(bytes)).await.unwrap_or_else(|e| panic!("upload {rel}: {e}")) }
                });
                // A few at a time: moto is single-process Python.
                let mut puts: Vec<_> = puts.collect();
                while !puts.is_empty() {
                    let rest = puts.split_off(puts.len().min(16));
                    futures_join_all(puts).await;
                    puts = rest;
                }
            });
        }
    }

    /// The local reference copy of an input file.
    pub fn input_bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("data").join(rel)).unwrap_or_else(|e| panic!("input {rel}: {e}"))
    }

    /// Writes `<file>` in the dataset folder: the example spec pointed at this dataset with
    /// `steps = 3` and the given run name, then `edit` applied to the text.
    pub fn write_spec(&self, file: &str, run: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let spec = std::fs::read_to_string(super::repo().join("examples/acusim.toml"))
            .unwrap()
            .replace("file://examples/acusim-mini", &self.input_url)
            .replace("file://out/acusim-mini-relit", &self.output_url)
            .replace("name = \"acusim-relight\"", &format!("name = \"{run}\""))
            .replace("steps = 28", "steps = 3");
        assert!(spec.contains(&format!("name = \"{run}\"")) && spec.contains("steps = 3"), "examples/acusim.toml changed shape");
        let path = self.dir.join(file);
        std::fs::write(&path, edit(spec)).unwrap();
        path
    }

    /// The output root as a local folder: the folder itself on the filesystem, a fresh download of
    /// every object (staging excluded) on S3.
    pub fn output_local(&self) -> PathBuf {
        if !self.s3 {
            return self.output_url.strip_prefix("file://").unwrap().into();
        }
        let n = (1..).find(|n| !self.dir.join(format!("download-{n}")).exists()).unwrap();
        let local = self.dir.join(format!("download-{n}"));
        let output = self.output.clone();
        let files = block_on(async move {
            let mut files = Vec::new();
            for rel in output.list("").await.expect("list the S3 output") {
                let bytes = output.get(&rel).await.unwrap_or_else(|e| panic!("download {rel}: {e}"));
                files.push((rel, bytes));
            }
            files
        });
        for (rel, bytes) in files {
            let path = local.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        local
    }

    /// Staging objects left under the output root (`<output>/_staging/`).
    pub fn staging_objects(&self) -> usize {
        let output = self.output.clone();
        let counted = block_on(async move { output.staging_count().await.expect("count staging objects") });
        if !self.s3 {
            // Count files on disk too (empty folders may remain).
            let on_disk = files_under(&Path::new(self.output_url.strip_prefix("file://").unwrap()).join("_staging"));
            assert_eq!(counted, on_disk, "object_store and the filesystem disagree about staging files");
        }
        counted
    }
}

pub fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|entries| entries.filter_map(|e| e.ok()).map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()).unwrap_or(0)
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: Vec<F>) {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
}
