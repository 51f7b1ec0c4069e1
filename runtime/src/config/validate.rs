//! Checks that need more than one value, or more than a type: run after deserialization, and
//! gathering every problem rather than stopping at the first.

use std::collections::HashMap;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::model::LogRotation;
use super::error::{ConfigError, ConfigErrorKind, Mark};
use super::model::{Config, OverlapPolicy, Schedule, StateStoreConfig};
use super::node::Node;
use super::value::Value;

/// `upload-queue.max-in-flight` at most: each request in flight is a connection to CDF.
const MAX_IN_FLIGHT: usize = 64;

/// `deserialize_with` of a schedule's cron `expression`: [`parse_cron`].
pub(crate) fn deserialize_cron<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Box<Cron>, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    parse_cron(&text)
        .map(Box::new)
        .map_err(serde::de::Error::custom)
}

/// `deserialize_with` of a schedule's `timezone`: an IANA name from the bundled database.
pub(crate) fn deserialize_time_zone<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<jiff::tz::TimeZone, D::Error> {
    let name = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    jiff::tz::TimeZone::get(&name).map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown time zone `{name}`: use an IANA name like `Europe/Oslo` or `UTC`"
        ))
    })
}

/// Parses a cron expression of 5 fields (minute precision) or 6 (with seconds first).
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "invalid cron expression `{text}`: expected 5 fields (minute hour day month weekday) \
             or 6 (with seconds first), found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("invalid cron expression `{text}`: {e}"))
}

/// Finds the position of a key path like `tasks[1].schedule` in the tree.
pub(crate) fn locate(tree: &Node, path: &str) -> Option<Mark> {
    let mut node = tree;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            node = node.get(key)?;
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            node = node.index(index.parse().ok()?)?;
        }
    }
    Some(node.mark())
}

struct Problems<'a> {
    tree: &'a Node,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Problems<'_> {
    /// Something to say, not to refuse, about the value at `path` (located as [`push`] does).
    ///
    /// [`push`]: Problems::push
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let mark = self.mark_of(&path);
        self.warnings
            .push(ConfigError::new(ConfigErrorKind::Invalid, message).at(mark, path));
    }

    /// Where the value at `path` is, else the nearest parent that exists (for a missing key,
    /// the mapping that lacks it).
    fn mark_of(&self, path: &str) -> Option<Mark> {
        let mut probe = path;
        loop {
            if let Some(m) = locate(self.tree, probe) {
                return Some(m);
            }
            match probe.rfind(['.', '[']) {
                Some(i) => probe = &probe[..i],
                None => return locate(self.tree, ""),
            }
        }
    }

    /// A problem with the value at `path`; its position is looked up in the tree, falling back to
    /// the nearest parent that exists (for a missing key, the mapping that lacks it).
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let mark = self.mark_of(&path);
        self.errors
            .push(ConfigError::new(ConfigErrorKind::Invalid, message).at(mark, path));
    }

    /// A problem with `value`, where it was read (else at `path`).
    fn at<T>(&mut self, value: &Value<T>, path: impl Into<String>, message: impl Into<String>) {
        match (value.mark(), value.key_path()) {
            (Some(mark), Some(key_path)) => self.errors.push(
                ConfigError::new(ConfigErrorKind::Invalid, message).at(Some(mark), key_path),
            ),
            _ => self.push(path, message),
        }
    }
}

