//! High availability through the binary (issue 27): replicas of `run` sharing one lease, each
//! writing a row per run (100 ms) into its own dry-run file; a row's key names its replica and
//! the moment it was produced, so "nobody writes twice" is "the replicas' rows do not
//! interleave in time". Lease 3 s, renew deadline 2 s, retry period 0.5 s.
//!
//! Redis is Debian's `redis-server`; the Kubernetes API is a Lease endpoint fake written from
//! the API reference (GET/POST/PUT with resourceVersion conflicts answering 409); the RAW
//! backend runs against the stateful fake CDF.

use std::time::Duration;

mod util;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;
#[path = "../../runtime/tests/support/prism.rs"]
mod prism;

use util::ha::{LEASE, RENEW_DEADLINE, RETRY, Redis, Replica, config, now_ns};

fn ms(ns: u128) -> u128 {
    ns / 1_000_000
}

/// A test folder, a Redis server and a replica config for it in that folder; `None` (having
/// said it skipped) where `redis-server` is missing.
fn with_redis() -> Option<(tempfile::TempDir, Redis, std::path::PathBuf)> {
    if !Redis::available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(&[]);
    let path = redis_config(dir.path(), &redis.url());
    Some((dir, redis, path))
}

fn redis_config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let text = config(&format!("  backend: redis\n  redis: {{url: \"{url}\"}}"));
    util::write_config(dir, &text)
}

/// `a` started and leading, then `b` started and standing by.
async fn leader_and_standby(dir: &std::path::Path, path: &std::path::Path) -> (Replica, Replica) {
    let a = Replica::start(dir, path, "a", &[]);
    a.until_leading(20).await;
    let b = Replica::start(dir, path, "b", &[]);
    util::wait_for("b to stand by", 20, async || b.leader().await == Some(0.0)).await;
    (a, b)
}

/// Rows of `later` all come after every row of `earlier`.
fn after(earlier: &[u128], later: &[u128]) -> bool {
    match (earlier.iter().max(), later.iter().min()) {
        (Some(e), Some(l)) => l > e,
        _ => true,
    }
}

/// Three replicas: one leads and writes, the others stand by (alive, ready, `extractor_leader`
/// 0, no rows). SIGKILL of the leader: exactly one standby writes, within lease-duration +
/// retry-period of the kill (plus the first run's wait for its schedule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_of_three_writes_and_a_sigkill_fails_over_within_the_lease() {
    let Some((dir, _redis, path)) = with_redis() else {
        return;
    };
    let mut a = Replica::start(dir.path(), &path, "a", &[]);
    a.until_leading(20).await;
    let b = Replica::start(dir.path(), &path, "b", &[]);
    let c = Replica::start(dir.path(), &path, "c", &[]);
    util::wait_for("the standbys' metrics", 20, async || {
        b.leader().await == Some(0.0) && c.leader().await == Some(0.0)
    })
    .await;
    assert_eq!(b.ready().await, Some(200), "a standby is ready");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.rows().len() >= 10,
        "the leader writes: {}",
        a.rows().len()
    );
    assert!(
        b.rows().is_empty() && c.rows().is_empty(),
        "standbys write nothing"
    );

    let killed = now_ns();
    a.signal("KILL");
    assert_eq!(a.exit_code(5), None, "killed");
    util::wait_for("a standby to write", 20, async || {
        !b.rows().is_empty() || !c.rows().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (new, idle) = if b.rows().is_empty() {
        (&c, &b)
    } else {
        (&b, &c)
    };
    assert!(idle.rows().is_empty(), "only one standby took over");
    let first = new.rows()[0];
    let takeover = ms(first - killed);
    eprintln!(
        "takeover after SIGKILL: {takeover} ms (first row of {})",
        new.id
    );
    let bound = (LEASE + RETRY + Duration::from_millis(500)).as_millis();
    assert!(takeover <= bound, "took {takeover} ms, more than {bound}");
    assert!(
        after(&a.rows(), &new.rows()),
        "no row of the new leader before the old one's last"
    );
    assert_eq!(new.leader().await, Some(1.0));
    assert_eq!(idle.leader().await, Some(0.0));
}

/// SIGTERM of the leader: it finishes, releases the lease, exits 0, and the standby writes
/// within a retry period of the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigterm_hands_over_within_a_retry_period() {
    let Some((dir, _redis, path)) = with_redis() else {
        return;
    };
    let (mut a, b) = leader_and_standby(dir.path(), &path).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal("TERM");
    assert_eq!(a.exit_code(10), Some(0), "a graceful stop: {}", a.log());
    assert!(a.log().contains("released the lease"), "{}", a.log());
    util::wait_for("b to write", 10, async || !b.rows().is_empty()).await;
    let gap = ms(b.rows()[0] - a.rows().iter().max().unwrap());
    eprintln!("handover after SIGTERM: {gap} ms from a's last row to b's first");
    let bound = (RETRY + Duration::from_millis(700)).as_millis();
    assert!(gap <= bound, "{gap} ms, more than {bound}");
    assert!(after(&a.rows(), &b.rows()));
}

