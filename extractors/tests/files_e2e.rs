//! The `files` extractor against the stateful fake CDF (its upload URLs on the same server):
//! small files in one PUT, large ones in parts joined at completion, each once per change;
//! CogniteFile nodes; and a `kill -9` in the middle of a multipart upload through the built
//! binary: the restart goes on from the parts done and the file arrives once, whole.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use extractor_runtime::cdf::CdfClient;
use extractor_runtime::queues::Queues;
use extractor_runtime::state::{LocalStateStore, StateStore};
use extractor_runtime::{Extractor, RunContext};
use extractors::files::{Files, FilesConfig};
use tokio_util::sync::CancellationToken;

mod util;

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use support::fake_cdf::FakeCdf;
use util::bin;

/// `len` pseudo-random bytes (so a part out of place is caught).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

fn files(dir: &Path, target: serde_json::Value) -> Files {
    let config: FilesConfig = serde_json::from_value(serde_json::json!({
        "path": dir, "glob": "**/*", "part-size": "5MiB", "target": target
    }))
    .unwrap();
    Files::new(config).unwrap()
}

/// A run context with the fake CDF and a local state file.
fn context(cdf: &FakeCdf, state: &Path) -> (RunContext, extractor_runtime::auth::TokenManager) {
    let cognite = support::cognite(&cdf.uri(), ", connection: {max-retries: 0}");
    let tokens = support::token_manager(&cdf.uri());
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(&cognite, Some(tokens.clone()), None, &registry).unwrap();
    let queues = Queues::new(client.clone(), 1000, &registry).unwrap();
    let state = StateStore::Local(LocalStateStore::open(state, false).unwrap());
    let ctx = RunContext::new("docs", CancellationToken::new(), queues, Some(state));
    (ctx, tokens)
}

/// Small files in one PUT, a 12 MiB file in three parts joined in order; nothing again while
/// they are unchanged; a changed file again, overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_uploaded_whole_once_per_change() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let small = content(1000, 1);
    let big = content(12 * 1024 * 1024 + 17, 2);
    std::fs::write(data.join("notes.txt"), &small).unwrap();
    std::fs::write(data.join("sub/big.bin"), &big).unwrap();
    let extractor = files(
        &data,
        serde_json::json!({"type": "classic", "external-id": "docs:{path}", "metadata": {"size": "{size}"}}),
    );
    let (ctx, tokens) = context(&cdf, &dir.path().join("state.json"));
    extractor.run(ctx.clone()).await.unwrap();
    cdf.with(|s| {
        let notes = &s.files["docs:notes.txt"];
        assert_eq!(notes.content.as_deref(), Some(&small[..]));
        assert_eq!(notes.meta["name"], "notes.txt");
        assert_eq!(notes.meta["mimeType"], "text/plain");
        assert_eq!(notes.meta["metadata"]["size"], "1000");
        let b = &s.files["docs:sub/big.bin"];
        assert_eq!(b.expected_parts, 3);
        assert_eq!(b.completions, 1);
        assert!(
            b.content.as_deref() == Some(&big[..]),
            "the parts joined in order"
        );
        assert!(s.puts.values().all(|n| *n == 1), "{:?}", s.puts);
        assert_eq!(s.put_types["/upload/docs%3Anotes.txt/0"], "text/plain");
        assert_eq!(
            s.put_types["/upload/docs%3Asub%2Fbig.bin/1"],
            "application/octet-stream"
        );
    });
    let before = cdf.requests("/files");
    extractor.run(ctx.clone()).await.unwrap();
    assert_eq!(
        cdf.requests("/files"),
        before,
        "unchanged files are not sent again"
    );

    std::thread::sleep(Duration::from_millis(20));
    let changed = content(2000, 3);
    std::fs::write(data.join("notes.txt"), &changed).unwrap();
    extractor.run(ctx).await.unwrap();
    cdf.with(|s| {
        assert_eq!(
            s.files["docs:notes.txt"].content.as_deref(),
            Some(&changed[..])
        )
    });
    tokens.shutdown();
}

