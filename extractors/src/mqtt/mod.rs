//! The `mqtt` extractor (`schedule: {type: continuous}`): subscribes to topics on a broker with
//! a persistent session (`clean session: false`, so the broker keeps messages while the process
//! is down) and manual acknowledgements: a QoS 1 message is acknowledged (PUBACK) only once
//! every record it holds is accepted by the upload queue (on disk with a disk buffer), and
//! acknowledgements go in the order messages came. Messages are queued concurrently (up to
//! `max-in-flight`), so a disk buffer syncs many with one fsync.
//!
//! A message's payload is a JSON object or an array of objects; each object gets the field
//! `topic` and is mapped by the shared `destination:` block. A payload that is not that, or a
//! record the destination cannot map, is logged with its topic and counted as rejected, then
//! acknowledged: it would never map better. A queue that refuses (a full buffer with
//! `drop-newest`) ends the run with a transient error: the broker sends what was not
//! acknowledged again after the reconnect.

pub mod config;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use extractor_runtime::upload::Upload;
use extractor_runtime::{Extractor, Rejection, RunContext, TaskError};
use rumqttc_next::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS};
use serde_json::Value;

pub use config::MqttConfig;

use crate::destination::{Destination, SendError};

/// The `mqtt` extractor.
#[derive(Debug)]
pub struct Mqtt {
    config: MqttConfig,
    destination: Arc<Destination>,
    host: String,
    port: u16,
}

impl Mqtt {
    /// Checks the config: the URL, the topics, the QoS and the destination.
    pub fn new(config: MqttConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        let address = match config.url.split_once("://") {
            Some((scheme @ ("mqtt" | "mqtts"), rest)) => {
                let rest = rest.trim_end_matches('/');
                let default_port = if scheme == "mqtts" { 8883 } else { 1883 };
                let (host, port) = match rest.rsplit_once(':') {
                    Some((h, p)) => (h.to_owned(), p.parse::<u16>().ok()),
                    None => (rest.to_owned(), Some(default_port)),
                };
                match port {
                    Some(p) if !host.is_empty() => Some((host, p)),
                    _ => {
                        problems.push(
                            "url",
                            format!("`{}` is not `mqtt[s]://host:port`", config.url),
                        );
                        None
                    }
                }
            }
            _ => {
                problems.push(
                    "url",
                    format!("`{}` is not `mqtt[s]://host:port`", config.url),
                );
                None
            }
        };
        match &config.tls {
            Some(_) if !config.url.starts_with("mqtts://") => {
                problems.push("tls", "applies to `mqtts://` URLs only");
            }
            Some(tls) => {
                for (key, message) in tls.problems() {
                    problems.push(format!("tls.{key}"), message);
                }
            }
            None => {}
        }
        if config.client_id.trim().is_empty() {
            problems.push(
                "client-id",
                "must not be empty (the broker keeps this client's session)",
            );
        }
        if config.topics.is_empty() {
            problems.push("topics", "must list at least one topic filter");
        }
        for (i, t) in config.topics.iter().enumerate() {
            if t.is_empty() || t.contains('#') && !t.ends_with('#') {
                problems.push(
                    format!("topics[{i}]"),
                    format!("`{t}` is not a topic filter (`#` only at the end)"),
                );
            }
        }
        if config.qos > 1 {
            problems.push("qos", "must be 0 or 1");
        }
        if config.password.is_some() && config.username.is_none() {
            problems.push("password", "a `password` needs a `username`");
        }
        if config.max_in_flight == 0 {
            problems.push("max-in-flight", "must be at least 1");
        }
        let destination = Destination::new(&config.destination)
            .map_err(|r| problems.extend_under("destination", r))
            .ok();
        match (address, destination) {
            (Some((host, port)), Some(destination)) if problems.is_empty() => Ok(Mqtt {
                config,
                destination: Arc::new(destination),
                host,
                port,
            }),
            _ => Err(problems),
        }
    }

    fn qos(&self) -> QoS {
        if self.config.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }
}

