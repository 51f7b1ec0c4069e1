use std::path::Path;

use extractor_runtime::state::LocalStateStore;
use extractor_runtime::{Extractor, TaskErrorKind};
use serde_json::json;

use super::*;
use crate::testing::{config_of, context};

fn config(dir: &Path, extra: serde_json::Value) -> CsvConfig {
    config_of(
        json!({
            "path": dir,
            "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
        }),
        extra,
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn checks_the_config_with_key_paths() {
    let dir = Path::new("/nonexistent");
    let problems = |extra| {
        Csv::new(config(dir, extra))
            .unwrap_err()
            .problems()
            .to_vec()
    };
    assert_eq!(
        problems(json!({"delimiter": ";;"})),
        [(
            "delimiter".into(),
            "must be one ASCII character other than a quote or a line break, not `;;`".into()
        )]
    );
    assert_eq!(
        problems(json!({"header": false}))[0].1,
        "`header: false` needs `columns` to name the columns"
    );
    assert_eq!(
        problems(json!({"encoding": "latin-1"}))[0],
        ("encoding".into(), "only `utf-8` is read, not `latin-1`; convert the files first (iconv -f latin-1 -t utf-8)".into())
    );
    assert_eq!(problems(json!({"glob": "[a"}))[0].0, "glob");
    assert_eq!(
        problems(json!({"columns": ["id", "temp", "id"], "types": {"tmep": "float"}})),
        [
            ("columns[2]".into(), "`id` appears twice".into()),
            (
                "types.tmep".into(),
                "`tmep` is not one of `columns`, did you mean `temp`?".into()
            ),
        ]
    );
    assert_eq!(
        problems(
            json!({"destination": {"type": "raw", "database": "db", "table": "t", "key": "{id"}})
        )[0]
        .0,
        "destination.key"
    );
    assert!(Csv::new(config(dir, json!({"delimiter": "\t", "encoding": "UTF-8"}))).is_ok());
}

#[test]
fn types_follow_the_hints_and_auto_guesses() {
    use ColumnType::*;
    assert_eq!(convert("42", Auto), Ok(json!(42)));
    assert_eq!(convert("4.5", Auto), Ok(json!(4.5)));
    assert_eq!(convert("true", Auto), Ok(json!(true)));
    assert_eq!(convert("NaN", Auto), Ok(json!("NaN")));
    assert_eq!(convert("", Auto), Ok(json!(null)));
    assert_eq!(convert("", String), Ok(json!("")));
    assert_eq!(convert("007", String), Ok(json!("007")));
    assert_eq!(convert(" 7 ", Integer), Ok(json!(7)));
    assert_eq!(
        convert("7.5", Integer),
        Err("`7.5` is not an integer".into())
    );
    assert_eq!(convert("1e3", Float), Ok(json!(1000.0)));
    assert_eq!(
        convert("inf", Float),
        Err("`inf` is not a finite number".into())
    );
    assert_eq!(convert("FALSE", Boolean), Ok(json!(false)));
    assert_eq!(convert("1970-01-01T00:00:01Z", Timestamp), Ok(json!(1000)));
    assert!(convert("noon", Timestamp).is_err());
}

#[tokio::test]
async fn ingests_files_once_and_again_when_they_change() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state.json");
    let dir = data.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "a.csv", "id,temp\na1,1.5\na2,2\n");
    write(&dir, "b.csv", "id,temp\nb1,3\n");
    write(&dir, "ignored.txt", "id\nx\n");
    let csv = Csv::new(config(&dir, json!({"types": {"temp": "float"}}))).unwrap();
    let (ctx, capture) = context("files", Some(&state), 100);

    csv.run(ctx.clone()).await.unwrap();
    assert_eq!(capture.raw_keys(), ["a1", "a2", "b1"]);
    assert_eq!(
        capture.items()[1]["columns"],
        json!({"id": "a2", "temp": 2.0})
    );
    let mark = ctx
        .state()
        .unwrap()
        .get(&format!("files:{}", dir.join("a.csv").display()))
        .unwrap();
    assert_eq!(
        (
            mark.high.as_ref().unwrap()["rows"].clone(),
            mark.high.unwrap()["done"].clone()
        ),
        (json!(2), json!(true))
    );

    // Nothing new: nothing sent.
    capture.clear();
    csv.run(ctx.clone()).await.unwrap();
    assert!(capture.raw_keys().is_empty());

    // A changed file is read again from the start; the state survives a restart.
    ctx.state().unwrap().save().await.unwrap();
    write(&dir, "b.csv", "id,temp\nb1,3\nb2,4\n");
    let (ctx, capture) = context("files", Some(&state), 100);
    csv.run(ctx).await.unwrap();
    assert_eq!(capture.raw_keys(), ["b1", "b2"]);
}