/// `cognite-file`: a CogniteFile node through the core model's view, then its content by
/// `instanceId` (one PUT, and a multipart upload for a large file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognite_files_are_nodes_with_content() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let report = content(4096, 4);
    let big = content(6 * 1024 * 1024, 5);
    std::fs::write(data.join("report.pdf"), &report).unwrap();
    std::fs::write(data.join("scan.bin"), &big).unwrap();
    let extractor = files(
        &data,
        serde_json::json!({"type": "cognite-file", "space": "docs", "external-id": "file-{stem}"}),
    );
    let (ctx, tokens) = context(&cdf, &dir.path().join("state.json"));
    extractor.run(ctx).await.unwrap();
    cdf.with(|s| {
        let (node, _) = &s.nodes["docs:file-report"];
        assert_eq!(node["name"], "report.pdf");
        assert_eq!(node["mimeType"], "application/pdf");
        assert_eq!(node["sourceId"], "report.pdf");
        assert_eq!(
            s.files["docs:file-report"].content.as_deref(),
            Some(&report[..])
        );
        let scan = &s.files["docs:file-scan"];
        assert_eq!((scan.expected_parts, scan.completions), (2, 1));
        assert!(scan.content.as_deref() == Some(&big[..]));
    });
    tokens.shutdown();
}

#[test]
fn the_config_says_what_is_wrong() {
    let check = |v: serde_json::Value| {
        let config: FilesConfig = serde_json::from_value(v).unwrap();
        Files::new(config).unwrap_err().problems().to_vec()
    };
    let got = check(
        serde_json::json!({"path": "x", "part-size": "1MiB", "target": {"type": "cognite-file", "metadata": {"a": "b"}}}),
    );
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["part-size", "target", "target.metadata"], "{got:?}");
    let got = check(
        serde_json::json!({"path": "x", "target": {"type": "classic", "space": "s", "name": "{oops"}}),
    );
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["target.name", "target.space"], "{got:?}");
}

