//! End-to-end tests of `acufarm augment` and `acufarm schedule` through the real binary, the real
//! ONNX Runtime library (installed by scripts/setup.sh) and the committed tiny bundles.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tiny(variant: &str) -> PathBuf {
    repo().join("models/tiny").join(variant)
}

fn acufarm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acufarm")).args(args).output().expect("run acufarm")
}

fn ok(args: &[&str]) -> Output {
    let out = acufarm(args);
    assert!(out.status.success(), "acufarm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The user-facing error of a failed run: exactly one line, no panic.
fn error_of(args: &[&str]) -> String {
    let out = acufarm(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "acufarm {args:?} should fail");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected for {args:?}: {stderr}");
    lines[0].to_string()
}

/// A 64×64 stand-in render: a warm disc on a plain light background.
fn write_subject(path: &Path) {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let d = ((x as i32 - 32).pow(2) + (y as i32 - 30).pow(2)) as f32;
        if d < 300.0 { image::Rgb([200, 150, 120]) } else { image::Rgb([236, 236, 236]) }
    });
    img.save(path).unwrap();
}

fn write_scene(path: &Path) {
    image::RgbImage::from_fn(80, 64, |x, y| image::Rgb([(x * 3) as u8, (y * 4) as u8, 90])).save(path).unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_subject(&dir.path().join("M_Asher_N_HD_0017.png"));
        write_scene(&dir.path().join("scene.png"));
        Self { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn input(&self) -> String {
        self.path("M_Asher_N_HD_0017.png")
    }
    /// A copy of a tiny bundle (and the shared graphs it points to) that a test may damage.
    fn bundle_copy(&self, variant: &str) -> PathBuf {
        let root = self.dir.path().join("bundles");
        for part in [variant, "common"] {
            let (from, to) = (repo().join("models/tiny").join(part), root.join(part));
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        root.join(variant)
    }
}

fn augment_args<'a>(bundle: &'a str, input: &'a str, output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["augment", "--bundle", bundle, "--input", input, "--output", output, "--prompt", "a photo of a person", "--steps", "4"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn same_command_gives_identical_bytes_and_seed_changes_them() {
    let f = Fixture::new();
    let bundle = tiny("fc").display().to_string();
    let scene = f.path("scene.png");
    let (a, b, c) = (f.path("a.png"), f.path("b.png"), f.path("c.png"));
    let input = f.input();
    ok(&augment_args(&bundle, &input, &a, &["--seed", "7", "--scene", &scene]));
    ok(&augment_args(&bundle, &input, &b, &["--seed", "7", "--scene", &scene]));
    ok(&augment_args(&bundle, &input, &c, &["--seed", "8", "--scene", &scene]));
    let (a, b, c) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), std::fs::read(c).unwrap());
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, another image");
    let out = image::load_from_memory(&a).unwrap();
    assert_eq!((out.width(), out.height()), (64, 64));
}

#[test]
fn ip_weight_zero_equals_ip_branch_off() {
    let f = Fixture::new();
    let bundle = tiny("fc").display().to_string();
    let scene = f.path("scene.png");
    let input = f.input();
    let (zero, off, on) = (f.path("zero.png"), f.path("off.png"), f.path("on.png"));
    ok(&augment_args(&bundle, &input, &zero, &["--scene", &scene, "--ipa-weight", "0"]));
    ok(&augment_args(&bundle, &input, &off, &[]));
    ok(&augment_args(&bundle, &input, &on, &["--scene", &scene, "--ipa-weight", "1"]));
    assert_eq!(std::fs::read(&zero).unwrap(), std::fs::read(&off).unwrap());
    assert_ne!(std::fs::read(&zero).unwrap(), std::fs::read(&on).unwrap(), "the scene must matter at weight 1");
}

#[test]
fn every_variant_and_sampler_runs_and_keeps_format() {
    let f = Fixture::new();
    let input_jpg = f.path("F.Grace.N.HA.O.0003.jpg");
    image::open(f.input()).unwrap().to_rgb8().save(&input_jpg).unwrap();
    for (variant, sampler, scheduler) in [("plain", "euler", "normal"), ("fc", "dpmpp_2m", "karras"), ("fbc", "dpmpp_2m", "sgm_uniform")] {
        let bundle = tiny(variant).display().to_string();
        let out = f.path(&format!("{variant}.jpg"));
        let spec = repo().join("examples/acusim.toml").display().to_string();
        ok(&[
            "augment",
            "--bundle",
            &bundle,
            "--input",
            &input_jpg,
            "--output",
            &out,
            "--spec",
            &spec,
            "--steps",
            "3",
            "--sampler",
            sampler,
            "--scheduler",
            scheduler,
            "--denoise",
            "0.6",
        ]);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), image::ImageFormat::Jpeg, "{variant}");
    }
}

#[test]
fn latents_out_and_noise_in_round_trip() {
    let f = Fixture::new();
    let bundle = tiny("plain").display().to_string();
    let input = f.input();
    let (latents, noise) = (f.path("latents.npy"), f.path("noise.npy"));
    let (a, b) = (f.path("a.png"), f.path("b.png"));
    ok(&augment_args(&bundle, &input, &a, &["--latents-out", &latents]));
    let bytes = std::fs::read(&latents).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("'shape': (1, 4, 8, 8)"));
    // The latents file is itself a valid noise file of the right shape.
    std::fs::copy(&latents, &noise).unwrap();
    ok(&augment_args(&bundle, &input, &b, &["--noise-in", &noise]));
    let c = f.path("c.png");
    let msg = error_of(&augment_args(&bundle, &input, &c, &["--noise-in", &input]));
    assert!(msg.contains("not a NumPy .npy file"), "{msg}");
}

