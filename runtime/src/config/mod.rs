//! The YAML config: read, `${VAR}`-substitute, type-check and validate, with errors that say
//! where (`file:line:column: key.path: message`).
//!
//! # Examples
//!
//! ```
//! use extractor_runtime::config::{Config, LoadOptions};
//!
//! let yaml = r#"
//! version: 1
//! cognite:
//!   project: demo
//!   dry-run: true
//! tasks:
//!   - name: every-minute
//!     type: csv
//!     schedule: {type: interval, expression: 1m}
//! "#;
//! let env = |_: &str| None;
//! let config = Config::from_yaml(yaml, None, &env, &LoadOptions::default()).unwrap();
//! assert_eq!(config.tasks[0].name.as_str(), "every-minute");
//!
//! let err = Config::from_yaml("version: 1\ncognite: {projct: demo}\n", None, &env, &LoadOptions::default())
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "2:11: cognite.projct: unknown key `projct`, did you mean `project`?");
//! ```

mod duration;
mod env;
mod error;
mod model;
mod node;
mod path;
mod suggest;
mod validate;
mod value;
mod vault;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use duration::{Duration, parse_duration};
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, Mark};
pub use model::Config;
pub use model::{
    AssertionAlgorithm, AuthMethod, AzureKeyVaultConfig, BufferConfig, CertificateConfig, CogniteMetricsConfig, CogniteConfig, ConfigKind,
    ConnectionConfig, ConsoleLoggerConfig, DEFAULT_AUTHORITY, ExtractionPipelineConfig,
    EitherId, EitherIdConfig, ExtractorConfigBlock, FileLoggerConfig, Flow, HighAvailabilityConfig, IdpAuthenticationConfig,
    KubernetesLeaseConfig, LeaseBackendKind, RawLeaseConfig, RedisLeaseConfig,
    IntegrationConfig, KeyVaultAuthentication, LogRotation,
    LocalStateStoreConfig, LogFormat, LogLevel, LoggerConfig, MetricsConfig, MetricsServerConfig,
    OverlapPolicy, PushGatewayConfig, RawStateStoreConfig, ReloadConfig, RemoteConfigFile,
    RemoteSource, RetryConfig, Schedule, StateStoreConfig, TaskConfig, UploadQueueConfig, WhenFull,
};
pub use node::Node;
pub use validate::parse_cron;
pub use value::Value;

pub(crate) use suggest::did_you_mean as suggest;
pub use suggest::did_you_mean;

use node::NodeDeserializer;
use path::KeyPath;

/// The environment variable whose mere presence makes every command refuse to start.
///
/// Older Cognite SDKs let it silently override the token-based setup, so an extractor that
/// starts with it set may not authenticate the way its config says.
pub const API_KEY_VARIABLE: &str = "COGNITE_API_KEY";

/// Fails when `COGNITE_API_KEY` is present in the environment, even empty.
pub fn check_api_key(lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if lookup(API_KEY_VARIABLE).is_some() {
        return Err(ConfigError::new(
            ConfigErrorKind::ApiKeyInEnvironment,
            format!(
                "{API_KEY_VARIABLE} is set in the environment; API keys are not supported and older \
                 Cognite SDKs let it override the token setup of this config. Unset it \
                 (`unset {API_KEY_VARIABLE}`) and authenticate with `cognite.idp-authentication`"
            ),
        ));
    }
    Ok(())
}

/// Settings that change how a config is loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Treat the config as `cognite.dry-run: true` (the `--dry-run` flag).
    pub force_dry_run: bool,
    /// The config versions the program reads (`version:`); empty means `[1]`. A custom
    /// extractor declares its own with [`Registry::config_versions`](crate::Registry::config_versions).
    pub versions: Vec<u32>,
}

impl LoadOptions {
    /// The versions read: [`versions`](Self::versions), or `[1]`.
    pub fn versions(&self) -> &[u32] {
        if self.versions.is_empty() {
            &[1]
        } else {
            &self.versions
        }
    }
}

/// The process environment, as a config's variables are looked up.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

