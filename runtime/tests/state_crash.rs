//! Crash test: `kill -9` a process at random points while it saves state again and again; the
//! file must always be valid and hold either the old or the new state.
//!
//! The saving process is this test binary itself, re-run with `--exact saving_child`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use extractor_runtime::state::{LocalStateStore, Watermarks};

const FILE_VAR: &str = "STATE_CRASH_FILE";

fn counter(path: &Path) -> Option<u64> {
    let store = LocalStateStore::open(path, false)
        .unwrap_or_else(|e| panic!("torn or corrupt state file: {e}"));
    store.get("k").and_then(|w| w.high).and_then(|v| v.as_u64())
}

/// Not a test of its own: when started by the crash test, saves forever.
#[test]
fn saving_child() {
    let Some(path) = std::env::var_os(FILE_VAR) else {
        return;
    };
    let path = Path::new(&path);
    let store = LocalStateStore::open(path, false).expect("the child always finds a valid file");
    let mut n = counter(path).unwrap_or(0);
    loop {
        n += 1;
        store.set(
            "k",
            Watermarks {
                low: Some(0.into()),
                high: Some(n.into()),
            },
        );
        store.save().unwrap();
    }
}

#[test]
fn kill_9_during_saves_leaves_the_old_or_the_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("states.json");
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    let mut saves_seen = 0;
    for round in 0..200 {
        let mut child = Command::new(&exe)
            .args(["--exact", "saving_child", "--nocapture", "--test-threads=1"])
            .env(FILE_VAR, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2_000 + fastrand::u64(0..20_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if let Some(n) = counter(&path) {
            assert!(
                n >= last,
                "round {round}: the state went back from {last} to {n}"
            );
            saves_seen += (n > last) as u32;
            last = n;
        }
    }
    // Opening the store cleans up the temporary files of killed saves.
    LocalStateStore::open(&path, false).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("states.json")]);
    assert!(last > 0, "the child never saved: the test proves nothing");
    assert!(saves_seen > 20, "only {saves_seen} rounds saved anything");
}
