//! The same storage scenario against the local filesystem and against S3 (a `moto_server` on
//! loopback, from the project's Python environment).

use acufarm_storage::{STAGING, Storage, StorageError};
use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

async fn scenario(input: &Storage, output: &Storage) {
    input.put("map.txt", Bytes::from_static(b"LI17\nLI18\n")).await.unwrap();
    input.put("train/image/img_512/M_Asher_N_HD_0001.png", Bytes::from_static(b"png-bytes")).await.unwrap();
    input.put("train/label/label/M_Asher_N_HD_0001.json", Bytes::from_static(b"{\"label\":[]}")).await.unwrap();
    assert_eq!(input.list("").await.unwrap(), vec!["map.txt", "train/image/img_512/M_Asher_N_HD_0001.png", "train/label/label/M_Asher_N_HD_0001.json"]);
    assert_eq!(input.list("train/image").await.unwrap(), vec!["train/image/img_512/M_Asher_N_HD_0001.png"]);

    // Stage, then commit to the final key; the staging object is gone afterwards.
    let staging = Storage::staging_key("run-1", 7, 1);
    output.put(&staging, Bytes::from_static(b"relit")).await.unwrap();
    assert_eq!(output.staging_count().await.unwrap(), 1);
    assert!(output.list("").await.unwrap().is_empty(), "staging objects are not listed as outputs");
    output.commit(&staging, "train/image/img_512/M_Asher_N_HD_0001.png").await.unwrap();
    assert_eq!(output.get("train/image/img_512/M_Asher_N_HD_0001.png").await.unwrap(), Bytes::from_static(b"relit"));
    assert_eq!(output.staging_count().await.unwrap(), 0);
    // A retried commit after the rename already happened is harmless.
    output.commit(&staging, "train/image/img_512/M_Asher_N_HD_0001.png").await.unwrap();

    // A batch commit: new folders, one attempt already committed, one whose staged object is
    // missing; one result per pair, in order.
    let (a, b, lost) = (Storage::staging_key("run-1", 10, 1), Storage::staging_key("run-1", 11, 1), Storage::staging_key("run-1", 12, 1));
    output.put(&a, Bytes::from_static(b"a")).await.unwrap();
    output.put(&b, Bytes::from_static(b"b")).await.unwrap();
    let moves = [
        (a.as_str(), "train/image/img_512/new folder/F_Bo_N_HD_0002.png"),
        (staging.as_str(), "train/image/img_512/M_Asher_N_HD_0001.png"),
        (lost.as_str(), "train/image/img_512/F_Bo_N_HD_0003.png"),
        (b.as_str(), "test/image/img_512/F_Bo_N_HD_0004.png"),
    ];
    let results = output.commit_many(&moves).await;
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(matches!(&results[2], Err(StorageError::NotFound { path, .. }) if *path == lost), "{results:?}");
    assert_eq!(output.get("train/image/img_512/new folder/F_Bo_N_HD_0002.png").await.unwrap(), Bytes::from_static(b"a"));
    assert_eq!(output.get("test/image/img_512/F_Bo_N_HD_0004.png").await.unwrap(), Bytes::from_static(b"b"));
    assert_eq!(output.staging_count().await.unwrap(), 0);
    for path in ["train/image/img_512/new folder/F_Bo_N_HD_0002.png", "test/image/img_512/F_Bo_N_HD_0004.png"] {
        output.delete(path).await.unwrap();
    }

    output.copy_from(input, "train/label/label/M_Asher_N_HD_0001.json", "train/label/label/M_Asher_N_HD_0001.json").await.unwrap();
    assert_eq!(
        output.sha256("train/label/label/M_Asher_N_HD_0001.json").await.unwrap(),
        input.sha256("train/label/label/M_Asher_N_HD_0001.json").await.unwrap()
    );

    // An abandoned attempt's staging object is cleaned up per run.
    output.put(&Storage::staging_key("run-1", 8, 2), Bytes::from_static(b"x")).await.unwrap();
    output.put(&Storage::staging_key("run-2", 1, 1), Bytes::from_static(b"y")).await.unwrap();
    assert_eq!(output.clean_staging(Some("run-1")).await.unwrap(), 1);
    assert_eq!(output.staging_count().await.unwrap(), 1);
    assert_eq!(output.clean_staging(None).await.unwrap(), 1);

    // A label copy through a staging key lands whole and leaves nothing in staging.
    let label = "train/label/label/M_Asher_N_HD_0001.json";
    output.delete(label).await.unwrap();
    output.copy_from_staged(input, label, label, &Storage::staging_key("run-1", 9, 1)).await.unwrap();
    assert_eq!(output.sha256(label).await.unwrap(), input.sha256(label).await.unwrap());
    assert_eq!(output.staging_count().await.unwrap(), 0);
    assert_eq!(output.list("train/label").await.unwrap(), vec![label], "nothing but the label lands beside it");

    // A run name that would widen the staging prefix is refused before anything is deleted.
    output.put(&Storage::staging_key("run-3", 1, 1), Bytes::from_static(b"z")).await.unwrap();
    for bad in ["", "a/b", "..", "."] {
        let err = output.clean_staging(Some(bad)).await.unwrap_err();
        assert!(matches!(err, StorageError::BadRunName { .. }) && err.to_string().contains("one non-empty path segment"), "{bad:?}: {err}");
    }
    assert_eq!(output.staging_count().await.unwrap(), 1);
    assert_eq!(output.clean_staging(Some("run-3")).await.unwrap(), 1);

    let err = input.get("train/image/img_512/missing.png").await.unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }) && !err.is_retryable(), "{err}");
    assert!(err.to_string().contains("missing.png does not exist"), "{err}");
    assert!(!input.exists("nope").await.unwrap());
    assert!(STAGING.starts_with('_'));
}

