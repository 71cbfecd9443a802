//! Costs of the rebalancer on the request path (`roundrobin-rebalancer`).
//!
//! - `record/1-thread`: one [`Rebalancer::record_at`] with the default error-ratio
//!   meter (ready: it has seen ten seconds of traffic), server looked up by its
//!   `ServerUrl` in a pool of 3, `now` given, the state machine not due (the path every
//!   response takes between two steps).
//! - `record/1-thread-64-servers`: the same in a pool of 64 servers, where the server
//!   is found through a hash map instead of by comparison.
//! - `record/1-thread-system-clock`: the same through [`Rebalancer::record`], which
//!   also reads the system clock.
//! - `record/2-threads-same-server`: two threads record for the same server at once
//!   (contended atomics); time per record per thread.
//! - `meter/error-ratio-record`: [`ErrorRatioMeter`]'s `record` alone (one
//!   compare-and-swap on the current bucket), the part of a record spent in the meter.
//! - `baseline/atomic-fetch-add`, `baseline/instant-now`: an uncontended
//!   `AtomicU64::fetch_add` and one `Instant::now()` on the same machine, to read the
//!   figures above against.
//! - `fsm/not-due`: [`Rebalancer::step_if_due`] before the backoff has expired: an atomic
//!   load and a comparison.
//! - `fsm/due-nothing-to-do`: a full step of the state machine that finds nothing to
//!   change (ready meters, no split, weights converged), run once per backoff period.
#![allow(
    missing_docs,
    reason = "criterion_group! generates a public function without docs"
)]

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_rebalancer::{ErrorRatioMeter, Meter, Rebalancer};

/// A pool of `n` servers whose meters are ready (ten seconds of traffic before
/// `start`), as in a running proxy. `start` must be at least 10 s after the pool is
/// built, so that every record is later than the rebalancer's origin, as in real use.
fn pool(n: usize, start: Instant) -> (Rebalancer<ServerUrl>, Vec<ServerUrl>) {
    let rb = Rebalancer::new(RoundRobin::new());
    let servers: Vec<ServerUrl> = (0..n)
        .map(|i| format!("http://10.0.0.{i}:8080").parse().unwrap())
        .collect();
    for s in &servers {
        rb.upsert_server(s.clone(), Some(1)).unwrap();
    }
    let t0 = start - Duration::from_secs(10);
    for second in 0..10 {
        for s in &servers {
            rb.record_at(s, 200, Duration::ZERO, t0 + Duration::from_secs(second));
        }
    }
    assert!(rb.snapshot_at(start).iter().all(|s| s.ready));
    (rb, servers)
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    let now = Instant::now() + Duration::from_secs(20);
    let (rb, servers) = pool(3, now);
    // the first record runs a (no-op) step; the next ones find it not due
    rb.record_at(&servers[1], 200, Duration::ZERO, now);
    group.bench_function("1-thread", |b| {
        b.iter(|| rb.record_at(black_box(&servers[1]), black_box(200), Duration::ZERO, now))
    });
    let (rb_large, servers_large) = pool(64, now);
    rb_large.record_at(&servers_large[1], 200, Duration::ZERO, now);
    group.bench_function("1-thread-64-servers", |b| {
        b.iter(|| {
            rb_large.record_at(
                black_box(&servers_large[40]),
                black_box(200),
                Duration::ZERO,
                now,
            )
        })
    });
    group.bench_function("1-thread-system-clock", |b| {
        b.iter(|| rb.record(black_box(&servers[1]), black_box(200), Duration::ZERO))
    });
    group.bench_function("2-threads-same-server", |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            thread::scope(|scope| {
                let other = scope.spawn(|| {
                    start.wait();
                    for _ in 0..iters {
                        rb.record_at(black_box(&servers[1]), 500, Duration::ZERO, now);
                    }
                });
                start.wait();
                let t = Instant::now();
                for _ in 0..iters {
                    rb.record_at(black_box(&servers[1]), 200, Duration::ZERO, now);
                }
                let elapsed = t.elapsed();
                other.join().unwrap();
                elapsed
            })
        })
    });
    group.finish();
}

fn meter(c: &mut Criterion) {
    let meter = ErrorRatioMeter::default();
    let now = Instant::now();
    for second in (1..=10).rev() {
        meter.record(200, Duration::ZERO, now - Duration::from_secs(second));
    }
    assert!(meter.is_ready(now));
    c.bench_function("meter/error-ratio-record", |b| {
        b.iter(|| meter.record(black_box(200), Duration::ZERO, black_box(now)))
    });
}

fn baseline(c: &mut Criterion) {
    let counter = AtomicU64::new(0);
    c.bench_function("baseline/atomic-fetch-add", |b| {
        b.iter(|| counter.fetch_add(black_box(1), Ordering::Relaxed))
    });
    c.bench_function("baseline/instant-now", |b| b.iter(Instant::now));
}

fn fsm(c: &mut Criterion) {
    let mut group = c.benchmark_group("fsm");
    let t0 = Instant::now() + Duration::from_secs(20);
    let (rb, servers) = pool(3, t0);
    rb.record_at(&servers[0], 200, Duration::ZERO, t0);
    group.bench_function("not-due", |b| {
        b.iter(|| rb.step_if_due(black_box(t0)).unwrap())
    });

    let (rb, _) = pool(3, t0);
    let mut now = t0;
    let period = Duration::from_secs(10) + Duration::from_nanos(1);
    group.bench_function("due-nothing-to-do", |b| {
        b.iter(|| {
            now += period;
            assert!(rb.step_if_due(black_box(now)).unwrap());
        })
    });
    assert_eq!(
        rb.snapshot().iter().map(|s| s.current_weight).sum::<u32>(),
        3
    );
    group.finish();
}

criterion_group!(benches, record, meter, baseline, fsm);
criterion_main!(benches);