#[tokio::test]
async fn a_malformed_line_is_reported_with_file_and_line_and_the_file_is_not_done() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state.json");
    let dir = data.path().join("in");
    let done = data.path().join("done");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "1-good.csv", "id,temp\ng1,1\n");
    write(&dir, "2-short.csv", "id,temp\ns1,1\ns2,2\ns3\ns4,4\n");
    write(&dir, "3-type.csv", "id,temp\nt1,1\n\"t2\",warm\n");
    std::fs::write(dir.join("4-utf8.csv"), b"id,temp\nu1,1\nu2,\xff\xfe\n").unwrap();
    write(&dir, "5-key.csv", "id,temp\nk1,1\n,2\n");
    let csv = Csv::new(config(
        &dir,
        json!({"types": {"temp": "float"}, "done-folder": done}),
    ))
    .unwrap();
    let (ctx, capture) = context("files", Some(&state), 100);

    let e = csv.run(ctx.clone()).await.unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent);
    let message = e.to_string();
    for wanted in [
        "4 file(s) with a malformed line",
        &format!(
            "{}:4: 1 fields, expected 2",
            dir.join("2-short.csv").display()
        ),
        &format!(
            "{}:3: column `temp`: `warm` is not a number",
            dir.join("3-type.csv").display()
        ),
        &format!(
            "{}:3: field 2 is not valid UTF-8",
            dir.join("4-utf8.csv").display()
        ),
        &format!(
            "{}:3: destination.key: `id` has no value for `id`",
            dir.join("5-key.csv").display()
        ),
    ] {
        assert!(message.contains(wanted), "{wanted}\n in {message}");
    }
    // The rows before each bad line are delivered; only the good file is done and moved.
    assert_eq!(capture.raw_keys(), ["g1", "s1", "s2", "t1", "u1", "k1"]);
    assert!(done.join("1-good.csv").exists() && !dir.join("1-good.csv").exists());
    for bad in ["2-short.csv", "3-type.csv", "4-utf8.csv", "5-key.csv"] {
        assert!(dir.join(bad).exists() && !done.join(bad).exists(), "{bad}");
        let key = format!("files:{}", dir.join(bad).display());
        assert_eq!(
            ctx.state().unwrap().get(&key).unwrap().high.unwrap()["done"],
            json!(false)
        );
    }

    // The next run resumes at the bad line: nothing is sent twice.
    capture.clear();
    assert!(csv.run(ctx.clone()).await.is_err());
    assert!(capture.raw_keys().is_empty(), "{:?}", capture.raw_keys());

    // Fixed, the file is read again from the start, done and moved.
    write(&dir, "2-short.csv", "id,temp\ns1,1\ns2,2\ns3,3\ns4,4\n");
    let e = csv.run(ctx.clone()).await.unwrap_err();
    assert!(e.to_string().starts_with("3 file(s)"), "{e}");
    assert_eq!(capture.raw_keys(), ["s1", "s2", "s3", "s4"]);
    assert!(done.join("2-short.csv").exists());
}

#[tokio::test]
async fn files_move_only_after_cdf_accepted_their_rows() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state.json");
    let dir = data.path().join("in");
    let done = data.path().join("done");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "a.csv", "id\na1\na2\na3\n");
    let csv = Csv::new(config(&dir, json!({"done-folder": done, "batch-size": 2}))).unwrap();
    let (ctx, capture) = context("files", Some(&state), 100);

    capture.set_failing(true);
    assert!(csv.run(ctx.clone()).await.unwrap_err().is_transient());
    assert!(dir.join("a.csv").exists() && !done.exists());
    assert_eq!(
        ctx.state()
            .unwrap()
            .get(&format!("files:{}", dir.join("a.csv").display())),
        None
    );
    assert!(csv.run(ctx.clone()).await.is_err(), "CDF is still down");

    // CDF is back: what was queued goes first, nothing is read twice, then the file moves.
    capture.set_failing(false);
    csv.run(ctx.clone()).await.unwrap();
    assert_eq!(capture.raw_keys(), ["a1", "a2", "a3"]);
    assert!(done.join("a.csv").exists() && !dir.join("a.csv").exists());
    ctx.state().unwrap().save().await.unwrap();
    let saved = LocalStateStore::open(&state, false).unwrap();
    let key = format!("files:{}", dir.join("a.csv").display());
    assert_eq!(saved.get(&key).unwrap().high.unwrap()["done"], json!(true));
}

