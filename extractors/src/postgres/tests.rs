//! Against a real PostgreSQL server: `EXTRACTOR_TEST_POSTGRES` is its connection string
//! (`.ci/run` starts Debian's `postgresql` and sets it). Without it the database tests print
//! `skipped:` and pass, except with `CI=true`, where they fail.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use extractor_runtime::{Extractor, TaskErrorKind};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::testing::{Capture, config_of, context};

/// The test server's connection string, or `None` (after saying so) where there is none.
fn server() -> Option<String> {
    match std::env::var("EXTRACTOR_TEST_POSTGRES") {
        Ok(s) if !s.is_empty() => Some(s),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but EXTRACTOR_TEST_POSTGRES is not set: .ci/run starts PostgreSQL and sets it"
            )
        }
        _ => {
            eprintln!(
                "skipped: no PostgreSQL server (set EXTRACTOR_TEST_POSTGRES to a connection string)"
            );
            None
        }
    }
}

async fn admin(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A table name of this test process.
fn table(name: &str) -> String {
    format!("t{}_{name}", std::process::id())
}

fn config(conn: &str, extra: serde_json::Value) -> PostgresConfig {
    config_of(
        json!({
            "connection-string": conn,
            "query": "SELECT 1 AS id",
            "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
        }),
        extra,
    )
}

fn incremental(conn: &str, table: &str, field: &str, batch: u32) -> Postgres {
    Postgres::new(config(
        conn,
        json!({
            "query": format!("SELECT id, grp, site, value FROM {table} WHERE {field} > $1 ORDER BY {field}, id"),
            "incremental-field": field,
            "initial-value": 0,
            "batch-size": batch,
        }),
    ))
    .unwrap()
}

fn ids(capture: &Capture) -> Vec<u64> {
    capture
        .raw_keys()
        .iter()
        .map(|k| k.parse().unwrap())
        .collect()
}

async fn create(client: &tokio_postgres::Client, table: &str, rows: u64) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id bigint PRIMARY KEY, grp bigint NOT NULL, site text, value double precision);
             INSERT INTO {table} SELECT i, (i + 6) / 7, 'site-' || (i % 10), i * 0.5 FROM generate_series(1, {rows}) AS i;"
        ))
        .await
        .unwrap();
}

#[test]
fn checks_the_config_and_never_shows_the_password() {
    let conn = "host=127.0.0.1 user=u password=pw-very-secret dbname=d";
    let problems = |extra| {
        Postgres::new(config(conn, extra))
            .unwrap_err()
            .problems()
            .to_vec()
    };
    assert_eq!(
        problems(json!({"query": "SELECT * FROM t WHERE id > $1"})),
        [(
            "".into(),
            "the query uses `$1`; name the `incremental-field` it is the watermark of".into()
        )]
    );
    let p = problems(json!({"query": "SELECT * FROM t WHERE id > $1", "incremental-field": "id"}));
    assert_eq!(
        p[0],
        (
            "query".into(),
            "must ORDER BY `id`: the watermark is the last row's `id`".into()
        )
    );
    assert!(
        p[1].1
            .starts_with("`incremental-field` needs `initial-value`")
    );
    assert_eq!(problems(json!({"incremental-field": "id"}))[0].0, "query");
    assert_eq!(problems(json!({"initial-value": 0}))[0].0, "initial-value");
    assert_eq!(problems(json!({"batch-size": 0}))[0].0, "batch-size");
    let p = problems(json!({"connection-string": "host=x password=pw-very-secret port=notaport"}));
    assert_eq!(p[0].0, "connection-string");
    assert!(!format!("{p:?}").contains("pw-very-secret"), "{p:?}");
    let p = problems(json!({"connection-string": "postgresql://u:pw-very-secret@h:99999/d"}));
    assert_eq!(p[0].0, "connection-string");
    assert!(!format!("{p:?}").contains("pw-very-secret"), "{p:?}");
    let p = problems(json!({"tls": {"ca-file": "/etc/hostname"}}));
    assert_eq!(
        p[0],
        (
            "tls".into(),
            "applies with `sslmode=require` in the connection string only".into()
        )
    );
    let p = problems(
        json!({"connection-string": format!("{conn} sslmode=require"), "tls": {"ca-file": "/nonexistent/ca.pem"}}),
    );
    assert_eq!(p[0].0, "tls.ca-file");
    assert!(
        p[0].1.starts_with("cannot read `/nonexistent/ca.pem`"),
        "{p:?}"
    );
    let ok = Postgres::new(config(conn, json!({}))).unwrap();
    let debug = format!("{ok:?}");
    assert!(
        debug.contains("127.0.0.1") && !debug.contains("pw-very-secret"),
        "{debug}"
    );
}

