//! The plug-in point: the [`Extractor`] trait, what a run receives ([`RunContext`]), and the
//! [`Registry`] that maps a YAML `type` to a constructor (which gets a [`Setup`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::cdf::CdfClient;
use crate::config::{ConfigErrors, TaskConfig};
use crate::metrics::MetricsRegistry;
use crate::queues::Upload;
pub use crate::task_error::{TaskError, TaskErrorKind};

/// One kind of extraction. The scheduler calls [`run`](Extractor::run) for every run of every
/// task of this type; one value serves all runs of its task, so keep per-run state local.
///
/// Write `run` as an `async fn`; its future must be `Send` (it runs on the multi-threaded
/// runtime), so hold no `MutexGuard` or `Rc` across an `.await`.
pub trait Extractor: Send + Sync + 'static {
    /// Does one run. Return when done, or soon after [`RunContext::cancelled`] fires.
    fn run(&self, ctx: RunContext) -> impl Future<Output = Result<(), TaskError>> + Send;

    /// For `continuous` tasks: whether a run ends by itself, so that `run --once` may run it.
    fn finishes_by_itself(&self) -> bool {
        false
    }
}

/// The future of one run, boxed.
pub(crate) type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send + 'a>>;

/// [`Extractor`] as an object (its `run` returns `impl Future`, so `dyn Extractor` cannot
/// exist): what the registry builds and the scheduler holds. Every `Extractor` is one.
pub trait DynExtractor: Send + Sync + 'static {
    /// [`Extractor::run`], boxed.
    fn run_boxed(&self, ctx: RunContext) -> RunFuture<'_>;

    /// [`Extractor::finishes_by_itself`].
    fn finishes_by_itself(&self) -> bool;
}

impl<E: Extractor> DynExtractor for E {
    fn run_boxed(&self, ctx: RunContext) -> RunFuture<'_> {
        Box::pin(self.run(ctx))
    }

    fn finishes_by_itself(&self) -> bool {
        Extractor::finishes_by_itself(self)
    }
}

/// What a run gets from the runtime: its task's name, its cancellation, its [`Upload`] handle
/// (items, watermarks), the [`CdfClient`], and the network settings for its own HTTP clients.
/// Cheap to clone.
#[derive(Clone)]
pub struct RunContext {
    pub(crate) task: Arc<str>,
    pub(crate) cancel: CancellationToken,
    pub(crate) attempt: u32,
    /// The task's series, for [`RunContext::records_queued`]; `None` outside the scheduler.
    pub(crate) series: Option<Arc<crate::metrics::TaskSeries>>,
    /// The process's CDF client (dry-run: it writes NDJSON instead of sending).
    pub(crate) cdf: CdfClient,
    /// The task's handle on the queues and its state.
    pub(crate) upload: Upload,
    /// The CA roots and proxy of `cognite.connection`.
    pub(crate) network: crate::net::Network,
}

impl RunContext {
    /// The task's handle on the upload queues and its state: queue items, read and move its
    /// watermarks, wait until CDF settled them. See [`Upload`].
    pub fn upload(&self) -> &Upload {
        &self.upload
    }

    /// The process's CDF client, for requests that are not queued items (file contents, a
    /// lookup). In dry-run it writes each request as an NDJSON line instead of sending it.
    pub fn cdf(&self) -> &CdfClient {
        &self.cdf
    }

    /// The CA roots and proxy of `cognite.connection`: build every outbound HTTP client from
    /// [`Network::client_builder`](crate::net::Network::client_builder), so that a private CA
    /// and a corporate proxy apply to the extractor's own requests too.
    pub fn network(&self) -> &crate::net::Network {
        &self.network
    }

    /// The task's name (from `tasks[].name`).
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Fires when the run should stop: timeout, `overlap: replace`, or shutdown.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the run should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The cancellation token itself, to hand to child futures.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// 1 for the first attempt of a run, 2 for its first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Counts `count` records this run queued for CDF:
    /// `extractor_task_records_total{task, result="queued"}`.
    pub fn records_queued(&self, count: u64) {
        if let Some(s) = &self.series {
            s.records(false, count);
        }
    }

    /// Counts `count` records this run could not take (malformed, unmappable):
    /// `extractor_task_records_total{task, result="rejected"}`.
    pub fn records_rejected(&self, count: u64) {
        if let Some(s) = &self.series {
            s.records(true, count);
        }
    }
}

