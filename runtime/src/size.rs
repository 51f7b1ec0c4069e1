//! Sizes in config blocks (`max-response-size: 64MiB`, `logger.file.max-size: 10MiB`): a whole
//! number of bytes, or a number with `B`, `KiB`, `MiB`, `GiB` (or `KB`, `MB`, `GB`). A config
//! type reads one with `#[serde(deserialize_with = "extractor_runtime::size::deserialize_size")]`
//! and `#[schemars(with = "extractor_runtime::size::SizeSchema")]`.

use serde::{Deserialize, Deserializer};

/// Reads a size in bytes.
pub fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

/// [`deserialize_size`] for an optional key (`None` when it is left out).
pub(crate) fn deserialize_optional_size<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Size(#[serde(deserialize_with = "deserialize_size")] u64);
    Ok(Option::<Size>::deserialize(d)?.map(|s| s.0))
}

/// How a size is written, for a config type's JSON Schema.
#[derive(schemars::JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)] // the schema's shape only
pub enum SizeSchema {
    /// Bytes.
    Bytes(u64),
    /// Like `64MiB`, `512KiB`, `1GB`.
    Text(String),
}

/// `64MiB` as bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit_size: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad(text)),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_size))
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(text))
}

fn bad(text: &str) -> String {
    format!(
        "invalid size `{text}`: expected a whole number of bytes, or one followed by `KiB`, `MiB`, `GiB` (or `KB`, `MB`, `GB`), like `64MiB`"
    )
}

/// Bytes for people: `64 MiB`, `1.5 KiB`, `12 B`.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if value.fract() == 0.0 {
                format!("{value:.0} {name}")
            } else {
                format!("{value:.1} {name}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_show() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10 KB"), Ok(10_000));
        assert_eq!(parse_size("512"), Ok(512));
        for bad in ["", "0", "1TB", "MiB", "-1", "1.5MiB", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(show_size(64 << 20), "64 MiB");
        assert_eq!(show_size(1536), "1.5 KiB");
        assert_eq!(show_size(12), "12 B");
    }
}
