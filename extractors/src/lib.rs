//! The built-in extractors of the `extractor-runtime` binary, each an ordinary implementation of
//! [`extractor_runtime::Extractor`].

pub mod command;
pub mod csv;
pub mod destination;
pub mod files;
mod folder;
pub mod http;
pub mod mqtt;
pub mod postgres;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod webhook;

use extractor_runtime::Registry;

/// A registry with every built-in extractor type.
pub fn builtins() -> Registry {
    let mut registry = Registry::new();
    registry.register("command", command::Command::new);
    registry.register("csv", csv::Csv::new);
    registry.register("files", files::Files::new);
    registry.register("http", http::Http::new);
    registry.register("mqtt", mqtt::Mqtt::new);
    registry.register("postgres", postgres::Postgres::new);
    registry.register("webhook", webhook::Webhook::new);
    registry
}
