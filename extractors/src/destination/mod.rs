//! The `destination:` block every built-in shares: how a record (a JSON value: a CSV or SQL row
//! as an object of columns, or an item of a REST response) becomes a RAW row, a datapoint or an
//! event, and goes into the process's upload queues.
//!
//! Mappings are checked when the config is (`check-config`), with key paths; a record that does
//! not fit its mapping (a missing field, a timestamp that is not one) is a [`RecordError`].

pub mod config;
mod field;
mod tabular;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use extractor_runtime::CdfError;
use extractor_runtime::upload::{
    Datapoint, DatapointValue, EdgeEnds, Event, InstanceRef, NewSeries, Node, Policy, RawRow,
    Upload, ViewRef,
};
use extractor_runtime::{Rejection, RunContext, TaskError};
use serde_json::Value;

pub use config::{
    DestinationConfig, DestinationKind, InstanceType, MetadataConfig, NewSeriesConfig, OnDuplicate,
    PropertyConfig, RelationConfig, ViewConfig,
};
pub use field::Field;
pub use tabular::{Cell, RowWriter, Written};

/// A checked `destination:` block.
#[derive(Clone, Debug)]
pub enum Destination {
    /// RAW rows.
    Raw {
        /// The database.
        database: String,
        /// The table.
        table: String,
        /// The row key.
        key: Field,
    },
    /// Datapoints.
    Datapoints {
        /// The time series' external id (with `space`, the CogniteTimeSeries node's).
        external_id: Field,
        /// `Some`: the time series is the CogniteTimeSeries node in this space (`instance-id`).
        space: Option<Arc<str>>,
        /// The time.
        timestamp: Field,
        /// The value.
        value: Field,
        /// Create missing time series.
        create_missing: bool,
        /// How a created time series looks.
        new_series: Option<Box<SeriesMapping>>,
    },
    /// Events.
    Events(Box<EventMapping>),
    /// Data Modeling nodes.
    Instances(Box<NodeMapping>),
}

/// The fields of an `instances` destination.
#[derive(Clone, Debug)]
pub struct NodeMapping {
    /// The nodes' space.
    pub space: String,
    /// The view, shared by every instance (`None`: an edge without properties).
    pub view: Option<Arc<ViewRef>>,
    /// `Some`: the records become edges of this type between these nodes.
    pub edge: Option<Box<EdgeMapping>>,
    /// The node's external id.
    pub external_id: Field,
    /// Property name to where its value comes from.
    pub properties: Vec<(String, Property)>,
}

/// The ends of an edge: each a space and an external id field.
#[derive(Clone, Debug)]
pub struct EdgeMapping {
    /// The edge's type.
    pub edge_type: (String, Field),
    /// The start node.
    pub start_node: (String, Field),
    /// The end node.
    pub end_node: (String, Field),
}

/// Where a node property comes from.
#[derive(Clone, Debug)]
pub enum Property {
    /// A value.
    Value(Field),
    /// A direct relation to `{space, externalId}`.
    Relation {
        /// The target's space.
        space: String,
        /// The target's external id.
        external_id: Field,
    },
}

/// The fields of an `events` destination.
#[derive(Clone, Debug)]
pub struct EventMapping {
    /// The external id.
    pub external_id: Field,
    /// The start time.
    pub start_time: Option<Field>,
    /// The end time.
    pub end_time: Option<Field>,
    /// The type.
    pub event_type: Option<Field>,
    /// The subtype.
    pub subtype: Option<Field>,
    /// The description.
    pub description: Option<Field>,
    /// Metadata key to field.
    pub metadata: Vec<(String, Field)>,
    /// What happens to an event CDF has already.
    pub on_duplicate: OnDuplicate,
}

/// The fields of a `new-series` block.
#[derive(Clone, Debug)]
pub struct SeriesMapping {
    /// The name.
    pub name: Option<Field>,
    /// The unit.
    pub unit: Option<Field>,
    /// The description.
    pub description: Option<Field>,
    /// Metadata key to field.
    pub metadata: Vec<(String, Field)>,
}