impl Config {
    /// Loads a config file, substituting from the process environment.
    ///
    /// Refuses first, before reading anything, when `COGNITE_API_KEY` is set.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Config, ConfigErrors> {
        check_api_key(&process_env)?;
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::Io,
                format!("cannot read the config file: {e}"),
            )
            .in_file(Some(path.to_owned()))
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            // Where the first byte that is not UTF-8 is, as line:column.
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[start..]).chars().count() + 1;
            ConfigError::new(
                ConfigErrorKind::Syntax,
                "the config file is not UTF-8 text (save it as UTF-8)",
            )
            .at(
                Some(Mark {
                    line: line as u32,
                    column: column as u32,
                }),
                "",
            )
            .in_file(Some(path.to_owned()))
        })?;
        Config::from_yaml(&text, Some(path), &process_env, options)
    }

    /// Loads a config from text. `file` names it in errors; `env` looks variables up.
    ///
    /// A `type: remote` document gives the config of its `cognite:` section alone (no tasks),
    /// with [`remote`](Config::remote) set: what fetching the real one needs.
    pub fn from_yaml(
        text: &str,
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        options: &LoadOptions,
    ) -> Result<Config, ConfigErrors> {
        let in_file = in_file_of(file);
        check_api_key(env).map_err(|e| in_file(vec![e]))?;
        let (tree, warnings) = parse_substituted(text, env).map_err(&in_file)?;
        let mut config = if tree.get("type").and_then(Node::as_text) == Some("remote") {
            remote_bootstrap(tree, file, options, warnings)?
        } else {
            Config::from_tree(tree, file, options, warnings)?
        };
        config.source_hash = crate::fnv::hash(text.as_bytes());
        Ok(config)
    }

    /// What loading it found worth saying but not refusing (a secret file every user may read),
    /// each with its file:line:column and key path: print them once logging is set up.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Where a `type: remote` file says the config is, if this config came from one.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// The config of a fetched remote document `text`, named `name` in errors (`extraction
    /// pipeline `x` revision 7`), into which `remote`'s local `cognite:` section is injected
    /// (replacing any there, as python-extractor-utils does) and its `reload:`, when given.
    pub fn from_remote(
        text: &str,
        name: &str,
        remote: &Remote,
        env: &dyn Fn(&str) -> Option<String>,
        options: &LoadOptions,
    ) -> Result<Config, ConfigErrors> {
        let file = PathBuf::from(name);
        let in_file = in_file_of(Some(&file));
        check_api_key(env).map_err(|e| in_file(vec![e]))?;
        let (mut tree, warnings) = parse_substituted(text, env).map_err(&in_file)?;
        if let Some(kind) = tree.get("type").filter(|t| t.as_text() != Some("local")) {
            return Err(in_file(vec![
                ConfigError::new(
                    ConfigErrorKind::Invalid,
                    "a config fetched from CDF must be the config itself, not another `type: remote` file",
                )
                .at(Some(kind.mark()), "type"),
            ]));
        }
        let node::NodeKind::Map(entries) = &mut tree.kind else {
            return Err(in_file(vec![
                ConfigError::new(ConfigErrorKind::Schema, "the config must be a mapping")
                    .at(Some(tree.mark()), ""),
            ]));
        };
        let mut set = |key: &str, value: &Node| {
            entries.retain(|(k, _)| k.as_text() != Some(key));
            entries.push((Node::text(key, value.mark()), value.clone()));
        };
        set("cognite", &remote.cognite);
        if let Some(reload) = &remote.reload {
            set("reload", reload);
        }
        let mut config = Config::from_tree(tree, Some(&file), options, warnings)?;
        config.remote = Some(remote.clone());
        Ok(config)
    }

    /// A config from a document already parsed and substituted, with the warnings found so far.
    fn from_tree(
        tree: Node,
        file: Option<&Path>,
        options: &LoadOptions,
        mut warnings: Vec<ConfigError>,
    ) -> Result<Config, ConfigErrors> {
        let in_file = in_file_of(file);
        let file: Option<PathBuf> = file.map(Path::to_owned);
        let mut config: Config = deserialize_node(&tree, &KeyPath::Root)
            .map_err(|first| in_file(every_schema_error::<Config>(tree.clone(), &KeyPath::Root, first)))?;
        if options.force_dry_run {
            config.cognite.dry_run = true;
        }

        let (problems, mut found) = validate::validate(&mut config, &tree, options.versions());
        if !problems.is_empty() {
            return Err(in_file(problems));
        }
        warnings.append(&mut found);
        config.warnings = in_file(warnings).0.iter().map(ToString::to_string).collect();

        for (index, task) in config.tasks.iter_mut().enumerate() {
            let entry = tree.get("tasks").and_then(|t| t.index(index));
            task.config = ExtractorConfigBlock {
                node: entry
                    .and_then(|t| t.get("config"))
                    .filter(|n| !n.is_null())
                    .cloned(),
                task_index: index,
                task_mark: entry.map(Node::mark),
                type_mark: entry.and_then(|t| t.get("type")).map(Node::mark),
                file: file.clone(),
            };
        }
        config.tree = Some(std::sync::Arc::new(tree));
        Ok(config)
    }

    /// The section `key` as read (after substitution), if it was given.
    pub(crate) fn section(&self, key: &str) -> Option<&Node> {
        self.tree.as_deref().and_then(|t| t.get(key))
    }

    /// Whether both configs read the same, every value substituted (positions aside).
    pub(crate) fn same_document(&self, other: &Config) -> bool {
        match (self.tree.as_deref(), other.tree.as_deref()) {
            (Some(a), Some(b)) => a.same_as(b, None),
            _ => false,
        }
    }

    /// Whether section `key` reads the same in both configs (positions aside).
    pub(crate) fn same_section(&self, other: &Config, key: &str) -> bool {
        match (self.section(key), other.section(key)) {
            (Some(a), Some(b)) => a.same_as(b, None),
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether the task at `index` here and the one at `other_index` in `other` read the same,
    /// their `config:` blocks aside (the extractor's config type compares those).
    pub(crate) fn same_task_settings(&self, index: usize, other: &Config, other_index: usize) -> bool {
        fn task(c: &Config, i: usize) -> Option<&Node> {
            c.section("tasks").and_then(|t| t.index(i))
        }
        match (task(self, index), task(other, other_index)) {
            (Some(a), Some(b)) => a.same_as(b, Some("config")),
            _ => false,
        }
    }

    /// The JSON Schema of the config file, for editors; `tasks[].config` is free-form (see
    /// [`Registry::json_schema`](crate::extractor::Registry::json_schema) for one that knows the
    /// registered extractor types).
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).expect("a schema is valid JSON")
    }

    /// [`json_schema`](Config::json_schema) with, for each `(type, schema)`, the rule that a task
    /// of that `type` has a `config:` block of that schema (`if`/`then` on `tasks[]`). Each
    /// schema's own `$defs` join the document's.
    pub fn json_schema_with(extractors: &[(String, serde_json::Value)]) -> serde_json::Value {
        let mut schema = Config::json_schema();
        let mut rules = Vec::new();
        for (kind, extractor) in extractors {
            let mut extractor = extractor.clone();
            if let Some(serde_json::Value::Object(defs)) =
                extractor.as_object_mut().and_then(|o| o.remove("$defs"))
            {
                for (name, def) in defs {
                    schema["$defs"][name] = def;
                }
            }
            if let Some(o) = extractor.as_object_mut() {
                o.remove("$schema");
            }
            rules.push(serde_json::json!({
                "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"properties": {"config": extractor}},
            }));
        }
        if !rules.is_empty() {
            schema["$defs"]["TaskConfig"]["allOf"] = serde_json::Value::Array(rules);
        }
        schema
    }
}