/// SIGSTOP of the leader past its lease, then SIGCONT: the standby took over meanwhile, and
/// the woken process writes nothing (its fence closed while it was frozen), then exits 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_frozen_leader_that_wakes_writes_nothing() {
    let Some((dir, _redis, path)) = with_redis() else {
        return;
    };
    let out = |id: &str| Replica::rows_in(&dir.path().join(format!("{id}.out")), id);
    a_frozen_leader_writes_nothing(dir.path(), &path, out).await;
}

/// Redis down for longer than the renew deadline: the leader stops writing within it and
/// exits 4; the standby cannot take the lease while Redis is down, so nobody writes; once Redis
/// is back, the standby leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_the_leader_steps_down_and_nobody_writes_twice() {
    let Some((dir, mut redis, path)) = with_redis() else {
        return;
    };
    let (mut a, b) = leader_and_standby(dir.path(), &path).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = now_ns();
    redis.stop();
    assert_eq!(a.exit_code(15), Some(4), "a steps down: {}", a.log());
    let last = *a.rows().iter().max().unwrap();
    let limit = down + (RENEW_DEADLINE + Duration::from_millis(200)).as_nanos();
    assert!(
        last <= limit,
        "a wrote {} ms after Redis went down",
        ms(last - down)
    );
    tokio::time::sleep(LEASE).await;
    assert!(
        b.rows().is_empty(),
        "nobody leads while the lease cannot be had"
    );
    let up = now_ns();
    redis.restart();
    util::wait_for("b to write", 20, async || !b.rows().is_empty()).await;
    assert!(b.rows()[0] > up, "b wrote only after Redis came back");
}

/// Redis restarted (its keys lost) within the renew deadline: the leader renews by taking the
/// key back; the standby, which saw it held, does not take the vanished key: no transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_the_leader_keeps_leading() {
    let Some((dir, mut redis, path)) = with_redis() else {
        return;
    };
    let (mut a, b) = leader_and_standby(dir.path(), &path).await;
    redis.restart();
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert!(a.running(), "a still runs: {}", a.log());
    assert_eq!(a.leader().await, Some(1.0));
    assert_eq!(b.leader().await, Some(0.0));
    assert!(b.rows().is_empty(), "b never led");
    let recent = a
        .rows()
        .into_iter()
        .filter(|t| *t > now_ns() - 1_000_000_000)
        .count();
    assert!(
        recent >= 5,
        "a goes on writing: {recent} rows in the last second"
    );
}

