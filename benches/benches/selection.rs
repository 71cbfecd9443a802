//! Nanoseconds per pick of weighted round-robin selection.
//!
//! Pools of n = 10, 100, 1000, 10000 servers with weights 1..=4096 drawn from a fixed
//! seed. Contenders, all picking the next server of a shared balancer:
//!
//! - `interleaved`, `smooth`: `roundrobin_core::RoundRobin::next_server` (lock-free);
//! - `interleaved_picker`, `smooth_picker`: the same balancer through a per-thread
//!   caching `Picker` (`RoundRobin::picker`);
//! - `pingora`: `pingora-load-balancing`'s `Weighted<RoundRobin>` (a table with each
//!   backend repeated `weight` times and an atomic counter), first backend of `iter`;
//! - `mutex_smooth`: the textbook smooth weighted round robin loop (nginx) behind a
//!   `Mutex`, O(n) a pick.
//!
//! The smooth policy precomputes its period (`sum(w)/gcd(w)` picks) and rejects pools
//! whose period exceeds `MAX_SMOOTH_PERIOD`: with these weights n = 10000 is rejected and
//! reported as not measured.
//!
//! `build/..` measures building a schedule: what one change costs the writer.
//!
//! `threads=1` measures one caller; `threads=2` runs two callers on the same balancer
//! and reports the time per pick seen by each.

use core::hint::black_box;
use core::time::Duration;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Instant;

use criterion::{criterion_main, BenchmarkId, Criterion};
// `selection::RoundRobin` is pingora's `Weighted<algorithms::RoundRobin>`.
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, RoundRobin as PingoraWeighted,
};
use pingora_load_balancing::Backend;
use roundrobin_core::{Error, Policy, RoundRobin, Schedule};

const SIZES: [usize; 4] = [10, 100, 1000, 10_000];

/// Weights 1..=4096 from a fixed seed (splitmix64).
fn weights(n: usize) -> Vec<u32> {
    let mut state = 0x5eed_u64;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z % 4096) as u32 + 1
        })
        .collect()
}

/// The textbook smooth weighted round robin, one lock around the whole loop.
struct MutexSmooth {
    state: Mutex<Vec<(i64, i64)>>,
    total: i64,
}

impl MutexSmooth {
    fn new(weights: &[u32]) -> Self {
        Self {
            state: Mutex::new(weights.iter().map(|&w| (0, i64::from(w))).collect()),
            total: weights.iter().map(|&w| i64::from(w)).sum(),
        }
    }

    fn select(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        let mut best = 0;
        for i in 0..state.len() {
            state[i].0 += state[i].1;
            if state[i].0 > state[best].0 {
                best = i;
            }
        }
        state[best].0 -= self.total;
        best
    }
}

/// Something that picks `iters` times from a balancer shared with other threads.
trait Contender: Sync {
    fn picks(&self, iters: u64);
}

impl Contender for RoundRobin<u32> {
    fn picks(&self, iters: u64) {
        for _ in 0..iters {
            black_box(self.next_server().unwrap());
        }
    }
}

/// `RoundRobin` through a per-thread caching [`roundrobin_core::Picker`].
struct Cached(RoundRobin<u32>);

impl Contender for Cached {
    fn picks(&self, iters: u64) {
        let mut picker = self.0.picker();
        for _ in 0..iters {
            black_box(picker.next_server().unwrap());
        }
    }
}

impl Contender for Arc<PingoraWeighted> {
    fn picks(&self, iters: u64) {
        for _ in 0..iters {
            black_box(BackendSelection::iter(self, b"").next().unwrap().weight);
        }
    }
}

impl Contender for MutexSmooth {
    fn picks(&self, iters: u64) {
        for _ in 0..iters {
            black_box(self.select());
        }
    }
}

fn ours(weights: &[u32], policy: Policy) -> Result<RoundRobin<u32>, Error> {
    let rr = RoundRobin::builder().policy(policy).build();
    rr.upsert_servers((0..).zip(weights).map(|(i, &w)| (i, Some(w))))?;
    Ok(rr)
}

fn pingora(weights: &[u32]) -> Arc<PingoraWeighted> {
    let backends: BTreeSet<Backend> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let addr = format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255);
            Backend::new_with_weight(&addr, w as usize).unwrap()
        })
        .collect();
    Arc::new(<PingoraWeighted as BackendSelection>::build(&backends))
}

/// Time per pick as seen by each of `threads` callers picking `iters` times each.
fn run(contender: &dyn Contender, threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        contender.picks(iters);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads);
    let times: Vec<Duration> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    contender.picks(iters);
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.iter().sum::<Duration>() / threads as u32
}

fn selection(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("pick/threads={threads}"));
        for n in SIZES {
            let w = weights(n);
            let mut contenders: Vec<(&str, Box<dyn Contender>)> = Vec::new();
            for (name, cached, policy) in [
                ("interleaved", "interleaved_picker", Policy::Interleaved),
                ("smooth", "smooth_picker", Policy::Smooth),
            ] {
                match (ours(&w, policy), ours(&w, policy)) {
                    (Ok(rr), Ok(rr2)) => {
                        contenders.push((name, Box::new(rr)));
                        contenders.push((cached, Box::new(Cached(rr2))));
                    }
                    // The smooth table is capped (MAX_SMOOTH_PERIOD): say so, measure the rest.
                    (Err(e), _) | (_, Err(e)) => eprintln!("{name}/{n}: not measured: {e}"),
                }
            }
            contenders.push(("pingora", Box::new(pingora(&w))));
            contenders.push(("mutex_smooth", Box::new(MutexSmooth::new(&w))));
            for (name, contender) in &contenders {
                group.bench_function(BenchmarkId::new(*name, n), |b| {
                    b.iter_custom(|iters| run(contender.as_ref(), threads, iters))
                });
            }
        }
        group.finish();
    }
}

/// Time to build a schedule (what a change costs the writer; picks never wait for it).
fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for (policy, n) in [
        (Policy::Interleaved, 1000),
        (Policy::Interleaved, 10_000),
        (Policy::Smooth, 100),
        (Policy::Smooth, 1000),
    ] {
        let w = weights(n);
        let id = BenchmarkId::new(format!("{policy:?}").to_lowercase(), n);
        group.bench_function(id, |b| {
            b.iter(|| Schedule::new(black_box(&w), policy).unwrap())
        });
    }
    group.finish();
}

mod group {
    #![allow(
        missing_docs,
        unreachable_pub,
        reason = "criterion_group! generates an undocumented pub fn"
    )]
    criterion::criterion_group!(benches, super::selection, super::build);
}
criterion_main!(group::benches);
