//! The config's typed structs, one per YAML section. Keys are hyphen-case; unknown keys are errors.
//!
//! The `cognite:` section keeps the key names of Cognite's python-extractor-utils, so an existing
//! section works unchanged.

use schemars::JsonSchema;
use serde::Deserialize;

use super::duration::Duration;
use super::node::Node;
use super::value::Value;
use crate::secret::Secret;

/// The whole config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "extractor-runtime config")]
pub struct Config {
    /// Version of the config format: `1`, the only one (as a number or a string; optional, as
    /// in python-extractor-utils: left out, it is read as 1).
    #[serde(default, deserialize_with = "super::validate::deserialize_version")]
    #[schemars(with = "Option<VersionSchema>")]
    pub version: Option<u32>,
    /// The CDF project and how to authenticate against it.
    pub cognite: CogniteConfig,
    /// The Prometheus endpoint and Pushgateways.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub logger: LoggerConfig,
    /// Where incremental state (watermarks) is kept between runs.
    #[serde(default)]
    pub state_store: Option<StateStoreConfig>,
    /// The extractor tasks to run.
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    /// The upload queues into CDF.
    #[serde(default)]
    pub upload_queue: UploadQueueConfig,
    /// On SIGTERM or SIGINT, how long running tasks get to finish before they are aborted.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// `local`: this file is the config. A `type: remote` file is read by
    /// [`ConfigFile::load`](super::ConfigFile::load) instead: CDF holds the config.
    #[serde(default, rename = "type")]
    pub kind: ConfigKind,
    /// Reloading a changed config without a restart.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// With `type: remote`: where the config is read from (`extraction-pipeline`, the
    /// default, or `integration`).
    #[serde(default)]
    pub source: Option<RemoteSource>,
    /// With `type: remote`: where the last good fetched config is kept (mode 0600), relative to
    /// this file's folder. Default: `<file name>.last-good.json` beside it.
    #[serde(default)]
    pub buffer_file: Option<String>,
    /// The Azure Key Vault that `!keyvault NAME` values are read from (python-extractor-utils'
    /// section; `key-vault` is read too).
    #[serde(default, alias = "key-vault")]
    pub azure_keyvault: Option<AzureKeyVaultConfig>,
    /// Active/standby replicas: only the holder of a lease runs tasks and writes state.
    #[serde(default)]
    pub high_availability: Option<HighAvailabilityConfig>,
    /// The document as read (after `${VAR}` substitution): what a reload compares section by
    /// section and task by task.
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) tree: Option<std::sync::Arc<Node>>,
    /// Set when this config came from a `type: remote` file.
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) remote: Option<super::Remote>,
    /// The hash of the text it was read from (a reload of the same text is no change).
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) source_hash: u64,
    /// Located warnings found while loading.
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) warnings: Vec<String>,
}

/// `azure-keyvault:`: where `!keyvault NAME` values come from, as python-extractor-utils
/// reads it, plus address overrides for sovereign clouds and tests.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AzureKeyVaultConfig {
    /// The vault's name: `https://<keyvault-name>.vault.azure.net`.
    pub keyvault_name: String,
    /// How to sign in: `default` (the `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/`AZURE_CLIENT_SECRET`
    /// variables, else Kubernetes workload identity, else the managed identity) or
    /// `client-secret` (`client-id`, `tenant-id`, `secret`).
    pub authentication_method: KeyVaultAuthentication,
    /// With `client-secret`: the app registration's client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// With `client-secret`: the Microsoft Entra tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// With `client-secret`: the client secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The vault's address instead of `https://<keyvault-name>.vault.azure.net` (another
    /// cloud: `https://<name>.vault.azure.cn`).
    #[serde(default)]
    pub vault_url: Option<String>,
    /// The sign-in authority instead of `https://login.microsoftonline.com` (or
    /// `AZURE_AUTHORITY_HOST`).
    #[serde(default)]
    pub authority_url: Option<String>,
    /// The token endpoint instead of `<authority-url>/<tenant>/oauth2/v2.0/token` (a private
    /// endpoint, a test server).
    #[serde(default)]
    pub token_url: Option<String>,
}

/// `azure-keyvault.authentication-method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyVaultAuthentication {
    /// The environment's credentials, workload identity or the managed identity.
    Default,
    /// `client-id`, `tenant-id` and `secret`.
    ClientSecret,
}

