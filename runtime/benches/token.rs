//! Token manager benchmarks: the fast path of `get()` alone and with a second thread contending,
//! and the herd (1000 concurrent forced refreshes). Run: `cargo bench -p extractor-runtime --bench token`.

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use extractor_runtime::Secret;
use extractor_runtime::auth::{TokenManager, TokenManagerOptions};
use extractor_runtime::config::IdpAuthenticationConfig;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn setup(rt: &tokio::runtime::Runtime) -> (MockServer, TokenManager) {
    rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "bench-token", "expires_in": 86_400
            })))
            .mount(&server)
            .await;
        let config = IdpAuthenticationConfig {
            min_ttl: Duration::from_secs(30).into(),
            ..IdpAuthenticationConfig::new(
                "c",
                Secret::new("s"),
                format!("{}/token", server.uri()),
                vec!["s".into()],
            )
        };
        let tokens = TokenManager::spawn(&config, TokenManagerOptions::default(), None).unwrap();
        tokens.get().await.unwrap();
        (server, tokens)
    })
}

/// Polls `get()` once with a no-op waker: the fast path completes on the first poll.
fn get_now(tokens: &TokenManager) -> bool {
    let mut fut = pin!(tokens.get());
    let mut cx = Context::from_waker(Waker::noop());
    matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))
}

fn fast_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_server, tokens) = setup(&rt);
    let _guard = rt.enter();
    c.bench_function("try_get, 1 thread", |b| {
        b.iter(|| black_box(tokens.try_get()))
    });
    c.bench_function("get (first poll), 1 thread", |b| {
        b.iter(|| black_box(get_now(&tokens)))
    });
    c.bench_function("get (first poll), 2 threads contending", |b| {
        b.iter_custom(|iters| {
            let stop = Arc::new(AtomicBool::new(false));
            let other = {
                let (tokens, stop) = (tokens.clone(), stop.clone());
                let handle = rt.handle().clone();
                std::thread::spawn(move || {
                    let _g = handle.enter();
                    while !stop.load(Ordering::Relaxed) {
                        black_box(get_now(&tokens));
                    }
                })
            };
            let start = Instant::now();
            for _ in 0..iters {
                black_box(get_now(&tokens));
            }
            let took = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            other.join().unwrap();
            took
        })
    });
}

fn herd(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, tokens) = setup(&rt);
    let mut group = c.benchmark_group("herd");
    group.sample_size(20);
    group.bench_function("1000 concurrent force_refresh", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let rejected = tokens.get().await.unwrap();
                    let before = server.received_requests().await.unwrap().len();
                    let start = Instant::now();
                    let handles: Vec<_> = (0..1000)
                        .map(|_| {
                            let (tokens, rejected) = (tokens.clone(), rejected.clone());
                            tokio::spawn(
                                async move { tokens.force_refresh(&rejected).await.unwrap() },
                            )
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                    total += start.elapsed();
                    let after = server.received_requests().await.unwrap().len();
                    assert_eq!(after - before, 1, "one request per herd");
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, fast_path, herd);
criterion_main!(benches);