/// A real partition: the leader runs in a network namespace of its own and reaches Redis over
/// a veth link; the link goes down. The leader stops writing within the renew deadline and
/// exits 4; the standby (on loopback) takes over once the lease expired; their rows do not
/// interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_partition_between_the_leader_and_redis() {
    if !Redis::available() {
        return;
    }
    let Some(ns) = util::ha::Namespace::create("r") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but a network namespace cannot be made (CI runs as root)"
        );
        eprintln!("skipped: cannot make a network namespace here (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(&[&ns.outside]);
    let text = config("  backend: redis\n  redis: {url: \"${REDIS_URL}\"}");
    let path = util::write_config(dir.path(), &text);
    let inside_url = format!("redis://{}:{}", ns.outside, redis.port);
    let mut a = Replica::start_with(
        ns.bin(),
        &ns.inside,
        dir.path(),
        &path,
        "a",
        &[("REDIS_URL", &inside_url)],
    );
    a.until_leading(20).await;
    let b = Replica::start(dir.path(), &path, "b", &[("REDIS_URL", &redis.url())]);
    util::wait_for("b to stand by", 20, async || b.leader().await == Some(0.0)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut = now_ns();
    ns.link_up(false);
    assert_eq!(a.exit_code(20), Some(4), "a steps down: {}", a.log());
    let last = *a.rows().iter().max().unwrap();
    let limit = cut + (RENEW_DEADLINE + Duration::from_millis(200)).as_nanos();
    assert!(last <= limit, "a wrote {} ms after the cut", ms(last - cut));
    util::wait_for("b to write", 20, async || !b.rows().is_empty()).await;
    let takeover = ms(b.rows()[0] - cut);
    eprintln!("takeover after a partition: {takeover} ms");
    assert!(takeover <= (LEASE + RETRY + Duration::from_millis(500)).as_millis());
    assert!(after(&a.rows(), &b.rows()), "nobody wrote twice");
    ns.link_up(true);
}

/// `run --once` with the lease held by another replica: it waits `once-timeout`, then exits 4
/// naming the lease, having run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_once_waits_for_the_lease_then_exits_4() {
    if !Redis::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(&[]);
    let text = config(&format!(
        "  backend: redis\n  once-timeout: 1s\n  redis: {{url: \"{}\"}}",
        redis.url()
    ));
    let path = util::write_config(dir.path(), &text);
    let a = Replica::start(dir.path(), &path, "a", &[]);
    a.until_leading(20).await;
    let out = dir.path().join("once.out");
    let (code, _, stderr) = util::run(
        util::bin()
            .args(["run", "--once", "-c"])
            .arg(&path)
            .env("ID", "once")
            .env("OUT", &out)
            .env("PORT", util::free_port().to_string()),
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("lease `demo`") && stderr.contains("once-timeout"),
        "{stderr}"
    );
    assert!(!out.exists() || std::fs::read_to_string(&out).unwrap().is_empty());
}

fn kube_config(
    dir: &std::path::Path,
    api: &str,
    token_file: &std::path::Path,
) -> std::path::PathBuf {
    let text = config(&format!(
        "  backend: kubernetes\n  kubernetes: {{namespace: extractors, api-url: \"{api}\", token-file: \"{}\"}}",
        token_file.display()
    ));
    util::write_config(dir, &text)
}

