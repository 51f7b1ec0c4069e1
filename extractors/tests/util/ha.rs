//! High-availability test parts: a real Redis server, replicas of the binary that each write
//! a row per run into their own dry-run file (the row key names the replica and the moment the
//! row was produced), and network namespaces for partitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Running, bin, free_port};

/// The test timings: lease 3 s, renew deadline 2 s, retry period 0.5 s.
pub const LEASE: Duration = Duration::from_secs(3);
/// See [`LEASE`].
pub const RENEW_DEADLINE: Duration = Duration::from_secs(2);
/// See [`LEASE`].
pub const RETRY: Duration = Duration::from_millis(500);

/// Nanoseconds since the Unix epoch, as `date +%s%N` prints them.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A Redis server on a port of its own (no persistence: a restart loses every key).
pub struct Redis {
    child: Option<Running>,
    /// Its port.
    pub port: u16,
    binds: Vec<String>,
    args: Vec<String>,
    /// TLS only (`rediss://`) with this server certificate, key and CA.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Redis {
    /// Whether `redis-server` is installed (says it skipped where it is not).
    pub fn available() -> bool {
        super::available(
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "redis-server",
            "apt-get install redis-server",
        )
    }

    /// Starts one listening on loopback and on `extra` addresses.
    pub fn start(extra: &[&str]) -> Redis {
        Redis::start_with(extra, &[])
    }

    /// As [`start`](Self::start), with more server arguments (`--requirepass`).
    pub fn start_with(extra: &[&str], args: &[&str]) -> Redis {
        let mut binds = vec!["127.0.0.1".to_owned()];
        binds.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut redis = Redis {
            child: None,
            port: free_port(),
            binds,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            tls: None,
        };
        redis.restart();
        redis
    }

    /// One that speaks TLS only, with `pki`'s server certificate (for 127.0.0.1).
    pub fn start_tls(pki: &super::tls::Pki) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            binds: vec!["127.0.0.1".to_owned()],
            args: Vec::new(),
            tls: Some((
                pki.server_cert.clone(),
                pki.server_key.clone(),
                pki.ca.clone(),
            )),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL, by PID).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts it (again) on the same port, empty; returns once it answers.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key, ca)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .arg("--bind")
            .args(&self.binds)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(Running(child));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The config of every replica: dry-run (each writes its own file), one interval task
/// writing a RAW row per run keyed `<identity>-<nanoseconds>`, the metrics server on
/// `${PORT}`, and `high-availability:` with `backend` (YAML lines under it, indented by 2).
pub fn config(backend: &str) -> String {
    config_with(
        "version: 1\ncognite:\n  project: demo\n  dry-run: true\n  dry-run-output: ${OUT}\n",
        backend,
    )
}

/// As [`config`], with `header` (`version:` and `cognite:`) instead of a dry run.
pub fn config_with(header: &str, backend: &str) -> String {
    format!(
        r#"{header}high-availability:
  lease-name: demo
  identity: ${{ID}}
  lease-duration: {}ms
  renew-deadline: {}ms
  retry-period: {}ms
{backend}
metrics:
  server:
    port: ${{PORT}}
shutdown-grace: 5s
tasks:
  - name: tick
    type: command
    schedule: {{type: interval, expression: 100ms}}
    config:
      command: ["sh", "-c", "echo {{\\\"id\\\": \\\"${{ID}}-$(date +%s%N)\\\"}}"]
      records: ndjson
      destination: {{type: raw, database: d, table: t, key: "{{id}}"}}
"#,
        LEASE.as_millis(),
        RENEW_DEADLINE.as_millis(),
        RETRY.as_millis()
    )
}

/// One replica: `run` on a config with `ID`, `OUT` and `PORT` set, its log in `<dir>/<id>.log`.
pub struct Replica {
    /// Its identity.
    pub id: String,
    /// Its dry-run file.
    pub out: PathBuf,
    /// Its metrics port.
    pub port: u16,
    /// Where its metrics server is reached.
    pub host: String,
    log: PathBuf,
    process: Running,
}