/// A record that does not fit the destination's mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The destination key whose field failed (`key`, `timestamp`, ...).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "destination.{}: {}", self.key, self.message)
    }
}

impl std::error::Error for RecordError {}

/// Why a record could not be queued.
#[derive(Debug)]
pub enum SendError {
    /// The record does not fit the mapping.
    Record(RecordError),
    /// The queue could not take it.
    Queue(CdfError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Record(e) => e.fmt(f),
            SendError::Queue(e) => e.fmt(f),
        }
    }
}

impl From<SendError> for TaskError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Record(e) => TaskError::permanent(e),
            SendError::Queue(e) => e.into(),
        }
    }
}

/// What a mapped record becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A RAW row.
    Raw(RawRow),
    /// A datapoint, and how its time series is created if CDF does not have it.
    Datapoint(Datapoint, Option<Arc<NewSeries>>),
    /// A datapoint of the CogniteTimeSeries node in a space, and how the node is created if
    /// CDF does not have it.
    NodeDatapoint(Datapoint, Arc<str>, Option<Arc<NewSeries>>),
    /// An event.
    Event(Event),
    /// A Data Modeling node.
    Node(Node),
}

impl Destination {
    /// Checks a `destination:` block; problems are reported at their key below `destination`.
    pub fn new(config: &DestinationConfig) -> Result<Destination, Rejection> {
        let mut problems = Rejection::new();
        let kind_name = match config.kind {
            DestinationKind::Raw => "raw",
            DestinationKind::Datapoints => "datapoints",
            DestinationKind::Events => "events",
            DestinationKind::Instances => "instances",
        };
        let given: [(&str, bool, &[DestinationKind]); 24] = {
            use DestinationKind::*;
            [
                ("database", config.database.is_some(), &[Raw]),
                ("table", config.table.is_some(), &[Raw]),
                ("key", config.key.is_some(), &[Raw]),
                (
                    "external-id",
                    config.external_id.is_some(),
                    &[Datapoints, Events, Instances],
                ),
                ("space", config.space.is_some(), &[Instances]),
                ("instance-id", config.instance_id.is_some(), &[Datapoints]),
                (
                    "instance-type",
                    config.instance_type.is_some(),
                    &[Instances],
                ),
                ("edge-type", config.edge_type.is_some(), &[Instances]),
                ("start-node", config.start_node.is_some(), &[Instances]),
                ("end-node", config.end_node.is_some(), &[Instances]),
                ("view", config.view.is_some(), &[Instances]),
                ("properties", config.properties.is_some(), &[Instances]),
                ("timestamp", config.timestamp.is_some(), &[Datapoints]),
                ("value", config.value.is_some(), &[Datapoints]),
                ("start-time", config.start_time.is_some(), &[Events]),
                ("end-time", config.end_time.is_some(), &[Events]),
                ("event-type", config.event_type.is_some(), &[Events]),
                ("subtype", config.subtype.is_some(), &[Events]),
                ("description", config.description.is_some(), &[Events]),
                ("metadata", config.metadata.is_some(), &[Events]),
                (
                    "create-missing",
                    config.create_missing.is_some(),
                    &[Datapoints],
                ),
                ("on-duplicate", config.on_duplicate.is_some(), &[Events]),
                ("new-series", config.new_series.is_some(), &[Datapoints]),
                ("type", true, &[Raw, Datapoints, Events, Instances]),
            ]
        };
        for (key, present, kinds) in given {
            if present && !kinds.contains(&config.kind) {
                problems.push(
                    key,
                    format!("`{key}` does not apply to `type: {kind_name}`"),
                );
            }
        }
        let p = &mut problems;
        let destination = match config.kind {
            DestinationKind::Raw => {
                let database = name(p, "database", &config.database);
                let table = name(p, "table", &config.table);
                let key = required(p, kind_name, "key", &config.key);
                match (database, table, key) {
                    (Some(database), Some(table), Some(key)) => Some(Destination::Raw {
                        database,
                        table,
                        key,
                    }),
                    _ => None,
                }
            }
            DestinationKind::Datapoints => {
                let (external_id, space) = match (&config.external_id, &config.instance_id) {
                    (Some(_), Some(_)) => {
                        p.push(
                            "instance-id",
                            "give either `external-id` (a classic time series) or `instance-id` (a CogniteTimeSeries node), not both",
                        );
                        (None, None)
                    }
                    (_, Some(node)) => match relation(p, "instance-id", node) {
                        Some((space, external_id)) => (Some(external_id), Some(Arc::from(space))),
                        None => (None, None),
                    },
                    (_, None) => (
                        required(p, kind_name, "external-id", &config.external_id),
                        None,
                    ),
                };
                let timestamp = required(p, kind_name, "timestamp", &config.timestamp);
                let value = required(p, kind_name, "value", &config.value);
                let create_missing = config.create_missing.unwrap_or(false);
                let new_series = config.new_series.as_ref().map(|n| {
                    if !create_missing {
                        p.push(
                            "new-series",
                            "`new-series` is used only with `create-missing: true`",
                        );
                    }
                    Box::new(SeriesMapping {
                        name: optional(p, "new-series.name", &n.name),
                        unit: optional(p, "new-series.unit", &n.unit),
                        description: optional(p, "new-series.description", &n.description),
                        metadata: metadata_fields(p, "new-series.metadata", &n.metadata),
                    })
                });
                match (external_id, timestamp, value) {
                    (Some(external_id), Some(timestamp), Some(value)) => {
                        Some(Destination::Datapoints {
                            external_id,
                            space,
                            timestamp,
                            value,
                            create_missing,
                            new_series,
                        })
                    }
                    _ => None,
                }
            }
            DestinationKind::Events => {
                let external_id = required(p, kind_name, "external-id", &config.external_id);
                let start_time = optional(p, "start-time", &config.start_time);
                let end_time = optional(p, "end-time", &config.end_time);
                let event_type = optional(p, "event-type", &config.event_type);
                let subtype = optional(p, "subtype", &config.subtype);
                let description = optional(p, "description", &config.description);
                let metadata = metadata_fields(p, "metadata", &config.metadata);
                external_id.map(|external_id| {
                    Destination::Events(Box::new(EventMapping {
                        external_id,
                        start_time,
                        end_time,
                        event_type,
                        subtype,
                        description,
                        metadata,
                        on_duplicate: config.on_duplicate.unwrap_or_default(),
                    }))
                })
            }
            DestinationKind::Instances => instances(p, config),
        };
        match destination {
            Some(d) if problems.is_empty() => Ok(d),
            _ => Err(problems),
        }
    }

