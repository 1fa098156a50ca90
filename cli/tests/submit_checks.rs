//! A spec is checked once, before anything touches storage: bad run names and specs with several
//! problems are refused by the coordinator itself (called directly over gRPC, as a client other
//! than this CLI would) and by `acufarm submit`, with every problem listed; nothing is queued and
//! objects staged for other runs stay. `submit --dry-run` shows the plan and writes nothing.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use acufarm_proto::admin_client::AdminClient;
use acufarm_proto::v1 as pb;
use bytes::Bytes;
use support::dataset::{Backend, Dataset};
use support::{FAST, Farm};

fn files(root: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    support::collect_files(root, root, &mut out);
    out
}

/// A submit as any gRPC client would send it, with the scene image the example spec names.
fn submit_request(spec_toml: String, dir: &std::path::Path) -> pb::SubmitRequest {
    let scene = std::fs::read(dir.join("scenes/warm_room.png")).unwrap();
    let files = vec![pb::SpecFile { path: "scenes/warm_room.png".into(), content: scene }];
    pb::SubmitRequest { spec_toml, spec_path: "spec.toml".into(), files, force: true, bundle_sha256: "ab".repeat(32), dry_run: false }
}

#[test]
fn bad_specs_are_refused_before_storage_is_touched() {
    let _serial = support::serial();
    let dir = tempfile::Builder::new().prefix("acufarm-submit-checks-").tempdir().unwrap();
    let farm = Farm::start(Vec::new(), FAST);
    let data = Dataset::generate(&Backend::Fs, dir.path(), "checks", &["M_Asher_N_HD", "F_Grace_N_HA"], &[1, 2]);
    let output_root = std::path::PathBuf::from(data.output_url.strip_prefix("file://").unwrap());

    // Objects another run has staged, and one at the top of the staging prefix.
    let staged = ["_staging/other-run/7.1", "_staging/other-run/8.2", "_staging/a/b/9.1", "_staging/stray.bin"];
    support::block_on({
        let output = data.output.clone();
        async move {
            for key in staged {
                output.put(key, Bytes::from_static(b"staged upload")).await.unwrap();
            }
        }
    });
    let before = files(&output_root);

    let good = std::fs::read_to_string(data.write_spec("spec.toml", "checks-run", |s| s)).unwrap();
    let url = farm.url();
    let token = farm.token.clone();
    let spec_dir = data.dir.clone();
    let refusals: Vec<(String, String)> = support::block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
        let mut client = AdminClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert(acufarm_proto::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
            Ok(request)
        });
        let mut refusals = Vec::new();
        for name in ["", "a/b", "..", "x y", "ok-run", "other-run/..", "A"] {
            let spec = good.replace("name = \"checks-run\"", &format!("name = {name:?}"));
            let answer = client.submit(submit_request(spec, &spec_dir)).await;
            match answer {
                // A valid name in the same loop: the checks refuse names, not submits.
                Ok(_) if name == "ok-run" => {}
                Ok(_) => panic!("run name {name:?} was accepted"),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name:?}: {status:?}");
                    refusals.push((name.to_string(), status.message().to_string()));
                }
            }
        }
        let several = good
            .replace("sampler = \"dpmpp_2m\"", "sampler = \"dpmpp2m\"")
            .replace("cfg = [1.8, 2.4]", "cfg = [2.4, 1.8]")
            .replace("t0 = 0.4", "t0 = 1.0")
            .replace("[retry]", "[retry]\nmax_tries = 3");
        let status = client.submit(submit_request(several, &spec_dir)).await.unwrap_err();
        refusals.push(("several".into(), status.message().to_string()));
        refusals
    });
    for (name, message) in &refusals[..refusals.len() - 1] {
        assert!(message.contains("is not a valid run name"), "{name:?}: {message}");
    }
    let several = &refusals.last().unwrap().1;
    assert!(several.contains("has 4 problems"), "{several}");
    for needle in ["unknown sampler `dpmpp2m`", "`sampler.cfg` range [2.4, 1.8] runs backwards", "`sampler.t0` is 1", "unknown key `retry.max_tries`"] {
        assert!(several.contains(needle), "{needle}: {several}");
    }

    // Every staged object is still there; the only new files are those of the valid run.
    let after = files(&output_root);
    for key in &before {
        assert!(after.contains(key), "{key} was deleted by a refused submit");
    }
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.iter().all(|path| path.starts_with("_acufarm/ok-run/") || path.as_str() == "map.txt"), "a refused submit wrote {added:?}");
    let status = farm.status_all().unwrap();
    let names: Vec<&str> = status["runs"].as_array().unwrap().iter().map(|run| run["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ok-run"], "only the valid spec queued a run");

    // The CLI refuses the same way (exit 1, every problem), before it connects.
    let bad = data.write_spec("bad.toml", "checks-run", |s| s.replace("sampler = \"dpmpp_2m\"", "sampler = \"dpmpp2m\"").replace("t0 = 0.4", "t0 = 1.0"));
    let bundle = support::bundle("fc").display().to_string();
    let out = farm.admin(&["submit", bad.to_str().unwrap(), "--bundle", &bundle]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has 2 problems") && stderr.contains("unknown sampler `dpmpp2m`") && stderr.contains("`sampler.t0` is 1"), "{stderr}");

    // A dry run through the coordinator: the plan, and nothing written or queued.
    let spec = data.write_spec("dry.toml", "dry-run", |s| s);
    let out = farm.admin_ok(&["submit", spec.to_str().unwrap(), "--bundle", &bundle, "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["run"], "dry-run");
    assert_eq!(plan["jobs"].as_u64().unwrap() as usize, data.expected.len());
    assert_eq!(plan["shards"].as_object().unwrap().len(), 2);
    let text = farm.admin_ok(&["submit", spec.to_str().unwrap(), "--bundle", &bundle, "--dry-run"]);
    assert!(text.starts_with(&format!("dry run of `dry-run`: would queue {} jobs in 2 shards", data.expected.len())), "{text}");
    assert_eq!(files(&output_root), after, "a dry run wrote files");
    let status = farm.status_all().unwrap();
    assert_eq!(status["runs"].as_array().unwrap().len(), 1, "a dry run queued a run");
}
