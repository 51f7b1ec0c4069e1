//! The `destination:` block shared by the built-in extractors.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `tasks[].config.destination`: where records go. The fields that name a value
/// (`key`, `external-id`, `timestamp`, ...) take a column name (`id`), a JSON pointer
/// (`/sensor/id`), a template (`{site}-{/sensor/id}`, `{{` for a literal brace) or a constant in
/// single quotes (`'boiler-1:temperature'`).
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DestinationConfig {
    /// `raw`, `datapoints`, `events` or `instances`.
    #[serde(rename = "type")]
    pub kind: DestinationKind,
    /// `raw`: the RAW database.
    #[serde(default)]
    pub database: Option<String>,
    /// `raw`: the RAW table.
    #[serde(default)]
    pub table: Option<String>,
    /// `raw`: the row key.
    #[serde(default)]
    pub key: Option<String>,
    /// `datapoints`: the time series; `events`: the event's external id; `instances`: the
    /// node's external id.
    #[serde(default)]
    pub external_id: Option<String>,
    /// `datapoints`: the time (milliseconds since the epoch, or an RFC 3339 / ISO 8601 text).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// `datapoints`: the value (a number, or a text for a string time series).
    #[serde(default)]
    pub value: Option<String>,
    /// `events`: the start time.
    #[serde(default)]
    pub start_time: Option<String>,
    /// `events`: the end time.
    #[serde(default)]
    pub end_time: Option<String>,
    /// `events`: the event's type (`type` names the destination itself).
    #[serde(default)]
    pub event_type: Option<String>,
    /// `events`: the event's subtype.
    #[serde(default)]
    pub subtype: Option<String>,
    /// `events`: the description.
    #[serde(default)]
    pub description: Option<String>,
    /// `events`: metadata, either a list of fields (each named after itself) or a mapping of
    /// metadata key to field.
    #[serde(default)]
    pub metadata: Option<MetadataConfig>,
    /// `datapoints`: datapoints of a time series CDF does not have: `true` creates the (classic)
    /// time series (external id, name = external id, string or numeric from the value) and
    /// sends them again; `false` (default) refuses them to the dead-letter file.
    #[serde(default)]
    pub create_missing: Option<bool>,
    /// `datapoints` with `create-missing: true`: how a created time series looks (`name`,
    /// `unit`, `description`, `metadata`), each a field like the others, read from the first
    /// record of the series that CDF did not have. Without it the name is the external id.
    #[serde(default)]
    pub new_series: Option<NewSeriesConfig>,
    /// `events`: an event whose external id CDF has already: `update` (default) updates it with
    /// the new fields, so replays are idempotent; `skip` keeps the existing one.
    #[serde(default)]
    pub on_duplicate: Option<OnDuplicate>,
    /// `datapoints`: the time series is a Data Modeling CogniteTimeSeries node
    /// `{space, external-id}` (external-id a field), sent by `instanceId`; instead of
    /// `external-id`. With `create-missing: true` missing nodes are created.
    #[serde(default)]
    pub instance_id: Option<RelationConfig>,
    /// `instances`: the space the nodes are written to.
    #[serde(default)]
    pub space: Option<String>,
    /// `instances`: `node` (default) or `edge`.
    #[serde(default)]
    pub instance_type: Option<InstanceType>,
    /// `instances` with `instance-type: edge`: the edge's type, a node `{space, external-id}`.
    #[serde(default)]
    pub edge_type: Option<RelationConfig>,
    /// `instances` with `instance-type: edge`: the node the edge starts at.
    #[serde(default)]
    pub start_node: Option<RelationConfig>,
    /// `instances` with `instance-type: edge`: the node the edge ends at.
    #[serde(default)]
    pub end_node: Option<RelationConfig>,
    /// `instances`: the view the properties belong to (optional for an edge without
    /// properties), like
    /// `{space: cdf_cdm, external-id: CogniteAsset, version: v1}`.
    #[serde(default)]
    pub view: Option<ViewConfig>,
    /// `instances`: property name to field (a column, a /pointer, a {template} or a
    /// 'constant'), or to a direct relation `{space, external-id}` (external-id a field).
    #[serde(default)]
    pub properties: Option<BTreeMap<String, PropertyConfig>>,
}

/// What kind of instance a record becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    /// A node.
    #[default]
    Node,
    /// An edge between two nodes.
    Edge,
}

/// `destination.view`: a Data Modeling view.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ViewConfig {
    /// The view's space (`cdf_cdm` for the core data model).
    pub space: String,
    /// The view's external id (`CogniteAsset`, `CogniteTimeSeries`, ...).
    pub external_id: String,
    /// The view's version (`v1`).
    pub version: String,
}

/// `destination.properties.<name>`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PropertyConfig {
    /// A field: the property's value.
    Field(String),
    /// A direct relation to the node `{space, external-id}`.
    Relation(RelationConfig),
}

/// A direct relation: the target node's space and external id (a field).
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelationConfig {
    /// The target node's space.
    pub space: String,
    /// The target node's external id: a field.
    pub external_id: String,
}

pub use extractor_runtime::upload::OnDuplicate;

/// The kinds of destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationKind {
    /// Rows of a CDF RAW table; the whole record becomes the row's columns.
    Raw,
    /// Datapoints of time series.
    Datapoints,
    /// Events.
    Events,
    /// Data Modeling nodes, written through a view (`POST /models/instances`).
    Instances,
}

/// `destination.metadata`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum MetadataConfig {
    /// Fields, each stored under its own name (a pointer's last segment).
    List(Vec<String>),
    /// Metadata key to field.
    Map(BTreeMap<String, String>),
}

/// `destination.new-series`: fields of a time series that `create-missing` creates.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NewSeriesConfig {
    /// The name (default: the external id).
    #[serde(default)]
    pub name: Option<String>,
    /// The unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// Metadata, as for events: a list of fields or a mapping of key to field.
    #[serde(default)]
    pub metadata: Option<MetadataConfig>,
}