    /// Maps one record (a RAW row takes the record itself as its columns).
    pub fn map(&self, owned: Value) -> Result<Item, RecordError> {
        let record = &owned;
        match self {
            Destination::Raw {
                database,
                table,
                key,
            } => {
                let key = raw_key(key, key.render(record))?;
                let columns = match owned {
                    Value::Object(map) => map,
                    other => {
                        let mut map = serde_json::Map::new();
                        map.insert("value".to_owned(), other);
                        map
                    }
                };
                Ok(Item::Raw(RawRow {
                    database: database.clone(),
                    table: table.clone(),
                    key,
                    columns,
                }))
            }
            Destination::Datapoints {
                external_id,
                space,
                timestamp,
                value,
                new_series,
                ..
            } => {
                let key = if space.is_some() {
                    "instance-id.external-id"
                } else {
                    "external-id"
                };
                let external_id = text(external_id, record, key)?;
                let timestamp = time_of(timestamp, timestamp.resolve(record), "timestamp")?;
                let value = value_of(value, value.resolve(record))?;
                let series = match new_series {
                    Some(m) => Some(Arc::new(NewSeries {
                        name: opt_text(&m.name, record, "new-series.name")?,
                        unit: opt_text(&m.unit, record, "new-series.unit")?,
                        description: opt_text(&m.description, record, "new-series.description")?,
                        metadata: metadata(&m.metadata, record, "new-series.metadata")?,
                        ..NewSeries::default()
                    })),
                    None => None,
                };
                let point = Datapoint {
                    external_id,
                    timestamp,
                    value,
                };
                Ok(match space {
                    Some(space) => Item::NodeDatapoint(point, space.clone(), series),
                    None => Item::Datapoint(point, series),
                })
            }
            Destination::Instances(m) => {
                let external_id = text(&m.external_id, record, "external-id")?;
                if external_id.is_empty() || external_id.len() > 255 {
                    return Err(RecordError {
                        key: "external-id",
                        message: format!(
                            "`{external_id}` is not a node external id (1 to 255 characters)"
                        ),
                    });
                }
                let mut properties = serde_json::Map::new();
                for (name, property) in &m.properties {
                    let value = match property {
                        Property::Value(field) => match field.resolve(record) {
                            Some(v) => v.into_owned(),
                            None => {
                                return Err(bad(
                                    "properties",
                                    field,
                                    &format!("(property `{name}`) is missing"),
                                ));
                            }
                        },
                        // No target (an empty cell, null, missing): the property is left out.
                        Property::Relation { space, external_id } => {
                            match external_id.render(record).ok().filter(|t| !t.is_empty()) {
                                Some(target) => {
                                    serde_json::json!({"space": space, "externalId": target})
                                }
                                None => Value::Null,
                            }
                        }
                    };
                    // Null is left out (Cognite's spec has no null property value): a sparse
                    // upsert keeps what the node has.
                    if !value.is_null() {
                        properties.insert(name.clone(), value);
                    }
                }
                Ok(Item::Node(Node {
                    space: m.space.clone(),
                    external_id,
                    edge: match &m.edge {
                        None => None,
                        Some(e) => {
                            let end = |(space, field): &(String, Field), key| {
                                text(field, record, key).map(|external_id| InstanceRef {
                                    space: space.clone(),
                                    external_id,
                                })
                            };
                            Some(Box::new(EdgeEnds {
                                edge_type: end(&e.edge_type, "edge-type")?,
                                start_node: end(&e.start_node, "start-node")?,
                                end_node: end(&e.end_node, "end-node")?,
                            }))
                        }
                    },
                    view: m.view.clone(),
                    properties,
                }))
            }
            Destination::Events(m) => {
                let opt_time = |f: &Option<Field>, key| -> Result<Option<i64>, RecordError> {
                    match f {
                        Some(f) if f.is_present(record) => time(f, record, key).map(Some),
                        _ => Ok(None),
                    }
                };
                Ok(Item::Event(Event {
                    external_id: Some(text(&m.external_id, record, "external-id")?),
                    start_time: opt_time(&m.start_time, "start-time")?,
                    end_time: opt_time(&m.end_time, "end-time")?,
                    kind: opt_text(&m.event_type, record, "event-type")?,
                    subtype: opt_text(&m.subtype, record, "subtype")?,
                    description: opt_text(&m.description, record, "description")?,
                    metadata: metadata(&m.metadata, record, "metadata")?,
                    // `cognite.data-set`, put here by the upload.
                    data_set_id: None,
                }))
            }
        }
    }