#[tokio::test]
async fn young_files_wait_for_min_age() {
    let data = tempfile::tempdir().unwrap();
    write(data.path(), "new.csv", "id\nn1\n");
    let old = data.path().join("old.csv");
    write(data.path(), "old.csv", "id\no1\n");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let csv = Csv::new(config(data.path(), json!({"min-age": "1m"}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    csv.run(ctx).await.unwrap();
    assert_eq!(
        capture.raw_keys(),
        ["o1"],
        "new.csv is younger than a minute"
    );
}

#[tokio::test]
async fn no_header_columns_delimiter_and_subfolders() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    std::fs::create_dir_all(dir.join("2026/11")).unwrap();
    write(
        &dir.join("2026/11"),
        "x.tsv",
        "p1\t2026-11-27 10:00:00\t21.5\n",
    );
    let csv = Csv::new(config(
        dir,
        json!({"glob": "**/*.tsv", "header": false, "delimiter": "\t",
            "columns": ["sensor", "time", "value"],
            "destination": {"type": "datapoints", "external-id": "{sensor}", "timestamp": "time", "value": "value"}}),
    ))
    .unwrap();
    let (ctx, capture) = context("files", None, 100);
    csv.run(ctx).await.unwrap();
    assert_eq!(
        capture.items(),
        [
            json!({"externalId": "p1", "datapoints": [{"timestamp": 1_795_773_600_000_i64, "value": 21.5}]})
        ]
    );
}

#[tokio::test]
async fn a_million_rows_stream_through_a_small_queue() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state.json");
    let mut text = String::from("id,value,label\n");
    for i in 0..1_000_000 {
        text.push_str(&format!("{i},{}.5,row-{i}\n", i % 1000));
    }
    write(data.path(), "big.csv", &text);
    let csv = Csv::new(config(data.path(), json!({"glob": "big.csv"}))).unwrap();
    let (ctx, capture) = context("big", Some(&state), 20_000);
    csv.run(ctx.clone()).await.unwrap();
    let bodies = capture.bodies();
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b["items"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1_000_000);
    assert!(
        sizes.iter().all(|n| *n <= 10_000),
        "at most 10 000 rows a request"
    );
    assert_eq!(bodies[0]["items"][0]["key"], json!("0"));
    assert_eq!(
        bodies.last().unwrap()["items"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["key"],
        json!("999999")
    );
    let key = format!("big:{}", data.path().join("big.csv").display());
    assert_eq!(
        ctx.state().unwrap().get(&key).unwrap().high.unwrap()["rows"],
        json!(1_000_000)
    );
}

/// A run cancelled mid-file (shutdown, timeout) stores how far it got; the next run resumes
/// there: every row once.
#[tokio::test]
async fn a_cancelled_run_resumes_mid_file() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state.json");
    let dir = data.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    let text: String = std::iter::once("id\n".to_owned())
        .chain((0..5_000).map(|i| format!("{i}\n")))
        .collect();
    write(&dir, "a.csv", &text);
    let csv = Csv::new(config(&dir, json!({"batch-size": 700}))).unwrap();
    let (ctx, capture) = context("files", Some(&state), 10_000);
    ctx.cancellation_token().cancel();
    let e = csv.run(ctx.clone()).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("at row 1000"),
        "one chunk, then the cancel: {e}"
    );
    let key = format!("files:{}", dir.join("a.csv").display());
    let mark = ctx.state().unwrap().get(&key).unwrap().high.unwrap();
    assert_eq!(
        (mark["rows"].clone(), mark["done"].clone()),
        (json!(1000), json!(false))
    );
    ctx.state().unwrap().save().await.unwrap();

    // A new process, not cancelled.
    let (ctx, capture2) = context("files", Some(&state), 10_000);
    let csv = Csv::new(config(&dir, json!({"batch-size": 700}))).unwrap();
    csv.run(ctx).await.unwrap();
    let mut keys = capture.raw_keys();
    keys.extend(capture2.raw_keys());
    let expected: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
    assert_eq!(keys, expected);
}

