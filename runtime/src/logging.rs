//! Logging with `tracing`: `logger.console.level` and `format: text|json`, and `logger.file`
//! (rotated, with its own level and format); `RUST_LOG` overrides the levels. Logs go to standard error, so standard output stays free for data (dry-run NDJSON).

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

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
    /// `logger.file.path` cannot be written (its folder cannot be made, or the file opened).
    #[error("logger.file.path: cannot write the log file {}: {source}", .path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Changes the level of one destination (console, then file) of the installed subscriber.
type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static SET_LEVELS: std::sync::OnceLock<(SetLevel, Option<SetLevel>)> = std::sync::OnceLock::new();

/// Applies `logger:`'s levels (console and file) to the running process (a reload). `false`
/// when they cannot change live: `RUST_LOG` set them, or logging was not set up by [`init`].
/// The formats and destinations are kept until a restart.
pub fn set_level(config: &LoggerConfig) -> bool {
    let Some((console, file)) = SET_LEVELS.get() else {
        return false;
    };
    let level = config.console.as_ref().map_or("off", |c| c.level.as_str());
    let mut ok = console(level).is_ok();
    if let Some(file) = file {
        ok &= file(config.file.as_ref().map_or("off", |f| f.level.as_str())).is_ok();
    }
    ok
}

/// Installs the global subscriber described by `logger:`. Call once, early.
///
/// With a `logger:` section but no `console:` nothing is logged to the console unless
/// `RUST_LOG` is set; without a `logger:` section the default is `info` (see
/// [`LoggerConfig`]). `logger.file` adds a rotated file with its own level; a file that cannot
/// be opened (its folder cannot be made) is an error.
pub fn init(config: &LoggerConfig) -> Result<(), LoggingError> {
    init_with_writer(config, BoxMakeWriter::new(std::io::stderr))
}

type Layers = Vec<Box<dyn Layer<Registry> + Send + Sync>>;

/// Log messages written, by level: `extractor_log_messages_total{level}` (`logger.metrics`),
/// registered with the process metrics.
pub(crate) static MESSAGES: std::sync::LazyLock<prometheus::IntCounterVec> =
    std::sync::LazyLock::new(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "extractor_log_messages_total",
                "Log messages written, by level (logger.metrics).",
            ),
            &["level"],
        )
        .expect("a valid metric")
    });

/// Counts each event in [`MESSAGES`].
struct CountMessages;

impl<S: tracing::Subscriber> Layer<S> for CountMessages {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        MESSAGES.with_label_values(&[level]).inc();
    }
}

/// One destination: its writer in `format`, under its own level (or `RUST_LOG`).
fn destination(
    writer: BoxMakeWriter,
    format: LogFormat,
    level: &str,
    from_env: Option<&str>,
    layers: &mut Layers,
) -> Result<SetLevel, LoggingError> {
    let filter = match from_env {
        Some(directives) => {
            EnvFilter::try_new(directives).map_err(|e| LoggingError::BadFilter(e.to_string()))?
        }
        None => EnvFilter::new(level),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let layer = match format {
        // A file name, a CDF answer or a message of the identity provider may hold newlines or
        // escape sequences: each text line is one line, with nothing a terminal acts on.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_writer(EscapingMakeWriter(writer))
            .with_ansi(false)
            .with_filter(filter)
            .boxed(),
        // JSON strings escape control characters already.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter)
            .boxed(),
    };
    layers.push(layer);
    Ok(Box::new(move |level: &str| {
        handle
            .reload(EnvFilter::new(level))
            .map_err(|e| e.to_string())
    }))
}

/// [`init`] with another console writer (tests capture the output with it).
pub fn init_with_writer(config: &LoggerConfig, writer: BoxMakeWriter) -> Result<(), LoggingError> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| !d.trim().is_empty());
    let (level, format) = match &config.console {
        Some(console) => (console.level.as_str(), console.format),
        None => ("off", LogFormat::Text),
    };
    let mut layers: Layers = Vec::new();
    let console = destination(writer, format, level, from_env.as_deref(), &mut layers)?;
    let file = match &config.file {
        Some(file) => {
            let path = std::path::Path::new(&file.path);
            let rotating = crate::log_file::RotatingFile::open(
                path,
                file.rotation,
                file.max_size.unwrap_or(u64::MAX),
                file.retention,
                jiff::Timestamp::now,
            )
            .map_err(|source| LoggingError::File {
                path: path.to_owned(),
                source,
            })?;
            let writer = BoxMakeWriter::new(std::sync::Mutex::new(rotating));
            Some(destination(
                writer,
                file.format,
                file.level.as_str(),
                from_env.as_deref(),
                &mut layers,
            )?)
        }
        None => None,
    };
    if config.metrics {
        // Counted at the most verbose level any destination writes.
        let levels = [
            config.console.as_ref().map(|c| c.level),
            config.file.as_ref().map(|f| f.level),
        ];
        let most = levels
            .into_iter()
            .flatten()
            .map(|l| l.as_str().parse::<tracing_subscriber::filter::LevelFilter>().unwrap_or(tracing_subscriber::filter::LevelFilter::INFO))
            .max()
            .unwrap_or(tracing_subscriber::filter::LevelFilter::OFF);
        layers.push(CountMessages.with_filter(most).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)?;
    if from_env.is_none() {
        let _ = SET_LEVELS.set((console, file));
    }
    Ok(())
}
