//! Datapoints: `POST /timeseries/data`, at most 10 000 time series and 100 000 datapoints a
//! request.

use super::{Kind, Request};

/// The API's limit of time series per request.
pub const MAX_SERIES_PER_REQUEST: usize = 10_000;
/// The API's limit of datapoints per request.
pub const MAX_DATAPOINTS_PER_REQUEST: usize = 100_000;

/// A datapoint's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A numeric datapoint.
    Numeric(f64),
    /// A string datapoint.
    String(String),
}

/// One datapoint of the time series with `external_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Datapoint {
    /// The time series' external id.
    pub external_id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The value.
    pub value: Value,
}

/// How a time series that `create-missing` creates looks, besides its external id and
/// `isString` (from the value). Without one, its name is its external id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewSeries {
    /// The name (default: the external id).
    pub name: Option<String>,
    /// The unit.
    pub unit: Option<String>,
    /// The description.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Its data set, instead of `cognite.data-set` (classic time series).
    pub data_set_id: Option<i64>,
    /// The asset it belongs to (classic time series).
    pub asset_id: Option<i64>,
}

/// A datapoint as the disk buffer keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    x: String,
    t: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    series: Option<OnDiskSeries>,
}

/// [`NewSeries`] as the disk buffer keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct OnDiskSeries {
    name: Option<String>,
    unit: Option<String>,
    description: Option<String>,
    metadata: std::collections::BTreeMap<String, String>,
    data_set_id: Option<i64>,
    asset_id: Option<i64>,
}

/// A queued datapoint, with how its time series is created if CDF does not have it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPoint {
    /// The datapoint.
    pub point: Datapoint,
    /// How its time series is created (`None`: external id as name).
    pub series: Option<std::sync::Arc<NewSeries>>,
    /// `Some(space)`: the time series is the CogniteTimeSeries node `space:external_id` (sent
    /// as `instanceId`; `create-missing` creates the node); `None`: a classic time series.
    /// One `Arc` is shared by a task's datapoints.
    pub node: Option<std::sync::Arc<str>>,
}

impl StoredPoint {
    /// The time series: its space (for a node) and external id.
    fn series_key(&self) -> (Option<&str>, &str) {
        (self.node.as_deref(), &self.point.external_id)
    }
}

/// The core data model's time series view, which `create-missing` writes nodes through.
pub const COGNITE_TIME_SERIES: (&str, &str, &str) = ("cdf_cdm", "CogniteTimeSeries", "v1");

/// The datapoints queue kind.
#[derive(Debug)]
pub struct Datapoints;

/// The API's limit of time series created per request.
pub const MAX_SERIES_CREATED_PER_REQUEST: usize = 1_000;

impl Kind for Datapoints {
    type Item = Datapoint;
    type Stored = StoredPoint;
    const NAME: &'static str = "datapoints";
    const READ_AHEAD: usize = 2 * MAX_DATAPOINTS_PER_REQUEST;
    const MAX_ITEMS: usize = MAX_DATAPOINTS_PER_REQUEST;

    fn store(point: Datapoint) -> StoredPoint {
        StoredPoint {
            point,
            series: None,
            node: None,
        }
    }