/// The Kubernetes backend against a Lease endpoint fake: the first replica creates the Lease,
/// the second stands by; a resourceVersion changed behind the leader's back (409 on its next
/// PUT) does not unseat it; SIGKILL fails over within lease + retry (leaseTransitions 1), and
/// a restarted replica stands by; SIGTERM hands the Lease back (released: no holder, then the
/// standby's); the API server down for longer than the renew deadline makes the leader step
/// down and exit 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_lease_failover_handover_and_api_outage() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "service-account-token\n").unwrap();
    let api = util::kube::KubeApi::start("service-account-token").await;
    let path = kube_config(dir.path(), &api.server.uri(), &token);
    let mut a = Replica::start(dir.path(), &path, "a", &[]);
    a.until_leading(20).await;
    let spec = api.spec("demo").expect("the Lease was created");
    assert_eq!(spec["holderIdentity"], "a");
    assert_eq!(spec["leaseDurationSeconds"], LEASE.as_secs());
    let b = Replica::start(dir.path(), &path, "b", &[]);
    util::wait_for("b to stand by", 20, async || b.leader().await == Some(0.0)).await;
    api.change_before_next_put();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.running() && a.leader().await == Some(1.0),
        "a conflict is retried, not a loss: {}",
        a.log()
    );
    assert!(api.state.lock().unwrap().conflicts >= 1);
    assert!(b.rows().is_empty());

    let killed = now_ns();
    a.signal("KILL");
    a.exit_code(5);
    util::wait_for("b to write", 20, async || !b.rows().is_empty()).await;
    let takeover = ms(b.rows()[0] - killed);
    eprintln!("kubernetes: takeover after SIGKILL: {takeover} ms");
    assert!(
        takeover <= (LEASE + RETRY + Duration::from_millis(700)).as_millis(),
        "{takeover} ms"
    );
    let spec = api.spec("demo").unwrap();
    assert_eq!(
        (
            spec["holderIdentity"].as_str(),
            spec["leaseTransitions"].as_i64()
        ),
        (Some("b"), Some(1))
    );
    assert!(after(&a.rows(), &b.rows()));

    let a2_dir = dir.path().join("again");
    std::fs::create_dir(&a2_dir).unwrap();
    let mut a = Replica::start(&a2_dir, &path, "a", &[]);
    util::wait_for("a to stand by", 20, async || a.leader().await == Some(0.0)).await;
    let mut b = b;
    b.signal("TERM");
    assert_eq!(b.exit_code(10), Some(0), "{}", b.log());
    util::wait_for("a to write again", 10, async || !a.rows().is_empty()).await;
    let gap = ms(a.rows()[0] - b.rows().iter().max().unwrap());
    eprintln!("kubernetes: handover after SIGTERM: {gap} ms");
    assert!(
        gap <= (RETRY + Duration::from_millis(700)).as_millis(),
        "{gap} ms"
    );
    assert_eq!(api.spec("demo").unwrap()["holderIdentity"], "a");

    let down = now_ns();
    api.state.lock().unwrap().down = true;
    assert_eq!(a.exit_code(15), Some(4), "{}", a.log());
    let last = *a.rows().iter().max().unwrap();
    assert!(
        last <= down + (RENEW_DEADLINE + Duration::from_millis(200)).as_nanos(),
        "a wrote {} ms into the outage",
        ms(last - down)
    );
    let requests = api.state.lock().unwrap().requests.clone();
    eprintln!("kubernetes: requests {requests:?}");
}

/// Renew traffic: a leader and a standby for 10 s make about 2 tries a second each (retry
/// period 0.5 s): a GET and a PUT per leader try, a GET per standby try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_renew_traffic_is_one_try_per_retry_period() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let api = util::kube::KubeApi::start("t").await;
    let path = kube_config(dir.path(), &api.server.uri(), &token);
    let a = Replica::start(dir.path(), &path, "a", &[]);
    a.until_leading(20).await;
    let b = Replica::start(dir.path(), &path, "b", &[]);
    util::wait_for("b to stand by", 20, async || b.leader().await == Some(0.0)).await;
    let before = api.state.lock().unwrap().requests.clone();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = api.state.lock().unwrap().requests.clone();
    let count = |m: &str| after.get(m).copied().unwrap_or(0) - before.get(m).copied().unwrap_or(0);
    let (gets, puts) = (count("GET"), count("PUT"));
    eprintln!(
        "kubernetes: in 10 s, {gets} GET and {puts} PUT (per minute: {} requests)",
        (gets + puts) * 6
    );
    assert!(
        (16..=24).contains(&puts),
        "the leader renews every 0.5 s: {puts} PUTs in 10 s"
    );
    assert!(
        (32..=48).contains(&gets),
        "leader and standby each read every 0.5 s: {gets} GETs in 10 s"
    );
}

/// When the rows of replica `id` that reached the fake CDF were produced.
fn cdf_rows(cdf: &fake_cdf::FakeCdf, id: &str) -> Vec<u128> {
    let prefix = format!("{id}-");
    cdf.with(|s| {
        let mut rows: Vec<u128> = s
            .rows
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
            .collect();
        rows.sort_unstable();
        rows
    })
}

