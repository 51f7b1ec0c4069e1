//! MQTT end to end: messages published to a local mosquitto (QoS 1) until every record is in a
//! local fake CDF, through the built binary, with a memory and a disk buffer: live (published
//! while the extractor runs) and catching up (a backlog the broker kept for the session while
//! the extractor was killed); messages/s, the extractor's peak RSS, the disk buffer's fsyncs.
//! Needs `mosquitto`.
//!
//! Run: `cargo bench -p extractors --bench push` (BENCH_MESSAGES, default 100 000).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;
#[path = "../tests/util/mod.rs"]
mod util;

use util::{Running as Killed, free_port};

async fn one(dir: &Path, buffer: &str, messages: usize) {
    let port = free_port();
    let conf = dir.join(format!("mosquitto-{buffer}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nlog_dest stderr\nlog_type subscribe\n"),
    )
    .unwrap();
    let log = dir.join(format!("mosquitto-{buffer}.log"));
    let broker = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let metrics = free_port();
    let buffer_block = util::mqtt::buffer(buffer, dir);
    let config = dir.join(format!("push-{buffer}.yaml"));
    std::fs::write(
        &config,
        format!(
            "{header}metrics: {{server: {{host: 127.0.0.1, port: {metrics}}}}}
logger: {{console: {{level: warn}}}}
upload-queue: {{max-upload-interval: 1s, buffer: {buffer_block}}}
tasks:
  - name: plant
    type: mqtt
    schedule: {{type: continuous}}
    config:
      url: mqtt://127.0.0.1:{port}
      client-id: bench-{buffer}
      topics: ['plant/#']
      max-in-flight: 1000
      destination: {{type: raw, database: plant, table: messages, key: '{{id}}'}}
",
            header = util::cognite_header(&cdf.uri())
        ),
    )
    .unwrap();
    let spawn = || util::spawn_run(&config, &[]);
    let arrived = |want: usize, since: Instant| {
        let cdf = &cdf;
        async move {
            while cdf.with(|c| c.rows.len()) < want {
                assert!(
                    since.elapsed() < Duration::from_secs(120),
                    "{} of {want} arrived in 120 s",
                    cdf.with(|c| c.rows.len())
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            since.elapsed()
        }
    };
    let mut child = spawn();
    // Subscribed: nothing published from now on is lost.
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&format!("bench-{buffer} 1 plant/#"))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Live: the extractor takes messages while they are published.
    let started = Instant::now();
    publish(port, 0, messages).await;
    let published = started.elapsed();
    let took = arrived(messages, started).await;
    let fsyncs = util::raw_queue_metric(metrics, "extractor_buffer_fsyncs_total").await;
    let rss = util::memory_kib(child.0.id(), "VmHWM");
    println!(
        "push bench ({buffer} buffer, live): {messages} MQTT messages in {:.2} s: {:.0} messages/s end to end (published in {:.2} s); extractor peak RSS {} KiB{}",
        took.as_secs_f64(),
        messages as f64 / took.as_secs_f64(),
        published.as_secs_f64(),
        rss,
        fsyncs.map_or(String::new(), |n| format!(
            "; {n} fsyncs, {:.0}/s",
            n / took.as_secs_f64()
        )),
    );

    // Catching up: the broker holds a backlog for the session while the extractor is down
    // (SIGKILL); the clock runs from the restart to the last row in CDF.
    drop(child);
    publish(port, messages, messages).await;
    let started = Instant::now();
    child = spawn();
    let took = arrived(2 * messages, started).await;
    println!(
        "push bench ({buffer} buffer, catching up): a backlog of {messages} messages in {:.2} s from the restart: {:.0} messages/s; extractor peak RSS {} KiB",
        took.as_secs_f64(),
        messages as f64 / took.as_secs_f64(),
        util::memory_kib(child.0.id(), "VmHWM"),
    );
    drop((child, broker));
}

/// Publishes `messages` JSON messages (ids from `first`) at QoS 1 to `plant/line-1` and returns once the broker
/// acknowledged them all. `mosquitto_pub -l` is not used: at QoS 1 it outruns the broker,
/// which cuts it off ("disconnected due to out of memory") after 20 000 to 35 000 messages,
/// seen with mosquitto 2.0.11 and no subscriber at all.
async fn publish(port: u16, first: usize, messages: usize) {
    use rumqttc_next::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut options = MqttOptions::new("bench-publisher", "127.0.0.1", port);
    options.set_inflight(500).set_keep_alive(30);
    let (client, mut events) = AsyncClient::new(options, 1000);
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < messages {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the bench's publisher lost the broker: {e}"),
            }
        }
    });
    for i in first..first + messages {
        let payload = format!("{{\"id\": \"m-{i}\", \"v\": {i}, \"site\": \"plant-a\"}}");
        client
            .publish("plant/line-1", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    acks.await.unwrap();
    let _ = client.disconnect().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if Command::new("mosquitto").arg("-h").output().is_err() {
        println!(
            "push bench skipped: mosquitto not found (apt-get install mosquitto mosquitto-clients)"
        );
        return;
    }
    let messages = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    one(dir.path(), "memory", messages).await;
    one(dir.path(), "disk", messages).await;
}