    /// The delivery policy of this destination's items.
    pub fn policy(&self) -> Policy {
        match self {
            Destination::Raw { .. } | Destination::Instances(_) => Policy::default(),
            Destination::Datapoints { create_missing, .. } => Policy {
                create_missing: *create_missing,
                ..Policy::default()
            },
            Destination::Events(m) => Policy {
                on_duplicate: m.on_duplicate,
                ..Policy::default()
            },
        }
    }

    /// The run's upload handle with this destination's policy.
    pub fn upload(&self, ctx: &RunContext) -> Upload {
        ctx.upload().with_policy(self.policy())
    }

    /// Maps a record and queues it through `upload` (waiting while the queue is full),
    /// counting it in the task's `extractor_task_records_total` as queued or rejected.
    pub async fn send(
        &self,
        ctx: &RunContext,
        upload: &Upload,
        record: Value,
    ) -> Result<(), SendError> {
        let item = match self.map(record) {
            Ok(item) => item,
            Err(e) => {
                ctx.records_rejected(1);
                return Err(SendError::Record(e));
            }
        };
        self.queue(ctx, upload, item).await
    }

    /// Queues what a [`RowWriter`] wrote, as [`queue`](Self::queue) does.
    pub async fn queue_written(
        &self,
        ctx: &RunContext,
        upload: &Upload,
        written: Written,
    ) -> Result<(), SendError> {
        match written {
            Written::Item(item) => self.queue(ctx, upload, item).await,
            Written::Raw(row) => {
                upload.raw_stored(row).await.map_err(SendError::Queue)?;
                ctx.records_queued(1);
                Ok(())
            }
        }
    }

