//! The `command` extractor's `config:` block.

use std::collections::BTreeMap;

/// `tasks[].config` for `type: command`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandConfig {
    /// The program and its arguments; no shell is involved.
    pub command: Vec<String>,
    /// Extra environment variables for the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The program's working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `ndjson`: each line of standard output is a JSON object, a record for `destination`
    /// (like Telegraf's exec with JSON); `none` (the default): output is only logged.
    #[serde(default)]
    pub records: Records,
    /// With `records: ndjson`: how each record becomes a RAW row, a datapoint, an event or a
    /// node.
    #[serde(default)]
    pub destination: Option<crate::destination::DestinationConfig>,
}

/// `tasks[].config.records` of `type: command`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Records {
    /// Output is logged.
    #[default]
    None,
    /// Each line of standard output is a JSON object for `destination`.
    Ndjson,
}
