//! `acufarm verify` on a hand-built output tree: a clean tree passes; a changed, missing,
//! duplicated or unlisted file is reported by path, with a non-zero exit.

use acufarm_core::manifest::{BundleRef, FileRef, ManifestRow, sha256_bytes};
use acufarm_core::{JobParams, PromptCategory};
use std::path::Path;
use std::process::Command;

fn row(path: &str, bytes: &[u8], label: Option<(&str, &[u8])>) -> ManifestRow {
    ManifestRow {
        run: "r".into(),
        shard: "M_Asher_N_HD".into(),
        sample_id: "M_Asher_N_HD_0001".into(),
        variant: 0,
        qa_try: 0,
        reseed: 0,
        source: FileRef { path: path.into(), sha256: sha256_bytes(b"source") },
        output: FileRef { path: path.into(), sha256: sha256_bytes(bytes) },
        annotation: label.map(|(p, b)| FileRef { path: p.into(), sha256: sha256_bytes(b) }),
        prompt_set: PromptCategory::Male,
        prompt: "p".into(),
        negative: String::new(),
        seed: 1,
        scene: None,
        params: JobParams::default(),
        bundle: BundleRef { name: "tiny-fc".into(), sha256: "0".repeat(64) },
        worker: "w1".into(),
        execution_provider: "cpu".into(),
        attempt: 1,
        qa: Vec::new(),
        timings: Default::default(),
    }
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn verify(root: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_acufarm")).arg("verify").arg(root).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn reports_each_problem_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files: [(&str, &[u8]); 4] = [
        ("train/image/img_512/M_Asher_N_HD_0001.png", b"one"),
        ("train/label/label/M_Asher_N_HD_0001.json", b"{\"label\":[]}"),
        ("train/image/img_512/M_Asher_N_HD_0002.png", b"two"),
        ("train/label/label/M_Asher_N_HD_0002.json", b"{\"label\":[]}"),
    ];
    for (p, b) in files {
        write(root, p, b);
    }
    let rows = [row(files[0].0, files[0].1, Some((files[1].0, files[1].1))), row(files[2].0, files[2].1, Some((files[3].0, files[3].1)))];
    let manifest: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    write(root, "manifest.jsonl", manifest.as_bytes());
    write(root, "map.txt", b"points");
    let (ok, _, stderr) = verify(root);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("verified 2 outputs"), "{stderr}");

    write(root, files[0].0, b"tampered");
    std::fs::remove_file(root.join(files[3].0)).unwrap();
    write(root, "train/image/img_512/stray.png", b"?");
    let (ok, stdout, stderr) = verify(root);
    assert!(!ok);
    assert!(stdout.contains(&format!("changed   {} (manifest line 1)", files[0].0)), "{stdout}");
    assert!(stdout.contains(&format!("missing   {} (manifest line 2)", files[3].0)), "{stdout}");
    assert!(stdout.contains("unlisted  train/image/img_512/stray.png"), "{stdout}");
    assert!(stderr.contains("3 problems") && stderr.contains("1 missing, 1 changed, 0 duplicate, 1 unlisted"), "{stderr}");

    // Debris of crashes: temporary upload files (hidden from object_store's listings) anywhere,
    // and staging objects, are reported by path as stray.
    std::fs::remove_file(root.join("train/image/img_512/stray.png")).unwrap();
    write(root, files[0].0, files[0].1);
    write(root, files[3].0, files[3].1);
    for debris in ["train/label/label/M_Asher_N_HD_0001.json#1", "_staging/r/17.1#1", "_staging/r/18.2", "train/metadata.jsonl#2"] {
        write(root, debris, b"partial");
    }
    write(root, "_acufarm/r/scene.png", b"shipped");
    let (ok, stdout, stderr) = verify(root);
    assert!(!ok, "{stdout}");
    for temporary in ["train/label/label/M_Asher_N_HD_0001.json#1", "_staging/r/17.1#1", "train/metadata.jsonl#2"] {
        assert!(stdout.contains(&format!("stray     {temporary} is the temporary file of an upload cut short")), "{temporary}: {stdout}");
    }
    assert!(stdout.contains("stray     _staging/r/18.2 is a staging object left behind"), "{stdout}");
    assert!(!stdout.contains("_acufarm"), "shipped files are acufarm's own: {stdout}");
    assert!(stderr.contains("4 problems") && stderr.contains("0 unlisted, 4 stray"), "{stderr}");
    std::fs::remove_dir_all(root.join("_staging")).unwrap();
    for temporary in ["train/label/label/M_Asher_N_HD_0001.json#1", "train/metadata.jsonl#2"] {
        std::fs::remove_file(root.join(temporary)).unwrap();
    }
    let (ok, _, stderr) = verify(root);
    assert!(ok, "{stderr}");

    write(root, "manifest.jsonl", format!("{manifest}{}\n", serde_json::to_string(&rows[1]).unwrap()).as_bytes());
    let (_, stdout, _) = verify(root);
    assert!(stdout.contains(&format!("duplicate {} is listed on manifest lines [2, 3]", files[2].0)), "{stdout}");

    write(root, "manifest.jsonl", b"{not json\n");
    let (ok, _, stderr) = verify(root);
    assert!(!ok && stderr.contains("line 1 is not a manifest row"), "{stderr}");
    let (ok, _, stderr) = verify(&root.join("nowhere"));
    assert!(!ok && stderr.contains("holds manifest.jsonl"), "{stderr}");
}
