//! `extractor-runtime schema`.

use extractor_runtime::Config;

use super::{CliError, Outcome};

pub fn schema() -> Result<Outcome, CliError> {
    let text = serde_json::to_string_pretty(&Config::json_schema()).expect("schema serializes");
    println!("{text}");
    Ok(Outcome::Success)
}