impl ExtractorConfigBlock {
    /// Deserializes the block into an extractor's own config type; errors carry
    /// `tasks[N].config.…` key paths and the line and column in the file. A missing block
    /// deserializes from an empty mapping, so a type whose fields all have defaults accepts it.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigErrors> {
        let empty = Node::empty_map(self.task_mark.unwrap_or(Mark { line: 1, column: 1 }));
        let node = self.node.as_ref().unwrap_or(&empty);
        let tasks = KeyPath::Key(&KeyPath::Root, "tasks");
        let task = KeyPath::Index(&tasks, self.task_index);
        let path = KeyPath::Key(&task, "config");
        deserialize_node(node, &path).map_err(|first| {
            ConfigErrors(
                every_schema_error::<T>(node.clone(), &path, first)
                    .into_iter()
                    .map(|e| e.in_file(self.file.clone()))
                    .collect(),
            )
        })
    }
}

impl ExtractorConfigBlock {
    /// An error about the block as a whole (a value the extractor rejects), at
    /// `tasks[N].config`.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        let mark = self.node.as_ref().map(Node::mark).or(self.task_mark);
        ConfigError::new(ConfigErrorKind::Invalid, message)
            .at(mark, format!("tasks[{}].config", self.task_index))
            .in_file(self.file.clone())
    }

    /// An error about a key of the block, at `tasks[N].config.<path>` (`path` as
    /// `destination.key` or `columns[2]`; `""` is the block itself), with the line and column
    /// of the deepest part of `path` written in the file.
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> ConfigError {
        if path.is_empty() {
            return self.error(message);
        }
        let mut mark = self.node.as_ref().map(Node::mark).or(self.task_mark);
        let mut node = self.node.as_ref();
        for segment in path.split('.') {
            let (key, indexes) = match segment.find('[') {
                Some(i) => segment.split_at(i),
                None => (segment, ""),
            };
            if !key.is_empty() {
                node = node.and_then(|n| n.get(key));
            }
            for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
                node = node.and_then(|n| index.parse().ok().and_then(|i| n.index(i)));
            }
            if let Some(n) = node {
                mark = Some(n.mark());
            }
        }
        ConfigError::new(ConfigErrorKind::Invalid, message)
            .at(mark, format!("tasks[{}].config.{path}", self.task_index))
            .in_file(self.file.clone())
    }
}

