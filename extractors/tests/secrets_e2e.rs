//! Secrets written as `!file PATH` (a mounted Kubernetes or Docker secret) and `!env NAME`,
//! through the built binary against the real OAuth2 test server (`../shared/tools/
//! token-server.mjs`): the client signs in with the file's content (its trailing newline
//! trimmed), a wrong one is refused (exit 3), and the secret reaches no output, even at debug
//! level. Where `../shared` is absent the test says that it skipped; with `CI=true` it fails.

use std::path::Path;
use std::process::Command;

mod util;

#[path = "../../runtime/tests/support/prism.rs"]
mod prism;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;

use util::{bin, run};

const SECRET: &str = "file-secret-Zq9#: not YAML";

fn config(dir: &Path, port: u16, secret_file: &Path) -> std::path::PathBuf {
    let text = format!(
        "version: 1\ncognite:\n  project: demo\n  host: https://api.cognitedata.com\n  idp-authentication:\n\
         \x20   client-id: !env TEST_CLIENT_ID\n\
         \x20   secret: !file {}\n\
         \x20   token-url: http://127.0.0.1:{port}/token\n\
         \x20   scopes: [\"https://api.cognitedata.com/.default\"]\n",
        secret_file.display()
    );
    util::write_config(dir, &text)
}

#[test]
fn a_secret_from_a_file_signs_in_and_is_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_server, port)) = prism::token_server(&[
        "--client-id",
        "c",
        "--client-secret",
        SECRET,
        "--scope",
        "https://api.cognitedata.com/.default",
    ]) else {
        return;
    };
    let secret_file = tmp.path().join("client-secret");
    // As a Kubernetes secret volume writes it: the value and a newline.
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = config(tmp.path(), port, &secret_file);
    let token = |cmd: &mut Command| {
        run(cmd
            .args(["token", "-c"])
            .arg(&path)
            .env("TEST_CLIENT_ID", "c")
            .env("RUST_LOG", "debug"))
    };
    let (code, out, err) = token(&mut bin());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Bearer") || out.contains("bearer"), "{out}");
    for shown in [&out, &err] {
        assert!(!shown.contains(SECRET), "the secret was shown: {shown}");
        assert!(
            !shown.contains("file-secret-Zq9"),
            "part of the secret was shown: {shown}"
        );
    }
    // check-config names where the secret comes from, never the secret.
    let (code, out, err) = run(bin()
        .args(["check-config", "-c"])
        .arg(&path)
        .env("TEST_CLIENT_ID", "c"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("secret ***"), "{out}");
    assert!(!out.contains("file-secret-Zq9"), "{out}");

    // The wrong secret in the file: the identity provider refuses it for good (exit 3).
    std::fs::write(&secret_file, "wrong\n").unwrap();
    let (code, out, err) = token(&mut bin());
    assert_eq!(code, 3, "{out}\n{err}");

    // A file other users may read still works, with a warning.
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = token(&mut bin());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: ")
            && err.contains("config.yaml:7:19: cognite.idp-authentication.secret: `!file")
            && err.contains("readable by every user"),
        "{err}"
    );

    // A missing file and an unset variable are config errors naming the key and the position.
    std::fs::remove_file(&secret_file).unwrap();
    let (code, _, err) = token(&mut bin());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("config.yaml:7:19: cognite.idp-authentication.secret: `!file"),
        "{err}"
    );
    let (code, _, err) = run(bin().args(["check-config", "-c"]).arg(&path));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cognite.idp-authentication.client-id: `!env TEST_CLIENT_ID`: the environment variable TEST_CLIENT_ID is not set"),
        "{err}"
    );
}

/// The real OAuth2 test server twice: the vault reader's identity provider (client
/// `vault-reader`, scope `https://vault.azure.net/.default`) and CDF's (client `c` with the
/// vault's secret); `None` where `../shared` is absent.
fn identity_providers() -> Option<((prism::Proc, u16), (prism::Proc, u16))> {
    let entra = prism::token_server(&[
        "--client-id",
        "vault-reader",
        "--client-secret",
        "vault-reader-secret",
        "--scope",
        "https://vault.azure.net/.default",
    ])?;
    let idp = prism::token_server(&[
        "--client-id",
        "c",
        "--client-secret",
        VAULT_SECRET,
        "--scope",
        "https://api.cognitedata.com/.default",
    ])?;
    Some((entra, idp))
}

