//! `extractor-runtime schema`.

use super::{CliError, Outcome};

/// The config's JSON Schema, with every built-in type's `config:` block.
pub fn schema() -> Result<Outcome, CliError> {
    let text = serde_json::to_string_pretty(&extractors::builtins().json_schema())
        .expect("schema serializes");
    println!("{text}");
    Ok(Outcome::Success)
}
