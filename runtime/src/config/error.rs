//! [`ConfigError`] and [`ConfigErrors`]: every problem in a config, each saying where it is.

use std::fmt;
use std::path::PathBuf;

/// A position in the config file: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What kind of problem a [`ConfigError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// `COGNITE_API_KEY` is set in the environment.
    ApiKeyInEnvironment,
    /// The file could not be read.
    Io,
    /// The text is not valid YAML.
    Syntax,
    /// `${VAR}` substitution failed.
    Environment,
    /// A value has the wrong type, or a key is unknown or missing.
    Schema,
    /// The values are well-formed but do not make sense together.
    Invalid,
}

/// One problem in a config, with where it is.
///
/// Displays as `file:line:column: key.path: message`, leaving out what is unknown. The message
/// never contains a value that came from the environment or from a secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    file: Option<PathBuf>,
    mark: Option<Mark>,
    key_path: String,
    message: String,
    /// The key whose absence this is, for an error that says a required key is missing.
    pub(crate) missing_key: Option<String>,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            file: None,
            mark: None,
            key_path: String::new(),
            message: message.into(),
            missing_key: None,
        }
    }

    pub(crate) fn at(mut self, mark: Option<Mark>, key_path: impl Into<String>) -> Self {
        self.mark = mark;
        self.key_path = key_path.into();
        self
    }

    pub(crate) fn in_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The key path (`tasks[1].schedule.expression`), empty for the whole document.
    pub fn key_path(&self) -> &str {
        &self.key_path
    }

    /// The line and column, when known.
    pub fn mark(&self) -> Option<Mark> {
        self.mark
    }

    /// The message, without location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            wrote = true;
        }
        if let Some(mark) = self.mark {
            if wrote {
                f.write_str(":")?;
            }
            write!(f, "{mark}")?;
            wrote = true;
        }
        if wrote {
            f.write_str(": ")?;
        }
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config. Loading reports all it can find at once, not just the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Whether the environment holds `COGNITE_API_KEY`.
    pub fn is_api_key_in_environment(&self) -> bool {
        self.0
            .iter()
            .any(|e| e.kind == ConfigErrorKind::ApiKeyInEnvironment)
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        if n > 1 {
            writeln!(f, "{n} problems in the config:")?;
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