/// The client secret CDF's sign-in needs, as the vault holds it.
const VAULT_SECRET: &str = "from-the-vault-7#x";

/// A fake Azure Key Vault holding `cdf-client-secret`, that answers only a bearer token issued
/// for `https://vault.azure.net/.default` (the JWT's `scope` claim) and `api-version=7.4`, as
/// Key Vault's REST API asks.
async fn fake_vault() -> wiremock::MockServer {
    use wiremock::{Mock, Request, ResponseTemplate, matchers::method};
    let vault = wiremock::MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(|req: &Request| {
            let version = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "api-version")
                .map(|(_, v)| v.into_owned());
            if version.as_deref() != Some("7.4") {
                return ResponseTemplate::new(400).set_body_json(serde_json::json!(
                    {"error": {"code": "BadParameter", "message": "api-version 7.4 is required"}}));
            }
            let bearer = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            use base64::Engine as _;
            let claims: serde_json::Value = bearer
                .split('.')
                .nth(1)
                .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if claims["scope"] != "https://vault.azure.net/.default" {
                return ResponseTemplate::new(401).set_body_json(serde_json::json!(
                    {"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience"}}));
            }
            match req.url.path() {
                "/secrets/cdf-client-secret" => ResponseTemplate::new(200).set_body_json(
                    serde_json::json!({"value": VAULT_SECRET, "id": "https://x/secrets/cdf-client-secret/1", "attributes": {"enabled": true}}),
                ),
                other => ResponseTemplate::new(404).set_body_json(serde_json::json!(
                    {"error": {"code": "SecretNotFound", "message": format!("A secret with (name/id) {} was not found in this key vault.", other.trim_start_matches("/secrets/"))}})),
            }
        })
        .mount(&vault)
        .await;
    vault
}

/// python-extractor-utils' `!keyvault NAME` with `azure-keyvault: {authentication-method:
/// client-secret}`: the vault's token comes from the real OAuth2 test server (which checks the
/// client and the vault's scope), the secret from a fake vault (which checks the token and the
/// API version), and CDF's sign-in then works with it; the secret reaches no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_azure_key_vault_signs_in_and_is_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    // The identity provider of both sign-ins: one app reads the vault, the other CDF.
    let Some(((_entra, entra), (_idp, idp))) = identity_providers() else {
        return;
    };
    let vault = fake_vault().await;
    let write = |name: &str, reader_secret: &str| {
        let text = format!(
            "azure-keyvault:\n  keyvault-name: plant-vault\n  authentication-method: client-secret\n  client-id: vault-reader\n  tenant-id: plant-tenant\n  secret: ${{KV_SECRET:-{reader_secret}}}\n  vault-url: {vault}\n  token-url: http://127.0.0.1:{entra}/token\n\
             cognite:\n  project: demo\n  host: https://api.cognitedata.com\n  idp-authentication:\n    client-id: c\n    secret: !keyvault {name}\n    token-url: http://127.0.0.1:{idp}/token\n    scopes: [\"https://api.cognitedata.com/.default\"]\n",
            vault = vault.uri(),
        );
        util::write_config(tmp.path(), &text)
    };
    let path = write("cdf-client-secret", "vault-reader-secret");
    let token = |path: &Path| {
        let mut cmd = bin();
        cmd.args(["token", "-c"]).arg(path).env("RUST_LOG", "debug");
        run(&mut cmd)
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || token(&path)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.to_lowercase().contains("bearer"), "{out}");
    for shown in [&out, &err] {
        assert!(
            !shown.contains("from-the-vault"),
            "the secret was shown: {shown}"
        );
    }
    assert_eq!(
        vault.received_requests().await.unwrap().len(),
        1,
        "one secret, one read"
    );

    // A secret the vault does not hold: a config error at the tag, naming the vault's answer.
    let path = write("no-such-secret", "vault-reader-secret");
    let (code, _, err) = tokio::task::spawn_blocking(move || token(&path))
        .await
        .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("config.yaml:14:23: cognite.idp-authentication.secret: Key Vault")
            && err.contains("secret `no-such-secret`: it does not exist in this vault")
            && err.contains("SecretNotFound"),
        "{err}"
    );

    // The vault reader's own secret is wrong: the identity provider's refusal, at the section.
    let path = write("cdf-client-secret", "wrong");
    let (code, _, err) = tokio::task::spawn_blocking(move || token(&path))
        .await
        .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("azure-keyvault: the Key Vault token request (client secret of client vault-reader) was refused")
            && err.contains("invalid_client"),
        "{err}"
    );
    assert!(
        !err.contains("wrong\n") && !err.contains("vault-reader-secret"),
        "{err}"
    );
}