#[test]
fn bad_inputs_get_one_clear_sentence() {
    let f = Fixture::new();
    let fc = tiny("fc").display().to_string();
    let input = f.input();
    let out = f.path("out.png");
    std::fs::write(f.path("corrupt.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    image::GrayImage::new(128, 64).save(f.path("wide_depth.png")).unwrap();
    write_subject(&f.dir.path().join("Nobody_0001.png"));
    let spec = repo().join("examples/acusim.toml").display().to_string();
    let (missing, corrupt, depth, bad_id) = (f.path("missing.png"), f.path("corrupt.png"), f.path("wide_depth.png"), f.path("Nobody_0001.png"));
    let out_jpg = f.path("out.jpg");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (augment_args(&fc, &missing, &out, &[]), "cannot read image"),
        (augment_args(&fc, &corrupt, &out, &[]), "cannot decode image"),
        (augment_args(&fc, &input, &out, &["--depth", &depth]), "aspect ratios differ"),
        // Named choices are refused by the flag parser (usage error, exit 2; the names follow).
        (augment_args(&fc, &input, &out, &["--sampler", "ddim"]), "invalid value 'ddim' for '--sampler <SAMPLER>'"),
        (augment_args(&fc, &input, &out, &["--scheduler", "exponential"]), "invalid value 'exponential' for '--scheduler <SCHEDULER>'"),
        (augment_args(&fc, &input, &out, &["--t0", "1.0"]), "t0 must be in [0, 1)"),
        (augment_args(&fc, &input, &out, &["--t0", "-0.2"]), "t0 must be in [0, 1)"),
        (augment_args(&fc, &input, &out, &["--ep", "rocm"]), "unknown execution provider"),
        // CI's ONNX Runtime is the CPU build: asking for CUDA must fail, never fall back to CPU.
        (augment_args(&fc, &input, &out, &["--ep", "cuda,cpu"]), "the cuda execution provider could not start"),
        (augment_args(&fc, &input, &out_jpg, &[]), "name it .png"),
        (vec!["augment", "--bundle", &fc, "--input", &bad_id, "--output", &out, "--spec", &spec], "matches none of the id patterns"),
        (vec!["augment", "--bundle", "/nonexistent", "--input", &input, "--output", &out, "--prompt", "x"], "bundle.toml"),
    ];
    for (args, want) in cases {
        let msg = error_of(&args);
        assert!(msg.contains(want), "wanted `{want}` in: {msg}");
    }
    assert!(!Path::new(&out).exists(), "no output is written for a failed run");
}

#[test]
fn damaged_bundles_are_refused_with_the_file_named() {
    let f = Fixture::new();
    let input = f.input();
    let out = f.path("out.png");

    let missing = f.bundle_copy("fc");
    std::fs::remove_file(missing.join("image_proj.onnx")).unwrap();
    let msg = error_of(&augment_args(missing.to_str().unwrap(), &input, &out, &[]));
    assert!(msg.contains("image_proj.onnx is missing"), "{msg}");

    let renamed = f.bundle_copy("fbc");
    let toml = std::fs::read_to_string(renamed.join("bundle.toml")).unwrap();
    std::fs::write(renamed.join("bundle.toml"), toml.replacen("name = \"ip_scale\"", "name = \"ip_weight\"", 1)).unwrap();
    let msg = error_of(&augment_args(renamed.to_str().unwrap(), &input, &out, &[]));
    assert!(msg.contains("unet.onnx does not match bundle.toml") && msg.contains("`ip_weight`"), "{msg}");

    let tampered = f.bundle_copy("plain");
    let mut unet = std::fs::read(tampered.join("unet.onnx")).unwrap();
    let last = unet.len() - 1;
    unet[last] ^= 1;
    std::fs::write(tampered.join("unet.onnx"), unet).unwrap();
    let msg = error_of(&augment_args(tampered.to_str().unwrap(), &input, &out, &[]));
    assert!(msg.contains("sha256 of") && msg.contains("unet.onnx"), "{msg}");
}

#[test]
fn schedule_prints_sigmas_and_timesteps() {
    let out = ok(&["schedule", "--scheduler", "sgm_uniform", "--steps", "20", "--t0", "0.4", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sigmas = json["sigmas"].as_array().unwrap();
    let timesteps = json["timesteps"].as_array().unwrap();
    assert_eq!((sigmas.len(), timesteps.len()), (13, 12));
    assert_eq!(sigmas.last().unwrap().as_f64(), Some(0.0));
    assert_eq!(timesteps[0].as_u64(), Some(599)); // 999 − 8·49.95 = 599.4
    let out = acufarm(&["schedule", "--scheduler", "ddim", "--steps", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("invalid value 'ddim' for '--scheduler <SCHEDULER>'") && stderr.contains("[possible values: sgm_uniform, normal, karras]"),
        "{stderr}"
    );
}