/// `high-availability:`: one replica of several runs the tasks, the one that holds a lease; the
/// others stand by (live, ready, serving metrics) and take over when it stops renewing.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HighAvailabilityConfig {
    /// Where the lease is kept: `kubernetes` (a `coordination.k8s.io/v1` Lease), `redis`
    /// (a key set with `NX PX`) or `raw` (heartbeat rows in a CDF RAW table).
    pub backend: LeaseBackendKind,
    /// The lease's name (with `--shard i/n`, each shard's lease is `<lease-name>-<i>`).
    pub lease_name: String,
    /// Who this replica is. Default: the host name (in Kubernetes, the pod name).
    #[serde(default)]
    pub identity: Option<String>,
    /// How long a lease holds after its last renewal: a standby takes over this long after
    /// the leader stopped renewing.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops its runs and writes no more state
    /// (shorter than `lease-duration`, so it has stopped before anyone else can lead).
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to take the lease.
    #[serde(default = "default_retry_period")]
    pub retry_period: Duration,
    /// `run --once`: how long to wait for the lease before exiting with code 4.
    #[serde(default = "default_once_timeout")]
    pub once_timeout: Duration,
    /// With `backend: kubernetes`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesLeaseConfig>,
    /// With `backend: redis`.
    #[serde(default)]
    pub redis: Option<RedisLeaseConfig>,
    /// With `backend: raw`.
    #[serde(default)]
    pub raw: Option<RawLeaseConfig>,
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}

fn default_once_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `high-availability.backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseBackendKind {
    /// A `coordination.k8s.io/v1` Lease, through the API server.
    Kubernetes,
    /// A Redis key.
    Redis,
    /// Heartbeat rows in a CDF RAW table.
    Raw,
}

/// `high-availability.kubernetes`: in a pod, everything defaults to its service account.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesLeaseConfig {
    /// The Lease's namespace. Default: the pod's (the service account's `namespace` file).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The API server. Default: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// The bearer token file, read again at every request (projected tokens rotate).
    /// Default: `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    #[serde(default)]
    pub token_file: Option<String>,
    /// The API server's CA, read again when it changes. Default: the service account's
    /// `ca.crt`.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `high-availability.redis`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisLeaseConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS (no password in it: use `password`).
    pub url: String,
    /// The `AUTH` password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The `AUTH` user name (Redis 6 ACLs).
    #[serde(default)]
    pub username: Option<String>,
    /// With `rediss://`: the CA (PEM) that signed the server's certificate, instead of the
    /// system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `high-availability.raw`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLeaseConfig {
    /// The RAW database.
    pub database: String,
    /// The RAW table (one heartbeat row per replica).
    pub table: String,
}

/// How a version may be written: `1` or `"1"`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the schema's shape only
enum VersionSchema {
    Number(u32),
    Text(String),
}

/// `type:`: where the config is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigKind {
    /// This file.
    #[default]
    Local,
    /// CDF: this file holds only `cognite:` (and `source`, `buffer-file`, `reload`); the rest
    /// is the latest config revision of `cognite.extraction-pipeline` (or of
    /// `cognite.integration` with `source: integration`).
    Remote,
}

/// `reload:`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReloadConfig {
    /// How often a remote config's revisions are polled, and a local file re-read when no
    /// change event came (a backstop for file systems without events).
    #[serde(default = "default_reload_interval")]
    pub interval: Duration,
    /// Watch the config file's directory and reload when the file changes (also on SIGHUP).
    #[serde(default = "yes")]
    pub watch: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            interval: default_reload_interval(),
            watch: true,
        }
    }
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(300)
}

/// Where a `type: remote` config is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteSource {
    /// `GET /extpipes/config` of `cognite.extraction-pipeline.external-id` (as
    /// python-extractor-utils).
    #[default]
    ExtractionPipeline,
    /// `GET /integrations/config` of `cognite.integration.external-id`.
    Integration,
}

/// A `type: remote` file: how to reach CDF, and which config to fetch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RemoteConfigFile {
    /// `remote`.
    #[serde(rename = "type")]
    pub kind: ConfigKind,
    /// Version of the config format (optional here).
    #[serde(default, deserialize_with = "super::validate::deserialize_version")]
    pub version: Option<u32>,
    /// The CDF project, its authentication and the pipeline or integration whose config is
    /// fetched; injected into the fetched config, replacing any `cognite:` there.
    pub cognite: serde::de::IgnoredAny,
    /// Where the config is read from.
    #[serde(default)]
    pub source: RemoteSource,
    /// Where the last good fetched config is kept (mode 0600), to start from when CDF cannot be
    /// reached. Default: beside this file, `<file name>.last-good.json`.
    #[serde(default)]
    pub buffer_file: Option<String>,
    /// Overrides the fetched config's `reload:`.
    #[serde(default)]
    pub reload: Option<ReloadConfig>,
    /// The vault of this file's `!keyvault` values (read while it loads).
    #[serde(default, alias = "key-vault")]
    pub azure_keyvault: Option<serde::de::IgnoredAny>,
}

