//! The `webhook` extractor's `config:` block.

use extractor_runtime::Secret;

use crate::destination::DestinationConfig;
use crate::tls::ServerTls;

/// `tasks[].config` for `type: webhook`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// The address to listen on, `host:port` (`0.0.0.0:8080` for every interface).
    pub listen: String,
    /// The path records are POSTed to.
    #[serde(default = "default_path")]
    pub path: String,
    /// When set, a request must carry `Authorization: Bearer <token>` (compared in constant
    /// time); others get 401.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The largest request body, like `10MiB`; a larger one gets 413.
    #[serde(
        default = "default_max_body_size",
        deserialize_with = "extractor_runtime::size::deserialize_size"
    )]
    #[schemars(with = "extractor_runtime::size::SizeSchema")]
    pub max_body_size: u64,
    /// HTTPS: the certificate and key to serve with (read when a run starts).
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// How each record becomes a RAW row, a datapoint, an event or a node.
    pub destination: DestinationConfig,
}

fn default_path() -> String {
    "/".to_owned()
}

fn default_max_body_size() -> u64 {
    10 * 1024 * 1024
}
