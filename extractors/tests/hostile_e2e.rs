//! Hostile but realistic inputs through the built binary: file names that are not UTF-8 or that
//! hold a newline or an escape sequence, one file whose upload URL keeps failing, a dead-letter
//! file on a full disk, and CDF answers far larger than any real one.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

mod util;

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use support::fake_cdf::FakeCdf;
use util::bin;

/// Names a Windows share, a legacy system or a hostile user may give a file: Latin-1, a
/// newline that forges a log line, an escape sequence that recolours a terminal.
const ODD_NAMES: [&[u8]; 4] = [
    b"caf\xe9",
    b"x\nFORGED ERROR all data deleted",
    b"esc\x1b[31mred",
    b"plain",
];

/// The escaped form each odd name takes in keys and logs.
const SHOWN: [&str; 4] = [
    r"caf\xE9",
    r"x\nFORGED ERROR all data deleted",
    r"esc\u{1b}[31mred",
    "plain",
];

fn odd_path(dir: &Path, name: &[u8], ext: &str) -> PathBuf {
    let mut bytes = name.to_vec();
    bytes.extend_from_slice(ext.as_bytes());
    dir.join(OsStr::from_bytes(&bytes))
}

/// The `table` (csv) and `docs` (files) folders under `dir`.
fn folders(dir: &Path) -> (PathBuf, PathBuf) {
    let (table, docs) = (dir.join("table"), dir.join("docs"));
    std::fs::create_dir_all(&table).unwrap();
    std::fs::create_dir_all(&docs).unwrap();
    (table, docs)
}

fn config(dir: &Path, cdf: &FakeCdf, tasks: &str) -> PathBuf {
    util::write_config(
        dir,
        &format!(
            "version: 1\ncognite:\n  project: demo\n  host: {uri}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}\n  connection: {{max-retries: 0}}\nstate-store: {{local: {{path: '{state}'}}}}\ntasks:\n{tasks}",
            uri = cdf.uri(),
            state = dir.join("state.json").display(),
        ),
    )
}

/// Runs the binary with `args` and `-c config`: exit code, stdout, stderr.
async fn run_bin(args: &[&str], config: &Path) -> (i32, String, String) {
    let mut cmd = bin();
    cmd.args(args).arg("-c").arg(config);
    tokio::task::spawn_blocking(move || util::run(&mut cmd))
        .await
        .unwrap()
}

async fn run_once(config: &Path) -> (i32, String) {
    let (code, _, stderr) = run_bin(&["run", "--once"], config).await;
    (code, stderr)
}

/// Every log line is one line and holds no escape byte: a name can neither forge a line nor
/// reach the terminal.
fn assert_log_is_safe(stderr: &str) {
    assert!(!stderr.contains('\x1b'), "an ESC reached the log: {stderr}");
    for line in stderr.lines() {
        assert!(
            !line.starts_with("FORGED"),
            "a file name forged a log line: {stderr}"
        );
    }
}

/// csv and files read every file of a folder whatever its name's bytes: each file's rows and
/// content arrive, each name is logged escaped, and a second run reads nothing again (the
/// state keys are stable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_with_odd_names_are_read_and_logged_escaped() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (table, docs) = folders(dir.path());
    for (i, name) in ODD_NAMES.iter().enumerate() {
        std::fs::write(
            odd_path(&table, name, ".csv"),
            format!("id,v\nrow{i},{i}\n"),
        )
        .unwrap();
        std::fs::write(odd_path(&docs, name, ".txt"), format!("document {i}")).unwrap();
    }
    let config = config(
        dir.path(),
        &cdf,
        &format!(
            "  - {{name: table, type: csv, schedule: {{type: interval, expression: 1h}}, config: {{path: '{}', destination: {{type: raw, database: db, table: t, key: id}}}}}}\n  - {{name: docs, type: files, schedule: {{type: interval, expression: 1h}}, config: {{path: '{}', target: {{type: classic}}}}}}\n",
            table.display(),
            docs.display()
        ),
    );
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 0, "{stderr}");
    assert_log_is_safe(&stderr);
    cdf.with(|s| {
        for i in 0..ODD_NAMES.len() {
            assert_eq!(s.rows.get(&format!("row{i}")), Some(&1), "{:?}", s.rows);
        }
        for (i, shown) in SHOWN.iter().enumerate() {
            let key = format!("{shown}.txt")
                .replace(r"\n", "\n")
                .replace(r"\u{1b}", "\x1b");
            let file = s
                .files
                .get(&key)
                .unwrap_or_else(|| panic!("{key:?} not in {:?}", s.files.keys()));
            assert_eq!(
                file.content.as_deref(),
                Some(format!("document {i}").as_bytes())
            );
        }
    });
    for shown in SHOWN {
        assert!(
            stderr.contains(&format!("{shown}.csv")),
            "{shown}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("{shown}.txt")),
            "{shown}: {stderr}"
        );
    }

    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 0, "{stderr}");
    cdf.with(|s| {
        assert!(s.rows.values().all(|n| *n == 1), "read again: {:?}", s.rows);
        assert!(s.files.values().all(|f| f.content.is_some()));
    });
    assert_eq!(cdf.requests("/files"), ODD_NAMES.len(), "uploaded again");
}