/// `high-availability:`: the timings in the order that makes stepping down safe, and the
/// chosen backend's section.
fn high_availability(ha: &crate::config::HighAvailabilityConfig, dry_run: bool, p: &mut Problems) {
    use crate::config::LeaseBackendKind;
    let base = "high-availability";
    if ha.lease_name.trim().is_empty() {
        p.push(format!("{base}.lease-name"), "must not be empty");
    } else if !ha
        .lease_name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        || ha.lease_name.len() > 200
    {
        // A Kubernetes object name (DNS subdomain); the other backends take it as well.
        p.push(
            format!("{base}.lease-name"),
            format!("`{}` is not a valid lease name: lower-case letters, digits, `-` and `.`, at most 200 characters", ha.lease_name),
        );
    }
    if ha.identity.as_deref().is_some_and(|i| i.trim().is_empty()) {
        p.push(format!("{base}.identity"), "must not be empty (leave it out for the host name)");
    }
    let (lease, renew, retry) = (
        ha.lease_duration.get(),
        ha.renew_deadline.get(),
        ha.retry_period.get(),
    );
    if retry.is_zero() {
        p.push(format!("{base}.retry-period"), "must be more than 0s");
    }
    if renew >= lease {
        p.push(
            format!("{base}.renew-deadline"),
            format!("must be shorter than lease-duration ({}s): a leader must have stopped writing before its lease can pass to another replica", lease.as_secs_f64()),
        );
    }
    if retry >= renew {
        p.push(
            format!("{base}.retry-period"),
            format!("must be shorter than renew-deadline ({}s): the leader must get more than one try to renew", renew.as_secs_f64()),
        );
    }
    let (key, given) = match ha.backend {
        LeaseBackendKind::Kubernetes => ("kubernetes", true),
        LeaseBackendKind::Redis => ("redis", ha.redis.is_some()),
        LeaseBackendKind::Raw => ("raw", ha.raw.is_some()),
    };
    if !given {
        p.push(
            base,
            format!("`backend: {key}` needs its section `{key}:`"),
        );
    }
    for (other, present) in [
        ("kubernetes", ha.kubernetes.is_some()),
        ("redis", ha.redis.is_some()),
        ("raw", ha.raw.is_some()),
    ] {
        if present && other != key {
            p.push(
                format!("{base}.{other}"),
                format!("`{other}:` is not read with `backend: {key}`"),
            );
        }
    }
    if let Some(redis) = &ha.redis {
        let path = format!("{base}.redis.url");
        match reqwest::Url::parse(&redis.url) {
            Ok(url) if url.scheme() != "redis" && url.scheme() != "rediss" => p.push(
                path,
                format!("`{}` is not a redis:// or rediss:// URL", redis.url),
            ),
            Ok(url) if url.password().is_some() => p.push(
                path,
                "holds a password: put it in `high-availability.redis.password` (a secret, never logged)",
            ),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                p.push(path, format!("`{}` names no host", redis.url))
            }
            Ok(_) => {}
            Err(e) => p.push(path, format!("`{}` is not a URL: {e}", redis.url)),
        }
    }
    if let Some(k) = &ha.kubernetes
        && let Some(url) = &k.api_url
        && !is_http_url(url)
    {
        p.push(
            format!("{base}.kubernetes.api-url"),
            format!("`{url}` is not an http:// or https:// URL"),
        );
    }
    if ha.backend == LeaseBackendKind::Raw && dry_run {
        p.push(
            format!("{base}.backend"),
            "`raw` keeps the lease in CDF, which a dry run does not reach: use `redis` or `kubernetes`",
        );
    }
}

/// `http://` or `https://` followed by a host.
fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// Whether `url` is plain `http://` to a host that is not loopback: credentials (a client
/// secret, a token) sent there cross the network in clear text.
pub(crate) fn is_cleartext_remote(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    if parsed.scheme() != "http" {
        return false;
    }
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !host.eq_ignore_ascii_case("localhost"),
    }
}

/// Reads the files the config names once, keeping what they hold in the config: the CA
/// bundle and proxy of `cognite.connection`, and the sign-in certificate. Problems are reported
/// at their key.
fn read_files(config: &mut Config, p: &mut Problems<'_>) {
    python_connection(config, p);
    let connection = &mut config.cognite.connection;
    match connection.network() {
        Ok(network) => connection.parsed = Some(network),
        Err(e) => {
            for (key, message) in e.problems {
                p.push(format!("cognite.connection.{key}"), message);
            }
        }
    }
    if let Some(idp) = &mut config.cognite.idp_authentication
        && !idp.flow.is_user()
        && let Some(cert) = &mut idp.certificate
    {
        match cert.load() {
            Ok(loaded) => cert.loaded = Some(loaded),
            Err(e) => p.push(
                format!("cognite.idp-authentication.certificate.{}", e.key),
                e.message,
            ),
        }
    }
}

/// `logger.file`: a size to rotate at exactly when `rotation: size`.
fn log_file(config: &Config, p: &mut Problems<'_>) {
    let Some(file) = &config.logger.file else {
        return;
    };
    let base = "logger.file";
    if file.path.trim().is_empty() {
        p.push(format!("{base}.path"), "must not be empty");
    }
    if file.retention == 0 {
        p.push(format!("{base}.retention"), "must be at least 1 (the rotated files kept)");
    }
    match (file.max_size, file.rotation) {
        (Some(bytes), LogRotation::Size) if bytes < 1024 => {
            p.push(format!("{base}.max-size"), "must be at least 1KiB")
        }
        (Some(_), LogRotation::Size) => {}
        (None, LogRotation::Size) => p.push(format!("{base}.max-size"), "`rotation: size` needs `max-size`, like `10MiB`"),
        (Some(_), _) => p.push(format!("{base}.max-size"), "`max-size` applies to `rotation: size`"),
        (None, _) => {}
    }
}

