//! Datapoints: `POST /timeseries/data`, at most 10 000 time series and 100 000 datapoints a
//! request.

use std::collections::VecDeque;

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

impl Kind for Datapoints {
    type Item = Datapoint;
    type Stored = Datapoint;

    fn store(item: Datapoint) -> Datapoint {
        item
    }
    const NAME: &'static str = "datapoints";

    fn next_request(items: &VecDeque<Datapoint>) -> Request {
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
        // Group a prefix of the queue by time series, in order of first appearance.
        let mut series: Vec<Series<'_>> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut taken = 0;
        for dp in items.iter().take(MAX_DATAPOINTS_PER_REQUEST) {
            let i = match index.get(dp.external_id.as_str()) {
                Some(i) => *i,
                None => {
                    if series.len() == MAX_SERIES_PER_REQUEST {
                        break;
                    }
                    index.insert(&dp.external_id, series.len());
                    series.push(Series {
                        external_id: &dp.external_id,
                        datapoints: Vec::new(),
                    });
                    series.len() - 1
                }
            };
            let value = match &dp.value {
                Value::Numeric(v) => PointValue::Numeric(*v),
                Value::String(s) => PointValue::String(s),
            };
            series[i].datapoints.push(Point {
                timestamp: dp.timestamp,
                value,
            });
            taken += 1;
        }
        Request {
            endpoint: "/timeseries/data",
            path: "/timeseries/data".to_owned(),
            body: super::items_body(&series),
            items: taken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