/// `kill -9` in the middle of a five-part upload, through the built binary: the restart goes on
/// from the parts CDF has (part 1 is not sent again, the upload is not started again), and the
/// file arrives once, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_upload_resumes_and_the_file_arrives_once_whole() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let big = content(23 * 1024 * 1024, 6);
    std::fs::write(data.join("archive.bin"), &big).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncognite:\n  project: demo\n  host: {uri}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}\nstate-store: {{local: {{path: '{state}'}}}}\ntasks:\n  - name: archive\n    type: files\n    schedule: {{type: interval, expression: 1h}}\n    config: {{path: '{data}', part-size: 5MiB, done-folder: '{done}', target: {{type: classic}}}}\n",
            uri = cdf.uri(),
            state = dir.path().join("state.json").display(),
            data = data.display(),
            done = dir.path().join("done").display(),
        ),
    )
    .unwrap();
    cdf.with(|s| s.put_delay = Duration::from_millis(700));
    let mut child = bin()
        .args(["run", "--once", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while cdf.with(|s| s.puts.len()) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no parts arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Parts 1 and 2 answered (and saved), part 3 in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    cdf.with(|s| {
        assert!(s.files["archive.bin"].content.is_none(), "not complete yet");
        s.put_delay = Duration::ZERO;
    });

    let mut cmd = bin();
    cmd.args(["run", "--once", "-c"]).arg(&config);
    let (code, _, stderr) = tokio::task::spawn_blocking(move || util::run(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming the upload"), "{stderr}");
    cdf.with(|s| {
        let file = &s.files["archive.bin"];
        assert_eq!(file.completions, 1);
        assert!(
            file.content.as_deref() == Some(&big[..]),
            "whole and in order"
        );
        assert_eq!(
            s.requests["/files/initmultipartupload"], 1,
            "the upload was resumed, not restarted"
        );
        assert_eq!(
            s.puts["/upload/archive.bin/0"], 1,
            "a part CDF has is not sent again"
        );
        assert_eq!(s.puts.len(), 5);
    });
    assert!(
        dir.path().join("done/archive.bin").exists(),
        "moved to the done folder"
    );
    assert!(!data.join("archive.bin").exists());
}

/// A file rewritten in the middle of its multipart upload is not completed from parts of two
/// versions: the run fails saying so, and the next run uploads the new version whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_during_its_upload_is_not_joined_from_two_versions() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let first = content(11 * 1024 * 1024, 7);
    std::fs::write(data.join("growing.bin"), &first).unwrap();
    let extractor = files(&data, serde_json::json!({"type": "classic"}));
    let (ctx, tokens) = context(&cdf, &dir.path().join("state.json"));
    // Long enough that the rewrite lands before the last part, even on a loaded machine.
    cdf.with(|s| s.put_delay = Duration::from_millis(1000));
    let run = {
        let ctx = ctx.clone();
        let extractor = files(&data, serde_json::json!({"type": "classic"}));
        tokio::spawn(async move { extractor.run(ctx).await })
    };
    while cdf.with(|s| s.puts.is_empty()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::thread::sleep(Duration::from_millis(20));
    let second = content(11 * 1024 * 1024, 8);
    std::fs::write(data.join("growing.bin"), &second).unwrap();
    let e = run.await.unwrap().unwrap_err();
    assert!(
        e.to_string()
            .contains("changed while it was being uploaded"),
        "{e}"
    );
    assert_eq!(cdf.with(|s| s.files["growing.bin"].completions), 0);

    cdf.with(|s| s.put_delay = Duration::ZERO);
    extractor.run(ctx).await.unwrap();
    cdf.with(|s| {
        let file = &s.files["growing.bin"];
        assert_eq!(file.completions, 1);
        assert!(
            file.content.as_deref() == Some(&second[..]),
            "the new version, whole"
        );
        assert_eq!(
            s.requests["/files/initmultipartupload"], 2,
            "started again from scratch"
        );
    });
    tokens.shutdown();
}

/// Part URLs that expired while the process was down (403) are not resumed forever: the file
/// fails once, naming the refusal, and the next run starts its upload again and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_part_urls_start_the_upload_again() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let body = content(11 * 1024 * 1024, 9);
    std::fs::write(data.join("log.bin"), &body).unwrap();
    let state = dir.path().join("state.json");
    // A run that is cancelled after its first part leaves the upload's progress in the state.
    let (ctx, tokens) = context(&cdf, &state);
    cdf.with(|s| s.put_delay = Duration::from_millis(400));
    let run = {
        let (ctx, extractor) = (
            ctx.clone(),
            files(&data, serde_json::json!({"type": "classic"})),
        );
        tokio::spawn(async move { extractor.run(ctx).await })
    };
    while cdf.with(|s| s.puts.len()) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ctx.cancellation_token().cancel();
    assert!(run.await.unwrap().is_err());
    tokens.shutdown();

    cdf.with(|s| {
        s.put_delay = Duration::ZERO;
        s.put_expired = true;
    });
    let (ctx, tokens) = context(&cdf, &state);
    let extractor = files(&data, serde_json::json!({"type": "classic"}));
    let e = extractor.run(ctx.clone()).await.unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
    cdf.with(|s| s.put_expired = false);
    extractor.run(ctx).await.unwrap();
    cdf.with(|s| {
        let file = &s.files["log.bin"];
        assert_eq!(file.completions, 1);
        assert!(file.content.as_deref() == Some(&body[..]));
        assert_eq!(
            s.requests["/files/initmultipartupload"], 2,
            "started again after the 403"
        );
    });
    tokens.shutdown();
}
