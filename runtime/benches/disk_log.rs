//! The disk buffer's segment log: appends per second from concurrent producers (each append
//! returns once its record is synced; producers share fsyncs), fsyncs per second, and reading
//! back. Run: `cargo bench -p extractor-runtime --bench disk_log` (BENCH_RECORDS, BENCH_PRODUCERS,
//! BENCH_RECORD_BYTES). The folder is in the system's temporary directory: put TMPDIR on the
//! disk you mean to measure.

use std::time::Instant;

use extractor_runtime::disk_log::{DiskLog, Options};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = env("BENCH_RECORDS", 200_000);
    let producers = env("BENCH_PRODUCERS", 64);
    let size = env("BENCH_RECORD_BYTES", 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = DiskLog::open(dir.path(), Options::default()).unwrap();
    let payload = vec![b'x'; size];
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..producers)
            .map(|_| {
                let (log, payload) = (log.clone(), payload.clone());
                tokio::spawn(async move {
                    for _ in 0..records / producers {
                        log.append(&payload).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let took = started.elapsed().as_secs_f64();
    let stats = log.stats();
    let written = (records / producers) * producers;
    println!(
        "disk log: {written} appends of {size} B by {producers} producers in {took:.2} s: {:.0} appends/s, {} fsyncs ({:.0}/s, {:.1} records each), {} MiB on disk",
        written as f64 / took,
        stats.fsyncs,
        stats.fsyncs as f64 / took,
        written as f64 / stats.fsyncs.max(1) as f64,
        stats.bytes / (1024 * 1024)
    );
    let started = Instant::now();
    let read = rt.block_on(async {
        let mut reader = log.reader();
        let mut n = 0;
        while n < written {
            let batch = reader.next(10_000).await.unwrap();
            for r in &batch {
                log.ack(r.seq);
            }
            n += batch.len();
        }
        n
    });
    let took = started.elapsed().as_secs_f64();
    println!(
        "disk log: read and acknowledged {read} records in {took:.2} s: {:.0} records/s; {} MiB left on disk",
        read as f64 / took,
        log.stats().bytes / (1024 * 1024)
    );
}
