//! `metrics.cognite`: the process's metrics as CDF time series, as python-extractor-utils'
//! `CognitePusher` does, through the datapoints queue (so its retries, splitting and
//! dead-letter file apply).
//!
//! Every series of a counter, gauge or untyped family in what `/metrics` serves becomes the time
//! series `<prefix><name>` (no labels) or `<prefix><name>{label="value",...}` (labels as
//! `/metrics` writes them); an external id longer than CDF's 255 bytes is cut and ends with a
//! hash of the whole. A series is created when CDF does not have it (`create-missing`), named
//! after the metric without the prefix, described by the help text, in `data-set` (default:
//! `cognite.data-set`) and under the asset. Histograms and summaries are left out, as
//! python-extractor-utils does. At most [`MAX_SERIES`] series a push: memory stays bounded
//! whatever the number of tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cdf::{CdfClient, CdfError, EitherId};
use crate::config::CogniteMetricsConfig;
use crate::metrics::MetricsRegistry;
use crate::queues::{Datapoint, DatapointValue, NewSeries, Policy, Queues, StoredPoint};

/// The most series one push sends.
pub const MAX_SERIES: usize = 10_000;
/// CDF's longest external id, in bytes.
const MAX_EXTERNAL_ID: usize = 255;

/// One series read from the text format.
#[derive(Debug, PartialEq)]
pub struct Series {
    /// `<name>` or `<name>{labels}`.
    pub name: String,
    /// The family's help text.
    pub help: String,
    /// The value.
    pub value: f64,
}

/// The counter, gauge and untyped series of `text` (the Prometheus text format), at most
/// `max`; values that are not finite are left out (CDF takes none).
pub fn series(text: &str, max: usize) -> (Vec<Series>, usize) {
    let mut out = Vec::new();
    let mut left_out = 0;
    let mut help: HashMap<&str, String> = HashMap::new();
    let mut family: (&str, &str) = ("", "untyped");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name, text.replace("\\n", "\n").replace("\\\\", "\\"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            family = (name, kind.trim());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // `name{labels} value [timestamp]`; a label value may hold spaces, so split after `}`.
        let (series, rest) = match line.find('}') {
            Some(end) if line[..end].contains('{') => (&line[..=end], &line[end + 1..]),
            _ => line.split_once(' ').unwrap_or((line, "")),
        };
        let metric = series.split('{').next().unwrap_or(series);
        let kind = if metric.starts_with(family.0) && !family.0.is_empty() {
            family.1
        } else {
            "untyped"
        };
        if !matches!(kind, "counter" | "gauge" | "untyped") {
            continue;
        }
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
        else {
            continue;
        };
        if out.len() == max {
            left_out += 1;
            continue;
        }
        out.push(Series {
            name: series.to_owned(),
            help: help.get(metric).cloned().unwrap_or_default(),
            value,
        });
    }
    (out, left_out)
}

/// `prefix` + `name`, cut to CDF's 255 bytes with a hash of the whole at the end when longer.
pub fn external_id(prefix: &str, name: &str) -> String {
    let whole = format!("{prefix}{name}");
    if whole.len() <= MAX_EXTERNAL_ID {
        return whole;
    }
    let hash = format!("~{:016x}", crate::fnv::hash(whole.as_bytes()));
    let mut cut = MAX_EXTERNAL_ID - hash.len();
    while !whole.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{hash}", &whole[..cut])
}

/// Pushes the metrics as time series. Cheap to clone.
#[derive(Clone)]
pub(crate) struct CognitePusher {
    metrics: MetricsRegistry,
    queues: Queues,
    prefix: Arc<str>,
    data_set_id: Option<i64>,
    asset_id: Option<i64>,
    /// How each series is created, by external id (kept so that a push allocates only for new
    /// series).
    known: Arc<Mutex<HashMap<String, Arc<NewSeries>>>>,
}

impl CognitePusher {
    /// Looks up the data set and the asset (creating the asset when `asset-name` is given and
    /// CDF does not have it). The error names the key.
    pub(crate) async fn start(
        config: &CogniteMetricsConfig,
        cdf: &CdfClient,
        queues: Queues,
        metrics: MetricsRegistry,
    ) -> Result<Self, (&'static str, CdfError)> {
        let dry = cdf.is_dry_run();
        let data_set_id = match config.data_set.as_ref().and_then(|d| d.either_id()) {
            Some(EitherId::Id(id)) => Some(id),
            Some(id) if !dry => Some(
                crate::cdf::data_set_id(cdf, &id)
                    .await
                    .map_err(|e| ("metrics.cognite.data-set", e))?,
            ),
            _ => None,
        };
        let asset_id = match &config.asset_external_id {
            Some(x) if !dry => Some(
                asset(cdf, x, config.asset_name.as_deref(), data_set_id)
                    .await
                    .map_err(|e| ("metrics.cognite.asset-external-id", e))?,
            ),
            _ => None,
        };
        Ok(CognitePusher {
            metrics,
            queues,
            prefix: config.external_id_prefix.as_str().into(),
            data_set_id,
            asset_id,
            known: Arc::default(),
        })
    }