/// What spreadsheets write: a UTF-8 byte order mark, CRLF line ends, quoted fields with the
/// delimiter and line breaks inside.
#[tokio::test]
async fn excel_style_files_read_as_expected() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("x.csv"),
        b"\xef\xbb\xbfid,note\r\na,\"1, 2\"\r\nb,\"two\r\nlines\"\r\n",
    )
    .unwrap();
    let csv = Csv::new(config(data.path(), json!({}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    csv.run(ctx).await.unwrap();
    let columns: Vec<_> = capture
        .items()
        .iter()
        .map(|i| i["columns"].clone())
        .collect();
    assert_eq!(
        columns,
        [
            json!({"id": "a", "note": "1, 2"}),
            json!({"id": "b", "note": "two\r\nlines"})
        ]
    );
}

/// A file that disappears between the listing and the reading is skipped, not a failed run.
#[tokio::test]
async fn a_file_gone_since_the_listing_is_skipped() {
    let data = tempfile::tempdir().unwrap();
    let csv = Csv::new(config(data.path(), json!({}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    let mut refused = extractor_runtime::queues::Refusals::default();
    let outcome = csv
        .ingest(
            &ctx,
            ctx.upload(),
            &mut refused,
            &data.path().join("gone.csv"),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Unchanged));
    assert!(capture.raw_keys().is_empty());
}

/// A `self -> .` symlink and a loop deeper down with `**` neither hang the walk nor read a file
/// twice; a symlink to a file read already is skipped; `*.csv` stays in the folder itself.
#[tokio::test]
async fn symlink_loops_are_not_followed_and_each_real_file_is_read_once() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    write(dir, "a.csv", "id\na1\n");
    write(&dir.join("sub"), "b.csv", "id\nb1\n");
    std::os::unix::fs::symlink(dir, dir.join("self")).unwrap();
    std::os::unix::fs::symlink(dir.join("sub"), dir.join("sub/deeper/up")).unwrap();
    std::os::unix::fs::symlink(dir.join("a.csv"), dir.join("sub/alias.csv")).unwrap();

    let csv = Csv::new(config(dir, json!({"glob": "**/*.csv"}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    csv.run(ctx).await.unwrap();
    let mut keys = capture.raw_keys();
    keys.sort();
    assert_eq!(keys, ["a1", "b1"], "each real file once");

    let top = Csv::new(config(dir, json!({"glob": "*.csv"}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    top.run(ctx).await.unwrap();
    assert_eq!(capture.raw_keys(), ["a1"], "`*.csv` does not descend");
}

/// A file that cannot be read is reported and skipped: the files sorted after it go on, and the
/// run fails naming it.
#[tokio::test]
async fn an_unreadable_file_is_skipped_and_the_others_go_on() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    write(dir, "1-good.csv", "id\ng1\n");
    // Reading /proc/self/mem at offset 0 fails (EIO) even for root, as a bad disk would.
    std::os::unix::fs::symlink("/proc/self/mem", dir.join("2-unreadable.csv")).unwrap();
    write(dir, "3-good.csv", "id\ng3\n");
    let csv = Csv::new(config(dir, json!({}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    let e = csv.run(ctx).await.unwrap_err().to_string();
    assert_eq!(capture.raw_keys(), ["g1", "g3"]);
    assert!(e.contains("2-unreadable.csv: cannot read"), "{e}");
}

/// A line longer than `max-line-size` is reported as `file:line` like a malformed one, without
/// being held whole; the rows before it are delivered and the other files go on.
#[tokio::test]
async fn a_line_over_max_line_size_is_reported_and_never_held_whole() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let huge = "x".repeat(3 << 20);
    write(dir, "1-big.csv", &format!("id,v\nr1,1\nr2,{huge}\nr3,3\n"));
    write(dir, "2-fine.csv", "id,v\nf1,1\n");
    let csv = Csv::new(config(dir, json!({"max-line-size": "1MiB"}))).unwrap();
    let (ctx, capture) = context("files", None, 100);
    let e = csv.run(ctx).await.unwrap_err().to_string();
    assert!(
        e.contains("1-big.csv:3: the line is longer than max-line-size (1 MiB)"),
        "{e}"
    );
    assert_eq!(capture.raw_keys(), ["r1", "f1"]);
}

#[test]
fn the_cells_of_a_line_reuse_one_allocation() {
    let mut spare: Vec<Cell<'static>> = Vec::with_capacity(8);
    let buffer = spare.as_ptr() as usize;
    for line in ["a,1", "b,2"] {
        let mut cells = recycle(std::mem::take(&mut spare));
        cells.extend(line.split(',').map(Cell::Text));
        assert_eq!(cells[0], Cell::Text(&line[..1]));
        cells.clear();
        spare = recycle(cells);
        assert_eq!((spare.as_ptr() as usize, spare.capacity()), (buffer, 8));
    }
}
