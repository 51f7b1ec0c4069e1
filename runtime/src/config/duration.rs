//! Durations in the config: `250ms`, `30s`, `5m`, `1h`, `1d`, or a bare integer of seconds.

use serde::de::{self, Deserializer, Visitor};
use std::borrow::Cow;

/// Parses `250ms`, `30s`, `5m`, `1h`, `1d` or `30` (seconds).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use extractor_runtime::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
/// assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
/// assert!(parse_duration("5 minutes").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration `{text}`: expected a whole number followed by `ms`, `s`, `m`, `h` or `d` \
             (like `30s`), or a whole number of seconds"
        )
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("duration `{text}` is too large"))
}

/// A duration in the config: `250ms`, `30s`, `5m`, `1h`, `1d`, or a whole number of seconds.
///
/// Use it for every duration field of an extractor's config type: it deserializes those forms
/// (with the key path and line:column of a bad one), has its JSON Schema, and derefs to a
/// [`std::time::Duration`].
///
/// # Examples
///
/// ```
/// use extractor_runtime::Duration;
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct PollConfig {
///     every: Duration,
/// }
///
/// let config: PollConfig = serde_json::from_str(r#"{"every": "5m"}"#).unwrap();
/// assert_eq!(config.every.as_secs(), 300);
/// assert_eq!(*config.every, std::time::Duration::from_secs(300));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    /// The [`std::time::Duration`].
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl std::ops::Deref for Duration {
    type Target = std::time::Duration;

    fn deref(&self) -> &std::time::Duration {
        &self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor).map(Duration)
    }
}

/// Written as the config writes it: `30s`, or `250ms` below whole seconds (so a JSON Schema
/// default reads like the config).
impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.collect_str(&format_args!("{}s", self.0.as_secs()))
        } else {
            s.collect_str(&format_args!("{}ms", self.0.as_millis()))
        }
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = std::time::Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration like `30s`, `5m`, `250ms`, or a whole number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<std::time::Duration, E> {
        Ok(std::time::Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<std::time::Duration, E> {
        u64::try_from(v)
            .map(std::time::Duration::from_secs)
            .map_err(|_| E::custom(format!("a duration cannot be negative, found `{v}`")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<std::time::Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: `250ms`, `30s`, `5m`, `1h`, `1d`, or a whole number of seconds.",
            "oneOf": [
                {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "5x",
            "-5s",
            "1.5s",
            "5 s",
            "ms5",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }
}