/// Calling an extractor outside the scheduler: the test helpers of the `testing` feature.
#[cfg(feature = "testing")]
impl RunContext {
    /// A context for `task` whose items go to `queues` (and whose CDF client is theirs), with
    /// `state` as the state store, if any.
    pub fn new(
        task: &str,
        cancel: CancellationToken,
        queues: crate::queues::Queues,
        state: Option<crate::state::StateStore>,
    ) -> Self {
        let ledger = crate::queues::ledger::Ledger::new(task.into(), state, None);
        RunContext {
            task: task.into(),
            cancel,
            attempt: 1,
            series: None,
            cdf: queues.client().clone(),
            upload: Upload::new(queues, ledger),
            network: crate::net::Network::default(),
        }
    }

    /// The process's upload queues.
    pub fn queues(&self) -> &crate::queues::Queues {
        self.upload.queues()
    }

    /// The process's state store (`state-store:`), if configured.
    pub fn state(&self) -> Option<&crate::state::StateStore> {
        self.upload.state()
    }
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("task", &self.task)
            .field("is_cancelled", &self.is_cancelled())
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// What an extractor's constructor gets besides its config: the task's name, and a metrics
/// registry for the extractor's own metrics.
///
/// Every metric registered in [`metrics`](Setup::metrics) carries the label `task="<name>"`
/// and is served on `/metrics` and pushed with the runtime's, so two tasks of one type
/// register the same metric names without a clash. A constructor runs once per task per
/// process (and once more, with a registry that is thrown away, for `check-config`).
///
/// # Examples
///
/// ```
/// use extractor_runtime::prometheus::IntCounter;
/// use extractor_runtime::{Extractor, Registry, RunContext, TaskError};
///
/// struct Greeter {
///     greetings: IntCounter,
/// }
///
/// impl Extractor for Greeter {
///     async fn run(&self, _ctx: RunContext) -> Result<(), TaskError> {
///         self.greetings.inc();
///         Ok(())
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.register_with_setup("greeter", |_: serde_json::Value, setup| {
///     let greetings = setup.register(IntCounter::new("greeter_greetings_total", "Greetings said.")?)?;
///     Ok(Greeter { greetings })
/// });
/// ```
#[derive(Debug)]
pub struct Setup<'a> {
    task: &'a str,
    process: &'a MetricsRegistry,
    /// The task's registry, made when the constructor first asks for it: a task whose
    /// extractor has no metrics of its own costs the scrapes nothing.
    metrics: std::cell::OnceCell<prometheus::Registry>,
}

impl Setup<'_> {
    /// The task's name (from `tasks[].name`).
    pub fn task(&self) -> &str {
        self.task
    }

    /// The registry for the extractor's own metrics: each gets the label `task="<name>"`.
    pub fn metrics(&self) -> &prometheus::Registry {
        self.metrics
            .get_or_init(|| self.process.for_extractor(self.task))
    }

    /// Registers `metric` in [`metrics`](Setup::metrics) and hands it back; a name already
    /// taken is a rejection of the task.
    pub fn register<M>(&self, metric: M) -> Result<M, Rejection>
    where
        M: prometheus::core::Collector + Clone + 'static,
    {
        self.metrics().register(Box::new(metric.clone()))?;
        Ok(metric)
    }
}

type Factory = Box<dyn Fn(&TaskConfig, &Setup<'_>) -> Result<Built, ConfigErrors> + Send + Sync>;

/// A task's extractor as the registry built it, with what a reload needs: its typed config (to
/// compare with the running one) and its own metrics (installed when the task is applied).
pub(crate) struct Built {
    /// The extractor.
    pub(crate) extractor: Arc<dyn DynExtractor>,
    config: Box<dyn ConfigEq>,
    /// The extractor's own metrics registry, if its constructor made one.
    pub(crate) metrics: Option<prometheus::Registry>,
}

impl Built {
    /// Whether `self` and `other` were built from equal `config:` blocks (by the config type's
    /// `PartialEq`; configs of two types are never equal).
    pub(crate) fn same_config(&self, other: &Built) -> bool {
        self.config.eq_dyn(other.config.as_any())
    }
}

/// A config type's `PartialEq`, behind `dyn`.
trait ConfigEq: Send + Sync {
    fn as_any(&self) -> &dyn std::any::Any;
    fn eq_dyn(&self, other: &dyn std::any::Any) -> bool;
}

impl<C: PartialEq + Send + Sync + 'static> ConfigEq for C {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eq_dyn(&self, other: &dyn std::any::Any) -> bool {
        other.downcast_ref::<C>().is_some_and(|o| o == self)
    }
}
type SchemaFn = fn() -> serde_json::Value;

