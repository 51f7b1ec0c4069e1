//! Test helpers for the built-ins: the runtime's own ([`extractor_runtime::testing`]), and
//! config builders.

pub use extractor_runtime::testing::{Capture, context};
use serde_json::Value;

/// `base` with the keys of `extra` set over it (a config with a few settings changed).
pub fn merged(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("extra is an object") {
        base[k] = v.clone();
    }
    base
}

/// `base` with `extra` over it, read as an extractor's config type by the config's own
/// deserializer (JSON is YAML), as a task's `config:` block is.
pub fn config_of<T: serde::de::DeserializeOwned>(base: Value, extra: Value) -> T {
    let json = serde_json::to_string(&merged(base, extra)).unwrap();
    extractor_runtime::testing::config(&json).unwrap_or_else(|e| panic!("{e}"))
}