    fn batch_len<'a>(items: impl Iterator<Item = &'a StoredPoint>) -> usize {
        // Hashed once per datapoint: foldhash, not SipHash (a sixth of the CPU of a run
        // was SipHash here and in `request`).
        let mut series: foldhash::HashSet<(Option<&str>, &str)> = foldhash::HashSet::default();
        let mut taken = 0;
        for key in items
            .take(MAX_DATAPOINTS_PER_REQUEST)
            .map(StoredPoint::series_key)
        {
            if !series.contains(&key) {
                if series.len() == MAX_SERIES_PER_REQUEST {
                    break;
                }
                series.insert(key);
            }
            taken += 1;
        }
        taken
    }

    fn request(items: &[&StoredPoint]) -> Request {
        #[derive(serde::Serialize)]
        struct Point<'a> {
            timestamp: i64,
            value: PointValue<'a>,
        }
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum PointValue<'a> {
            Numeric(f64),
            String(&'a str),
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct InstanceId<'a> {
            space: &'a str,
            external_id: &'a str,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Series<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            external_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            instance_id: Option<InstanceId<'a>>,
            datapoints: Vec<Point<'a>>,
        }
        // Grouped by time series, in order of first appearance.
        let mut series: Vec<Series<'_>> = Vec::new();
        let mut index: foldhash::HashMap<(Option<&str>, &str), usize> =
            foldhash::HashMap::default();
        for stored in items {
            let dp = &stored.point;
            let i = *index.entry(stored.series_key()).or_insert_with(|| {
                let (external_id, instance_id) = match &stored.node {
                    Some(n) => (
                        None,
                        Some(InstanceId {
                            space: n,
                            external_id: &dp.external_id,
                        }),
                    ),
                    None => (Some(dp.external_id.as_str()), None),
                };
                series.push(Series {
                    external_id,
                    instance_id,
                    datapoints: Vec::new(),
                });
                series.len() - 1
            });
            let value = match &dp.value {
                Value::Numeric(v) => PointValue::Numeric(*v),
                Value::String(s) => PointValue::String(s),
            };
            series[i].datapoints.push(Point {
                timestamp: dp.timestamp,
                value,
            });
        }
        Request {
            endpoint: "/timeseries/data",
            path: "/timeseries/data".to_owned(),
            body: super::items_body(&series),
            items: items.len(),
        }
    }

    fn protobuf_request(items: &[&StoredPoint]) -> Option<Request> {
        Some(Request {
            endpoint: "/timeseries/data",
            path: "/timeseries/data".to_owned(),
            body: super::protobuf::insertion_request(items).into(),
            items: items.len(),
        })
    }

    /// The external id, or `space:externalId` for a node (as refusals name it).
    fn id(item: &StoredPoint) -> Option<std::borrow::Cow<'_, str>> {
        Some(match &item.node {
            Some(space) => super::instances::instance_id(space, &item.point.external_id).into(),
            None => item.point.external_id.as_str().into(),
        })
    }

    fn from_json(v: serde_json::Value) -> Result<StoredPoint, String> {
        let (external_id, node) = match v.get("instanceId") {
            Some(id) => (
                id["externalId"].as_str(),
                id["space"].as_str().map(std::sync::Arc::<str>::from),
            ),
            None => (v["externalId"].as_str(), None),
        };
        let external_id = external_id
            .ok_or_else(|| "a datapoint without `externalId`".to_owned())?
            .to_owned();
        let timestamp = v["timestamp"]
            .as_i64()
            .ok_or_else(|| "a datapoint without a numeric `timestamp`".to_owned())?;
        let value = match &v["value"] {
            serde_json::Value::String(s) => Value::String(s.clone()),
            n => Value::Numeric(
                n.as_f64()
                    .ok_or_else(|| "a datapoint without a `value`".to_owned())?,
            ),
        };
        Ok(StoredPoint {
            point: Datapoint {
                external_id,
                timestamp,
                value,
            },
            series: None,
            node,
        })
    }

    fn encode(stored: &StoredPoint) -> Vec<u8> {
        let (n, s) = match &stored.point.value {
            Value::Numeric(v) => (Some(*v), None),
            Value::String(s) => (None, Some(s.as_str())),
        };
        let series = stored.series.as_deref().map(|new| OnDiskSeries {
            name: new.name.clone(),
            unit: new.unit.clone(),
            description: new.description.clone(),
            metadata: new.metadata.clone(),
            data_set_id: new.data_set_id,
            asset_id: new.asset_id,
        });
        serde_json::to_vec(&OnDisk {
            x: stored.point.external_id.clone(),
            t: stored.point.timestamp,
            n,
            s: s.map(str::to_owned),
            node: stored.node.as_deref().map(str::to_owned),
            series,
        })
        .expect("a datapoint serializes")
    }

    fn decode(bytes: &[u8]) -> Result<StoredPoint, serde_json::Error> {
        let d: OnDisk = serde_json::from_slice(bytes)?;
        let value = match (d.n, d.s) {
            (Some(v), _) => Value::Numeric(v),
            (None, Some(s)) => Value::String(s),
            (None, None) => return Err(serde::de::Error::custom("a datapoint without a value")),
        };
        Ok(StoredPoint {
            point: Datapoint {
                external_id: d.x,
                timestamp: d.t,
                value,
            },
            series: d.series.map(|s| {
                std::sync::Arc::new(NewSeries {
                    name: s.name,
                    unit: s.unit,
                    description: s.description,
                    metadata: s.metadata,
                    data_set_id: s.data_set_id,
                    asset_id: s.asset_id,
                })
            }),
            node: d.node.map(Into::into),
        })
    }

    fn to_json(stored: &StoredPoint) -> serde_json::Value {
        let item = &stored.point;
        let value = match &item.value {
            Value::Numeric(v) => serde_json::json!(v),
            Value::String(s) => serde_json::json!(s),
        };
        match &stored.node {
            Some(n) => serde_json::json!({
                "instanceId": {"space": &**n, "externalId": item.external_id},
                "timestamp": item.timestamp,
                "value": value,
            }),
            None => serde_json::json!({
                "externalId": item.external_id,
                "timestamp": item.timestamp,
                "value": value,
            }),
        }
    }

    /// Classic time series: external id, `isString` from the value, and the item's
    /// [`NewSeries`] (name, unit, description, metadata) or its external id as name. Data
    /// Modeling time series (`instanceId`): CogniteTimeSeries nodes (`type` numeric or string
    /// from the value, `isStep: false`, and `name`, `description`, `sourceUnit` from
    /// [`NewSeries`]; the core model has no metadata).
    ///
    /// Classic series get `defaults`' data set and security categories.
    fn create_missing(items: &[&StoredPoint], defaults: &crate::cdf::Defaults) -> Vec<Request> {
        let (nodes, classic): (Vec<&StoredPoint>, Vec<&StoredPoint>) =
            items.iter().copied().partition(|s| s.node.is_some());
        let mut requests = create_classic(&classic, defaults);
        requests.extend(create_nodes(&nodes));
        requests
    }
}

