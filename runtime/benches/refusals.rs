//! What refused items cost: 100 000 datapoints (100 series of 1 000) with 10 readings CDF
//! refuses (values out of its ±1e100 range, each in another series, a bare 400 that names no
//! item) against a clean run, through the queue and the CDF client to the stateful fake CDF the
//! tests use. Prints requests, bytes sent and time for both.
//! Run: `cargo bench -p extractor-runtime --bench refusals` (`BENCH_ROUNDS`, default 5).

use std::time::{Duration, Instant};

use extractor_runtime::queues::{Datapoint, DatapointValue, DeadLetter, Queues};

mod common;

#[path = "../tests/support/fake_cdf.rs"]
mod fake_cdf;

use fake_cdf::FakeCdf;

const SERIES: usize = 100;
const POINTS: usize = 1_000;

fn points(bad: usize) -> Vec<Datapoint> {
    let total = SERIES * POINTS;
    let step = total.checked_div(bad);
    (0..total)
        .map(|i| Datapoint {
            external_id: format!("s{:03}", i % SERIES),
            timestamp: 1_700_000_000_000 + i as i64,
            // Spread: the i-th bad value sits in the middle of its stretch of the queue.
            value: DatapointValue::Numeric(if step.is_some_and(|s| i % s == s / 2) {
                1e101
            } else {
                i as f64 * 0.5
            }),
        })
        .collect()
}

struct Outcome {
    took: Duration,
    requests: usize,
    refused: usize,
    delivered: usize,
}

async fn once(bad: usize) -> Outcome {
    let ids: Vec<String> = (0..SERIES).map(|s| format!("s{s:03}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let cdf = FakeCdf::start(&names).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = common::cdf_client(&cdf.uri(), "demo", &registry);
    let dir = tempfile::tempdir().unwrap();
    let dead = DeadLetter::open(&dir.path().join("dead.ndjson")).unwrap();
    let queues = Queues::with_dead_letter(client, 200_000, &registry, Some(dead)).unwrap();
    for p in points(bad) {
        queues.datapoints.add(p).await.unwrap();
    }
    let started = Instant::now();
    queues.flush().await.unwrap();
    let took = started.elapsed();
    let delivered = cdf.with(|c| c.datapoints.values().map(Vec::len).sum());
    tokens.shutdown();
    Outcome {
        took,
        requests: cdf.requests("/timeseries/data"),
        refused: queues.refused(),
        delivered,
    }
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for bad in [0, 1, 10] {
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..rounds {
                let o = once(bad).await;
                assert_eq!(o.refused, bad);
                assert_eq!(o.delivered, SERIES * POINTS - bad);
                times.push(o.took);
                last = Some(o);
            }
            times.sort();
            let o = last.unwrap();
            println!(
                "refusals bench: {} datapoints, {bad:>2} refused: {:>3} requests, median {:.0} ms (min {:.0}, max {:.0}) over {rounds} rounds",
                SERIES * POINTS,
                o.requests,
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[0].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3,
            );
        }
    });
}