/// One file whose upload URL answers 500 does not keep the files after it from arriving: the
/// run fails naming it, and once the storage recovers the next run uploads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upload_url_does_not_block_the_files_after_it() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for name in ["a.txt", "b-broken.txt", "c.txt", "d.txt"] {
        std::fs::write(docs.join(name), name).unwrap();
    }
    let config = config(
        dir.path(),
        &cdf,
        &format!(
            "  - {{name: docs, type: files, schedule: {{type: interval, expression: 1h}}, retry: {{max-attempts: 1}}, config: {{path: '{}', target: {{type: classic}}}}}}\n",
            docs.display()
        ),
    );
    cdf.with(|s| s.put_failing = Some("b-broken".into()));
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("1 file(s) not uploaded: b-broken.txt"),
        "{stderr}"
    );
    cdf.with(|s| {
        for name in ["a.txt", "c.txt", "d.txt"] {
            assert_eq!(s.files[name].content.as_deref(), Some(name.as_bytes()));
        }
        assert!(s.files["b-broken.txt"].content.is_none());
        s.put_failing = None;
    });
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 0, "{stderr}");
    cdf.with(|s| {
        assert_eq!(
            s.files["b-broken.txt"].content.as_deref(),
            Some(&b"b-broken.txt"[..])
        );
        assert_eq!(
            s.puts.len(),
            4,
            "the others are not sent again: {:?}",
            s.puts
        );
    });
}

/// A tmpfs of `size`, mounted at `dir` and unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        util::available(mounted, "mounting a tmpfs", "run as root").then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 1024];
    while f.write_all(&block).is_ok() {}
}

