//! `extractor-runtime schema`.

use std::io::Write as _;

use super::{CliError, Code, Outcome};

/// The config's JSON Schema, with every registered type's `config:` block. A reader that
/// closes the pipe early (`| head`) is not an error.
pub(crate) fn schema(registry: &crate::extractor::Registry) -> Result<Outcome, CliError> {
    let text = serde_json::to_string_pretty(&registry.json_schema()).expect("schema serializes");
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(Code::Config, e)),
        _ => Ok(Outcome::Success),
    }
}