    /// Queues one datapoint per series, stamped now.
    pub(crate) async fn push(&self) -> Result<usize, CdfError> {
        let text = String::from_utf8(self.metrics.render()).unwrap_or_default();
        let (all, left_out) = series(&text, MAX_SERIES);
        if left_out > 0 {
            tracing::warn!(target: "extractor_runtime::metrics", left_out, "metrics.cognite: more than {MAX_SERIES} series; the rest are not pushed");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let policy = Policy {
            create_missing: true,
            ..Policy::default()
        };
        let n = all.len();
        for s in all {
            let external_id = external_id(&self.prefix, &s.name);
            let new = {
                let mut known = self.known.lock().expect("metrics series lock");
                known
                    .entry(external_id.clone())
                    .or_insert_with(|| {
                        Arc::new(NewSeries {
                            name: Some(s.name.clone()),
                            description: Some(s.help.clone()).filter(|h| !h.is_empty()),
                            data_set_id: self.data_set_id,
                            asset_id: self.asset_id,
                            ..NewSeries::default()
                        })
                    })
                    .clone()
            };
            let point = StoredPoint {
                point: Datapoint {
                    external_id,
                    timestamp: now,
                    value: DatapointValue::Numeric(s.value),
                },
                series: Some(new),
                node: None,
            };
            self.queues.datapoints.add_entry(point, None, policy).await?;
        }
        Ok(n)
    }

    /// Pushes every `every` until `stop`.
    pub(crate) async fn run(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                pushed = self.push() => if let Err(e) = pushed {
                    tracing::warn!(target: "extractor_runtime::metrics", "metrics.cognite: cannot queue the metrics: {e}");
                }
            }
        }
    }
}

/// The id of the asset `external_id`, created (with `name`) when CDF does not have it.
async fn asset(
    cdf: &CdfClient,
    external_id: &str,
    name: Option<&str>,
    data_set_id: Option<i64>,
) -> Result<i64, CdfError> {
    if let Some(name) = name {
        let mut item = serde_json::json!({"externalId": external_id, "name": name});
        if let Some(d) = data_set_id {
            item["dataSetId"] = d.into();
        }
        match cdf
            .post("/assets", "/assets", &serde_json::json!({"items": [item]}))
            .await
        {
            Ok(answer) => {
                if let Some(id) = answer["items"][0]["id"].as_i64() {
                    return Ok(id);
                }
            }
            // CDF has it already.
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(e),
        }
    }
    let answer = cdf
        .post(
            "/assets/byids",
            "/assets/byids",
            &serde_json::json!({"items": [{"externalId": external_id}]}),
        )
        .await?;
    answer["items"][0]["id"].as_i64().ok_or_else(|| {
        CdfError::new(
            crate::cdf::CdfErrorKind::BadResponse,
            "/assets/byids",
            format!("CDF's answer for the asset `{external_id}` has no numeric `id`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP extractor_up Whether the process runs.\n# TYPE extractor_up gauge\nextractor_up 1\n# HELP extractor_task_runs_total Runs of a task.\n# TYPE extractor_task_runs_total counter\nextractor_task_runs_total{task=\"a b\",result=\"ok\"} 3\nextractor_task_runs_total{task=\"c\",result=\"failed\"} 0\n# HELP lag Lag.\n# TYPE lag histogram\nlag_bucket{le=\"0.1\"} 2\nlag_sum 0.3\nlag_count 2\n# TYPE odd gauge\nodd NaN\n";

    #[test]
    fn counters_and_gauges_become_series_histograms_do_not() {
        let (s, left_out) = series(TEXT, 100);
        assert_eq!(left_out, 0);
        assert_eq!(
            s,
            vec![
                Series {
                    name: "extractor_up".into(),
                    help: "Whether the process runs.".into(),
                    value: 1.0
                },
                Series {
                    name: "extractor_task_runs_total{task=\"a b\",result=\"ok\"}".into(),
                    help: "Runs of a task.".into(),
                    value: 3.0
                },
                Series {
                    name: "extractor_task_runs_total{task=\"c\",result=\"failed\"}".into(),
                    help: "Runs of a task.".into(),
                    value: 0.0
                },
            ]
        );
        let (s, left_out) = series(TEXT, 1);
        assert_eq!((s.len(), left_out), (1, 2));
    }

    #[test]
    fn long_external_ids_are_cut_with_a_hash_of_the_whole() {
        assert_eq!(external_id("p:", "up"), "p:up");
        let long = format!("m{{task=\"{}\"}}", "é".repeat(200));
        let a = external_id("p:", &long);
        let b = external_id("p:", &long.replace("éé\"", "ée\""));
        assert!(a.len() <= 255 && b.len() <= 255, "{}", a.len());
        assert_ne!(a, b, "two long names stay apart");
        assert!(a.starts_with("p:m{task="));
    }
}
