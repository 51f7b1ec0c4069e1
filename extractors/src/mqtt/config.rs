//! The `mqtt` extractor's `config:` block.

use extractor_runtime::Secret;

use crate::destination::DestinationConfig;
use crate::tls::ClientTls;

/// `tasks[].config` for `type: mqtt`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MqttConfig {
    /// The broker, `mqtt://host:port` (1883 when the port is left out) or, over TLS,
    /// `mqtts://host:port` (8883).
    pub url: String,
    /// With `mqtts://`: the CA to trust instead of the system's roots, and a client
    /// certificate for brokers that ask for one.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// The client id: the broker keeps this client's session (its subscriptions and the
    /// messages not acknowledged) while the process is down.
    pub client_id: String,
    /// Topic filters, with `+` and `#` wildcards.
    pub topics: Vec<String>,
    /// 1 (at least once, the default) or 0 (at most once).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The broker user.
    #[serde(default)]
    pub username: Option<String>,
    /// The broker user's password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Messages received and not yet acknowledged at once (the broker's limit applies too;
    /// mosquitto's default is 20).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u16,
    /// How each record (a message's JSON object, with `topic` added) becomes a RAW row, a
    /// datapoint, an event or a node.
    pub destination: DestinationConfig,
}

fn default_qos() -> u8 {
    1
}

fn default_in_flight() -> u16 {
    20
}
