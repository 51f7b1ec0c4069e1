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
}