/// The RAW backend against the stateful fake CDF, replicas writing their rows to CDF: one
/// leads; SIGKILL fails over once its heartbeat is older than the lease; a replica started
/// again stands by (the new leader keeps its claim); SIGTERM deletes the leader's heartbeat
/// and the standby claims at its next try; CDF down makes the leader step down (exit 4). Every
/// RAW request the lease made is then replayed to Prism serving Cognite's spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_lease_failover_handover_and_cdf_outage() {
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let header =
        util::cognite_header(&cdf.uri()) + "  extraction-pipeline: {external-id: ha-pipeline}\n";
    let text = util::ha::config_with(
        &header,
        "  backend: raw\n  raw: {database: ha, table: leases}",
    );
    let path = util::write_config(dir.path(), &text);
    let (mut a, b) = leader_and_standby(dir.path(), &path).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cdf_rows(&cdf, "a").len() >= 10);
    assert!(cdf_rows(&cdf, "b").is_empty(), "the standby writes nothing");

    let killed = now_ns();
    a.signal("KILL");
    a.exit_code(5);
    util::wait_for("b to write", 20, async || !cdf_rows(&cdf, "b").is_empty()).await;
    let takeover = ms(cdf_rows(&cdf, "b")[0] - killed);
    eprintln!("raw: takeover after SIGKILL: {takeover} ms");
    assert!(
        takeover <= (LEASE + RETRY * 2 + Duration::from_millis(500)).as_millis(),
        "{takeover} ms"
    );
    assert!(after(&cdf_rows(&cdf, "a"), &cdf_rows(&cdf, "b")));
    util::wait_for("the takeover's pipeline report", 10, async || {
        cdf.with(|s| {
            s.pipeline_runs.iter().any(|r| {
                r["status"] == "seen"
                    && r["message"].as_str().is_some_and(|m| {
                        m.contains("b took the high-availability lease `demo` over from a")
                    })
            })
        })
    })
    .await;

    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let mut a = Replica::start(&again, &path, "a", &[]);
    util::wait_for("a to stand by", 20, async || a.leader().await == Some(0.0)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.leader().await,
        Some(0.0),
        "the lower identity does not unseat a live leader"
    );
    let mut b = b;
    let a_before = cdf_rows(&cdf, "a").len();
    b.signal("TERM");
    assert_eq!(b.exit_code(10), Some(0), "{}", b.log());
    util::wait_for("a to write again", 10, async || {
        cdf_rows(&cdf, "a").len() > a_before
    })
    .await;
    let resumed = cdf_rows(&cdf, "a")[a_before];
    let gap = ms(resumed - cdf_rows(&cdf, "b").last().unwrap());
    eprintln!("raw: handover after SIGTERM: {gap} ms");
    assert!(
        gap <= (RETRY * 2 + Duration::from_millis(500)).as_millis(),
        "{gap} ms"
    );

    let down = now_ns();
    cdf.with(|s| s.down = true);
    assert_eq!(a.exit_code(20), Some(4), "{}", a.log());
    let produced_last = *cdf_rows(&cdf, "a").last().unwrap();
    assert!(
        produced_last <= down,
        "nothing reached CDF while it was down"
    );

    // The lease's requests, as Cognite's spec has them.
    let requests = cdf.with(|s| s.recorded.clone());
    let lease: Vec<_> = requests
        .into_iter()
        .filter(|(_, p, _)| p.starts_with("/raw/dbs/ha/"))
        .collect();
    for endpoint in ["/rows?ensureParent=true", "/rows?limit=", "/rows/delete"] {
        assert!(
            lease.iter().any(|(_, p, _)| p.contains(endpoint)),
            "{endpoint} not exercised"
        );
    }
    let Some(prism) = prism::Prism::start().await else {
        return;
    };
    prism.replay(&lease).await;
}

