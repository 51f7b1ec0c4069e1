//! The `openssl` command, with which tests make certificates as an operator does. Shared by
//! the runtime's and the built-ins' tests (`#[path]`-included).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Whether the `openssl` command is here. Where it is not, the test should return: this says
/// that it skipped; with `CI=true` it fails instead (`.ci/run` installs it).
pub fn available() -> bool {
    let present = Command::new("openssl").arg("version").output().is_ok();
    if !present {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but the openssl command is missing (.ci/run installs it)"
        );
        eprintln!("skipped: the openssl command is not installed (apt-get install openssl)");
    }
    present
}

/// Runs `openssl args` in `dir`, failing the test with its error output.
pub fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate (`cert`) and its RSA key (`key`), valid for two days, made in
/// `dir` by `openssl req -x509` as an operator makes one.
pub fn self_signed(dir: &Path, key: &str, cert: &str) {
    run(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=extractor-runtime-test",
            "-keyout",
            key,
            "-out",
            cert,
        ],
    );
}