#[tokio::test]
async fn reads_the_common_types_as_json() {
    let Some(conn) = server() else { return };
    let pg = Postgres::new(config(
        &conn,
        json!({"query": "SELECT 1 AS id, true AS b, 7::int2 AS i2, 8::int4 AS i4, 9::int8 AS i8,
            1.5::float4 AS f4, 2.25::float8 AS f8, 'x'::text AS t, 'y'::varchar AS v, 'z'::char(2) AS c,
            '{\"a\": [1]}'::jsonb AS j, '2026-11-27 10:00:00.123+01'::timestamptz AS tz,
            '2026-11-27 10:00:00'::timestamp AS ts, '2026-11-27'::date AS d,
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, NULL::text AS n,
            0::numeric AS n0, -1.50::numeric AS n1, 12345.6789::numeric AS n2, 0.0001::numeric AS n3,
            100000000::numeric AS n4, 'NaN'::numeric AS n5, 12345678901234567890.5::numeric AS n6"}),
    ))
    .unwrap();
    let (ctx, capture) = context("types", None, 100);
    pg.run(ctx).await.unwrap();
    assert_eq!(
        capture.items()[0]["columns"],
        json!({"id": 1, "b": true, "i2": 7, "i4": 8, "i8": 9, "f4": 1.5, "f8": 2.25, "t": "x",
            "v": "y", "c": "z ", "j": {"a": [1]}, "tz": "2026-11-27T09:00:00.123Z",
            "ts": "2026-11-27T10:00:00", "d": "2026-11-27",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "n": null,
            "n0": 0.0, "n1": -1.5, "n2": 12345.6789, "n3": 0.0001, "n4": 100000000.0, "n5": "NaN",
            "n6": 12345678901234567890.5})
    );
    // Types it does not read are named, with the way out.
    let pg = Postgres::new(config(
        &conn,
        json!({"query": "SELECT 1 AS id, '\\x01'::bytea AS raw"}),
    ))
    .unwrap();
    let (ctx, _) = context("types", None, 100);
    let e = pg.run(ctx).await.unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent);
    assert!(
        e.to_string().contains("`raw` (bytea)") && e.to_string().contains("`col::text`"),
        "{e}"
    );
}

#[tokio::test]
async fn sql_errors_are_permanent_and_an_unreachable_server_transient() {
    let Some(conn) = server() else { return };
    let pg = Postgres::new(config(
        &conn,
        json!({"query": "SELECT * FROM no_such_table_here"}),
    ))
    .unwrap();
    let (ctx, _) = context("bad", None, 100);
    let e = pg.run(ctx).await.unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent);
    assert!(
        e.to_string().contains("42P01") && e.to_string().contains("no_such_table_here"),
        "{e}"
    );

    let wrong = Postgres::new(config(
        "host=127.0.0.1 port=9 user=u password=pw-very-secret dbname=d connect_timeout=2",
        json!({}),
    ))
    .unwrap();
    let (ctx, _) = context("down", None, 100);
    let e = wrong.run(ctx).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(!e.to_string().contains("pw-very-secret"));
}

/// 100 000 rows in batches, then only the new rows, then a restart (a new process: new
/// extractor, state from the file) that resumes at the stored watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_then_only_new_rows_then_resume_after_restart() {
    let Some(conn) = server() else { return };
    let db = admin(&conn).await;
    let t = table("incremental");
    create(&db, &t, 100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");

    let pg = incremental(&conn, &t, "id", 10_000);
    let (ctx, capture) = context("pg", Some(&state), 100_000);
    pg.run(ctx.clone()).await.unwrap();
    assert_eq!(ids(&capture), (1..=100_000).collect::<Vec<_>>());
    // One request a batch; the last row of each batch waits for the next (its value group
    // might go on), so the end of the query sends one more.
    assert_eq!(capture.bodies().len(), 11);
    assert_eq!(
        ctx.state().unwrap().get("pg").unwrap().high,
        Some(json!(100_000))
    );
    assert_eq!(
        capture.items()[6]["columns"],
        json!({"id": 7, "grp": 1, "site": "site-7", "value": 3.5})
    );

    db.batch_execute(&format!(
        "INSERT INTO {t} SELECT i, i, 'new', 0 FROM generate_series(100001, 100500) AS i"
    ))
    .await
    .unwrap();
    capture.clear();
    pg.run(ctx.clone()).await.unwrap();
    assert_eq!(ids(&capture), (100_001..=100_500).collect::<Vec<_>>());
    ctx.state().unwrap().save().await.unwrap();

    // A restart: nothing new, then ten new rows.
    let pg = incremental(&conn, &t, "id", 10_000);
    let (ctx, capture) = context("pg", Some(&state), 100_000);
    pg.run(ctx.clone()).await.unwrap();
    assert!(ids(&capture).is_empty());
    db.batch_execute(&format!(
        "INSERT INTO {t} SELECT i, i, 'late', 0 FROM generate_series(100501, 100510) AS i"
    ))
    .await
    .unwrap();
    pg.run(ctx).await.unwrap();
    assert_eq!(ids(&capture), (100_501..=100_510).collect::<Vec<_>>());
    db.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();
}