impl Replica {
    /// Starts `id` on `config` in `dir`.
    pub fn start(dir: &Path, config: &Path, id: &str, envs: &[(&str, &str)]) -> Replica {
        Replica::start_with(bin(), "127.0.0.1", dir, config, id, envs)
    }

    /// Starts `id` with `command` (`ip netns exec … extractor-runtime`), its metrics server
    /// reached at `host`.
    pub fn start_with(
        mut command: Command,
        host: &str,
        dir: &Path,
        config: &Path,
        id: &str,
        envs: &[(&str, &str)],
    ) -> Replica {
        let out = dir.join(format!("{id}.out"));
        let log = dir.join(format!("{id}.log"));
        let port = free_port();
        let child = command
            .args(["run", "-c"])
            .arg(config)
            .env("ID", id)
            .env("OUT", &out)
            .env("PORT", port.to_string())
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica {
            id: id.to_owned(),
            out,
            port,
            host: host.to_owned(),
            log,
            process: Running(child),
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`), by PID.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// When each row it wrote was produced (nanoseconds since the epoch), in file order.
    pub fn rows(&self) -> Vec<u128> {
        Replica::rows_in(&self.out, &self.id)
    }

    /// When each row of replica `id` in the dry-run file `out` was produced.
    pub fn rows_in(out: &Path, id: &str) -> Vec<u128> {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let marker = format!("\"{id}-");
        text.match_indices(&marker)
            .filter_map(|(i, _)| {
                let rest = &text[i + marker.len()..];
                let end = rest.find('"')?;
                rest[..end].parse().ok()
            })
            .collect()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `extractor_leader` from its metrics server; `None` while it does not answer.
    pub async fn leader(&self) -> Option<f64> {
        self.metric("extractor_leader").await
    }

    /// An unlabelled sample from its metrics server.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        super::metric(&format!("{}:{}", self.host, self.port), name, &[]).await
    }

    /// `/readyz`'s status code.
    pub async fn ready(&self) -> Option<u16> {
        let url = format!("http://{}:{}/readyz", self.host, self.port);
        Some(super::get(&url).await?.0)
    }

    /// Waits until it leads (its metric says so), up to `secs`.
    pub async fn until_leading(&self, secs: u64) {
        let what = format!("{} to lead", self.id);
        super::wait_for(&what, secs, async || self.leader().await == Some(1.0)).await;
    }

    /// Waits until it exited, up to `secs`: its exit code.
    pub fn exit_code(&mut self, secs: u64) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "{} did not exit within {secs} s; its log:\n{}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.process.0.try_wait().unwrap().is_none()
    }
}

/// A network namespace with a veth pair to the root namespace: `10.<a>.<b>.1` on the root
/// side, `.2` inside. Deleted (with its link) when dropped.
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// The root side's link.
    pub link: String,
    /// The root side's address.
    pub outside: String,
    /// The namespace side's address.
    pub inside: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Namespace {
    /// Makes one; `None` where this machine cannot (not root, no `ip`).
    pub fn create(tag: &str) -> Option<Namespace> {
        let n = std::process::id() % 250 + 1;
        let name = format!("ha-{tag}-{}", std::process::id());
        let link = format!("vh{tag}{n}o");
        let peer = format!("vh{tag}{n}i");
        let (outside, inside) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Namespace {
            name: name.clone(),
            link: link.clone(),
            outside: outside.clone(),
            inside: inside.clone(),
        };
        let ok = ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])
            && ip(&["link", "set", &peer, "netns", &name])
            && ip(&["addr", "add", &format!("{outside}/30"), "dev", &link])
            && ip(&["link", "set", &link, "up"])
            && ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{inside}/30"),
                "dev",
                &peer,
            ])
            && ip(&["-n", &name, "link", "set", &peer, "up"])
            && ip(&["-n", &name, "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    /// A command that runs the binary inside.
    pub fn bin(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.name,
            env!("CARGO_BIN_EXE_extractor-runtime"),
        ]);
        cmd.env_remove("COGNITE_API_KEY").env_remove("RUST_LOG");
        cmd
    }

    /// Cuts (`false`) or restores (`true`) the link: a real partition.
    pub fn link_up(&self, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.link,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["link", "del", &self.link]);
        ip(&["netns", "del", &self.name]);
    }
}