/// `upload-queue:`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UploadQueueConfig {
    /// Items a queue holds at most (200 000); a producer waits while it is full.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Queued items are uploaded at least this often.
    #[serde(default = "default_max_upload_interval")]
    pub max_upload_interval: Duration,
    /// Requests each queue keeps in flight at most (10, as dotnet-extractor-utils'
    /// `cdf-throttling` allows 10 parallel RAW and datapoint requests): a round trip to CDF is
    /// hidden behind the next requests. A request then carries at most
    /// `2 * max-queue-size / (3 * max-in-flight)` items (at least 1 000), so they fit in two
    /// thirds of the queue together. 1 sends one request at a time.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Where items CDF refused for good are appended, one JSON object per line (time, task,
    /// queue, endpoint, status, CDF's message, request id, the item). Without it refused
    /// items are only logged and counted.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// With `dead-letter`: rotate the file before it grows past this, like `100MiB` (`<file>.1`
    /// the newest rotated one); no limit when left out.
    #[serde(default, deserialize_with = "crate::size::deserialize_optional_size")]
    #[schemars(with = "Option<crate::size::SizeSchema>")]
    pub dead_letter_max_size: Option<u64>,
    /// With `dead-letter-max-size`: rotated files kept.
    #[serde(default = "default_dead_letter_retention")]
    pub dead_letter_retention: usize,
    /// Where queued items are kept until CDF settles them: `memory` (the default; lost with
    /// the process) or `disk` (an item is accepted once it is synced to disk, and replayed
    /// after a crash or restart).
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl Default for UploadQueueConfig {
    fn default() -> Self {
        UploadQueueConfig {
            max_queue_size: default_max_queue_size(),
            max_upload_interval: default_max_upload_interval(),
            max_in_flight: default_max_in_flight(),
            dead_letter: None,
            dead_letter_max_size: None,
            dead_letter_retention: default_dead_letter_retention(),
            buffer: BufferConfig::default(),
        }
    }
}

/// `upload-queue.buffer:` (`{type: disk, path: buffer}`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", rename_all_fields = "kebab-case")]
#[schemars(tag = "type")]
pub enum BufferConfig {
    /// Items wait in memory (up to `max-queue-size` per queue).
    #[default]
    Memory,
    /// Items wait in segment files under `path` (one folder per queue), synced before they are
    /// accepted; the queue's memory is fed from them.
    Disk {
        /// The folder (made when missing).
        path: String,
        /// The most bytes the files of one queue may hold, like `1GiB`.
        #[serde(default = "default_buffer_size", deserialize_with = "crate::size::deserialize_size")]
        #[schemars(with = "crate::size::SizeSchema")]
        max_size: u64,
        /// Past `max-size` or on a full disk: `block` (the producer waits: backpressure to
        /// the source) or `drop-newest` (the item is refused and counted).
        #[serde(default)]
        when_full: WhenFull,
    },
}

fn default_dead_letter_retention() -> usize {
    5
}

fn default_buffer_size() -> u64 {
    1024 * 1024 * 1024
}

/// `upload-queue.buffer.when-full`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// The producer waits for room.
    #[default]
    Block,
    /// The item is refused and counted.
    DropNewest,
}

fn default_max_queue_size() -> usize {
    // Room for 10 RAW requests of 10 000 rows in flight (two thirds of it) while the source
    // fills the next ones: what hides a 50 ms round trip at a million rows a second.
    200_000
}

fn default_max_in_flight() -> usize {
    10
}

fn default_max_upload_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

/// `cognite:`: the CDF project and its authentication.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CogniteConfig {
    /// The CDF project name.
    pub project: String,
    /// The CDF cluster's base URL.
    #[serde(default = "default_host")]
    pub host: String,
    /// OAuth2 client credentials. Required unless `dry-run` is true.
    #[serde(default)]
    pub idp_authentication: Option<IdpAuthenticationConfig>,
    /// The extraction pipeline that runs are reported to.
    #[serde(default)]
    pub extraction_pipeline: Option<ExtractionPipelineConfig>,
    /// When true, nothing is sent to CDF and no token is fetched: batches are written as NDJSON.
    #[serde(default)]
    pub dry_run: bool,
    /// Where dry-run writes its NDJSON lines: a file (appended to), or standard output when
    /// left out.
    #[serde(default)]
    pub dry_run_output: Option<String>,
    /// Retries and timeouts of requests to CDF (python-extractor-utils names).
    #[serde(default)]
    pub connection: ConnectionConfig,
    /// The integration this process checks in to (`/integrations/startup`, `/checkin`).
    #[serde(default)]
    pub integration: Option<IntegrationConfig>,
    /// python-extractor-utils' request timeout: the same as `connection.timeout` (give one).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// The data set of what the runtime creates: time series created by `create-missing`,
    /// events, classic files (`{id}` or `{external-id}`; the CDF client's `Defaults` say where).
    #[serde(default)]
    pub data_set: Option<EitherIdConfig>,
    /// python-extractor-utils' older spelling of `data-set: {id: ..}`.
    #[serde(default)]
    pub data_set_id: Option<i64>,
    /// python-extractor-utils' older spelling of `data-set: {external-id: ..}`.
    #[serde(default)]
    pub data_set_external_id: Option<String>,
    /// Put before the external id of every classic time series, event and classic file
    /// written (the CDF client's `Defaults` say where).
    #[serde(default)]
    pub external_id_prefix: String,
    /// Security categories of created time series and classic files.
    #[serde(default)]
    pub security_categories: Vec<i64>,
}