    /// Queues a mapped item through `upload` (waiting while the queue is full), counting it
    /// in the task's `extractor_task_records_total` as queued.
    pub async fn queue(
        &self,
        ctx: &RunContext,
        upload: &Upload,
        item: Item,
    ) -> Result<(), SendError> {
        match item {
            Item::Raw(row) => upload.raw(row).await,
            Item::Datapoint(dp, None) => upload.datapoint(dp).await,
            Item::Datapoint(dp, Some(series)) => upload.datapoint_of_series(dp, series).await,
            Item::NodeDatapoint(dp, space, series) => {
                upload.datapoint_of_node(dp, space, series).await
            }
            Item::Event(event) => upload.event(event).await,
            Item::Node(node) => upload.node(node).await,
        }
        .map_err(SendError::Queue)?;
        ctx.records_queued(1);
        Ok(())
    }
}

/// A `{space, external-id}` block at `key`: the space (checked) and the external id's field.
fn relation(p: &mut Rejection, key: &str, r: &RelationConfig) -> Option<(String, Field)> {
    if !valid_space(&r.space) {
        p.push(
            format!("{key}.space"),
            format!("`{}` is not a space id", r.space),
        );
    }
    let external_id = optional(
        p,
        &format!("{key}.external-id"),
        &Some(r.external_id.clone()),
    )?;
    valid_space(&r.space).then(|| (r.space.clone(), external_id))
}