/// The issue's whole promise in one python-extractor-utils-shaped file, run unchanged through
/// the binary: the vault reader's secret from a mounted file (`!file`), CDF's client secret from
/// Key Vault (`!keyvault`), signing in at the real OAuth2 test server; a rotated log file
/// (`logger.file`) and the metrics as time series (`metrics.cognite`); the data arrives, and no
/// secret reaches the log file or the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_extractor_utils_config_with_file_and_vault_secrets_runs_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(((_entra, entra), (_idp, idp))) = identity_providers() else {
        return;
    };
    let vault = fake_vault().await;
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let reader_secret = tmp.path().join("vault-reader-secret");
    std::fs::write(&reader_secret, "vault-reader-secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&reader_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("readings.csv"),
        "time,sensor,value\n2026-11-30T08:00:00Z,boiler-1,71.5\n2026-11-30T08:01:00Z,boiler-1,71.9\n",
    )
    .unwrap();
    let log = tmp.path().join("logs/extractor.log");
    let text = format!(
        r#"azure-keyvault:
  keyvault_name: plant-vault
  authentication_method: client-secret
  client_id: vault-reader
  tenant_id: plant-tenant
  secret: !file {reader_secret}
  vault_url: {vault}
  token_url: http://127.0.0.1:{entra}/token
cognite:
  project: demo
  host: {cdf}
  idp_authentication:
    client_id: c
    secret: !keyvault cdf-client-secret
    token_url: http://127.0.0.1:{idp}/token
    scopes: ["https://api.cognitedata.com/.default"]
logger:
  console:
    level: WARNING
  file:
    level: DEBUG
    path: {log}
    retention: 7
metrics:
  cognite:
    external_id_prefix: "plant-metrics:"
    push_interval: 1h
tasks:
  - name: readings
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: {data}
      types: {{value: float, time: timestamp}}
      destination: {{type: datapoints, external-id: "{{sensor}}", timestamp: time, value: value, create-missing: true}}
"#,
        reader_secret = reader_secret.display(),
        vault = vault.uri(),
        cdf = cdf.uri(),
        log = log.display(),
        data = data.display(),
    );
    let config = util::write_config(tmp.path(), &text);
    let mut cmd = bin();
    cmd.args(["run", "--once", "-c"]).arg(&config);
    let (code, out, err) = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    cdf.with(|c| {
        assert_eq!(c.datapoints["boiler-1"].len(), 2);
        assert!(
            c.series
                .keys()
                .any(|k| k.starts_with("plant-metrics:extractor_task_runs_total")),
            "{:?}",
            c.series.keys()
        );
        // Every CDF request carried a token of the real test server (a signed JWT).
        assert!(
            c.bearers
                .iter()
                .all(|b| b.starts_with("Bearer ey") && b.matches('.').count() == 2),
            "{:?}",
            c.bearers
        );
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("DEBUG"),
        "the file has its own level: {logged}"
    );
    for shown in [&out, &err, &logged] {
        assert!(
            !shown.contains("from-the-vault"),
            "a secret was shown: {shown}"
        );
        assert!(
            !shown.contains("vault-reader-secret"),
            "a secret was shown: {shown}"
        );
    }
}
