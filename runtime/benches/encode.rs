//! The request encoders: a full RAW request (10 000 rows of the throughput bench's csv columns)
//! and a datapoints request (13 333 points over 100 series, what a request carries with the
//! default queue) built from queued items, as JSON and as protocol buffers, and each body
//! gzipped at the fastest and at the default level. Prints each body's size, plain and gzipped.
//! Run: `cargo bench -p extractor-runtime --bench encode`.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use extractor_runtime::cdf::gzip::{gzip, gzip_at};
use extractor_runtime::queues::{
    Datapoint, DatapointValue, Datapoints, Kind, RawRow, RawRows, StoredPoint, StoredRow,
};

fn rows() -> VecDeque<StoredRow> {
    (0..10_000u64)
        .map(|i| {
            let columns = serde_json::json!({
                "id": i,
                "time": 1_700_000_000_000u64 + i,
                "sensor": format!("sensor-{}", i % 100),
                "value": (i % 1000) as f64 + (i % 10) as f64 / 10.0,
            });
            let serde_json::Value::Object(columns) = columns else {
                unreachable!()
            };
            RawRows::store(RawRow {
                database: "db".into(),
                table: "t".into(),
                key: i.to_string(),
                columns,
            })
        })
        .collect()
}

fn points() -> VecDeque<StoredPoint> {
    (0..13_333u64)
        .map(|i| {
            Datapoints::store(Datapoint {
                external_id: format!("sensor-{}", i % 100),
                timestamp: 1_700_000_000_000 + i as i64,
                value: DatapointValue::Numeric((i % 1000) as f64 + (i % 10) as f64 / 10.0),
            })
        })
        .collect()
}

fn encoders(c: &mut Criterion) {
    let rows = rows();
    let points = points();
    let raw_body = RawRows::next_request(&rows).body;
    let points_body = Datapoints::next_request(&points).body;
    let front: Vec<&StoredPoint> = points.iter().collect();
    let protobuf_body = Datapoints::protobuf_request(&front).unwrap().body;
    let bodies = [
        ("RAW", &raw_body),
        ("datapoints", &points_body),
        ("datapoints protobuf", &protobuf_body),
    ];
    for (name, body) in bodies {
        println!(
            "encode bench: {name} body {} KiB, gzipped {} KiB (fastest), {} KiB (default level)",
            body.len() / 1024,
            gzip(body).len() / 1024,
            gzip_at(body, flate2::Compression::default()).len() / 1024
        );
    }
    c.bench_function("RAW request, 10 000 rows", |b| {
        b.iter(|| black_box(RawRows::next_request(&rows)))
    });
    c.bench_function("datapoints request, 13 333 points", |b| {
        b.iter(|| black_box(Datapoints::next_request(&points)))
    });
    c.bench_function("datapoints request as protobuf, 13 333 points", |b| {
        b.iter(|| black_box(Datapoints::protobuf_request(&front)))
    });
    for (name, body) in bodies {
        c.bench_function(&format!("gzip {name} body, fastest"), |b| {
            b.iter(|| black_box(gzip(body)))
        });
        c.bench_function(&format!("gzip {name} body, default level"), |b| {
            b.iter(|| black_box(gzip_at(body, flate2::Compression::default())))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = encoders
}
criterion_main!(benches);