/// A checked `type: instances` block (nodes, or edges with `instance-type: edge`).
fn instances(p: &mut Rejection, config: &DestinationConfig) -> Option<Destination> {
    let external_id = required(p, "instances", "external-id", &config.external_id);
    let space = match config.space.as_deref().map(str::trim) {
        None => {
            p.push("", "`type: instances` needs `space`");
            None
        }
        Some(s) if !valid_space(s) => {
            p.push("space", format!("`{s}` is not a space id (letters, digits, `_` and `-`, starting with a letter, at most 43)"));
            None
        }
        Some(s) => Some(s.to_owned()),
    };
    let is_edge = config.instance_type == Some(InstanceType::Edge);
    let view = match &config.view {
        // An edge without properties is written without a view.
        None if is_edge && config.properties.is_none() => Some(None),
        None => {
            p.push(
                "",
                "`type: instances` needs `view: {space, external-id, version}`",
            );
            None
        }
        Some(v) => {
            for (key, value) in [
                ("space", &v.space),
                ("external-id", &v.external_id),
                ("version", &v.version),
            ] {
                if value.trim().is_empty() {
                    p.push(format!("view.{key}"), "must not be empty");
                }
            }
            Some(Some(Arc::new(ViewRef {
                space: v.space.clone(),
                external_id: v.external_id.clone(),
                version: v.version.clone(),
            })))
        }
    };
    let ends = [
        ("edge-type", &config.edge_type),
        ("start-node", &config.start_node),
        ("end-node", &config.end_node),
    ];
    let edge = if is_edge {
        let [edge_type, start_node, end_node] = ends.map(|(key, given)| match given {
            Some(r) => relation(p, key, r),
            None => {
                p.push(
                    "",
                    format!("`instance-type: edge` needs `{key}: {{space, external-id}}`"),
                );
                None
            }
        });
        // Not `?` here: the properties' problems are reported too.
        match (edge_type, start_node, end_node) {
            (Some(edge_type), Some(start_node), Some(end_node)) => {
                Some(Some(Box::new(EdgeMapping {
                    edge_type,
                    start_node,
                    end_node,
                })))
            }
            _ => None,
        }
    } else {
        for (key, given) in ends {
            if given.is_some() {
                p.push(
                    key,
                    format!("`{key}` applies only with `instance-type: edge`"),
                );
            }
        }
        Some(None)
    };
    let mut properties = Vec::new();
    for (name, property) in config.properties.iter().flatten() {
        let at = format!("properties.{name}");
        let parsed = match property {
            PropertyConfig::Field(text) => {
                optional(p, &at, &Some(text.clone())).map(Property::Value)
            }
            PropertyConfig::Relation(r) => relation(p, &at, r)
                .map(|(space, external_id)| Property::Relation { space, external_id }),
        };
        properties.extend(parsed.map(|f| (name.clone(), f)));
    }
    Some(Destination::Instances(Box::new(NodeMapping {
        space: space?,
        view: view?,
        edge: edge?,
        external_id: external_id?,
        properties,
    })))
}