/// Why an extractor's constructor rejected its `config:` block: one or more problems, each at a
/// key path below `tasks[N].config` (`""` for the block itself, `destination.key`,
/// `columns[2].name`), reported with that key's line and column.
///
/// A `String` or `&str` converts into a rejection of the whole block, so `Err(format!(..))?`
/// works in a constructor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejection {
    problems: Vec<(String, String)>,
}

impl Rejection {
    /// No problems yet; add them with [`push`](Rejection::push).
    pub fn new() -> Self {
        Rejection::default()
    }

    /// One problem at `path` (relative to the task's `config:` block).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut r = Rejection::new();
        r.push(path, message);
        r
    }

    /// Adds a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push((path.into(), message.into()));
    }

    /// Adds every problem of `other`, each below `prefix` (a key of the block).
    pub fn extend_under(&mut self, prefix: &str, other: Rejection) {
        for (path, message) in other.problems {
            let path = match (prefix.is_empty(), path.is_empty(), path.starts_with('[')) {
                (true, _, _) => path,
                (false, true, _) => prefix.to_owned(),
                (false, false, true) => format!("{prefix}{path}"),
                (false, false, false) => format!("{prefix}.{path}"),
            };
            self.problems.push((path, message));
        }
    }

    /// Whether there is no problem.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems: (path below `config:`, message).
    pub fn problems(&self) -> &[(String, String)] {
        &self.problems
    }

    /// `, did you mean `x`?` when one of `known` is close to `got`, else `; expected one of
    /// ...`: the end of a message about an unknown name.
    ///
    /// ```
    /// use extractor_runtime::Rejection;
    /// assert_eq!(Rejection::suggest("tempreature", &["temperature", "pressure"]), ", did you mean `temperature`?");
    /// ```
    pub fn suggest(got: &str, known: &[&str]) -> String {
        crate::config::suggest(got, known)
    }
}

impl From<String> for Rejection {
    fn from(message: String) -> Self {
        Rejection::at("", message)
    }
}

/// A metric that cannot be made or registered ([`Setup::register`]) rejects the task.
impl From<prometheus::Error> for Rejection {
    fn from(e: prometheus::Error) -> Self {
        Rejection::at("", format!("cannot register the extractor's metric: {e}"))
    }
}

impl From<&str> for Rejection {
    fn from(message: &str) -> Self {
        Rejection::at("", message)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, message)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if path.is_empty() {
                f.write_str(message)?;
            } else {
                write!(f, "{path}: {message}")?;
            }
        }
        Ok(())
    }
}

