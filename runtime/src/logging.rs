//! Logging with `tracing`: `logger.console.level` and `format: text|json`; `RUST_LOG` overrides
//! the level. Logs go to standard error, so standard output stays free for data (dry-run NDJSON).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{LogFormat, LoggerConfig};
use crate::text::EscapingWriter;

/// Wraps each writer in an [`EscapingWriter`].
struct EscapingMakeWriter(BoxMakeWriter);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapingMakeWriter {
    type Writer = EscapingWriter<Box<dyn std::io::Write + 'a>>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapingWriter(self.0.make_writer_for(meta))
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG is not a valid filter: {0}")]
    BadFilter(String),
    /// A global subscriber is already installed.
    #[error("logging was already set up")]
    AlreadySet,
}

/// Installs the global subscriber described by `logger:`. Call once, early.
///
/// With a `logger:` section but no `console:` nothing is logged unless `RUST_LOG` is set;
/// without a `logger:` section the default is `info` (see [`LoggerConfig`]).
pub fn init(config: &LoggerConfig) -> Result<(), LoggingError> {
    init_with_writer(config, BoxMakeWriter::new(std::io::stderr))
}

/// [`init`] with another writer (tests capture the output with it).
pub fn init_with_writer(config: &LoggerConfig, writer: BoxMakeWriter) -> Result<(), LoggingError> {
    let (level, format) = match &config.console {
        Some(console) => (console.level.as_str(), console.format),
        None => ("off", LogFormat::Text),
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| LoggingError::BadFilter(e.to_string()))?
        }
        _ => EnvFilter::new(level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match format {
        // A file name, a CDF answer or a message of the identity provider may hold newlines or
        // escape sequences: each text line is one line, with nothing a terminal acts on.
        LogFormat::Text => builder
            .with_writer(EscapingMakeWriter(writer))
            .with_ansi(false)
            .try_init(),
        // JSON strings escape control characters already.
        LogFormat::Json => builder
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)
}