/// A Data Modeling space id: `[a-zA-Z][a-zA-Z0-9_-]{0,42}`.
fn valid_space(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.len() <= 43
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A RAW database or table name.
fn name(problems: &mut Rejection, key: &str, value: &Option<String>) -> Option<String> {
    match value.as_deref().map(str::trim) {
        None => {
            problems.push("", format!("`type: raw` needs `{key}`"));
            None
        }
        Some("") => {
            problems.push(key, "must not be empty");
            None
        }
        Some(v) => Some(v.to_owned()),
    }
}

/// A field the destination kind needs.
fn required(
    problems: &mut Rejection,
    kind: &str,
    key: &str,
    value: &Option<String>,
) -> Option<Field> {
    match value {
        None => {
            problems.push(
                "",
                format!(
                    "`type: {kind}` needs `{key}` (a column, a /json/pointer or a {{template}})"
                ),
            );
            None
        }
        Some(text) => optional(problems, key, &Some(text.clone())),
    }
}

/// A field the destination kind may have.
fn optional(problems: &mut Rejection, key: &str, value: &Option<String>) -> Option<Field> {
    match Field::parse(value.as_deref()?) {
        Ok(f) => Some(f),
        Err(message) => {
            problems.push(key, message);
            None
        }
    }
}

/// The fields of a `metadata` block (a list of fields named after themselves, or a map),
/// problems reported at `at[i]` / `at.key`.
fn metadata_fields(
    problems: &mut Rejection,
    at: &str,
    config: &Option<MetadataConfig>,
) -> Vec<(String, Field)> {
    let entries: Vec<(String, Option<String>, &String)> = match config {
        None => Vec::new(),
        Some(MetadataConfig::List(fields)) => fields
            .iter()
            .enumerate()
            .map(|(i, text)| (format!("{at}[{i}]"), None, text))
            .collect(),
        Some(MetadataConfig::Map(map)) => map
            .iter()
            .map(|(name, text)| (format!("{at}.{name}"), Some(name.clone()), text))
            .collect(),
    };
    let mut fields = Vec::new();
    for (path, name, text) in entries {
        match Field::parse(text) {
            Ok(f) => fields.push((name.unwrap_or_else(|| f.name().to_owned()), f)),
            Err(m) => problems.push(path, m),
        }
    }
    fields
}

/// The metadata of `record`: fields it lacks are left out.
fn metadata(
    fields: &[(String, Field)],
    record: &Value,
    key: &'static str,
) -> Result<BTreeMap<String, String>, RecordError> {
    let mut metadata = BTreeMap::new();
    for (name, field) in fields {
        if field.is_present(record) {
            metadata.insert(name.clone(), text(field, record, key)?);
        }
    }
    Ok(metadata)
}

/// An optional field as text; `None` when absent or the record lacks it.
fn opt_text(
    field: &Option<Field>,
    record: &Value,
    key: &'static str,
) -> Result<Option<String>, RecordError> {
    match field {
        Some(f) if f.is_present(record) => text(f, record, key).map(Some),
        _ => Ok(None),
    }
}

fn bad(key: &'static str, field: &Field, message: &str) -> RecordError {
    RecordError {
        key,
        message: format!("`{field}` {message}"),
    }
}

/// The field as text: strings as they are, numbers and booleans as JSON writes them.
fn text(field: &Field, record: &Value, key: &'static str) -> Result<String, RecordError> {
    field
        .render(record)
        .map_err(|missing| bad(key, field, &format!("has no value for `{missing}`")))
}

/// A RAW row's key from its field's rendering ([`Field::render`]): a missing value or an
/// empty text is an error.
fn raw_key(field: &Field, rendered: Result<String, String>) -> Result<String, RecordError> {
    let key =
        rendered.map_err(|missing| bad("key", field, &format!("has no value for `{missing}`")))?;
    if key.is_empty() {
        return Err(bad("key", field, "is empty; a RAW row needs a key"));
    }
    Ok(key)
}

/// A datapoint's value from its field's value (borrowed from a record, or made from a row's
/// cells): a finite number, a boolean (1 or 0) or a text (copied only if borrowed).
fn value_of(field: &Field, value: Option<Cow<'_, Value>>) -> Result<DatapointValue, RecordError> {
    // Owned: a text becomes the datapoint's (a borrowed one is copied, as it must be; numbers
    // and booleans copy no heap memory).
    match value.map(Cow::into_owned) {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(DatapointValue::Numeric(v)),
            _ => Err(bad("value", field, "is not a finite number")),
        },
        Some(Value::Bool(b)) => Ok(DatapointValue::Numeric(f64::from(u8::from(b)))),
        Some(Value::String(s)) => Ok(DatapointValue::String(s)),
        Some(Value::Null) | None => Err(bad("value", field, "is missing or null")),
        Some(_) => Err(bad("value", field, "is not a number or a text")),
    }
}

/// The field as milliseconds since the epoch: a number is taken as milliseconds; a text as
/// RFC 3339 (`2026-11-27T10:00:00Z`), or as a UTC date and time (`2026-11-27 10:00:00`).
fn time(field: &Field, record: &Value, key: &'static str) -> Result<i64, RecordError> {
    time_of(field, field.resolve(record), key)
}

/// [`time`] of the field's value.
fn time_of(
    field: &Field,
    value: Option<Cow<'_, Value>>,
    key: &'static str,
) -> Result<i64, RecordError> {
    match value.as_deref() {
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(ms), _) => Ok(ms),
            (None, Some(ms)) if ms.is_finite() => Ok(ms as i64),
            _ => Err(bad(key, field, "is not a time")),
        },
        Some(Value::String(s)) => {
            parse_time(s).ok_or_else(|| bad(key, field, &format!("is not a time: `{s}`")))
        }
        Some(Value::Null) | None => Err(bad(key, field, "is missing or null")),
        Some(_) => Err(bad(key, field, "is not a time")),
    }
}

/// Milliseconds since the epoch of an RFC 3339 text, or of a civil date-time read as UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_millisecond());
    }
    None
}