/// `config-examples/high-availability.yaml` as its comment says to run it: two processes with
/// `--dry-run` against a real Redis; one prints rows, the other stands by; SIGTERM of the
/// first hands over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_high_availability_example_runs_as_its_comment_says() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start(&[]);
    let example = util::repo().join("config-examples/high-availability.yaml");
    let dir = tempfile::tempdir().unwrap();
    let start = |replica: &str| {
        let out = dir.path().join(format!("{replica}.out"));
        let log = dir.path().join(format!("{replica}.log"));
        let child = util::bin()
            .args(["run", "--dry-run", "-c"])
            .arg(&example)
            .env("REPLICA", replica)
            .env("REDIS_URL", redis.url())
            .current_dir(dir.path())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (util::Running(child), out, log)
    };
    // The port each logs ("serving /metrics … addr=0.0.0.0:PORT").
    let port_of = |log: &std::path::Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let (_, rest) = text.split_once("addr=0.0.0.0:")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u16>()
            .ok()
    };
    let leader = async |log: &std::path::Path| {
        util::metric(
            &format!("127.0.0.1:{}", port_of(log)?),
            "extractor_leader",
            &[],
        )
        .await
    };
    let rows = |out: &std::path::Path, replica: &str| {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .contains(&format!("{replica}-"))
    };
    let (mut a, a_out, a_log) = start("replica-a");
    util::wait_for("replica-a to lead", 30, async || {
        leader(&a_log).await == Some(1.0)
    })
    .await;
    let (_b, b_out, b_log) = start("replica-b");
    util::wait_for("replica-b to stand by", 30, async || {
        leader(&b_log).await == Some(0.0)
    })
    .await;
    util::wait_for("replica-a's rows", 10, async || rows(&a_out, "replica-a")).await;
    assert!(!rows(&b_out, "replica-b"), "the standby prints no rows");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &a.0.id().to_string()])
        .status();
    assert!(a.0.wait().unwrap().success());
    util::wait_for("replica-b to take over", 10, async || {
        leader(&b_log).await == Some(1.0)
    })
    .await;
    util::wait_for("replica-b's rows", 10, async || rows(&b_out, "replica-b")).await;
}

/// A Redis password is a secret: with the right one the replica leads, with a wrong one it
/// stands by saying why; neither shows it in the log, nor in `check-config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_authenticates_and_is_never_shown() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start_with(&[], &["--requirepass", "pw-s3cr3t-redis"]);
    let dir = tempfile::tempdir().unwrap();
    let text = config(&format!(
        "  backend: redis\n  redis: {{url: \"{}\", password: \"${{REDIS_PASSWORD}}\"}}",
        redis.url()
    ));
    let path = util::write_config(dir.path(), &text);
    let good = Replica::start(
        dir.path(),
        &path,
        "a",
        &[("REDIS_PASSWORD", "pw-s3cr3t-redis")],
    );
    good.until_leading(20).await;
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let bad = Replica::start(&other, &path, "b", &[("REDIS_PASSWORD", "wrong-pw-s3cr3t")]);
    util::wait_for("b to say why it cannot lead", 20, async || {
        bad.log().contains("cannot reach the lease")
    })
    .await;
    assert_eq!(bad.leader().await, Some(0.0));
    assert!(
        bad.log().contains("Password authentication failed"),
        "{}",
        bad.log()
    );
    for log in [good.log(), bad.log()] {
        assert!(!log.contains("s3cr3t"), "a password in the log: {log}");
    }
    let (code, stdout, stderr) = util::run(
        util::bin()
            .args(["check-config", "-c"])
            .arg(&path)
            .env("REDIS_PASSWORD", "pw-s3cr3t-redis")
            .env("ID", "c")
            .env("OUT", dir.path().join("c.out"))
            .env("PORT", "0"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));
}