/// python-extractor-utils' spellings of the connection settings, mapped onto ours before the
/// network settings are read: `cognite.timeout`, `connection.proxies`, `disable-ssl`.
fn python_connection(config: &mut Config, p: &mut Problems<'_>) {
    let base = "cognite.connection";
    if let Some(timeout) = config.cognite.timeout {
        if locate(p.tree, "cognite.connection.timeout").is_some() {
            p.push("cognite.timeout", "give the request timeout once: `cognite.timeout` (python-extractor-utils) or `cognite.connection.timeout`");
        } else {
            config.cognite.connection.timeout = timeout;
        }
    }
    let connection = &mut config.cognite.connection;
    if connection.disable_ssl {
        p.push(
            format!("{base}.disable-ssl"),
            "certificate checks cannot be turned off: give the CA that signs your server's or proxy's certificate in `cognite.connection.ca-file` instead",
        );
    }
    for scheme in connection.proxies.keys() {
        if scheme != "http" && scheme != "https" {
            p.push(format!("{base}.proxies.{scheme}"), format!("unknown scheme `{scheme}`: give `https` (and `http`)"));
        }
    }
    if !connection.proxies.is_empty() {
        if connection.proxy.is_some() {
            p.push(format!("{base}.proxies"), "give the proxy once: `proxy` or `proxies` (python-extractor-utils)");
        } else {
            connection.proxy = connection
                .proxies
                .get("https")
                .or_else(|| connection.proxies.get("http"))
                .cloned();
        }
    }
    if connection.max_connection_pool_size == Some(0) {
        p.push(format!("{base}.max-connection-pool-size"), "must be at least 1");
    }
    if let Some(list) = &connection.status_forcelist
        && let Some(bad) = list.iter().find(|s| !(100..=599).contains(*s))
    {
        p.push(format!("{base}.status-forcelist"), format!("{bad} is not an HTTP status"));
    }
}

/// `version:` as python-extractor-utils reads it: a whole number, or a string of one (`"1"`).
pub(crate) fn deserialize_version<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u32),
        Text(String),
    }
    match <Option<Raw> as serde::Deserialize>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => t.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("`{t}` is not a version: write a whole number, like 1"))
        }),
    }
}

/// Checks everything that deserialization cannot, reading the files the config names (once,
/// kept in the config); returns every problem found, and the warnings.
/// `{id}` or `{external-id}` at `base`: exactly one, and not empty.
fn either_id(p: &mut Problems<'_>, base: &str, id: Option<i64>, external_id: Option<&str>) {
    match (id, external_id) {
        (Some(_), Some(_)) => p.push(
            format!("{base}.id"),
            "give `id` or `external-id`, not both",
        ),
        (None, None) => p.push(base, "give `id` or `external-id`"),
        (None, Some(x)) if x.trim().is_empty() => {
            p.push(format!("{base}.external-id"), "must not be empty")
        }
        _ => {}
    }
}

/// `cognite.data-set`, or one of its two older spellings (python-extractor-utils warns that
/// they are deprecated, and so do we).
fn data_set(p: &mut Problems<'_>, c: &crate::config::CogniteConfig) {
    let given: Vec<&str> = [
        ("data-set", c.data_set.is_some()),
        ("data-set-id", c.data_set_id.is_some()),
        ("data-set-external-id", c.data_set_external_id.is_some()),
    ]
    .into_iter()
    .filter(|(_, g)| *g)
    .map(|(k, _)| k)
    .collect();
    if given.len() > 1 {
        p.push(
            format!("cognite.{}", given[1]),
            format!("give one of `{}`, not several", given.join("`, `")),
        );
        return;
    }
    if let Some(d) = &c.data_set {
        either_id(p, "cognite.data-set", d.id, d.external_id.as_deref());
    }
    if c.data_set_id.is_some() {
        p.warn(
            "cognite.data-set-id",
            "`data-set-id` is an older spelling: write `data-set: {id: ..}`",
        );
    }
    if let Some(x) = &c.data_set_external_id {
        if x.trim().is_empty() {
            p.push("cognite.data-set-external-id", "must not be empty");
        } else {
            p.warn(
                "cognite.data-set-external-id",
                "`data-set-external-id` is an older spelling: write `data-set: {external-id: ..}`",
            );
        }
    }
}

