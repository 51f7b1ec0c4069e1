//! The `postgres` extractor's `config:` block.

use extractor_runtime::Duration;

use extractor_runtime::Secret;
use serde::Deserialize;

use crate::destination::DestinationConfig;

/// `tasks[].config` for `type: postgres`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresConfig {
    /// `host=... port=... user=... password=... dbname=...` or `postgresql://user:pw@host/db`;
    /// never logged (it may hold a password). `sslmode=require` turns TLS on (see `tls`);
    /// otherwise the connection is plain.
    pub connection_string: Secret,
    /// The query. With `incremental-field`, `$1` is the high watermark and the query orders by
    /// that field: `SELECT id, v FROM t WHERE id > $1 ORDER BY id`.
    pub query: String,
    /// The result column whose last value is the watermark.
    #[serde(default)]
    pub incremental_field: Option<String>,
    /// `$1` of the first run (when the state store has no watermark yet).
    #[serde(default)]
    pub initial_value: Option<serde_json::Value>,
    /// Rows fetched at a time through a cursor; each batch is flushed before its watermark is
    /// stored.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// TLS: used when the connection string says `sslmode=require`; the server's certificate is
    /// always verified, against the system's roots or `ca-file`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long connecting may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Where the rows go.
    pub destination: DestinationConfig,
}

/// `tls:`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// A PEM file of the CA certificates to trust instead of the system's (a private CA, or a
    /// cloud provider's root).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_batch_size() -> u32 {
    10_000
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
