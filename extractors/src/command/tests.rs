use super::*;

fn command(args: &[&str]) -> Command {
    Command::new(CommandConfig {
        command: args.iter().map(|s| s.to_string()).collect(),
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        working_dir: None,
        records: Records::None,
        destination: None,
    })
    .unwrap()
}

#[tokio::test]
async fn exit_statuses_map_to_results() {
    let ctx = || crate::testing::context("t", None, 1000).0;
    assert!(
        command(&["sh", "-c", "test \"$GREETING\" = hi"])
            .run(ctx())
            .await
            .is_ok()
    );
    let e = command(&["sh", "-c", "exit 75"])
        .run(ctx())
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = command(&["sh", "-c", "exit 3"])
        .run(ctx())
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("status 3"),
        "{e}"
    );
    let e = command(&["/nonexistent/program"])
        .run(ctx())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot start"), "{e}");
}

#[tokio::test]
async fn cancellation_kills_the_program() {
    let ctx = crate::testing::context("t", None, 1000).0;
    let cancel = ctx.cancellation_token().clone();
    let started = std::time::Instant::now();
    let c = command(&["sleep", "30"]);
    let run = c.run(ctx);
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(run, stop);
    assert!(result.unwrap_err().to_string().contains("killed"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn an_empty_command_is_rejected() {
    let e = Command::new(CommandConfig {
        command: vec![],
        env: Default::default(),
        working_dir: None,
        records: Records::None,
        destination: None,
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("must name a program"));
}

/// A byte that is not UTF-8 no longer stops the logging (the program then died of SIGPIPE on
/// its next line), and a 64 MiB line without a newline is cut, not kept.
#[tokio::test]
async fn any_output_is_logged_bounded_and_never_kills_the_program() {
    let ctx = crate::testing::context("t", None, 1000).0;
    let script = "printf 'caf\\351\\n'; i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; \
                  head -c 67108864 /dev/zero | tr '\\0' x; echo; echo done";
    command(&["sh", "-c", script])
        .run(ctx)
        .await
        .expect("exit 0, not killed by SIGPIPE");
}

/// A child the program leaves running in the background (holding its output open) neither keeps
/// the run open nor outlives it: the process group is killed.
#[tokio::test]
async fn children_left_behind_end_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("still-running");
    let ctx = crate::testing::context("t", None, 1000).0;
    let started = std::time::Instant::now();
    let script = format!("(sleep 3; touch '{}') & echo started", marker.display());
    command(&["sh", "-c", &script]).run(ctx).await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the run ended with the program, not with its child ({:?})",
        started.elapsed()
    );
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the child was killed with the group");
}

/// `records: ndjson`: each output line is a record for the destination, every one sent before
/// the run ends; lines that are not JSON objects are skipped and counted, never fatal.
#[tokio::test]
async fn ndjson_output_lines_become_records() {
    let config: CommandConfig = serde_json::from_value(serde_json::json!({
        "command": ["sh", "-c", "for i in $(seq 1 300); do echo \"{\\\"id\\\": \\\"r$i\\\", \\\"v\\\": $i}\"; done; echo 'not json'; echo '[1]'; printf '{\"id\": \"last\"}'"],
        "records": "ndjson",
        "destination": {"type": "raw", "database": "d", "table": "t", "key": "{id}"},
    }))
    .unwrap();
    let c = Command::new(config).unwrap();
    let (ctx, capture) = crate::testing::context("t", None, 1000);
    c.run(ctx).await.unwrap();
    let keys = capture.raw_keys();
    assert_eq!(keys.len(), 301, "{keys:?}");
    assert_eq!(keys[0], "r1");
    assert_eq!(keys[300], "last", "a last line without a newline too");

    let config: CommandConfig = serde_json::from_value(serde_json::json!({
        "command": ["true"], "records": "ndjson",
    }))
    .unwrap();
    let e = Command::new(config).err().unwrap();
    assert!(e.to_string().contains("needs a `destination`"), "{e}");
}