impl CogniteConfig {
    /// The data set, from whichever of `data-set`, `data-set-id`, `data-set-external-id` is
    /// given (validation allows one).
    pub fn data_set(&self) -> Option<EitherId> {
        if let Some(d) = &self.data_set {
            return d.either_id();
        }
        if let Some(id) = self.data_set_id {
            return Some(EitherId::Id(id));
        }
        self.data_set_external_id.clone().map(EitherId::ExternalId)
    }
}

/// A CDF resource named by one of its two ids (python-extractor-utils' `EitherId`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EitherId {
    /// The internal id.
    Id(i64),
    /// The external id.
    ExternalId(String),
}

impl std::fmt::Display for EitherId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EitherId::Id(id) => write!(f, "id {id}"),
            EitherId::ExternalId(x) => write!(f, "external id `{x}`"),
        }
    }
}

/// A CDF resource by `id` or by `external-id` (one of them), as python-extractor-utils'
/// `EitherIdConfig`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EitherIdConfig {
    /// The internal id.
    #[serde(default)]
    pub id: Option<i64>,
    /// The external id.
    #[serde(default)]
    pub external_id: Option<String>,
}

impl EitherIdConfig {
    /// The id given (`id` when both are, which validation refuses).
    pub fn either_id(&self) -> Option<EitherId> {
        match (&self.id, &self.external_id) {
            (Some(id), _) => Some(EitherId::Id(*id)),
            (None, Some(x)) => Some(EitherId::ExternalId(x.clone())),
            (None, None) => None,
        }
    }
}

/// `cognite.integration:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IntegrationConfig {
    /// The integration's external id.
    pub external_id: String,
    /// How often the process checks in.
    #[serde(default = "default_checkin_interval")]
    pub checkin_interval: Duration,
}

fn default_checkin_interval() -> Duration {
    Duration::from_secs(30)
}

/// `cognite.connection:`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConnectionConfig {
    /// Retries of a request after retryable failures (408, 429, 5xx, connection errors).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The longest delay between retries (exponential backoff with full jitter up to this).
    #[serde(default = "default_max_retry_backoff")]
    pub max_retry_backoff: Duration,
    /// One request gives up after this long.
    #[serde(default = "default_request_timeout")]
    pub timeout: Duration,
    /// A PEM file of CA certificates trusted in addition to the system's roots (a corporate
    /// TLS-inspecting proxy, a private identity provider). Used for every outbound connection:
    /// the identity provider, CDF, the Pushgateway and the http extractor.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A forward proxy for every outbound connection, like `http://proxy.corp:3128` (a password
    /// in it is never shown). Without it, `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` are honoured.
    #[serde(default)]
    pub proxy: Option<Secret>,
    /// Hosts reached without `proxy`, in `NO_PROXY` syntax: `localhost`, `.corp.example`
    /// (a domain and its subdomains), `10.0.0.0/8`, `*`.
    #[serde(default)]
    pub no_proxy: Vec<String>,
    /// python-extractor-utils' `status-forcelist`: the HTTP statuses retried, in place of 408,
    /// 429 and 5xx (`cdf-is-auto-retryable: true` answers are retried either way).
    #[serde(default)]
    pub status_forcelist: Option<Vec<u16>>,
    /// Retries of a request that got no answer (connection refused or reset, TLS, timeout);
    /// without it `max-retries` counts those too.
    #[serde(default)]
    pub max_retries_connect: Option<u32>,
    /// Idle connections kept open to CDF at most (python-extractor-utils'
    /// `max-connection-pool-size`).
    #[serde(default)]
    pub max_connection_pool_size: Option<usize>,
    /// Sends request bodies to CDF uncompressed (python-extractor-utils' switch). Without it,
    /// bodies of 16 KiB and more are gzipped (`Content-Encoding: gzip`), as Cognite's SDKs send
    /// theirs: a bulk request shrinks about tenfold.
    #[serde(default)]
    pub disable_gzip: bool,
    /// Sends datapoints as protocol buffers (`application/protobuf`, which the API documents
    /// for inserts, as cognite-sdk-rust sends them) instead of JSON: a smaller body, built
    /// with less CPU. A dry run writes JSON all the same.
    #[serde(default)]
    pub protobuf_datapoints: bool,
    /// python-extractor-utils' switch that turns certificate checks off: refused here (`true`
    /// is an error that says to give the CA in `ca-file` instead).
    #[serde(default)]
    pub disable_ssl: bool,
    /// python-extractor-utils' proxies by scheme (`{https: http://proxy:3128}`): the `https`
    /// one (CDF and the identity provider are https), else the `http` one, becomes `proxy`.
    #[serde(default)]
    pub proxies: std::collections::BTreeMap<String, Secret>,
    /// `ca-file`, `proxy` and `no-proxy` as read when the config was loaded (the CA file is read
    /// once, then shared by every client).
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) parsed: Option<crate::net::Network>,
}

