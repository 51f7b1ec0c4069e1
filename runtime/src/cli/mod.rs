//! The command line, for the built-in extractors' binary and for any custom extractor's: [`main`].
//! Subcommands, one file each, and the mapping of failures to exit codes.

mod check_config;
mod healthcheck;
mod login;
mod replay;
mod run;
mod schema;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, ConfigErrors, LoadOptions};
use crate::shard::Shard;
use clap::{Parser, Subcommand};

/// Exit codes, as documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// A task failed.
    TaskFailed = 1,
    /// Bad config or usage, including `COGNITE_API_KEY` in the environment.
    Config = 2,
    /// The identity provider refused the credentials for good.
    Auth = 3,
    /// `high-availability:`: this replica lost the lease (or, with `--once`, never got it):
    /// another replica leads. Its supervisor restarts it as a standby.
    Standby = 4,
}

/// A failure with the exit code it maps to.
pub(crate) struct CliError {
    pub(crate) code: Code,
    pub(crate) error: anyhow::Error,
}

impl CliError {
    pub(crate) fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code,
            error: error.into(),
        }
    }
}

/// A permanent refusal (bad credentials, an expired sign-in) exits 3; anything else 1.
impl From<crate::auth::AuthError> for CliError {
    fn from(e: crate::auth::AuthError) -> Self {
        let code = if e.is_permanent() {
            Code::Auth
        } else {
            Code::TaskFailed
        };
        CliError::new(code, e)
    }
}

/// `config`'s `idp-authentication`, or a usage error for a dry-run config.
fn idp<'a>(
    path: &std::path::Path,
    config: &'a Config,
) -> Result<&'a crate::config::IdpAuthenticationConfig, CliError> {
    config.cognite.idp_authentication.as_ref().ok_or_else(|| {
        CliError::new(
            Code::Config,
            anyhow::anyhow!(
                "{}: cognite.idp-authentication is not set (dry-run config)",
                path.display()
            ),
        )
    })
}

/// Why the sign-in certificate of `config` is refused now (expired, not valid yet), if it is.
fn certificate_warning(config: &Config) -> Option<String> {
    config
        .cognite
        .idp_authentication
        .as_ref()?
        .certificate
        .as_ref()?
        .validity_warning()
}

/// The network settings of `config` (read when it loaded).
fn network(path: &std::path::Path, config: &Config) -> Result<crate::net::Network, CliError> {
    config
        .cognite
        .connection
        .network()
        .map_err(|e| CliError::new(Code::Config, anyhow::anyhow!("{}: {e}", path.display())))
}

/// A token manager for a one-off command (`check-config --fetch`, `replay`): `network`'s
/// timeout, proxy and CA, no metrics. Needs a runtime.
fn token_manager(
    idp: &crate::config::IdpAuthenticationConfig,
    network: &crate::net::Network,
) -> Result<crate::auth::TokenManager, crate::auth::AuthError> {
    crate::auth::TokenManager::spawn(
        idp,
        crate::auth::TokenManagerOptions {
            request_timeout: network.timeout(),
            network: network.clone(),
            ..Default::default()
        },
        None,
    )
}

/// A single-threaded runtime for a command's few requests.
fn current_thread() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Code::Config, e))
}

/// The runtime could not start: a refused sign-in exits 3, a `--once` that never got the
/// high-availability lease 4, anything else (config, files, ports) 2.
impl From<crate::runtime::RuntimeError> for CliError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        match e {
            crate::runtime::RuntimeError::Auth(a) => CliError::from(a),
            e @ crate::runtime::RuntimeError::Standby { .. } => CliError::new(Code::Standby, e),
            other => CliError::new(Code::Config, other),
        }
    }
}

impl From<ConfigErrors> for CliError {
    fn from(e: ConfigErrors) -> Self {
        CliError::new(Code::Config, e)
    }
}

/// What a successful command reports.
pub(crate) enum Outcome {
    /// Everything succeeded.
    Success,
    /// The command ran, but a task failed.
    TaskFailed,
}

impl Outcome {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::TaskFailed => ExitCode::from(Code::TaskFailed as u8),
        }
    }
}

