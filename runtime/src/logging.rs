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

/// Changes the level of the installed subscriber (unless `RUST_LOG` set it).
type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: std::sync::OnceLock<SetLevel> = std::sync::OnceLock::new();

/// Applies `logger:`'s level to the running process (a reload). `false` when it cannot change
/// live: `RUST_LOG` set the level, or logging was not set up by [`init`]. The format and the
/// destination are kept until a restart.
pub fn set_level(config: &LoggerConfig) -> bool {
    let level = match &config.console {
        Some(console) => console.level.as_str(),
        None => "off",
    };
    match SET_LEVEL.get() {
        Some(set) => set(level).is_ok(),
        None => false,
    }
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
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| !d.trim().is_empty());
    let filter = match &from_env {
        Some(directives) => {
            EnvFilter::try_new(directives).map_err(|e| LoggingError::BadFilter(e.to_string()))?
        }
        None => EnvFilter::new(level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    // The filter's handle, boxed: its type names the format.
    fn setter<L, S>(handle: tracing_subscriber::reload::Handle<L, S>) -> SetLevel
    where
        L: From<EnvFilter> + Send + Sync + 'static,
        S: Send + Sync + 'static,
    {
        Box::new(move |level: &str| {
            handle
                .reload(EnvFilter::new(level))
                .map_err(|e| e.to_string())
        })
    }
    let (result, set) = match format {
        // A file name, a CDF answer or a message of the identity provider may hold newlines or
        // escape sequences: each text line is one line, with nothing a terminal acts on.
        LogFormat::Text => {
            let b = builder
                .with_writer(EscapingMakeWriter(writer))
                .with_ansi(false)
                .with_filter_reloading();
            let set = setter(b.reload_handle());
            (b.try_init(), set)
        }
        // JSON strings escape control characters already.
        LogFormat::Json => {
            let b = builder
                .with_writer(writer)
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_filter_reloading();
            let set = setter(b.reload_handle());
            (b.try_init(), set)
        }
    };
    if result.is_ok() && from_env.is_none() {
        let _ = SET_LEVEL.set(set);
    }
    result.map_err(|_| LoggingError::AlreadySet)
}