impl ConnectionConfig {
    /// The network settings every outbound client is built with: those read when the config
    /// was loaded, else read now (a config built in code).
    pub fn network(&self) -> Result<crate::net::Network, crate::net::NetworkError> {
        let network = match &self.parsed {
            Some(network) => network.clone(),
            None => crate::net::Network::new(
                self.ca_file.as_deref(),
                self.proxy.as_ref(),
                &self.no_proxy,
            )?,
        };
        Ok(network.with_timeout(self.timeout.get()))
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_retries: default_max_retries(),
            max_retry_backoff: default_max_retry_backoff(),
            timeout: default_request_timeout(),
            ca_file: None,
            proxy: None,
            no_proxy: Vec::new(),
            status_forcelist: None,
            max_retries_connect: None,
            max_connection_pool_size: None,
            disable_gzip: false,
            protobuf_datapoints: false,
            disable_ssl: false,
            proxies: std::collections::BTreeMap::new(),
            parsed: None,
        }
    }
}

fn default_max_retries() -> u32 {
    10
}

fn default_max_retry_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_host() -> String {
    "https://api.cognitedata.com".to_owned()
}

/// `cognite.idp-authentication:`: OAuth2 client credentials (Entra ID or any OAuth2 IdP).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdpAuthenticationConfig {
    /// The application (client) id.
    pub client_id: String,
    /// The client secret. Use `${ENV_VAR}`; it is never logged or printed. Give this, or
    /// `certificate`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Sign in with a certificate instead of a secret (a `client_assertion` JWT, RFC 7523).
    #[serde(default)]
    pub certificate: Option<CertificateConfig>,
    /// The token endpoint. Give this, or `tenant`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The Entra ID tenant (directory) id; the token endpoint is then
    /// `{authority}{tenant}/oauth2/v2.0/token`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The Entra ID authority, used with `tenant`.
    #[serde(default)]
    pub authority: Option<String>,
    /// Scopes to request, like `https://api.cognitedata.com/.default`.
    pub scopes: Vec<String>,
    /// Extra `resource` form field, for identity providers that need it.
    #[serde(default)]
    pub resource: Option<String>,
    /// Extra `audience` form field, for identity providers that need it.
    #[serde(default)]
    pub audience: Option<String>,
    /// A token with less life left than this is never used.
    #[serde(default = "default_min_ttl")]
    pub min_ttl: Duration,
    /// How the client authenticates to the token endpoint.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Who signs in: the application itself (`client-credentials`, the default, with `secret`
    /// or `certificate`), or a person, once, with `extractor-runtime login` (`device-code`, or
    /// `interactive` in a browser).
    #[serde(default)]
    pub flow: Flow,
    /// The authorization endpoint (`interactive`). Default: derived from `tenant`, or from an
    /// Entra-shaped `token-url` (`.../oauth2/v2.0/authorize`).
    #[serde(default)]
    pub authorization_url: Option<String>,
    /// The loopback port the browser is sent back to (`interactive`): the redirect URI is
    /// `http://localhost:<port>`, registered in the app registration. Default 53000.
    #[serde(default = "default_redirect_port")]
    pub redirect_port: u16,
    /// The device authorization endpoint (`device-code`). Default: derived from `tenant`, or
    /// from an Entra-shaped `token-url` (`.../oauth2/v2.0/devicecode`).
    #[serde(default)]
    pub device_authorization_url: Option<String>,
    /// Where `login` keeps the refresh token (`device-code`), mode 0600. Default:
    /// `$XDG_CACHE_HOME/extractor-runtime/` (or `~/.cache/...`), one file per endpoint and client.
    #[serde(default)]
    pub cache_file: Option<String>,
}

/// Who signs in to the identity provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// The application, with a secret or a certificate (OAuth2 client credentials).
    #[default]
    ClientCredentials,
    /// A person, once, with `extractor-runtime login` (RFC 8628 device authorization); then
    /// the runtime refreshes with the refresh token it saved.
    DeviceCode,
    /// A person, once, with `extractor-runtime login` in a browser (authorization code with
    /// PKCE on a loopback redirect); then like `device-code`.
    Interactive,
}

impl Flow {
    /// Whether a person signs in (with `login`), rather than the application.
    pub fn is_user(self) -> bool {
        matches!(self, Flow::DeviceCode | Flow::Interactive)
    }
}

fn default_redirect_port() -> u16 {
    53000
}

/// The default Entra ID authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";

fn default_min_ttl() -> Duration {
    Duration::from_secs(30)
}

impl IdpAuthenticationConfig {
    /// Client credentials for `token_url` with the defaults of every optional key
    /// (`min-ttl` 30 s, `auth-method: post`), for building a config in code.
    pub fn new(
        client_id: impl Into<String>,
        secret: Secret,
        token_url: impl Into<String>,
        scopes: Vec<String>,
    ) -> Self {
        IdpAuthenticationConfig {
            client_id: client_id.into(),
            secret: Some(secret),
            certificate: None,
            token_url: Some(token_url.into()),
            tenant: None,
            authority: None,
            scopes,
            resource: None,
            audience: None,
            min_ttl: default_min_ttl(),
            auth_method: AuthMethod::Post,
            flow: Flow::ClientCredentials,
            authorization_url: None,
            redirect_port: default_redirect_port(),
            device_authorization_url: None,
            cache_file: None,
        }
    }

