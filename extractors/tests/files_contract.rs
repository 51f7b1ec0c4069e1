//! Contract test: the requests the `files` extractor makes to CDF (classic metadata, a
//! multipart start, a CogniteFile node and its upload links, and the completion bodies) are
//! sent to Prism serving Cognite's own OpenAPI spec and must be accepted. The extractor runs in
//! dry-run to record what it sends; each request is then replayed to Prism.
//!
//! Needs `../shared` and its npm packages (`.ci/run` installs them); without them the test
//! says that it skipped, and with `CI=true` it fails.

use std::sync::{Arc, Mutex};

use extractor_runtime::cdf::{CdfClient, DryRunSink};
use extractor_runtime::{Extractor, RunContext};
use extractors::files::{Files, FilesConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::MockServer;

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn cognite(host: &str) -> extractor_runtime::config::CogniteConfig {
    support::cognite(host, ", connection: {max-retries: 0}")
}

/// What the extractor sends for the files in `dir` with `target`, in dry-run.
async fn recorded(dir: &std::path::Path, target: Value) -> Vec<Value> {
    let buffer = Buffer::default();
    let client = CdfClient::new(
        &cognite("http://127.0.0.1:9"),
        None,
        Some(DryRunSink::to_writer(buffer.clone())),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let config: FilesConfig =
        serde_json::from_value(json!({"path": dir, "part-size": "5MiB", "target": target}))
            .unwrap();
    let queues =
        extractor_runtime::queues::Queues::new(client.clone(), 1000, &prometheus::Registry::new())
            .unwrap();
    let ctx = RunContext::new("docs", CancellationToken::new(), queues, None);
    Files::new(config).unwrap().run(ctx).await.unwrap();
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_requests_match_cognites_spec() {
    let Some(prism) = support::prism::Prism::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("report.pdf"), vec![1u8; 1000]).unwrap();
    std::fs::write(dir.path().join("archive.bin"), vec![2u8; 6 * 1024 * 1024]).unwrap();
    let mut requests = recorded(
        dir.path(),
        json!({"type": "classic", "external-id": "docs:{path}", "metadata": {"modified": "{modified}"}}),
    )
    .await;
    // The spec's InstanceId (in /files/uploadlink) holds external ids to an identifier pattern
    // (`^[a-zA-Z]([a-zA-Z0-9_]{0,253}[a-zA-Z0-9])?$`, no `.`): the test's ids keep to it.
    requests.extend(
        recorded(
            dir.path(),
            json!({"type": "cognite-file", "space": "docs", "external-id": "file_{stem}"}),
        )
        .await,
    );
    let endpoints: Vec<&str> = requests
        .iter()
        .map(|r| r["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(
        endpoints,
        [
            "/files/initmultipartupload",
            "/files",
            "/models/instances",
            "/files/multiuploadlink",
            "/models/instances",
            "/files/uploadlink",
        ]
    );
    // The completions, as the extractor builds them (its fake-CDF test checks the fields).
    requests.push(json!({"endpoint": "/files/completemultipartupload", "path": "/files/completemultipartupload",
        "body": {"id": 123, "uploadId": "up-1"}}));
    requests.push(json!({"endpoint": "/files/completemultipartupload", "path": "/files/completemultipartupload",
        "body": {"instanceId": {"space": "docs", "externalId": "file_archive"}, "uploadId": "up-1"}}));

    let idp = MockServer::start().await;
    support::mount_token_endpoint(&idp, "t").await;
    let tokens = support::token_manager(&idp.uri());
    let client = CdfClient::new(
        &cognite(&prism.base),
        Some(tokens.clone()),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap();
    for r in &requests {
        let endpoint: &'static str =
            Box::leak(r["endpoint"].as_str().unwrap().to_owned().into_boxed_str());
        client
            .post(endpoint, r["path"].as_str().unwrap(), &r["body"])
            .await
            .unwrap_or_else(|e| panic!("{} {} was refused: {e}", r["path"], r["body"]));
    }
    // Validation is live: a misspelled field is refused.
    let err = client
        .post(
            "/files",
            "/files?overwrite=true",
            &json!({"name": "x", "external_id": "y"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    tokens.shutdown();
}