/// A TCP proxy to the database that cuts every connection once `budget` bytes came back from
/// the server, and refuses connections until it is `up` again: the database going down
/// mid-run, as the extractor sees it.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    budget: Arc<AtomicI64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            down: Arc::default(),
            budget: Arc::new(AtomicI64::new(i64::MAX)),
        };
        let (down, budget) = (proxy.down.clone(), proxy.budget.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                if down.load(Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let (down, budget) = (down.clone(), budget.clone());
                tokio::spawn(async move {
                    let server = TcpStream::connect(target).await.unwrap();
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                    let mut buf = vec![0; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if budget.fetch_sub(n as i64, Ordering::SeqCst) < n as i64 {
                            down.store(true, Ordering::SeqCst);
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        proxy
    }

    fn cut_after(&self, bytes: i64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    fn up(&self) {
        self.budget.store(i64::MAX, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }
}

/// The database goes down mid-run (after some batches): the run fails (transient), what was
/// delivered is a gap-free prefix with its watermark stored; back up, the next run delivers
/// the rest. Nothing is lost and no row is queued twice, though the watermark (`grp`, 7 rows a
/// value) has ties that straddle batches (batch size 9 999).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_mid_run_loses_and_duplicates_nothing() {
    let Some(conn) = server() else { return };
    let db = admin(&conn).await;
    let t = table("down");
    create(&db, &t, 100_000).await;
    let real = tokio_postgres::Config::from_str(&conn).unwrap();
    let host = match &real.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => panic!("EXTRACTOR_TEST_POSTGRES must name a TCP host"),
    };
    let port = real.get_ports().first().copied().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    let via_proxy = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={}",
        proxy.addr.port(),
        real.get_user().unwrap(),
        String::from_utf8_lossy(real.get_password().unwrap_or_default()),
        real.get_dbname().unwrap_or("postgres"),
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let pg = incremental(&via_proxy, &t, "grp", 9_999);
    let (ctx, capture) = context("pg", Some(&state), 100_000);

    proxy.cut_after(1_500_000);
    let e = pg.run(ctx.clone()).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let first = ids(&capture);
    assert!(
        first.len() > 9_999 && first.len() < 100_000,
        "{} rows before the cut",
        first.len()
    );
    assert_eq!(
        first,
        (1..=first.len() as u64).collect::<Vec<_>>(),
        "a gap-free prefix, once each"
    );
    let mark = ctx.state().unwrap().get("pg").unwrap().high.unwrap();
    assert_eq!(
        mark,
        json!((first.len() as u64).div_ceil(7)),
        "the watermark of the last row delivered"
    );
    assert_eq!(first.len() % 7, 0, "whole groups only");

    // Still down: a failed run, nothing sent.
    assert!(pg.run(ctx.clone()).await.unwrap_err().is_transient());
    assert_eq!(ids(&capture).len(), first.len());

    proxy.up();
    pg.run(ctx.clone()).await.unwrap();
    assert_eq!(
        ids(&capture),
        (1..=100_000).collect::<Vec<_>>(),
        "all rows, once each, in order"
    );
    assert_eq!(
        ctx.state().unwrap().get("pg").unwrap().high,
        Some(json!(100_000_u64.div_ceil(7)))
    );
    db.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();
}

/// CDF down after the rows were read: they stay queued, the watermark stays; with CDF back the
/// next run sends them first and reads on from where the queue ends, not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdf_down_keeps_the_watermark_and_reads_nothing_twice() {
    let Some(conn) = server() else { return };
    let db = admin(&conn).await;
    let t = table("cdfdown");
    create(&db, &t, 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let pg = incremental(&conn, &t, "id", 300);
    let (ctx, capture) = context("pg", Some(&dir.path().join("s.json")), 10_000);
    capture.set_failing(true);
    assert!(pg.run(ctx.clone()).await.is_err());
    assert_eq!(ctx.state().unwrap().get("pg"), None);
    assert_eq!(
        ctx.queues().pending(),
        299,
        "the first batch waits in the queue, but its last row: held back until its value group is known whole"
    );

    capture.set_failing(false);
    pg.run(ctx.clone()).await.unwrap();
    assert_eq!(ids(&capture), (1..=1_000).collect::<Vec<_>>());
    assert_eq!(
        ctx.state().unwrap().get("pg").unwrap().high,
        Some(json!(1_000))
    );
    db.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();
}

/// 60 000 rows share one watermark value: past the hold limit they are queued (memory stays
/// bounded) but the watermark does not move into the open group; then it moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_group_of_one_value_is_not_held_in_memory() {
    let Some(conn) = server() else { return };
    let db = admin(&conn).await;
    let t = table("onevalue");
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (id bigint PRIMARY KEY, grp bigint NOT NULL, site text, value double precision);
         INSERT INTO {t} SELECT i, CASE WHEN i <= 60000 THEN 1 ELSE 2 END, 's', 0 FROM generate_series(1, 60010) AS i;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = incremental(&conn, &t, "grp", 10_000);
    let (ctx, capture) = context("pg", Some(&dir.path().join("s.json")), 100_000);
    // CDF down: the first 50 000 rows of the group are queued (the hold limit), the flush
    // fails, and the watermark has not moved into the open group.
    capture.set_failing(true);
    assert!(pg.run(ctx.clone()).await.is_err());
    assert_eq!(ctx.queues().pending(), 50_000);
    assert_eq!(ctx.state().unwrap().get("pg"), None);
    // CDF back: those are sent, the group is read again from its start (at-least-once), and
    // the watermark moves past it.
    capture.set_failing(false);
    pg.run(ctx.clone()).await.unwrap();
    let got = ids(&capture);
    assert_eq!(got.len(), 50_000 + 60_010);
    assert_eq!(got[..50_000], got[50_000..100_000], "the open group, twice");
    assert_eq!(got[50_000..], (1..=60_010).collect::<Vec<_>>()[..]);
    assert_eq!(ctx.state().unwrap().get("pg").unwrap().high, Some(json!(2)));
    db.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test]
async fn timestamps_as_watermarks_round_trip() {
    let Some(conn) = server() else { return };
    let db = admin(&conn).await;
    let t = table("times");
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (id int, at timestamptz);
         INSERT INTO {t} VALUES (1, '2026-11-27 10:00:00.000001Z'), (2, '2026-11-27 10:00:00.000002Z');"
    ))
    .await
    .unwrap();
    let pg = Postgres::new(config(
        &conn,
        json!({"query": format!("SELECT id, at FROM {t} WHERE at > $1 ORDER BY at"),
            "incremental-field": "at", "initial-value": "2026-01-01T00:00:00Z",
            "destination": {"type": "datapoints", "external-id": "'x'", "timestamp": "at", "value": "id"}}),
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ctx, capture) = context("pg", Some(&dir.path().join("s.json")), 100);
    pg.run(ctx.clone()).await.unwrap();
    assert_eq!(
        capture.items()[0]["datapoints"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        ctx.state().unwrap().get("pg").unwrap().high,
        Some(json!("2026-11-27T10:00:00.000002Z"))
    );
    capture.clear();
    pg.run(ctx).await.unwrap();
    assert!(
        capture.items().is_empty(),
        "microseconds survive the round trip"
    );
    db.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();
}

#[path = "../../tests/util/tls.rs"]
mod tls;
use tls::test_ca;

/// Terminates PostgreSQL's TLS (SSLRequest, `S`, handshake) with `acceptor` and forwards the
/// plain protocol to the real server.
async fn tls_proxy(target: SocketAddr, acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                client.read_exact(&mut request).await.unwrap();
                assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "an SSLRequest");
                client.write_all(b"S").await.unwrap();
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return; // the client refused our certificate
                };
                let mut server = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    addr
}

/// `sslmode=require` with `tls.ca-file`: the rows come through TLS (the proxy only speaks TLS);
/// a CA that did not sign the server's certificate is refused, naming the certificate problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let Some(conn) = server() else { return };
    let real = tokio_postgres::Config::from_str(&conn).unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &real.get_hosts()[0] else {
        panic!("EXTRACTOR_TEST_POSTGRES must name a TCP host")
    };
    let port = real.get_ports().first().copied().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let ca = test_ca();
    let proxy = tls_proxy(target, ca.server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let via_tls = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=require",
        proxy.port(),
        real.get_user().unwrap(),
        String::from_utf8_lossy(real.get_password().unwrap_or_default()),
        real.get_dbname().unwrap_or("postgres"),
    );
    let pg = Postgres::new(config(
        &via_tls,
        json!({"query": "SELECT 7 AS id, ssl AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            "tls": {"ca-file": ca_file}}),
    ))
    .unwrap();
    let (ctx, capture) = context("tls", None, 100);
    pg.run(ctx).await.unwrap();
    // Between the proxy and the server the connection is plain: the server says ssl = false.
    assert_eq!(
        capture.items()[0]["columns"],
        json!({"id": 7, "tls": false})
    );

    let other = test_ca();
    std::fs::write(&ca_file, &other.ca_pem).unwrap();
    let pg = Postgres::new(config(&via_tls, json!({"tls": {"ca-file": ca_file}}))).unwrap();
    let (ctx, _) = context("tls", None, 100);
    let e = pg.run(ctx).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}