    /// The device authorization endpoint of the `device-code` flow: `device-authorization-url`,
    /// or Entra's `.../oauth2/v2.0/devicecode` next to the token endpoint.
    pub fn device_endpoint(&self) -> Option<String> {
        if let Some(url) = &self.device_authorization_url {
            return Some(url.clone());
        }
        self.token_endpoint()
            .strip_suffix("/oauth2/v2.0/token")
            .map(|base| format!("{base}/oauth2/v2.0/devicecode"))
    }

    /// The authorization endpoint of the `interactive` flow: `authorization-url`, or Entra's
    /// `.../oauth2/v2.0/authorize` next to the token endpoint.
    pub fn authorization_endpoint(&self) -> Option<String> {
        if let Some(url) = &self.authorization_url {
            return Some(url.clone());
        }
        self.token_endpoint()
            .strip_suffix("/oauth2/v2.0/token")
            .map(|base| format!("{base}/oauth2/v2.0/authorize"))
    }

    /// The token endpoint: `token-url`, or `{authority}{tenant}/oauth2/v2.0/token`, or
    /// `{certificate.authority-url}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self) -> String {
        let authority_url = self
            .certificate
            .as_ref()
            .and_then(|c| c.authority_url.as_deref());
        match (&self.token_url, &self.tenant, authority_url) {
            (Some(url), _, _) => url.clone(),
            (None, Some(tenant), _) => {
                let authority = self.authority.as_deref().unwrap_or(DEFAULT_AUTHORITY);
                let sep = if authority.ends_with('/') { "" } else { "/" };
                format!("{authority}{sep}{tenant}/oauth2/v2.0/token")
            }
            (None, None, Some(authority)) => {
                format!("{}/oauth2/v2.0/token", authority.trim_end_matches('/'))
            }
            (None, None, None) => String::new(),
        }
    }
}

/// `cognite.idp-authentication.certificate:` (python-extractor-utils keys): the client signs a
/// short-lived JWT with the certificate's private key instead of sending a secret.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CertificateConfig {
    /// A PEM file holding the certificate and its RSA private key (unencrypted), or a PKCS#12
    /// file (`.pfx`, `.p12`) with `password`.
    pub path: String,
    /// The PKCS#12 file's password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The Entra ID authority with the tenant, like
    /// `https://login.microsoftonline.com/<tenant>`; the token endpoint is then
    /// `{authority-url}/oauth2/v2.0/token` (unless `token-url` or `tenant` is given).
    #[serde(default)]
    pub authority_url: Option<String>,
    /// The assertion's signature: `rs256` (RSASSA-PKCS1-v1_5, the default, accepted everywhere)
    /// or `ps256` (RSASSA-PSS, which Entra recommends).
    #[serde(default)]
    pub algorithm: AssertionAlgorithm,
    /// The certificate and key as read when the config was loaded.
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) loaded: Option<std::sync::Arc<crate::certificate::ClientCertificate>>,
}

impl CertificateConfig {
    /// Why the certificate read at load is refused now (expired, not valid yet): shown by
    /// `check-config`, `token` and `run`, which go on (the identity provider has the last word).
    pub(crate) fn validity_warning(&self) -> Option<String> {
        self.loaded
            .as_ref()?
            .validity_problem(jiff::Timestamp::now())
    }

    /// The certificate and key: as read when the config was loaded, else read now.
    pub(crate) fn load(
        &self,
    ) -> Result<
        std::sync::Arc<crate::certificate::ClientCertificate>,
        crate::certificate::CertificateError,
    > {
        match &self.loaded {
            Some(loaded) => Ok(loaded.clone()),
            None => crate::certificate::ClientCertificate::load(
                &self.path,
                self.password.as_ref(),
                self.algorithm == AssertionAlgorithm::Ps256,
            )
            .map(std::sync::Arc::new),
        }
    }
}

/// How the client assertion is signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AssertionAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[default]
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
}

/// How the client id and secret reach the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// `client_secret_post`: id and secret in the form body.
    #[default]
    Post,
    /// `client_secret_basic`: an `Authorization: Basic` header.
    Basic,
}

/// `cognite.extraction-pipeline:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtractionPipelineConfig {
    /// The extraction pipeline's external id (or give its `id`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The extraction pipeline's internal id, looked up to its external id at start
    /// (python-extractor-utils' `EitherIdConfig`; give one of the two).
    #[serde(default)]
    pub id: Option<i64>,
    /// A long-running process reports `seen` this often.
    #[serde(default = "default_seen_interval")]
    pub seen_interval: Duration,
}

impl ExtractionPipelineConfig {
    /// The pipeline's id given (`external-id` when both are, which validation refuses).
    pub fn either_id(&self) -> Option<EitherId> {
        match (&self.external_id, self.id) {
            (Some(x), _) => Some(EitherId::ExternalId(x.clone())),
            (None, Some(id)) => Some(EitherId::Id(id)),
            (None, None) => None,
        }
    }
}

fn default_seen_interval() -> Duration {
    Duration::from_secs(600)
}