pub(crate) fn validate(
    config: &mut Config,
    tree: &Node,
    versions: &[u32],
) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let mut p = Problems {
        tree,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    read_files(config, &mut p);
    log_file(config, &mut p);
    let config = &*config;
    if let Some(version) = config.version
        && !versions.contains(&version)
    {
        let read = match versions {
            [one] => format!("version {one}"),
            many => format!(
                "versions {}",
                many.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        };
        p.push(
            "version",
            format!("unsupported config version {version}: this build reads {read}"),
        );
    }

    for (key, given) in [
        ("source", config.source.is_some()),
        ("buffer-file", config.buffer_file.is_some()),
    ] {
        if given {
            p.push(
                key,
                format!("`{key}` applies only to a `type: remote` file (the config is then fetched from CDF)"),
            );
        }
    }

    if let Some(ha) = &config.high_availability {
        high_availability(ha, config.cognite.dry_run, &mut p);
    }

    let c = &config.cognite;
    if c.project.trim().is_empty() {
        p.push("cognite.project", "must not be empty");
    }
    if !is_http_url(&c.host) {
        p.push(
            "cognite.host",
            format!("`{}` is not an http:// or https:// URL", c.host),
        );
    } else if !c.dry_run && is_cleartext_remote(&c.host) {
        p.push(
            "cognite.host",
            format!("`{}` would send the access token in clear text: use https:// (plain http:// is allowed only for a loopback address such as 127.0.0.1)", c.host),
        );
    }
    match &c.idp_authentication {
        None if !c.dry_run => p.push(
            "cognite.idp-authentication",
            "missing required key `idp-authentication` (it may be left out only with `dry-run: true`)",
        ),
        None => {}
        Some(idp) => {
            let base = "cognite.idp-authentication";
            if idp.client_id.trim().is_empty() {
                p.push(format!("{base}.client-id"), "must not be empty");
            }
            let user_flow = idp.flow.is_user();
            if user_flow && (idp.secret.is_some() || idp.certificate.is_some()) {
                p.push(
                    format!("{base}.flow"),
                    "a person signs in with `extractor-runtime login` in this flow: leave out `secret` and `certificate` (a public client)",
                );
            }
            let endpoint = match idp.flow {
                crate::config::Flow::DeviceCode => {
                    Some(("device-authorization-url", idp.device_endpoint(), "device-code"))
                }
                crate::config::Flow::Interactive => {
                    Some(("authorization-url", idp.authorization_endpoint(), "interactive"))
                }
                crate::config::Flow::ClientCredentials => None,
            };
            match endpoint {
                Some((key, None, flow)) => p.push(
                    format!("{base}.{key}"),
                    format!("missing: `{flow}` needs `{key}` (it is derived only from `tenant` or an Entra-shaped `token-url`)"),
                ),
                Some((key, Some(url), _)) if !is_http_url(&url) => p.push(
                    format!("{base}.{key}"),
                    format!("`{url}` is not an http:// or https:// URL"),
                ),
                Some((key, Some(url), _)) if is_cleartext_remote(&url) => p.push(
                    format!("{base}.{key}"),
                    format!("`{url}` would cross the network in clear text: use https:// (plain http:// is allowed only for a loopback address such as 127.0.0.1)"),
                ),
                _ => {}
            }
            match (&idp.secret, &idp.certificate) {
                _ if user_flow => {}
                (Some(secret), None) if secret.is_empty() => {
                    p.push(format!("{base}.secret"), "must not be empty");
                }
                (Some(_), None) => {}
                // Written, but empty from the environment (which reads as unset).
                (None, None) if locate(p.tree, &format!("{base}.secret")).is_some() => {
                    p.push(format!("{base}.secret"), "must not be empty");
                }
                (None, None) => p.push(
                    format!("{base}.secret"),
                    "missing required key `secret` (or `certificate`, to sign in with a certificate)",
                ),
                (secret, Some(cert)) => {
                    if secret.is_some() {
                        // python-extractor-utils' precedence.
                        p.warn(
                            format!("{base}.secret"),
                            "both `secret` and `certificate` are given: the certificate is used (as python-extractor-utils does) and the secret is not",
                        );
                    }
                    if let Some(url) = &cert.authority_url {
                        if !is_http_url(url) {
                            p.push(format!("{base}.certificate.authority-url"), format!("`{url}` is not an http:// or https:// URL"));
                        } else if is_cleartext_remote(url) {
                            p.push(format!("{base}.certificate.authority-url"), format!("`{url}` would send the client assertion in clear text: use https:// (plain http:// is allowed only for a loopback address such as 127.0.0.1)"));
                        }
                    }
                }
            }
            let authority_url = idp.certificate.as_ref().and_then(|c| c.authority_url.as_ref());
            if idp.token_url.is_some() && idp.tenant.is_some() {
                p.warn(
                    format!("{base}.tenant"),
                    "both `token-url` and `tenant` are given: `token-url` is used (as python-extractor-utils does) and `tenant` is not",
                );
            }
            // `tenant` counts only without `token-url`.
            let tenant = idp.tenant.as_ref().filter(|_| idp.token_url.is_none());
            match (&idp.token_url, tenant) {
                (None, None) if authority_url.is_none() => p.push(
                    base,
                    "missing the token endpoint: give `token-url`, or `tenant` (and optionally `authority`)",
                ),
                (Some(url), None) if !is_http_url(url) => {
                    p.push(format!("{base}.token-url"), format!("`{url}` is not an http:// or https:// URL"));
                }
                (Some(url), None) if is_cleartext_remote(url) => {
                    p.push(format!("{base}.token-url"), format!("`{url}` would send the client secret in clear text: use https:// (plain http:// is allowed only for a loopback address such as 127.0.0.1)"));
                }
                (None, Some(t)) if t.trim().is_empty() => p.push(format!("{base}.tenant"), "must not be empty"),
                _ => {}
            }
            if let Some(authority) = &idp.authority {
                if idp.tenant.is_none() {
                    p.push(format!("{base}.authority"), "`authority` is used only together with `tenant`");
                } else if !is_http_url(authority) {
                    p.push(format!("{base}.authority"), format!("`{authority}` is not an http:// or https:// URL"));
                } else if is_cleartext_remote(authority) {
                    p.push(format!("{base}.authority"), format!("`{authority}` would send the client secret in clear text: use https:// (plain http:// is allowed only for a loopback address such as 127.0.0.1)"));
                }
            }
            if idp.scopes.is_empty() {
                p.push(format!("{base}.scopes"), "must list at least one scope, like `https://api.cognitedata.com/.default`");
            }
            for (i, s) in idp.scopes.iter().enumerate() {
                if s.trim().is_empty() {
                    p.push(format!("{base}.scopes[{i}]"), "a scope must not be empty");
                }
            }
        }
    }
    if let Some(pipe) = &c.extraction_pipeline {
        either_id(&mut p, "cognite.extraction-pipeline", pipe.id, pipe.external_id.as_deref());
    }
    data_set(&mut p, c);

    for (i, gw) in config.metrics.push_gateways.iter().enumerate() {
        let base = format!("metrics.push-gateways[{i}]");
        if !is_http_url(&gw.host) {
            p.push(
                format!("{base}.host"),
                format!("`{}` is not an http:// or https:// URL", gw.host),
            );
        }
        if gw.job_name.trim().is_empty() {
            p.push(format!("{base}.job-name"), "must not be empty");
        }
        if gw.push_interval.is_zero() {
            p.push(format!("{base}.push-interval"), "must be longer than zero");
        }
        if gw.password.is_some() && gw.username.is_none() {
            p.push(
                format!("{base}.password"),
                "a `password` needs a `username`",
            );
        }
    }

    if let Some(m) = &config.metrics.cognite {
        let base = "metrics.cognite";
        if m.push_interval.is_zero() {
            p.push(format!("{base}.push-interval"), "must be longer than zero");
        }
        if m.asset_name.is_some() && m.asset_external_id.is_none() {
            p.push(
                format!("{base}.asset-name"),
                "`asset-name` needs `asset-external-id` (the asset is found or created by it)",
            );
        }
        if let Some(d) = &m.data_set {
            either_id(&mut p, &format!("{base}.data-set"), d.id, d.external_id.as_deref());
        }
        if m.external_id_prefix.len() > 200 {
            p.push(
                format!("{base}.external-id-prefix"),
                "is longer than 200 bytes (an external id holds at most 255)",
            );
        }
    }

    let uq = &config.upload_queue;
    if uq.dead_letter.is_none() && uq.dead_letter_max_size.is_some() {
        p.push(
            "upload-queue.dead-letter-max-size",
            "`dead-letter-max-size` applies to `dead-letter`, which is not set",
        );
    }
    if uq.dead_letter_max_size.is_some_and(|m| m < 1024) {
        p.push("upload-queue.dead-letter-max-size", "must be at least 1KiB");
    }
    if let crate::config::BufferConfig::Disk { path, max_size, .. } = &uq.buffer {
        if path.trim().is_empty() {
            p.push("upload-queue.buffer.path", "must not be empty");
        }
        if *max_size < 1024 * 1024 {
            p.push("upload-queue.buffer.max-size", "must be at least 1MiB");
        }
    }

    if config.upload_queue.max_queue_size == 0 {
        p.push("upload-queue.max-queue-size", "must be at least 1");
    }
    if !(1..=MAX_IN_FLIGHT).contains(&config.upload_queue.max_in_flight) {
        p.push(
            "upload-queue.max-in-flight",
            format!("must be from 1 to {MAX_IN_FLIGHT}"),
        );
    }
    if config.upload_queue.max_upload_interval.is_zero() {
        p.push(
            "upload-queue.max-upload-interval",
            "must be longer than zero",
        );
    }
    if let Some(pipe) = &c.extraction_pipeline
        && pipe.seen_interval.is_zero()
    {
        p.push(
            "cognite.extraction-pipeline.seen-interval",
            "must be longer than zero",
        );
    }
    if let Some(StateStoreConfig::Local(local)) = &config.state_store
        && local.path.trim().is_empty()
    {
        p.push("state-store.local.path", "must not be empty");
    }

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, task) in config.tasks.iter().enumerate() {
        let base = format!("tasks[{i}]");
        let name = task.name.as_str();
        let name_at = format!("{base}.name");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            p.at(&task.name, name_at, format!(
                "invalid task name `{name}`: use letters, digits, `_`, `-` and `.` (it becomes a metric label)"
            ));
        } else if let Some(first) = seen.insert(name, i) {
            p.at(
                &task.name,
                name_at,
                format!("duplicate task name `{name}` (also used by tasks[{first}])"),
            );
        }
        if task.kind.trim().is_empty() {
            p.push(format!("{base}.type"), "must not be empty");
        }
        if let Schedule::Interval { every, .. } = &task.schedule
            && every.is_zero()
        {
            p.at(
                every,
                format!("{base}.schedule.expression"),
                "the interval must be longer than zero",
            );
        }
        match (task.overlap, task.max_concurrent) {
            (OverlapPolicy::Allow, Some(0)) => {
                p.push(format!("{base}.max-concurrent"), "must be at least 1")
            }
            (OverlapPolicy::Allow, _) | (_, None) => {}
            (_, Some(_)) => p.push(
                format!("{base}.max-concurrent"),
                "`max-concurrent` applies only with `overlap: allow`",
            ),
        }
        if let Some(retry) = &task.retry {
            if retry.max_attempts == 0 {
                p.push(format!("{base}.retry.max-attempts"), "must be at least 1");
            }
            if retry.max_backoff < retry.initial_backoff {
                p.push(
                    format!("{base}.retry.max-backoff"),
                    "must not be shorter than `initial-backoff`",
                );
            }
        }
        if task.timeout.is_some_and(|t| t.is_zero()) {
            p.push(format!("{base}.timeout"), "must be longer than zero");
        }
    }
    (p.errors, p.warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_need_a_host() {
        assert!(is_http_url("https://api.cognitedata.com"));
        assert!(is_http_url("http://127.0.0.1:9091/"));
        for bad in [
            "https://",
            "http://",
            "https:///path",
            "ftp://x",
            "api.cognitedata.com",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn cron_takes_five_or_six_fields() {
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("0 */5 * * * *").is_ok());
        assert!(parse_cron("@hourly").is_ok());
        let e = parse_cron("* * *").unwrap_err();
        assert!(e.contains("found 3"), "{e}");
        let e = parse_cron("0 0 0 * * * 2030").unwrap_err();
        assert!(e.contains("found 7"), "{e}");
        assert!(parse_cron("61 * * * *").is_err());
    }
}