/// CogniteTimeSeries nodes for datapoints addressed by `instanceId`.
fn create_nodes(items: &[&StoredPoint]) -> Vec<Request> {
    use super::instances::{Instances, Node, ViewRef};
    let (space, external_id, version) = COGNITE_TIME_SERIES;
    let view = std::sync::Arc::new(ViewRef {
        space: space.to_owned(),
        external_id: external_id.to_owned(),
        version: version.to_owned(),
    });
    let mut seen = std::collections::HashSet::new();
    let nodes: Vec<_> = items
        .iter()
        .filter(|s| seen.insert(s.series_key()))
        .filter_map(|s| {
            let node = s.node.as_ref()?;
            let new = s.series.as_deref();
            let mut properties = serde_json::Map::new();
            let kind = if matches!(s.point.value, Value::String(_)) {
                "string"
            } else {
                "numeric"
            };
            properties.insert("type".into(), kind.into());
            properties.insert("isStep".into(), false.into());
            for (key, value) in [
                ("name", new.and_then(|n| n.name.as_deref())),
                ("description", new.and_then(|n| n.description.as_deref())),
                ("sourceUnit", new.and_then(|n| n.unit.as_deref())),
            ] {
                if let Some(v) = value {
                    properties.insert(key.into(), v.into());
                }
            }
            Some(Instances::store(Node {
                space: node.to_string(),
                external_id: s.point.external_id.clone(),
                edge: None,
                view: Some(view.clone()),
                properties,
            }))
        })
        .collect();
    nodes
        .chunks(super::instances::MAX_INSTANCES_PER_REQUEST)
        .map(|chunk| Instances::request(&chunk.iter().collect::<Vec<_>>()))
        .collect()
}

