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