/// `metrics:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address.
    #[serde(default)]
    pub server: Option<MetricsServerConfig>,
    /// Pushgateways to push metrics to (for batch jobs).
    #[serde(default)]
    pub push_gateways: Vec<PushGatewayConfig>,
    /// The metrics as CDF time series, pushed through the datapoints queue (as
    /// python-extractor-utils' `CognitePusher`).
    #[serde(default)]
    pub cognite: Option<CogniteMetricsConfig>,
}

/// `metrics.cognite:`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CogniteMetricsConfig {
    /// Put before each series' name to make its external id (`<prefix><metric>{labels}`).
    pub external_id_prefix: String,
    /// With `asset-external-id`: the asset is created with this name when CDF does not have it.
    #[serde(default)]
    pub asset_name: Option<String>,
    /// The asset the series belong to (created with `asset-name` when given and missing).
    #[serde(default)]
    pub asset_external_id: Option<String>,
    /// The series' data set (default: `cognite.data-set`).
    #[serde(default)]
    pub data_set: Option<EitherIdConfig>,
    /// How often the values are pushed (and once more at the end).
    #[serde(default = "default_push_interval")]
    pub push_interval: Duration,
}

/// `metrics.server:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsServerConfig {
    /// The address to bind.
    #[serde(default = "default_metrics_host")]
    pub host: String,
    /// The port to bind.
    pub port: u16,
}

fn default_metrics_host() -> String {
    "0.0.0.0".to_owned()
}

/// `metrics.push-gateways[]:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PushGatewayConfig {
    /// The Pushgateway's base URL, like `http://pushgateway:9091`.
    pub host: String,
    /// The `job` label the metrics are pushed under.
    pub job_name: String,
    /// How often to push.
    #[serde(default = "default_push_interval")]
    pub push_interval: Duration,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password. Never logged or printed.
    #[serde(default)]
    pub password: Option<Secret>,
    /// After the process ends, wait this long, then delete the job's metrics from the gateway.
    #[serde(default)]
    pub clear_after: Option<Duration>,
}

fn default_push_interval() -> Duration {
    Duration::from_secs(30)
}

/// `logger:`. Without the section, the process logs at `info` to standard error (a failing
/// batch job always says why); a `logger:` section without `console:` logs nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoggerConfig {
    /// Log to standard error.
    #[serde(default)]
    pub console: Option<ConsoleLoggerConfig>,
    /// Log to a file, rotated (python-extractor-utils' `logger.file`).
    #[serde(default)]
    pub file: Option<FileLoggerConfig>,
    /// Count the log messages written, by level, in `extractor_log_messages_total{level}`
    /// (python-extractor-utils' `logger.metrics`).
    #[serde(default)]
    pub metrics: bool,
}

impl Default for LoggerConfig {
    /// No `logger:` section: `info`, as text, to standard error.
    fn default() -> Self {
        LoggerConfig {
            console: Some(ConsoleLoggerConfig::default()),
            file: None,
            metrics: false,
        }
    }
}

/// `logger.file:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileLoggerConfig {
    /// The log file; its folder is made when missing.
    pub path: String,
    /// The lowest level written to the file (apart from the console's).
    #[serde(default)]
    pub level: LogLevel,
    /// Rotated files kept (the oldest beyond are removed).
    #[serde(default = "default_retention")]
    pub retention: usize,
    /// When the file is rotated: `daily` at midnight UTC (python-extractor-utils), `hourly`,
    /// or `size` (with `max-size`).
    #[serde(default)]
    pub rotation: LogRotation,
    /// With `rotation: size`: the largest file, like `10MiB` (bytes, or `KiB`, `MiB`, `GiB`).
    #[serde(default, deserialize_with = "crate::size::deserialize_optional_size")]
    #[schemars(with = "Option<crate::size::SizeSchema>")]
    pub max_size: Option<u64>,
    /// `text` or `json`, as the console.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_retention() -> usize {
    7
}

/// `logger.file.rotation:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    /// At midnight UTC.
    #[default]
    Daily,
    /// At every hour (UTC).
    Hourly,
    /// When the file would pass `max-size`.
    Size,
}

/// `logger.console:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsoleLoggerConfig {
    /// The lowest level logged. `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: LogLevel,
    /// `text` for people, `json` for log collectors (one object per line).
    #[serde(default)]
    pub format: LogFormat,
}

/// A log level. Any letter case is accepted (`INFO` as python-extractor-utils writes it),
/// `warning` for `warn` and `critical` for `error` (python's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
        let text = String::deserialize(d)?;
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            // python's logging has CRITICAL above ERROR.
            "error" | "critical" => Ok(LogLevel::Error),
            _ => Err(serde::de::Error::unknown_variant(&text, LEVELS)),
        }
    }
}

impl LogLevel {
    /// The `tracing` directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The console log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `state-store:`: `local: {...}` or `raw: {...}` (python-extractor-utils keys).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum StateStoreConfig {
    /// A JSON file on local disk.
    Local(LocalStateStoreConfig),
    /// A table in CDF RAW.
    Raw(RawStateStoreConfig),
}

