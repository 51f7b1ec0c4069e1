//! A real MQTT broker (Debian's `mosquitto`) of a test's own, and a QoS 1 publisher.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mosquitto on a loopback port of its own, stopped (by PID) when dropped.
pub struct Broker {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its TLS port on 127.0.0.1 (with [`Broker::start_with_tls`]).
    pub tls_port: u16,
    log: PathBuf,
    conf: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Broker {
    /// Starts one; `persistent` keeps sessions and queued messages in a file across a graceful
    /// restart. `None` (after saying it skipped) where mosquitto is missing; fails with
    /// `CI=true`.
    pub fn start(dir: &Path, persistent: bool) -> Option<Broker> {
        Self::start_with(dir, persistent, None)
    }

    /// Starts one with a second listener, on `tls_port`, for TLS with `pki`'s server
    /// certificate that requires a client certificate signed by its CA.
    pub fn start_with_tls(dir: &Path, pki: &super::tls::Pki) -> Option<Broker> {
        Self::start_with(dir, false, Some(pki))
    }

    fn start_with(dir: &Path, persistent: bool, tls: Option<&super::tls::Pki>) -> Option<Broker> {
        let present = Command::new("mosquitto").arg("-h").output().is_ok();
        if !super::available(present, "mosquitto", "apt-get install mosquitto") {
            return None;
        }
        let port = super::free_port();
        let log = dir.join("mosquitto.log");
        let conf = dir.join("mosquitto.conf");
        let mut text = format!(
            // Its log to standard error (unbuffered), into a file of ours: mosquitto started as
            // root drops to its own user, which may not write in our folder.
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nlog_dest stderr\nlog_type all\n"
        );
        let tls_port = super::free_port();
        if let Some(pki) = tls {
            text.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            ));
        }
        if persistent {
            // Its own user writes the file: the folder (and the way to it) must let it.
            use std::os::unix::fs::PermissionsExt as _;
            let store = dir.join("mosquitto-store");
            std::fs::create_dir_all(&store).unwrap();
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                store.display()
            ));
        } else {
            text.push_str("persistence false\n");
        }
        std::fs::write(&conf, text).unwrap();
        let mut broker = Broker {
            child: None,
            port,
            tls_port,
            log,
            conf,
        };
        broker.spawn();
        Some(broker)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A graceful stop (SIGTERM: a persistent broker saves its sessions), then a start on the
    /// same port.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).expect("a pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = c.wait();
        }
        self.spawn();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (30 s at most) until `client` subscribed.
    pub async fn subscribed(&self, client: &str) {
        let started = Instant::now();
        while !self
            .log()
            .contains(&format!("Received SUBSCRIBE from {client}"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{client} did not subscribe"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes each of `payloads` at QoS 1 to `topic` and returns once the broker acknowledged
/// them all (PUBACK): from then on the broker answers for them. A client with a window of
/// acknowledgements, as devices publish; `mosquitto_pub -l` at QoS 1 outruns mosquitto 2.0.11,
/// which cuts it off after 20 000 to 35 000 messages.
pub async fn publish(port: u16, client_id: &str, topic: &str, payloads: Vec<String>) {
    use rumqttc_next::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let n = payloads.len();
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_inflight(100).set_keep_alive(30);
    let (client, mut events) = AsyncClient::new(options, 100);
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the test's publisher lost the broker: {e}"),
            }
        }
    });
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p)
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), acks)
        .await
        .expect("the broker acknowledged every message within 60 s")
        .unwrap();
    let _ = client.disconnect().await;
}

/// `upload-queue.buffer` as a YAML flow mapping: `disk` (in `dir/buffer`) or `memory`.
pub fn buffer(kind: &str, dir: &Path) -> String {
    match kind {
        "disk" => format!("{{type: disk, path: '{}'}}", dir.join("buffer").display()),
        _ => "{type: memory}".to_owned(),
    }
}

/// The task `hooks`: a webhook on `hook` into RAW saas.events.
pub fn hooks_task(hook: u16) -> String {
    format!(
        "  - name: hooks
    type: webhook
    schedule: {{type: continuous}}
    config:
      listen: 127.0.0.1:{hook}
      destination: {{type: raw, database: saas, table: events, key: '{{id}}'}}
"
    )
}

/// A config with two continuous tasks over `buffer` (a YAML flow mapping): `plant`, MQTT
/// (`plant/#` on the broker at `broker`, client id `extractor-e2e`, 50 in flight) into RAW
/// plant.messages, and [`hooks_task`]; metrics on `metrics`.
pub fn push_config(
    dir: &Path,
    cdf_uri: &str,
    broker: u16,
    hook: u16,
    metrics: u16,
    buffer: &str,
) -> PathBuf {
    let tasks = format!(
        "  - name: plant
    type: mqtt
    schedule: {{type: continuous}}
    config:
      url: mqtt://127.0.0.1:{broker}
      client-id: extractor-e2e
      topics: ['plant/#']
      max-in-flight: 50
      destination: {{type: raw, database: plant, table: messages, key: '{{id}}'}}
{}",
        hooks_task(hook)
    );
    push_config_with(dir, cdf_uri, metrics, buffer, &tasks)
}

/// The push tests' config with `tasks` (YAML list items): CDF at `cdf_uri` (one retry, 1 s
/// backoff), metrics on `metrics`, uploads every second through `buffer`, a 5 s grace.
pub fn push_config_with(
    dir: &Path,
    cdf_uri: &str,
    metrics: u16,
    buffer: &str,
    tasks: &str,
) -> PathBuf {
    super::write_config(
        dir,
        &format!(
            "{header}  connection: {{max-retries: 1, max-retry-backoff: 1s}}
metrics:
  server: {{host: 127.0.0.1, port: {metrics}}}
upload-queue:
  max-upload-interval: 1s
  buffer: {buffer}
shutdown-grace: 5s
tasks:
{tasks}",
            header = super::cognite_header(cdf_uri),
        ),
    )
}