impl TaskConfig {
    /// An error about the task's `type`, at `tasks[N].type`.
    pub fn type_error(&self, index: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::new(ConfigErrorKind::Invalid, message)
            .at(self.config.type_mark, format!("tasks[{index}].type"))
            .in_file(self.config.file.clone())
    }
}

/// Where a `type: remote` file points: the fetch's settings and the local `cognite:` section
/// that is injected into every fetched document.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `extraction-pipeline` or `integration`.
    pub source: RemoteSource,
    /// The external id of the pipeline or integration whose config is fetched.
    pub external_id: String,
    /// Where the last good fetched config is kept.
    pub buffer_file: PathBuf,
    /// The local file.
    pub file: Option<PathBuf>,
    cognite: Node,
    reload: Option<Node>,
}

/// Errors of `file` named by it.
fn in_file_of(file: Option<&Path>) -> impl Fn(Vec<ConfigError>) -> ConfigErrors + use<> {
    let file = file.map(Path::to_owned);
    move |errors: Vec<ConfigError>| {
        ConfigErrors(errors.into_iter().map(|e| e.in_file(file.clone())).collect())
    }
}

/// Parses `text` and substitutes `${VAR}`s.
fn parse_substituted(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Node, Vec<ConfigError>), Vec<ConfigError>> {
    let mut tree = Node::parse(text).map_err(|e| {
        let mark = e.location().map(|l| Mark {
            line: l.line() as u32,
            column: l.column() as u32,
        });
        let message = plain_yaml_message(&strip_location_prefix(&e.to_string()));
        vec![ConfigError::new(ConfigErrorKind::Syntax, format!("invalid YAML: {message}")).at(mark, "")]
    })?;
    if tree.is_null() {
        return Err(vec![
            ConfigError::new(ConfigErrorKind::Schema, "the config file is empty")
                .at(Some(tree.mark()), ""),
        ]);
    }
    let mut errors = hyphenate(&mut tree);
    let (mut env_errors, warnings) = env::substitute(&mut tree, &KeyPath::Root, env);
    errors.append(&mut env_errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    // `!keyvault` values last: the `azure-keyvault:` section they need is substituted now.
    let errors = vault::resolve(&mut tree, env);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((tree, warnings))
}

/// The sections whose keys python-extractor-utils also reads with underscores
/// (`token_url`, `extraction_pipeline`): in them, and at the top, `a_b` is read as `a-b`.
/// (Not in `tasks:`, whose extractor blocks may hold free-form names.)
const PYTHON_SECTIONS: [&str; 8] = [
    "azure-keyvault",
    "key-vault",
    "cognite",
    "logger",
    "metrics",
    "state-store",
    "upload-queue",
    "reload",
];

/// Reads underscore spellings of keys as their hyphen-case names, as python-extractor-utils
/// does; a mapping that gives both spellings of one key is an error at the second.
fn hyphenate(tree: &mut Node) -> Vec<ConfigError> {
    fn rename(map: &mut Node, path: &str, deep: bool, errors: &mut Vec<ConfigError>) {
        let node::NodeKind::Map(entries) = &mut map.kind else {
            return;
        };
        let mut seen: Vec<String> = Vec::with_capacity(entries.len());
        for (key, value) in entries.iter_mut() {
            let Some(text) = key.as_text().map(str::to_owned) else {
                continue;
            };
            let hyphenated = text.replace('_', "-");
            if seen.contains(&hyphenated) {
                let at = if path.is_empty() { hyphenated.clone() } else { format!("{path}.{hyphenated}") };
                errors.push(
                    ConfigError::new(
                        ConfigErrorKind::Schema,
                        format!("`{hyphenated}` is given twice (as `{hyphenated}` and with underscores): write it once"),
                    )
                    .at(Some(key.mark()), at),
                );
                continue;
            }
            seen.push(hyphenated.clone());
            if hyphenated != text {
                *key = Node::text(&hyphenated, key.mark());
            }
            if deep {
                let child = if path.is_empty() { hyphenated.clone() } else { format!("{path}.{hyphenated}") };
                rename(value, &child, true, errors);
                if let node::NodeKind::Seq(items) = &mut value.kind {
                    for item in items {
                        rename(item, &child, true, errors);
                    }
                }
            }
        }
    }
    let mut errors = Vec::new();
    rename(tree, "", false, &mut errors);
    if let node::NodeKind::Map(entries) = &mut tree.kind {
        for (key, value) in entries.iter_mut() {
            if key.as_text().is_some_and(|k| PYTHON_SECTIONS.contains(&k)) {
                let section = key.as_text().unwrap_or_default().to_owned();
                rename(value, &section, true, &mut errors);
            }
        }
    }
    errors
}

/// A `type: remote` file: its keys checked, its `cognite:` section checked as a config with no
/// tasks (so every error has its line and column), and the pipeline or integration it names
/// required.
fn remote_bootstrap(
    tree: Node,
    file: Option<&Path>,
    options: &LoadOptions,
    warnings: Vec<ConfigError>,
) -> Result<Config, ConfigErrors> {
    let in_file = in_file_of(file);
    let stub: RemoteConfigFile = deserialize_node(&tree, &KeyPath::Root).map_err(|first| {
        in_file(every_schema_error::<RemoteConfigFile>(tree.clone(), &KeyPath::Root, first))
    })?;
    let cognite = tree.get("cognite").cloned().expect("deserialized: present");
    let reload = tree.get("reload").cloned();
    let mark = tree.mark();
    let mut entries = vec![
        (Node::text("version", mark), Node::int(1, mark)),
        (Node::text("cognite", mark), cognite.clone()),
    ];
    if let Some(r) = &reload {
        entries.push((Node::text("reload", mark), r.clone()));
    }
    let mut config = Config::from_tree(Node::map(entries, mark), file, options, warnings)?;
    config.kind = ConfigKind::Remote;
    let (external_id, key) = match stub.source {
        RemoteSource::ExtractionPipeline => (
            config.cognite.extraction_pipeline.as_ref().and_then(|p| p.external_id.clone()),
            "cognite.extraction-pipeline.external-id",
        ),
        RemoteSource::Integration => (
            config.cognite.integration.as_ref().map(|i| i.external_id.clone()),
            "cognite.integration.external-id",
        ),
    };
    let Some(external_id) = external_id else {
        return Err(in_file(vec![
            ConfigError::new(
                ConfigErrorKind::Invalid,
                format!("a `type: remote` config needs {key}: the config is fetched from it"),
            )
            .at(Some(cognite.mark()), "cognite"),
        ]));
    };
    let buffer_file = match (&stub.buffer_file, file) {
        (Some(b), Some(f)) => f.parent().unwrap_or(Path::new(".")).join(b),
        (Some(b), None) => PathBuf::from(b),
        (None, Some(f)) => {
            let mut name = f.file_name().unwrap_or_default().to_owned();
            name.push(".last-good.json");
            f.with_file_name(name)
        }
        (None, None) => PathBuf::from("config.last-good.json"),
    };
    config.remote = Some(Remote {
        source: stub.source,
        external_id,
        buffer_file,
        file: file.map(Path::to_owned),
        cognite,
        reload,
    });
    Ok(config)
}

fn deserialize_node<T: DeserializeOwned>(
    tree: &Node,
    path: &KeyPath<'_>,
) -> Result<T, ConfigError> {
    T::deserialize(NodeDeserializer::new(tree, path)).map_err(|e| {
        let mut error = ConfigError::new(ConfigErrorKind::Schema, e.message)
            .at(e.mark, e.path.unwrap_or_default());
        error.missing_key = e.missing_key.map(str::to_owned);
        error
    })
}

/// Every type error and unknown key, not only the first: deserialization stops at the first, so
/// the offending entry is taken out of the tree and it is tried again (at most 50 times). A
/// "missing required key" that only follows from an entry taken out is not reported.
fn every_schema_error<T: DeserializeOwned>(
    mut tree: Node,
    path: &KeyPath<'_>,
    first: ConfigError,
) -> Vec<ConfigError> {
    let missing = |e: &ConfigError| e.missing_key.clone();
    let mut errors = vec![first];
    // Keys taken out, and keys an unknown key was suggested to be: their absence follows.
    let mut absent: Vec<String> = Vec::new();
    for _ in 0..50 {
        let last = errors.last().expect("one error at least");
        if missing(last).is_some() {
            break; // nothing to take out: the tree cannot be read further
        }
        if let Some((_, suggested)) = last.message().split_once("did you mean `") {
            absent.push(suggested.split('`').next().unwrap_or_default().to_owned());
        }
        let Some(name) = last.mark().and_then(|m| remove_entry_at(&mut tree, m)) else {
            break;
        };
        absent.push(name);
        match deserialize_node::<T>(&tree, path) {
            Ok(_) => break,
            Err(e) => {
                let follows = missing(&e).is_some_and(|k| absent.contains(&k));
                if follows || errors.iter().any(|x| x.to_string() == e.to_string()) {
                    break;
                }
                errors.push(e);
            }
        }
    }
    errors
}

/// Removes the mapping entry whose key or value is at `mark`; returns its key.
fn remove_entry_at(node: &mut Node, mark: error::Mark) -> Option<String> {
    match &mut node.kind {
        node::NodeKind::Map(entries) => {
            if let Some(i) = entries
                .iter()
                .position(|(k, v)| k.mark == mark || v.mark == mark)
            {
                let (key, _) = entries.remove(i);
                return Some(key.as_text().unwrap_or_default().to_owned());
            }
            entries
                .iter_mut()
                .find_map(|(_, v)| remove_entry_at(v, mark))
        }
        node::NodeKind::Seq(items) => items.iter_mut().find_map(|v| remove_entry_at(v, mark)),
        _ => None,
    }
}

/// The YAML parser's message in the config's terms: no advice about the library's own API.
fn plain_yaml_message(message: &str) -> String {
    if let Some(breach) = message.strip_prefix("budget breached: ") {
        let kind = breach
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        return format!(
            "the file is beyond what a config may be ({kind} limit: too many values, too deep, too much text, or aliases that expand too far)"
        );
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set ").next().unwrap_or(rest);
        return format!("duplicate key `{key}`: a key may appear only once in a mapping");
    }
    if message.starts_with("multiple YAML documents detected") {
        return "more than one YAML document (`---`): a config file holds exactly one".to_owned();
    }
    // Anything else, without a trailing hint that names the parser's API.
    let cut = [", set ", "; use "]
        .iter()
        .filter_map(|sep| message.find(sep))
        .min();
    match cut {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// serde-saphyr's messages start with `line L column C: `; we print our own location.
fn strip_location_prefix(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or(message);
    let first_line = first_line.strip_prefix("error: ").unwrap_or(first_line);
    let text = match first_line.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest,
        _ => first_line,
    };
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}