/// Queues every record of one message; `Err` only when the queue refused (the message is then
/// not acknowledged).
async fn queue_message(
    destination: &Destination,
    ctx: &RunContext,
    upload: &Upload,
    publish: &Publish,
) -> Result<(), SendError> {
    let records = match serde_json::from_slice::<Value>(&publish.payload) {
        Ok(Value::Object(o)) => vec![Value::Object(o)],
        Ok(Value::Array(items)) if items.iter().all(Value::is_object) => items,
        Ok(_) => {
            ctx.records_rejected(1);
            tracing::warn!(task = %ctx.task(), topic = %publish.topic, "an MQTT message that is not a JSON object or an array of objects; skipped");
            return Ok(());
        }
        Err(e) => {
            ctx.records_rejected(1);
            tracing::warn!(task = %ctx.task(), topic = %publish.topic, "an MQTT message that is not JSON ({e}); skipped");
            return Ok(());
        }
    };
    for mut record in records {
        if let Value::Object(o) = &mut record {
            o.insert("topic".into(), Value::String(publish.topic.clone()));
        }
        match destination.send(ctx, upload, record).await {
            Ok(()) => {}
            Err(SendError::Record(e)) => {
                tracing::warn!(task = %ctx.task(), topic = %publish.topic, "an MQTT record the destination cannot map: {e}; skipped");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Drives the connection: (re)connects with backoff, subscribes after each connect (harmless
/// in a persistent session), and hands each message to `tx`, waiting while the run is busy.
///
/// `EventLoop::poll` is never cut short: a poll dropped while it writes a packet (its sink is
/// waiting for room) loses that packet, and a lost PUBACK would hold one of the broker's
/// in-flight slots until the session ends; enough of them stall the subscription.
/// Nothing on the run's side waits on this task to take an acknowledgement (see
/// [`send_acks`]), so waiting here for the run never deadlocks; while it waits, the broker is
/// held back by TCP, and QoS 1 messages also by its in-flight cap.
async fn poll(
    mut events: rumqttc_next::EventLoop,
    client: AsyncClient,
    topics: Vec<String>,
    qos: QoS,
    tx: tokio::sync::mpsc::Sender<Publish>,
    task: String,
    url: String,
) {
    let mut failures = 0u32;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                failures = 0;
                tracing::info!(task = %task, broker = %url, "connected to the MQTT broker");
                for t in &topics {
                    let _ = client.try_subscribe(t.clone(), qos);
                }
            }
            Ok(Event::Incoming(Incoming::Publish(mut publish))) => {
                // The payload is a slice of the connection's read buffer, which it keeps alive
                // whole: a few messages held for their acknowledgement then held megabytes
                // (memory grew with the broker's backlog). A copy lets the buffer go.
                publish.payload = publish.payload.to_vec().into();
                if tx.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(250 * 2u64.pow(failures.min(7)))
                    .min(Duration::from_secs(30));
                tracing::warn!(task = %task, broker = %url, "the MQTT connection failed: {e}; again in {:.1}s", wait.as_secs_f32());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A message being queued, and its queuing.
type Queuing = VecDeque<(Publish, tokio::task::JoinHandle<Result<(), SendError>>)>;

/// The end of the oldest message's queuing; pending while nothing is being queued. The
/// handle itself is awaited: a notification sent by the task just before it ends can be seen
/// while the handle does not say finished yet, and waiting for the next one then waited for
/// ever once every slot was taken (an MQTT subscription stalled after about 150 messages, now
/// and then).
async fn front(queuing: &mut Queuing) -> Result<Result<(), SendError>, tokio::task::JoinError> {
    match queuing.front_mut() {
        Some((_, handle)) => handle.await,
        None => std::future::pending().await,
    }
}

/// Hands the acknowledgements to the connection, in order, as far as its request channel takes
/// them without waiting; the rest stay in `acks` for the next call. The run never waits on the
/// connection: that task may itself be waiting for the run to take a message.
fn send_acks(client: &AsyncClient, acks: &mut VecDeque<Publish>) {
    while let Some(publish) = acks.front() {
        if client.try_ack(publish).is_err() {
            return;
        }
        acks.pop_front();
    }
}

impl Extractor for Mqtt {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let mut options = MqttOptions::new(&self.config.client_id, &self.host, self.port);
        options
            .set_keep_alive(30)
            .set_manual_acks(true)
            .set_clean_session(false)
            .set_inflight(self.config.max_in_flight);
        if let Some(user) = &self.config.username {
            let password = self
                .config
                .password
                .as_ref()
                .map_or("", |p| p.expose_secret());
            options.set_credentials(user, password);
        }
        if self.config.url.starts_with("mqtts://") {
            // Read at each run: a renewed certificate is taken by the next one.
            let tls = self
                .config
                .tls
                .clone()
                .unwrap_or_default()
                .client_config()
                .map_err(|e| TaskError::permanent(format!("tls: {e}")))?;
            options.set_transport(rumqttc_next::Transport::tls_with_config(
                rumqttc_next::TlsConfiguration::Rustls(Arc::new(tls)),
            ));
        }
        let (client, events) = AsyncClient::new(options, 1024);
        // One task drives the connection and hands messages over: polling it is never cut
        // short by the other branches below, and acknowledgements go out while we wait.
        let (tx, mut messages) = tokio::sync::mpsc::channel(self.config.max_in_flight as usize);
        let poller = tokio::spawn(poll(
            events,
            client.clone(),
            self.config.topics.clone(),
            self.qos(),
            tx,
            ctx.task().to_owned(),
            self.config.url.clone(),
        ));
        let upload = self.destination.upload(&ctx);
        // Messages being queued, in the order they came: acknowledged from the front.
        let mut queuing: Queuing = VecDeque::new();
        // Queued messages whose acknowledgement the connection has not taken yet, in order.
        let mut acks: VecDeque<Publish> = VecDeque::new();
        let result = loop {
            send_acks(&client, &mut acks);
            tokio::select! {
                () = ctx.cancellation_token().cancelled() => break Ok(()),
                // The oldest message's queuing ended: acknowledge it (the ones after it that
                // ended too follow at once, in order).
                queued = front(&mut queuing) => {
                    let (publish, _) = queuing.pop_front().expect("the front ended");
                    match queued {
                        Ok(Ok(())) if publish.qos == QoS::AtMostOnce => {}
                        Ok(Ok(())) => acks.push_back(publish),
                        // The queue refused: unacknowledged, the broker sends it again.
                        Ok(Err(e)) => break Err(TaskError::from(e)),
                        Err(e) => {
                            break Err(TaskError::transient(format!(
                                "queuing an MQTT message failed: {e}"
                            )));
                        }
                    }
                }
                // The connection's request channel was full: it drains as the connection polls.
                () = tokio::time::sleep(Duration::from_millis(5)), if !acks.is_empty() => {}
                message = messages.recv(), if queuing.len() < self.config.max_in_flight as usize => {
                    let Some(publish) = message else {
                        break Err(TaskError::transient("the MQTT connection ended"));
                    };
                    let (destination, ctx, upload) =
                        (self.destination.clone(), ctx.clone(), upload.clone());
                    // What its acknowledgement needs (the packet id and QoS), not its payload.
                    let mut ack = publish.clone();
                    ack.payload = Default::default();
                    let handle = tokio::spawn(async move {
                        queue_message(&destination, &ctx, &upload, &publish).await
                    });
                    queuing.push_back((ack, handle));
                }
            }
        };
        poller.abort();
        let _ = client.disconnect().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, topics: &[&str], qos: u8) -> MqttConfig {
        serde_json::from_value(serde_json::json!({
            "url": url, "client-id": "c", "topics": topics, "qos": qos,
            "destination": {"type": "raw", "database": "d", "table": "t", "key": "{id}"},
        }))
        .unwrap()
    }

    #[test]
    fn the_broker_address_and_topics_are_checked() {
        let m = Mqtt::new(config("mqtt://broker.plant:1884", &["a/+/b", "c/#"], 1)).unwrap();
        assert_eq!((m.host.as_str(), m.port), ("broker.plant", 1884));
        assert_eq!(
            Mqtt::new(config("mqtt://broker", &["a"], 0)).unwrap().port,
            1883
        );
        let problems = |c| format!("{:?}", Mqtt::new(c).unwrap_err().problems());
        assert_eq!(
            Mqtt::new(config("mqtts://b", &["a"], 1)).unwrap().port,
            8883
        );
        assert!(problems(config("http://b:1", &["a"], 1)).contains("not `mqtt[s]://host:port`"));
        assert!(problems(config("mqtt://b:1", &["a/#/b"], 1)).contains("topics[0]"));
        assert!(problems(config("mqtt://b:1", &[], 1)).contains("at least one topic"));
        assert!(problems(config("mqtt://b:1", &["a"], 2)).contains("0 or 1"));
    }
}