/// A dead-letter file on a full disk: the other task's rows and the good rows of the same
/// task arrive, the file holds no torn line and the log never says a refused item was written
/// to it; once there is space, the next run writes them, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_dead_letter_file_blocks_nothing_and_tears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("small"), "16k") else {
        return;
    };
    let dead_letter = disk.0.join("dead-letter.ndjson");
    // An older line that leaves less of its page than one line: the next write stops part way,
    // as on a real full disk.
    let older = format!("{{\"kept\":\"{}\"}}\n", "x".repeat(4000));
    std::fs::write(&dead_letter, &older).unwrap();
    fill(&disk.0);

    let cdf = FakeCdf::start(&[]).await;
    let (poisoned, clean) = (dir.path().join("poisoned"), dir.path().join("clean"));
    std::fs::create_dir_all(&poisoned).unwrap();
    std::fs::create_dir_all(&clean).unwrap();
    let mut rows = String::from("id,v\n");
    for i in 0..40 {
        rows.push_str(&format!("bad-{i},{i}\nmixed-{i},{i}\n"));
    }
    std::fs::write(poisoned.join("p.csv"), rows).unwrap();
    let good: String = (0..5).map(|i| format!("good-{i},{i}\n")).collect();
    std::fs::write(clean.join("c.csv"), format!("id,v\n{good}")).unwrap();
    let config = util::write_config(
        dir.path(),
        &format!(
            "version: 1\ncognite:\n  project: demo\n  host: {uri}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}\n  connection: {{max-retries: 0}}\nstate-store: {{local: {{path: '{state}'}}}}\nupload-queue: {{dead-letter: '{dl}'}}\ntasks:\n  - {{name: poisoned, type: csv, retry: {{max-attempts: 1}}, schedule: {{type: interval, expression: 1h}}, config: {{path: '{p}', destination: {{type: raw, database: db, table: t, key: id}}}}}}\n  - {{name: clean, type: csv, schedule: {{type: interval, expression: 1h}}, config: {{path: '{c}', destination: {{type: raw, database: db, table: t, key: id}}}}}}\n",
            uri = cdf.uri(),
            state = dir.path().join("state.json").display(),
            dl = dead_letter.display(),
            p = poisoned.display(),
            c = clean.display(),
        ),
    );
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 1, "{stderr}");
    cdf.with(|s| {
        for i in 0..5 {
            assert_eq!(s.rows.get(&format!("good-{i}")), Some(&1), "{stderr}");
        }
        for i in 0..40 {
            assert_eq!(s.rows.get(&format!("mixed-{i}")), Some(&1), "{stderr}");
        }
    });
    assert!(
        std::fs::read_to_string(&dead_letter).unwrap() == older,
        "no torn line"
    );
    for (i, _) in stderr.match_indices("written to") {
        assert!(
            stderr[..i].ends_with("NOT "),
            "a false \"written to\": {stderr}"
        );
    }
    assert!(
        stderr.contains("dead-letter file cannot be written (No space left on device"),
        "{stderr}"
    );

    // Space again: the rows are read again (the state did not move past them) and written.
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 1, "CDF still refuses them: {stderr}");
    assert!(stderr.contains("CDF refused 40 item(s)"), "{stderr}");
    let text = std::fs::read_to_string(&dead_letter).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is whole JSON"))
        .collect();
    assert_eq!(lines.len(), 41, "{text}");
    assert_eq!(lines[1]["task"], "poisoned");
    cdf.with(|s| {
        assert_eq!(
            s.rows.get("good-0"),
            Some(&1),
            "the clean file is not read again"
        )
    });
}

/// The peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CDF answers of 100 MiB (a gateway or a TLS-inspecting proxy gone wrong) are never held in
/// memory: the rows are delivered, the files request that needs its answer fails with a clear
/// error, and the process's peak RSS stays far below the answer's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_answer_is_not_read_into_memory() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (table, docs) = folders(dir.path());
    std::fs::write(table.join("t.csv"), "id,v\na,1\nb,2\n").unwrap();
    std::fs::write(docs.join("report.txt"), "report").unwrap();
    let mut huge = b"{\"items\":[],\"padding\":\"".to_vec();
    huge.resize(100 << 20, b'x');
    huge.extend_from_slice(b"\"}");
    cdf.with(|s| s.body_override = Some(std::sync::Arc::new(huge)));
    let config = config(
        dir.path(),
        &cdf,
        &format!(
            "  - {{name: table, type: csv, schedule: {{type: interval, expression: 1h}}, config: {{path: '{}', destination: {{type: raw, database: db, table: t, key: id}}}}}}\n  - {{name: docs, type: files, retry: {{max-attempts: 1}}, schedule: {{type: interval, expression: 1h}}, config: {{path: '{}', target: {{type: classic}}}}}}\n",
            table.display(),
            docs.display()
        ),
    );
    let log = dir.path().join("log.txt");
    let mut child = bin()
        .args(["run", "-c"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // Both runs over: the csv task's, and the files task's with its error.
    let done = |text: &str| {
        text.contains("csv run done") && text.contains("the answer is larger than 8192 KiB")
    };
    while !done(&std::fs::read_to_string(&log).unwrap()) || cdf.with(|s| s.rows.len()) < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Let the scheduler settle the run's results before measuring.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let peak = peak_rss_kib(child.id());
    sigterm(child.id());
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("peak RSS with 100 MiB answers: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB: {text}");
    assert!(
        text.contains("the answer is larger than 8192 KiB; not read"),
        "{text}"
    );
}

/// Sends SIGTERM to `pid` (the `kill` command: no libc in these tests).
fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// An expired client certificate is named, with its `notAfter`, by `check-config` and
/// `token` before any request: Entra would refuse it only at run time (AADSTS700027).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_named_before_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pem) = util::openssl_expired_pem(dir.path()) else {
        return;
    };
    let idp = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "error": "invalid_client",
            "error_description": "AADSTS700027: The certificate with identifier used to sign the client assertion is expired on application.",
            "error_codes": [700027]
        })))
        .mount(&idp)
        .await;
    let config = util::write_config(
        dir.path(),
        &format!(
            "version: 1\ncognite:\n  project: demo\n  host: http://127.0.0.1:9\n  idp-authentication:\n    client-id: cert-app\n    token-url: '{}/token'\n    scopes: [api]\n    certificate: {{path: '{}'}}\ntasks: []\n",
            idp.uri(),
            pem.display()
        ),
    );
    let expected = format!(
        "warning: the certificate `{}` expired at 2021-01-01T00:00:00Z (notAfter)",
        pem.display()
    );
    let (code, _, stderr) = run_bin(&["check-config"], &config).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    let (code, _, stderr) = run_bin(&["token"], &config).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("AADSTS700027"), "{stderr}");
}