#[tokio::test]
async fn local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let input = Storage::open(&format!("file://{}", dir.path().join("in").display())).unwrap();
    let output = Storage::open(&format!("file://{}", dir.path().join("out").display())).unwrap();
    scenario(&input, &output).await;
}

/// object_store's local uploads write `key#N` and rename it; a process killed in between leaves
/// that file, which object_store's own listings hide. Staging cleanup and counts must see it, and
/// the manifest writer removes those of its own files.
#[tokio::test]
async fn local_temporary_upload_files_are_counted_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let output = Storage::open(&format!("file://{}", root.display())).unwrap();
    let staged = Storage::staging_key("run-1", 4, 1);
    output.put(&staged, Bytes::from_static(b"whole")).await.unwrap();
    // What a worker killed during its upload, and a coordinator killed while copying, leave.
    std::fs::write(root.join(format!("{staged}#1")), b"half").unwrap();
    std::fs::create_dir_all(root.join("_staging/run-2")).unwrap();
    std::fs::write(root.join("_staging/run-2/1.1#1"), b"other run").unwrap();
    std::fs::write(root.join("manifest.jsonl#1"), b"half a manifest").unwrap();
    std::fs::write(root.join("manifest.jsonl#x"), b"not a temporary name").unwrap();
    output.put("manifest.jsonl", Bytes::from_static(b"{}\n")).await.unwrap();
    assert!(acufarm_storage::is_temporary("_staging/run-1/4.1#1") && acufarm_storage::is_temporary("a#b/c.json#12"));
    assert!(!acufarm_storage::is_temporary("a#1/c.json") && !acufarm_storage::is_temporary("c.json#") && !acufarm_storage::is_temporary("c.json#1x"));
    assert_eq!(output.list("").await.unwrap(), vec!["manifest.jsonl", "manifest.jsonl#x"], "object_store hides the temporary files");
    assert_eq!(output.staging_count().await.unwrap(), 3, "the staged object and both temporary files count");

    assert_eq!(output.clean_staging(Some("run-1")).await.unwrap(), 2);
    assert!(!root.join("_staging/run-1").exists(), "the run's staging folder goes with its files");
    assert_eq!(output.staging_count().await.unwrap(), 1, "another run's staging is left alone");

    assert_eq!(output.remove_temporaries("manifest.jsonl").await.unwrap(), 1);
    assert!(root.join("manifest.jsonl").exists() && root.join("manifest.jsonl#x").exists() && !root.join("manifest.jsonl#1").exists());
    assert_eq!(output.remove_temporaries("train/metadata.jsonl").await.unwrap(), 0, "a folder that does not exist holds none");
    assert_eq!(output.clean_staging(None).await.unwrap(), 1);
    assert_eq!(output.staging_count().await.unwrap(), 0);
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_server() -> (Moto, u16) {
    let home = std::env::var("ACUFARM_HOME").unwrap_or_else(|_| format!("{}/.cache/acufarm", std::env::var("HOME").unwrap_or_default()));
    let bin = std::env::var("ACUFARM_MOTO_SERVER").unwrap_or_else(|_| format!("{home}/py/bin/moto_server"));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}); run scripts/setup.sh dev, which installs moto[server]"));
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not open port {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (moto, port)
}

/// Creates a bucket with a plain HTTP request (moto accepts unsigned requests).
fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "bucket creation failed: {reply}");
}

#[tokio::test]
async fn s3_on_moto() {
    let (_moto, port) = moto_server();
    create_bucket(port, "acufarm-test");
    let options = || {
        [
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_allow_http", "true".to_string()),
            ("aws_access_key_id", "test".to_string()),
            ("aws_secret_access_key", "test".to_string()),
            ("aws_region", "us-east-1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
    };
    let input = Storage::open_with("s3://acufarm-test/datasets/acusim", options()).unwrap();
    let output = Storage::open_with("s3://acufarm-test/out/relit", options()).unwrap();
    scenario(&input, &output).await;
}

#[test]
fn bad_locations_are_clear() {
    for (url, want) in [("ftp://x", "unknown scheme"), ("s3://", "no bucket"), ("file://", "path is empty"), ("/tmp/x", "unknown scheme")] {
        let err = Storage::open(url).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("file:///absolute/path"), "{url}: {err}");
    }
}