/// `state-store.local:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LocalStateStoreConfig {
    /// The JSON file's path.
    pub path: String,
    /// How often the state is saved (it is also saved after each flush and at shutdown).
    #[serde(default = "default_save_interval")]
    pub save_interval: Duration,
    /// After this many saves failed in a row, the process stops instead of running on with state
    /// it cannot keep (exit 1 unless the last save, at the stop, succeeds). Without it, failures
    /// are logged, counted and reported only.
    #[serde(default)]
    pub max_failures: Option<u32>,
}

/// `state-store.raw:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawStateStoreConfig {
    /// The RAW database.
    pub database: String,
    /// The RAW table.
    pub table: String,
    /// How often the state is uploaded.
    #[serde(default = "default_save_interval")]
    pub upload_interval: Duration,
    /// After this many uploads failed in a row, the process stops (as `local.max-failures`).
    #[serde(default)]
    pub max_failures: Option<u32>,
}

fn default_save_interval() -> Duration {
    Duration::from_secs(30)
}

/// `tasks[]:`: one extractor task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskConfig {
    /// A unique name: letters, digits, `_`, `-` and `.`. It labels the task's metrics.
    pub name: Value<String>,
    /// The registered extractor type that runs this task.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the task runs.
    pub schedule: Schedule,
    /// What happens when a run is due while the previous one still runs.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// With `overlap: allow`, how many runs may run at once.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// A run that takes longer is cancelled and counted as `timeout`.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// A missed run is caught up only if it can start within this long after its planned time.
    #[serde(default)]
    pub starting_deadline: Option<Duration>,
    /// A random delay of up to this long before each run.
    #[serde(default)]
    pub jitter: Option<Duration>,
    /// After `timeout` cancels a run, how long it gets to stop before it is aborted.
    #[serde(default = "default_timeout_grace")]
    pub timeout_grace: Duration,
    /// Retry a run that fails with a transient error.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// The extractor's own settings, validated by the extractor type.
    #[serde(default)]
    pub config: ExtractorConfigBlock,
}

fn default_timeout_grace() -> Duration {
    Duration::from_secs(10)
}

/// `tasks[].retry:`: retries of transient failures within one run.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The delay before the first retry; it doubles (with full jitter) up to `max-backoff`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Duration,
    /// The largest delay between attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}

fn default_max_attempts() -> u32 {
    3
}

fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

/// A task's `config:` block, kept as a tree (with positions) for its extractor to read.
#[derive(Debug, Default)]
pub struct ExtractorConfigBlock {
    pub(crate) node: Option<Node>,
    pub(crate) task_index: usize,
    /// Where the task itself starts: errors about a missing block point here.
    pub(crate) task_mark: Option<super::error::Mark>,
    /// Where the task's `type` value is.
    pub(crate) type_mark: Option<super::error::Mark>,
    pub(crate) file: Option<std::path::PathBuf>,
}

impl ExtractorConfigBlock {
    /// The block as written, if any.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

impl<'de> Deserialize<'de> for ExtractorConfigBlock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The tree itself is attached after deserialization (see `config::load`), which keeps
        // line and column for the extractor's own errors.
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(ExtractorConfigBlock::default())
    }
}

impl JsonSchema for ExtractorConfigBlock {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExtractorConfig".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Settings of the task's extractor type; each type documents its own.",
            "type": "object"
        })
    }
}

/// `tasks[].schedule:` (`{type: interval, expression: 30s}`), parsed when the config loads:
/// the expression, the cron fields and the time zone are checked then, once.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", rename_all_fields = "kebab-case")]
#[schemars(tag = "type")]
pub enum Schedule {
    /// Every `expression` (a duration); the first run at start unless `run-on-start: false`.
    Interval {
        /// Time between planned runs, like `30s`.
        #[serde(rename = "expression")]
        every: Value<Duration>,
        /// Run once right at start.
        #[serde(default = "yes")]
        run_on_start: bool,
    },
    /// On a cron expression, read in a time zone (DST by the cron spec).
    Cron {
        /// 5 fields (`*/5 * * * *`) or 6 with seconds first (`0 */5 * * * *`).
        #[serde(rename = "expression", deserialize_with = "super::validate::deserialize_cron")]
        #[schemars(with = "String")]
        cron: Box<croner::Cron>,
        /// The IANA time zone the expression is read in (default UTC).
        #[serde(default = "utc", deserialize_with = "super::validate::deserialize_time_zone")]
        #[schemars(with = "String")]
        timezone: jiff::tz::TimeZone,
    },
    /// Runs all the time; restarted with backoff when it ends.
    Continuous,
    /// Once, before every other task starts.
    Startup,
}

fn yes() -> bool {
    true
}

fn utc() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::UTC
}

/// What to do when a run is due while the previous one still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OverlapPolicy {
    /// Skip the new run and count it.
    #[default]
    Forbid,
    /// Run both, up to `max-concurrent`.
    Allow,
    /// Cancel the running one and start the new one.
    Replace,
}