/// A forward proxy on loopback that answers every connection with `answer` once it has read
/// the request's head (`None`: it never answers, holding the connection). Stopped on drop.
struct RawProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawProxy {
    fn start(answer: Option<&'static str>) -> RawProxy {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                if let Some(answer) = answer {
                    stream.set_nonblocking(false).unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let _ = stream.write_all(answer.as_bytes());
                }
                held.push(stream);
            }
        });
        RawProxy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A config whose token requests go to `token_url` through the proxy `proxy`, with
/// `connection` settings added.
fn proxied_config(dir: &Path, proxy: &str, token_url: &str, connection: &str) -> PathBuf {
    util::write_config(
        dir,
        &format!(
            "version: 1\ncognite:\n  project: demo\n  host: http://127.0.0.1:9\n  connection: {{proxy: '{proxy}'{connection}}}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{token_url}', scopes: [s]}}\ntasks: []\n"
        ),
    )
}

/// A proxy that answers 407 is named as the one that refused (without its password), not
/// reported as the identity provider's failure: for an http token URL (the proxy's answer) and
/// an https one (its answer to CONNECT, the usual case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_407_names_the_proxy_not_the_identity_provider() {
    let proxy = RawProxy::start(Some(
        "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"corp\"\r\ncontent-length: 0\r\n\r\n",
    ));
    let port = proxy.port;
    for token_url in [
        "http://127.0.0.1:9/token",
        "https://login.example.com/t/oauth2/v2.0/token",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = proxied_config(
            dir.path(),
            &format!("http://alice:hunter2-proxy@127.0.0.1:{port}"),
            token_url,
            "",
        );
        let (code, stdout, stderr) = run_bin(&["token"], &config).await;
        assert_eq!(code, 3, "{token_url}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "the proxy http://alice:***@127.0.0.1:{port} (cognite.connection.proxy) refused the request (HTTP 407"
            )),
            "{token_url}: {stderr}"
        );
        assert!(!stderr.contains("hunter2-proxy"), "{stderr}");
        assert!(!stderr.contains("the token request failed"), "{stderr}");
    }
}

/// A proxy that takes the connection and never answers is bounded by
/// `cognite.connection.timeout` (the token request had a fixed 30 s of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_proxy_is_bounded_by_the_connection_timeout() {
    let proxy = RawProxy::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = proxied_config(
        dir.path(),
        &format!("http://127.0.0.1:{}", proxy.port),
        "https://login.example.com/t/oauth2/v2.0/token",
        ", timeout: 1s",
    );
    let started = std::time::Instant::now();
    let (code, _, stderr) = run_bin(&["token"], &config).await;
    let took = started.elapsed();
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.to_lowercase().contains("timed out"), "{stderr}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "{took:?}: {stderr}"
    );
}