/// Runs data extractors for Cognite Data Fusion.
///
/// Exit codes: 0 success, 1 a task failed, 2 config or usage error (including COGNITE_API_KEY
/// being set), 3 permanent authentication failure.
#[derive(Debug, Parser)]
#[command(name = "extractor-runtime", version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the tasks of a config.
    ///
    /// Without --once: runs every task on its schedule until SIGTERM or SIGINT, then stops
    /// scheduling, cancels runs, waits `shutdown-grace` and exits 0 (a second signal exits at
    /// once with 1). With --once: startup tasks, then every other task once; exits 0 if all
    /// succeeded, 1 if any failed, 3 if the identity provider refused the credentials.
    Run {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Run each task once and exit (for batch jobs and CronJobs).
        #[arg(long)]
        once: bool,
        /// Send nothing to CDF and fetch no token: write what would be sent as NDJSON.
        #[arg(long)]
        dry_run: bool,
        /// Start from empty state even if the state file exists (it is replaced at the first
        /// save). Without it, a corrupt state file stops the process.
        #[arg(long)]
        reset_state: bool,
        /// Run only this replica's share of the tasks: INDEX/COUNT (0-based). Also from
        /// EXTRACTOR_SHARD, or EXTRACTOR_SHARD_COUNT with a StatefulSet pod name in POD_NAME or
        /// HOSTNAME (`name-<ordinal>`).
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<String>,
    },
    /// Validate a config fully, without touching the network, and summarise what would run.
    ///
    /// A `type: remote` file is checked offline (its `cognite:` section); with --fetch, its
    /// latest revision is fetched from CDF and checked too.
    CheckConfig {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// For a `type: remote` file: fetch the latest revision from CDF and check it.
        #[arg(long)]
        fetch: bool,
        /// Show the tasks this shard (INDEX/COUNT) would run.
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<String>,
    },
    /// Exit 0 if the `/healthz` endpoint answers 200 (a container HEALTHCHECK; no curl needed).
    Healthcheck {
        /// The liveness URL.
        #[arg(long, default_value = "http://127.0.0.1:9000/healthz")]
        url: String,
    },
    /// Print the JSON Schema of the config file (for editors).
    Schema,
    /// Send the items of a dead-letter file again, once the cause is fixed. The file is only
    /// read; what CDF refuses again goes to a new file beside it (`<file>.again-<time>.ndjson`).
    /// Exit 0 when every item was accepted, 1 when some were refused again, could not be sent,
    /// or a line could not be read.
    Replay {
        /// The config file (its `cognite:` section says where to send).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The dead-letter file.
        #[arg(value_name = "DEAD_LETTER_FILE")]
        file: PathBuf,
    },
    /// Fetch one token and print its type, expiry, planned refresh and JWT claims (never the
    /// token itself). Exit 3 when the identity provider refuses the credentials.
    Token {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Sign a person in (`flow: device-code`): prints where to go and the code to enter, waits
    /// for the sign-in, and saves the refresh token (mode 0600; never printed). `run` then
    /// refreshes from it. Exit 3 when the sign-in is declined or the code expires.
    Login {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Forget the sign-in of `login`: removes the cached refresh token.
    Logout {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The whole command line for the types in `registry`: parses the arguments, runs the command
/// (`run`, `check-config`, `schema`, `token`, `login`, `logout`, `healthcheck`), and maps the
/// outcome to the exit code (0, 1 a task failed, 2 config or usage, 3 authentication). SIGTERM
/// and SIGINT stop `run` within `shutdown-grace`. A custom extractor's `main` is one line:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let registry = extractor_runtime::Registry::new(); // register your types
///     extractor_runtime::cli::main(registry)
/// }
/// ```
pub fn main(registry: crate::extractor::Registry) -> ExitCode {
    use clap::Parser as _;
    match run(Cli::parse(), registry) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            let shown = crate::error_chain::render(err.error.as_ref());
            eprintln!("error: {}", crate::text::escape_lines(&shown));
            ExitCode::from(err.code as u8)
        }
    }
}

/// Runs one command.
fn run(cli: Cli, registry: crate::extractor::Registry) -> Result<Outcome, CliError> {
    let options = LoadOptions {
        force_dry_run: false,
        versions: registry.versions().to_vec(),
    };
    match cli.command {
        Command::Run {
            config,
            once,
            dry_run,
            reset_state,
            shard,
        } => run::run(
            registry,
            &config,
            once,
            dry_run,
            reset_state,
            shard.as_deref(),
        ),
        Command::CheckConfig {
            config,
            shard,
            fetch,
        } => check_config::check_config(&config, shard.as_deref(), fetch, &registry, &options),
        Command::Healthcheck { url } => healthcheck::healthcheck(&url),
        Command::Schema => schema::schema(&registry),
        Command::Replay { config, file } => replay::replay(&config, &file, &options),
        Command::Token { config } => token::token(&config, &options),
        Command::Login { config } => login::login(&config, &options),
        Command::Logout { config } => login::logout(&config, &options),
    }
}

/// Loads a config: the one way every command reads one, so that each refuses when
/// `COGNITE_API_KEY` is set.
/// Its warnings are printed on standard error (`run` logs them instead: [`load_quiet`]).
fn load(path: &std::path::Path, options: &LoadOptions) -> Result<Config, CliError> {
    let config = load_quiet(path, options)?;
    for warning in config.warnings() {
        eprintln!("warning: {}", crate::text::escape_lines(warning));
    }
    Ok(config)
}

/// [`load`], leaving the warnings to the caller.
fn load_quiet(path: &std::path::Path, options: &LoadOptions) -> Result<Config, CliError> {
    Ok(Config::load(path, options)?)
}

/// The shard from `--shard` or the environment, if any.
fn shard(flag: Option<&str>) -> Result<Option<Shard>, CliError> {
    let env = |k: &str| std::env::var(k).ok();
    match flag {
        Some(s) => Shard::parse(s).map(Some),
        None => Shard::from_env(&env),
    }
    .map_err(|e| CliError::new(Code::Config, e))
}

/// Keeps only the tasks `shard` runs; returns how many there were.
fn apply_shard(config: &mut Config, shard: Option<Shard>) -> usize {
    let all = config.tasks.len();
    if let Some(shard) = shard {
        config.tasks.retain(|t| shard.owns(&t.name));
    }
    all
}

#[cfg(test)]
mod tests {
    fn chain(error: &anyhow::Error) -> String {
        crate::error_chain::render(error.as_ref())
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the dead-letter file: {0}")]
    struct SaysItsCause(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot serve metrics on 127.0.0.1:9")]
    struct LeavesItsCause(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_each_cause_once() {
        let denied = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_eq!(
            chain(&anyhow::Error::new(SaysItsCause(denied()))),
            "cannot open the dead-letter file: denied"
        );
        assert_eq!(
            chain(&anyhow::Error::new(LeavesItsCause(denied()))),
            "cannot serve metrics on 127.0.0.1:9: denied"
        );
        let wrapped = anyhow::Error::new(LeavesItsCause(denied())).context("the runtime stopped");
        assert_eq!(
            chain(&wrapped),
            "the runtime stopped: cannot serve metrics on 127.0.0.1:9: denied"
        );
    }
}
