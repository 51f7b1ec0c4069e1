//! `extractor-runtime check-config`: full validation, no network, and a one-screen summary.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::{AssertionAlgorithm, AuthMethod, Config, Flow, Schedule, StateStoreConfig};

use super::{CliError, Outcome};

pub(crate) fn check_config(
    path: &Path,
    shard: Option<&str>,
    fetch: bool,
    registry: &crate::extractor::Registry,
    options: &crate::config::LoadOptions,
) -> Result<Outcome, CliError> {
    let mut config = super::load(path, options)?;
    if let Some(remote) = config.remote().cloned() {
        let name = crate::source::remote_name(&remote);
        if !fetch {
            print!("{}", summary(path, &config, options.versions()));
            println!(
                "remote:   the config is {name}'s latest revision (checked here only with --fetch); last good copy kept in {}",
                remote.buffer_file.display()
            );
            return Ok(Outcome::Success);
        }
        let document = fetch_remote(&config, &remote)?;
        println!("fetched {name} {}", document.revision);
        config = crate::source::config_of(&document, path, Some(&remote), &Default::default())?;
    }
    // The extractors are built as `run` builds them (every task, whatever the shard), then
    // dropped: only their checks matter here.
    let mut config = crate::runtime::Runtime::build(config, registry)?.into_config();
    let shard = super::shard(shard)?;
    let all = super::apply_shard(&mut config, shard);
    print!("{}", summary(path, &config, options.versions()));
    if let Some(warning) = super::certificate_warning(&config) {
        eprintln!("warning: {warning}");
    }
    if let Some(shard) = shard {
        println!(
            "shard {shard} runs {} of the {all} tasks",
            config.tasks.len()
        );
    }
    Ok(Outcome::Success)
}

/// The latest revision of a remote config (`check-config --fetch`), with the credentials of its
/// local `cognite:` section.
fn fetch_remote(
    config: &Config,
    remote: &crate::config::Remote,
) -> Result<crate::source::Document, CliError> {
    let idp = super::idp(Path::new(&remote_file_name(remote)), config)?;
    let network = super::network(Path::new(&remote_file_name(remote)), config)?;
    super::current_thread()?.block_on(async {
        let tokens = super::token_manager(idp, &network)?;
        let cdf = crate::cdf::CdfClient::new(
            &config.cognite,
            Some(tokens.clone()),
            None,
            &prometheus::Registry::new(),
        )
        .map_err(|e| CliError::new(super::Code::Config, e))?;
        let fetched = crate::source::fetch_latest(&cdf, remote).await;
        tokens.shutdown();
        fetched.map_err(|e| match e {
            crate::source::SourceError::Unreachable { .. } => {
                CliError::new(super::Code::TaskFailed, e)
            }
            e => CliError::new(super::Code::Config, e),
        })
    })
}

fn remote_file_name(remote: &crate::config::Remote) -> String {
    remote
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default()
}

fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The one-screen summary. Secrets appear only as `***`.
pub(crate) fn summary(path: &Path, config: &Config, versions: &[u32]) -> String {
    let mut out = String::new();
    let c = &config.cognite;
    let _ = writeln!(out, "config {} is valid", path.display());
    if config.version.is_none() && config.remote().is_none() {
        let _ = match versions {
            [1] => writeln!(
                out,
                "version:  not given; read as 1 (the only version, as python-extractor-utils does)"
            ),
            many => writeln!(
                out,
                "version:  not given (this program reads versions {}; its extractors decide)",
                many.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    let _ = writeln!(out, "cdf:      project {} at {}", c.project, c.host);
    if c.dry_run {
        let _ = writeln!(
            out,
            "          dry-run: nothing is sent to CDF, no token is fetched"
        );
    }
    match &c.idp_authentication {
        Some(idp) => {
            let credential = match (&idp.certificate, &idp.secret) {
                _ if idp.flow.is_user() => format!(
                    "{} sign-in with `login`, cached in {}",
                    if idp.flow == Flow::Interactive {
                        "browser"
                    } else {
                        "device code"
                    },
                    crate::auth::cache_path(idp).display()
                ),
                (Some(c), _) => format!(
                    "certificate {}, {}",
                    c.path,
                    match c.algorithm {
                        AssertionAlgorithm::Rs256 => "RS256",
                        AssertionAlgorithm::Ps256 => "PS256",
                    }
                ),
                (None, Some(secret)) => format!("secret {secret}"),
                (None, None) => "no credential".to_owned(),
            };
            let _ = writeln!(
                out,
                "auth:     client {} ({credential}) at {}",
                idp.client_id,
                idp.token_endpoint()
            );
            let _ = writeln!(
                out,
                "          scopes {}; min-ttl {}; auth-method {}",
                idp.scopes.join(" "),
                secs(idp.min_ttl.get()),
                match idp.auth_method {
                    AuthMethod::Post => "post",
                    AuthMethod::Basic => "basic",
                }
            );
        }
        None => {
            let _ = writeln!(out, "auth:     none (dry-run)");
        }
    }
    if let Ok(network) = c.connection.network() {
        let _ = writeln!(out, "network:  {}", network.describe());
    }
    let shown = |id: crate::cdf::EitherId| match id {
        crate::cdf::EitherId::ExternalId(x) => x,
        id => format!("{id} (its external id is looked up at start)"),
    };
    if let Some(id) = c.extraction_pipeline.as_ref().and_then(|p| p.either_id()) {
        let _ = writeln!(out, "pipeline: {}", shown(id));
    }
    if let Some(id) = c.data_set() {
        let shown = match id {
            crate::cdf::EitherId::Id(id) => id.to_string(),
            id => format!("{id} (its id is looked up at start)"),
        };
        let _ = writeln!(
            out,
            "data set: {shown}, on created time series, events and classic files"
        );
    }
    if !c.external_id_prefix.is_empty() {
        let _ = writeln!(out, "prefix:   {}", c.external_id_prefix);
    }
    match &config.metrics.server {
        Some(s) => {
            let _ = writeln!(out, "metrics:  http://{}:{}/metrics", s.host, s.port);
        }
        None => {
            let _ = writeln!(out, "metrics:  no server");
        }
    }
    if let Some(m) = &config.metrics.cognite {
        let _ = writeln!(
            out,
            "          push to CDF as time series {}<metric> every {}",
            m.external_id_prefix,
            secs(m.push_interval.get())
        );
    }
    for gw in &config.metrics.push_gateways {
        let _ = writeln!(
            out,
            "          push to {} as job {} every {}",
            crate::secret::redact_url(&gw.host),
            gw.job_name,
            secs(gw.push_interval.get())
        );
    }
    match &config.state_store {
        Some(StateStoreConfig::Local(local)) => {
            let _ = writeln!(
                out,
                "state:    local file {} (saved every {})",
                local.path,
                secs(local.save_interval.get())
            );
        }
        Some(StateStoreConfig::Raw(raw)) => {
            let _ = writeln!(
                out,
                "state:    RAW {}/{} (uploaded every {})",
                raw.database,
                raw.table,
                secs(raw.upload_interval.get())
            );
        }
        None => {}
    }
    if let Some(ha) = &config.high_availability {
        let place = match ha.backend {
            crate::config::LeaseBackendKind::Kubernetes => "a Kubernetes Lease".to_owned(),
            crate::config::LeaseBackendKind::Redis => format!(
                "Redis at {}",
                ha.redis
                    .as_ref()
                    .map_or_else(String::new, |r| crate::secret::redact_url(&r.url))
            ),
            crate::config::LeaseBackendKind::Raw => format!(
                "RAW {}",
                ha.raw
                    .as_ref()
                    .map_or_else(String::new, |r| format!("{}/{}", r.database, r.table))
            ),
        };
        let _ = writeln!(
            out,
            "lease:    `{}` in {place} as {} (standby takes over {} after the leader stops renewing)",
            ha.lease_name,
            ha.identity.clone().unwrap_or_else(crate::lease::host_name),
            secs(ha.lease_duration.get() + ha.retry_period.get())
        );
    }
    let q = &config.upload_queue;
    let _ = writeln!(
        out,
        "queues:   up to {} items each, uploaded every {}, {} request(s) in flight",
        q.max_queue_size,
        secs(q.max_upload_interval.get()),
        q.max_in_flight
    );
    match &q.dead_letter {
        Some(path) => {
            let _ = writeln!(out, "          items CDF refuses are appended to {path}");
        }
        None => {
            let _ = writeln!(
                out,
                "          items CDF refuses are only logged and counted (no upload-queue.dead-letter)"
            );
        }
    }
    let _ = writeln!(out, "tasks:    {}", config.tasks.len());
    let now = jiff::Zoned::now();
    for task in &config.tasks {
        let when = match &task.schedule {
            Schedule::Interval {
                every,
                run_on_start,
            } => format!(
                "every {}{}",
                secs(every.get().get()),
                if *run_on_start {
                    ", first run at start"
                } else {
                    ""
                }
            ),
            Schedule::Cron { cron, timezone } => {
                let next = cron
                    .find_next_occurrence(&now.with_time_zone(timezone.clone()), false)
                    .map(|t| t.strftime("%Y-%m-%d %H:%M:%S %Z").to_string())
                    .unwrap_or_else(|_| "never".into());
                format!(
                    "cron `{}` ({}), next {next}",
                    cron.as_str(),
                    timezone.iana_name().unwrap_or("UTC")
                )
            }
            Schedule::Continuous => "continuously".to_owned(),
            Schedule::Startup => "once at startup".to_owned(),
        };
        let mut extra = format!("overlap {:?}", task.overlap).to_lowercase();
        if let Some(t) = task.timeout {
            let _ = write!(extra, ", timeout {}", secs(t.get()));
        }
        let _ = writeln!(out, "  - {} ({}): {when}; {extra}", task.name, task.kind);
    }
    out
}
