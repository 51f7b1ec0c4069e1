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

/// The datapoints queue kind.
#[derive(Debug)]
pub struct Datapoints;

/// The API's limit of time series created per request.
pub const MAX_SERIES_CREATED_PER_REQUEST: usize = 1_000;

impl Kind for Datapoints {
    type Item = Datapoint;
    type Stored = Datapoint;
    const NAME: &'static str = "datapoints";

    fn store(item: Datapoint) -> Datapoint {
        item
    }

    fn batch_len<'a>(items: impl Iterator<Item = &'a Datapoint>) -> usize {
        let mut series: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut taken = 0;
        for dp in items.take(MAX_DATAPOINTS_PER_REQUEST) {
            if !series.contains(dp.external_id.as_str()) {
                if series.len() == MAX_SERIES_PER_REQUEST {
                    break;
                }
                series.insert(&dp.external_id);
            }
            taken += 1;
        }
        taken
    }

    fn request(items: &[&Datapoint]) -> Request {
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
        struct Series<'a> {
            external_id: &'a str,
            datapoints: Vec<Point<'a>>,
        }
        // Grouped by time series, in order of first appearance.
        let mut series: Vec<Series<'_>> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for dp in items {
            let i = *index.entry(&dp.external_id).or_insert_with(|| {
                series.push(Series {
                    external_id: &dp.external_id,
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

    fn id(item: &Datapoint) -> Option<&str> {
        Some(&item.external_id)
    }

    fn to_json(item: &Datapoint) -> serde_json::Value {
        let value = match &item.value {
            Value::Numeric(v) => serde_json::json!(v),
            Value::String(s) => serde_json::json!(s),
        };
        serde_json::json!({
            "externalId": item.external_id,
            "timestamp": item.timestamp,
            "value": value,
        })
    }

    /// Classic time series: external id, name = external id, `isString` from the value.
    fn create_missing(items: &[&Datapoint]) -> Vec<Request> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct NewSeries<'a> {
            external_id: &'a str,
            name: &'a str,
            is_string: bool,
        }
        let mut seen = std::collections::HashSet::new();
        let series: Vec<NewSeries<'_>> = items
            .iter()
            .filter(|dp| seen.insert(dp.external_id.as_str()))
            .map(|dp| NewSeries {
                external_id: &dp.external_id,
                name: &dp.external_id,
                is_string: matches!(dp.value, Value::String(_)),
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

    fn dp(series: usize, t: i64) -> Datapoint {
        Datapoint {
            external_id: format!("ts{series}"),
            timestamp: t,
            value: Value::Numeric(t as f64),
        }
    }

    #[test]
    fn at_most_100_000_datapoints() {
        let items: VecDeque<Datapoint> = (0..250_000).map(|i| dp(i % 3, i as i64)).collect();
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
        let items: VecDeque<Datapoint> = (0..12_000).map(|i| dp(i, 1)).collect();
        let r = Datapoints::next_request(&items);
        assert_eq!(
            (r.items, r.json()["items"].as_array().unwrap().len()),
            (10_000, 10_000)
        );
    }

    #[test]
    fn string_values() {
        let items: VecDeque<Datapoint> = [Datapoint {
            external_id: "s".into(),
            timestamp: 5,
            value: Value::String("on".into()),
        }]
        .into();
        let r = Datapoints::next_request(&items);
        assert_eq!(
            r.json(),
            serde_json::json!({"items": [{"externalId": "s", "datapoints": [{"timestamp": 5, "value": "on"}]}]})
        );
    }
}