/// Classic time series for datapoints addressed by external id.
fn create_classic(items: &[&StoredPoint], defaults: &crate::cdf::Defaults) -> Vec<Request> {
    {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Create<'a> {
            external_id: &'a str,
            name: &'a str,
            is_string: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            unit: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<&'a std::collections::BTreeMap<String, String>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data_set_id: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            asset_id: Option<i64>,
            #[serde(skip_serializing_if = "<[i64]>::is_empty")]
            security_categories: &'a [i64],
        }
        let mut seen = std::collections::HashSet::new();
        let series: Vec<Create<'_>> = items
            .iter()
            .filter(|s| seen.insert(s.point.external_id.as_str()))
            .map(|s| {
                let new = s.series.as_deref();
                Create {
                    external_id: &s.point.external_id,
                    name: new
                        .and_then(|n| n.name.as_deref())
                        .unwrap_or(&s.point.external_id),
                    is_string: matches!(s.point.value, Value::String(_)),
                    unit: new.and_then(|n| n.unit.as_deref()),
                    description: new.and_then(|n| n.description.as_deref()),
                    metadata: new.map(|n| &n.metadata).filter(|m| !m.is_empty()),
                    data_set_id: new.and_then(|n| n.data_set_id).or(defaults.data_set_id),
                    asset_id: new.and_then(|n| n.asset_id),
                    security_categories: &defaults.security_categories,
                }
            })
            .collect();
        series
            .chunks(MAX_SERIES_CREATED_PER_REQUEST)
            .map(|chunk| Request {
                endpoint: "/timeseries",
                path: "/timeseries".to_owned(),
                body: super::items_body(chunk),
                items: chunk.len(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn dp(series: usize, t: i64) -> StoredPoint {
        Datapoints::store(Datapoint {
            external_id: format!("ts{series}"),
            timestamp: t,
            value: Value::Numeric(t as f64),
        })
    }

    #[test]
    fn at_most_100_000_datapoints() {
        let items: VecDeque<StoredPoint> = (0..250_000).map(|i| dp(i % 3, i as i64)).collect();
        let r = Datapoints::next_request(&items);
        assert_eq!(r.items, 100_000);
        let body = r.json();
        let series = body["items"].as_array().unwrap();
        assert_eq!(series.len(), 3);
        let total: usize = series
            .iter()
            .map(|s| s["datapoints"].as_array().unwrap().len())
            .sum();
        assert_eq!(total, 100_000);
    }

    #[test]
    fn at_most_10_000_series() {
        let items: VecDeque<StoredPoint> = (0..12_000).map(|i| dp(i, 1)).collect();
        let r = Datapoints::next_request(&items);
        assert_eq!(
            (r.items, r.json()["items"].as_array().unwrap().len()),
            (10_000, 10_000)
        );
    }

    #[test]
    fn string_values() {
        let items: VecDeque<StoredPoint> = [Datapoints::store(Datapoint {
            external_id: "s".into(),
            timestamp: 5,
            value: Value::String("on".into()),
        })]
        .into();
        let r = Datapoints::next_request(&items);
        assert_eq!(
            r.json(),
            serde_json::json!({"items": [{"externalId": "s", "datapoints": [{"timestamp": 5, "value": "on"}]}]})
        );
    }

    #[test]
    fn created_series_take_their_new_series_or_the_external_id() {
        let plain = dp(1, 1);
        let mut described = dp(2, 1);
        described.series = Some(std::sync::Arc::new(NewSeries {
            name: Some("Boiler 2".into()),
            unit: Some("C".into()),
            description: None,
            metadata: [("site".to_owned(), "oslo".to_owned())].into(),
            ..NewSeries::default()
        }));
        let again = dp(2, 2);
        let r = Datapoints::create_missing(
            &[&plain, &described, &again],
            &crate::cdf::Defaults::default(),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].json(),
            serde_json::json!({"items": [
                {"externalId": "ts1", "name": "ts1", "isString": false},
                {"externalId": "ts2", "name": "Boiler 2", "isString": false, "unit": "C", "metadata": {"site": "oslo"}},
            ]})
        );
        let defaults = crate::cdf::Defaults {
            data_set_id: Some(42),
            security_categories: vec![7],
            external_id_prefix: "unused-here:".into(),
        };
        let r = Datapoints::create_missing(&[&plain], &defaults);
        assert_eq!(
            r[0].json(),
            serde_json::json!({"items": [
                {"externalId": "ts1", "name": "ts1", "isString": false, "dataSetId": 42, "securityCategories": [7]},
            ]})
        );
    }
}