/// `rediss://` with a private CA (`ca-file`): the replica leads over TLS; without the CA it
/// cannot verify the server and stands by, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    if !Redis::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = util::tls::pki(dir.path());
    let redis = Redis::start_tls(&pki);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let text = config(&format!(
        "  backend: redis\n  redis: {{url: \"{url}\", ca-file: \"{}\"}}",
        pki.ca.display()
    ));
    let path = util::write_config(dir.path(), &text);
    let a = Replica::start(dir.path(), &path, "a", &[]);
    a.until_leading(20).await;
    util::wait_for("a's rows", 10, async || !a.rows().is_empty()).await;

    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let text = config(&format!("  backend: redis\n  redis: {{url: \"{url}\"}}"));
    let path = util::write_config(&other, &text);
    let b = Replica::start(&other, &path, "b", &[]);
    util::wait_for("b to say why it cannot reach the lease", 20, async || {
        b.log().contains("cannot reach the lease")
    })
    .await;
    assert_eq!(b.leader().await, Some(0.0));
    assert!(
        b.log().to_lowercase().contains("certificate"),
        "{}",
        b.log()
    );
}

/// The frozen-leader check on any backend: `a` leads, `b` stands by; `a` is stopped until `b`
/// writes, then woken: `a` produced nothing after the freeze, exits 4, and the rows of the two
/// do not interleave. `rows(id)` reads where the replicas' rows land.
async fn a_frozen_leader_writes_nothing(
    dir: &std::path::Path,
    path: &std::path::Path,
    rows: impl Fn(&str) -> Vec<u128>,
) {
    let (mut a, b) = leader_and_standby(dir, path).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal("STOP");
    let frozen = now_ns();
    util::wait_for("b to take over", 20, async || !rows("b").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("CONT");
    assert_eq!(a.exit_code(15), Some(4), "a steps down: {}", a.log());
    let late = rows("a").into_iter().filter(|t| *t > frozen).count();
    assert_eq!(late, 0, "rows produced after the freeze");
    assert!(after(&rows("a"), &rows("b")), "nobody wrote twice");
    assert_eq!(b.leader().await, Some(1.0));
}

/// A frozen leader on the Kubernetes backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_a_frozen_leader_that_wakes_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let api = util::kube::KubeApi::start("t").await;
    let path = kube_config(dir.path(), &api.server.uri(), &token);
    let read = |id: &str| Replica::rows_in(&dir.path().join(format!("{id}.out")), id);
    a_frozen_leader_writes_nothing(dir.path(), &path, read).await;
}

/// A frozen leader on the RAW backend (rows in the fake CDF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_a_frozen_leader_that_wakes_writes_nothing() {
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = util::ha::config_with(
        &util::cognite_header(&cdf.uri()),
        "  backend: raw\n  raw: {database: ha, table: leases}",
    );
    let path = util::write_config(dir.path(), &text);
    a_frozen_leader_writes_nothing(dir.path(), &path, |id| cdf_rows(&cdf, id)).await;
}

/// A standby reads its config again when it takes over: a change made while it stood by (no
/// reload runs then) applies at once, not at the next `reload.interval` poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_applies_a_config_changed_while_it_stood_by() {
    if !Redis::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(&[]);
    let path_a = redis_config(dir.path(), &redis.url());
    // b's config in a folder of its own: its output (in `other`) must not wake the file watch.
    let other = dir.path().join("b");
    let conf = other.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let path_b = redis_config(&conf, &redis.url());
    let a = Replica::start(dir.path(), &path_a, "a", &[]);
    a.until_leading(20).await;
    let mut a = a;
    let b = Replica::start(&other, &path_b, "b", &[]);
    util::wait_for("b to stand by", 20, async || b.leader().await == Some(0.0)).await;
    let v2 = std::fs::read_to_string(&path_b)
        .unwrap()
        .replace("${ID}-$(date", "${ID}v2-$(date");
    let tmp = dir.path().join("config.tmp");
    std::fs::write(&tmp, v2).unwrap();
    std::fs::rename(&tmp, &path_b).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("KILL");
    a.exit_code(5);
    util::wait_for("b to write with the new config", 15, async || {
        !Replica::rows_in(&b.out, "bv2").is_empty()
    })
    .await;
}