/// Maps a task's `type` to a constructor that reads and checks its `config:` block.
///
/// Constructors run at config-check time (`check-config` and startup), so they must only read
/// and validate settings: no network I/O.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
    schemas: BTreeMap<String, SchemaFn>,
    versions: Vec<u32>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Declares the config versions (`version:`) this program reads, `[1]` unless declared: a
    /// file with another version is refused naming these, and a file without one is read
    /// (python-extractor-utils' rule). Read [`Config::version`](crate::config::Config::version)
    /// to tell them apart.
    ///
    /// ```
    /// let mut registry = extractor_runtime::Registry::new();
    /// registry.config_versions(&[1, 2]);
    /// assert_eq!(registry.versions(), &[1, 2]);
    /// ```
    pub fn config_versions(&mut self, versions: &[u32]) -> &mut Self {
        self.versions = versions.to_vec();
        self
    }

    /// The config versions this program reads (`[1]` unless declared).
    pub fn versions(&self) -> &[u32] {
        if self.versions.is_empty() {
            &[1]
        } else {
            &self.versions
        }
    }

    /// Registers `type_name`: its constructor and its config type, in one call. `build`
    /// receives the task's `config:` block deserialized as `C` (so its errors carry
    /// `tasks[N].config.key` paths and line:column) and may reject values with a [`Rejection`],
    /// each problem reported at `tasks[N].config.<path>`. `C`'s JSON Schema becomes the block's
    /// schema in [`json_schema`](Registry::json_schema) (`serde_json::Value`: free-form).
    ///
    /// On a config reload, a task whose `config:` block is equal by `C`'s `PartialEq` (and
    /// whose other keys are unchanged) keeps running untouched; otherwise it is rebuilt.
    pub fn register<C, E, F>(&mut self, type_name: &str, build: F)
    where
        C: DeserializeOwned + schemars::JsonSchema + Clone + PartialEq + Send + Sync + 'static,
        E: Extractor,
        F: Fn(C) -> Result<E, Rejection> + Send + Sync + 'static,
    {
        self.register_with_setup(type_name, move |config: C, _: &Setup<'_>| build(config));
    }

    /// [`register`](Registry::register), for a constructor that also gets the task's
    /// [`Setup`]: its name, and the registry for the extractor's own metrics.
    pub fn register_with_setup<C, E, F>(&mut self, type_name: &str, build: F)
    where
        C: DeserializeOwned + schemars::JsonSchema + Clone + PartialEq + Send + Sync + 'static,
        E: Extractor,
        F: Fn(C, &Setup<'_>) -> Result<E, Rejection> + Send + Sync + 'static,
    {
        fn schema<C: schemars::JsonSchema>() -> serde_json::Value {
            serde_json::to_value(schemars::schema_for!(C)).expect("a schema is valid JSON")
        }
        self.schemas.insert(type_name.to_owned(), schema::<C>);
        let factory: Factory = Box::new(move |task: &TaskConfig, setup: &Setup<'_>| {
            let config: C = task.config.parse()?;
            build(config.clone(), setup)
                .map(|e| Built {
                    extractor: Arc::new(e) as Arc<dyn DynExtractor>,
                    config: Box::new(config),
                    metrics: None,
                })
                .map_err(|rejection| {
                    ConfigErrors(
                        rejection
                            .problems
                            .into_iter()
                            .map(|(path, message)| task.config.error_at(&path, message))
                            .collect(),
                    )
                })
        });
        self.factories.insert(type_name.to_owned(), factory);
    }

    /// The config file's JSON Schema, with the `config:` block of every registered type.
    pub fn json_schema(&self) -> serde_json::Value {
        let schemas: Vec<(String, serde_json::Value)> = self
            .schemas
            .iter()
            .map(|(kind, schema)| (kind.clone(), schema()))
            .collect();
        crate::config::Config::json_schema_with(&schemas)
    }

    /// Whether `type_name` is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        self.factories.contains_key(type_name)
    }

    /// The registered type names, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds the extractor of one task, checking its type and its `config:` block; its own
    /// metrics go to `metrics`, labelled with the task.
    ///
    /// Its metrics registry is not installed: see [`Built::metrics`].
    pub(crate) fn build(
        &self,
        index: usize,
        task: &TaskConfig,
        metrics: &MetricsRegistry,
    ) -> Result<Built, ConfigErrors> {
        match self.factories.get(&task.kind) {
            Some(factory) => {
                let setup = Setup {
                    task: &task.name,
                    process: metrics,
                    metrics: std::cell::OnceCell::new(),
                };
                let mut built = factory(task, &setup)?;
                built.metrics = setup.metrics.into_inner();
                Ok(built)
            }
            None => {
                let known: Vec<&str> = self.types().collect();
                let hint = match crate::config::suggest(&task.kind, &known) {
                    s if !s.is_empty() => s,
                    _ if known.is_empty() => "; no extractor types are registered".to_owned(),
                    s => s,
                };
                Err(ConfigErrors(vec![task.type_error(
                    index,
                    format!("unknown extractor type `{}`{hint}", task.kind),
                )]))
            }
        }
    }

    /// Builds every task's extractor, gathering all errors (this repository's tests and
    /// benches; the runtime builds its own way).
    #[cfg(feature = "testing")]
    pub fn build_all(
        &self,
        tasks: &[TaskConfig],
        metrics: &MetricsRegistry,
    ) -> Result<Vec<Arc<dyn DynExtractor>>, ConfigErrors> {
        let mut built = Vec::new();
        let mut errors: Vec<crate::config::ConfigError> = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            match self.build(i, task, metrics) {
                Ok(e) => {
                    metrics.install_extractor(&task.name, e.metrics);
                    built.push(e.extractor);
                }
                Err(ConfigErrors(mut e)) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(built)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}
