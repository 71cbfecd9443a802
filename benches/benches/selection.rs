//! Nanoseconds per pick of weighted round-robin selection, what a schedule costs to
//! build and hold, and what a change costs.
//!
//! Pools of n = 10, 100, 1000, 10k, 100k servers with weights 1..=4096 drawn from a
//! fixed seed. Contenders, all picking the next server of a shared balancer:
//!
//! - `interleaved`, `smooth`: `roundrobin_core::RoundRobin::next_server` (lock-free);
//! - `interleaved_picker`, `smooth_picker`: the same balancer through a per-thread
//!   caching `Picker` (`RoundRobin::picker`);
//! - `pingora`: `pingora-load-balancing`'s `Weighted<RoundRobin>` (a `u16` table with
//!   each backend repeated `weight` times and an atomic counter), first backend of
//!   `iter`. It holds at most 65,535 backends: n = 100k is not measured;
//! - `mutex_nginx`: the textbook smooth weighted round robin loop (nginx) behind a
//!   `Mutex`, O(n) a pick (shorter measurement from n = 10k on).
//!
//! `build/..` measures building a schedule (what one change costs the writer; picks
//! never wait for it). `change/..` measures one change through `RoundRobin` at
//! n = 10k: a weight, an upsert of a new server followed by its removal, a batch of
//! 100 weights. `busy/..` measures picks at n = 10k while another thread changes a
//! weight every millisecond. `pick/threads=2/..` runs two callers at n = 1000.
//!
//! After criterion, the bench prints one markdown table (medians read back from
//! criterion's `estimates.json`): ns per pick, build time, bytes per schedule, and the
//! ratio to pingora; then the time a schedule beyond its table takes to generate one
//! block of its ring (timed around the pick that starts a block).

use core::hint::black_box;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
// `selection::RoundRobin` is pingora's `Weighted<algorithms::RoundRobin>`.
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, RoundRobin as PingoraWeighted,
};
use pingora_load_balancing::Backend;
use roundrobin_core::{AtomicCursor, Policy, RoundRobin, Schedule};

const SIZES: [usize; 5] = [10, 100, 1000, 10_000, 100_000];
/// pingora indexes its table with `u16`.
const PINGORA_MAX: usize = u16::MAX as usize;
/// The n of the change and busy benches.
const CHANGE_N: usize = 10_000;

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
struct MutexNginx {
    state: Mutex<Vec<(i64, i64)>>,
    total: i64,
}

impl MutexNginx {
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

impl Contender for MutexNginx {
    fn picks(&self, iters: u64) {
        for _ in 0..iters {
            black_box(self.select());
        }
    }
}

fn ours(weights: &[u32], policy: Policy) -> RoundRobin<u32> {
    let rr = RoundRobin::builder().policy(policy).build();
    rr.upsert_servers((0..).zip(weights).map(|(i, &w)| (i, Some(w))))
        .unwrap();
    rr
}

fn backends(weights: &[u32]) -> BTreeSet<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let addr = format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255);
            Backend::new_with_weight(&addr, w as usize).unwrap()
        })
        .collect()
}

fn pingora(weights: &[u32]) -> Arc<PingoraWeighted> {
    Arc::new(<PingoraWeighted as BackendSelection>::build(&backends(
        weights,
    )))
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

fn contenders(n: usize) -> Vec<(&'static str, Box<dyn Contender>)> {
    let w = weights(n);
    let mut out: Vec<(&'static str, Box<dyn Contender>)> = vec![
        ("interleaved", Box::new(ours(&w, Policy::Interleaved))),
        (
            "interleaved_picker",
            Box::new(Cached(ours(&w, Policy::Interleaved))),
        ),
        ("smooth", Box::new(ours(&w, Policy::Smooth))),
        ("smooth_picker", Box::new(Cached(ours(&w, Policy::Smooth)))),
    ];
    if n <= PINGORA_MAX {
        out.push(("pingora", Box::new(pingora(&w))));
    }
    out.push(("mutex_nginx", Box::new(MutexNginx::new(&w))));
    out
}

fn selection(c: &mut Criterion) {
    for n in SIZES {
        for (name, contender) in &contenders(n) {
            // A group per benchmark: the shorter settings of one do not leak into the next.
            let mut group = c.benchmark_group("pick/threads=1");
            if *name == "mutex_nginx" && n >= 10_000 {
                // O(n) a pick: fewer, shorter samples.
                group.sample_size(10);
                group.measurement_time(Duration::from_millis(500));
            }
            group.bench_function(BenchmarkId::new(*name, n), |b| {
                b.iter_custom(|iters| run(contender.as_ref(), 1, iters))
            });
            group.finish();
        }
    }
    let mut group = c.benchmark_group("pick/threads=2");
    for (name, contender) in &contenders(1000) {
        group.bench_function(BenchmarkId::new(*name, 1000), |b| {
            b.iter_custom(|iters| run(contender.as_ref(), 2, iters))
        });
    }
    group.finish();
}

/// Time to build a schedule (what a change costs the writer; picks never wait for it).
fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in SIZES {
        let w = weights(n);
        for policy in [Policy::Interleaved, Policy::Smooth] {
            let id = BenchmarkId::new(format!("{policy:?}").to_lowercase(), n);
            group.bench_function(id, |b| {
                b.iter(|| Schedule::new(black_box(&w), policy).unwrap())
            });
        }
        if n <= PINGORA_MAX {
            let set = backends(&w);
            group.bench_function(BenchmarkId::new("pingora", n), |b| {
                b.iter(|| <PingoraWeighted as BackendSelection>::build(black_box(&set)))
            });
        }
    }
    group.finish();
}

/// One change through `RoundRobin` at n = 10k (copy-on-write snapshot, rebuild, swap).
fn change(c: &mut Criterion) {
    let mut group = c.benchmark_group("change");
    let w = weights(CHANGE_N);
    for policy in [Policy::Interleaved, Policy::Smooth] {
        let name = format!("{policy:?}").to_lowercase();
        let rr = ours(&w, policy);
        let mut k = 0u32;
        group.bench_function(BenchmarkId::new(format!("{name}/weight"), CHANGE_N), |b| {
            b.iter(|| {
                k = k.wrapping_add(1);
                rr.upsert_server(k % CHANGE_N as u32, Some(k % 4096 + 1))
                    .unwrap()
            })
        });
        group.bench_function(
            BenchmarkId::new(format!("{name}/upsert+remove"), CHANGE_N),
            |b| {
                b.iter(|| {
                    rr.upsert_server(u32::MAX, Some(7)).unwrap();
                    rr.remove_server(&u32::MAX).unwrap();
                })
            },
        );
        group.bench_function(
            BenchmarkId::new(format!("{name}/batch100"), CHANGE_N),
            |b| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    rr.upsert_servers(
                        (0..100).map(|j| ((k + j * 97) % CHANGE_N as u32, Some(j + 1))),
                    )
                    .unwrap()
                })
            },
        );
    }
    group.finish();
}

/// Picks at n = 10k while another thread changes a weight every millisecond.
fn busy(c: &mut Criterion) {
    let mut group = c.benchmark_group("busy");
    let w = weights(CHANGE_N);
    for (name, policy) in [
        ("interleaved", Policy::Interleaved),
        ("smooth", Policy::Smooth),
    ] {
        let rr = ours(&w, policy);
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                let mut k = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    k = k.wrapping_add(1);
                    rr.upsert_server(k % CHANGE_N as u32, Some(k % 4096 + 1))
                        .unwrap();
                    thread::sleep(Duration::from_millis(1));
                }
            });
            group.bench_function(BenchmarkId::new(name, CHANGE_N), |b| {
                b.iter(|| black_box(rr.next_server().unwrap()))
            });
            stop.store(true, Ordering::Relaxed);
        });
    }
    group.finish();
}

/// Where criterion writes: `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, or the
/// `criterion` directory beside this executable's profile directory.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median (ns) criterion estimated for `group/function/n`, if it ran.
fn median(dir: &std::path::Path, group: &str, function: &str, n: usize) -> Option<f64> {
    let group = group.replace('/', "_");
    let function = function.replace('/', "_");
    let path = dir.join(group).join(function).join(n.to_string());
    let text = std::fs::read_to_string(path.join("new/estimates.json")).ok()?;
    let rest = &text[text.find("\"median\"")?..];
    let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

fn ns(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 1e6 => format!("{:.1} ms", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1} µs", v / 1e3),
        Some(v) => format!("{v:.1} ns"),
    }
}

fn bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) => format!("{:.2}×", v / b),
        _ => "–".into(),
    }
}

/// Positions per block of the ring a schedule beyond its table prefetches into
/// (`roundrobin_core`'s `ring.rs`).
fn block(policy: Policy) -> u64 {
    match policy {
        Policy::Interleaved => 1024,
        Policy::Smooth => 512,
    }
}

/// The pick that claims a block's first position generates the next block: median
/// and largest time of such picks over 256 blocks (one thread), in ns; `None` when
/// the period is kept as a table (no ring).
fn fill_time(weights: &[u32], policy: Policy) -> Option<(f64, f64)> {
    let s = Schedule::new(weights, policy).unwrap();
    if s.period() <= 4 * weights.len() as u64 + 65_536 {
        return None;
    }
    let cursor = AtomicCursor::new(&s);
    let mut times = Vec::new();
    let block = block(policy);
    for k in 0..258 * block {
        let start = Instant::now();
        black_box(s.next_atomic(&cursor));
        // The first two blocks are generated on a miss (nothing prefetched them).
        if k % block == 0 && k >= 2 * block {
            times.push(start.elapsed().as_nanos() as f64);
        }
    }
    times.sort_by(f64::total_cmp);
    Some((times[times.len() / 2], times[times.len() - 1]))
}

/// The markdown summary of this run.
fn summary() {
    let Some(dir) = criterion_dir() else {
        println!("(no criterion directory: no summary)");
        return;
    };
    println!("\n## selection summary (medians of this run)\n");
    println!("One thread: median ns per pick; ratio = ours / pingora (interleaved, interleaved picker, smooth, smooth picker); build time and bytes of one schedule (interleaved / smooth / pingora).\n");
    println!("| n | interleaved | interleaved picker | smooth | smooth picker | pingora | mutex nginx loop | ratio to pingora | build il / sm / pingora | bytes il / sm / pingora |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
    for n in SIZES {
        let m = |f: &str| median(&dir, "pick/threads=1", f, n);
        let p = m("pingora");
        let w = weights(n);
        let size = |p| {
            let s = Schedule::new(&w, p).unwrap();
            size_of::<Schedule>() + s.heap_bytes()
        };
        // pingora: the `u16` table (one entry per unit of weight) and the backends.
        let pingora_bytes = (n <= PINGORA_MAX)
            .then(|| w.iter().map(|&w| w as usize).sum::<usize>() * 2 + n * size_of::<Backend>());
        let b = |f: &str| ns(median(&dir, "build", f, n));
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} / {} / {} | {} / {} / {} |",
            ns(m("interleaved")),
            ns(m("interleaved_picker")),
            ns(m("smooth")),
            ns(m("smooth_picker")),
            ns(p),
            ns(m("mutex_nginx")),
            ratio(m("interleaved"), p),
            ratio(m("interleaved_picker"), p),
            ratio(m("smooth"), p),
            ratio(m("smooth_picker"), p),
            b("interleaved"),
            b("smooth"),
            b("pingora"),
            bytes(size(Policy::Interleaved)),
            bytes(size(Policy::Smooth)),
            pingora_bytes.map_or("–".into(), bytes),
        );
    }
    println!("\nFill: the pick that starts a block generates the next block (1024 server indices interleaved, 512 smooth); its time, median and largest over 256 blocks from the start of the period (one thread, measured after criterion). Per entry = median / block length.\n");
    println!("| n | interleaved median | interleaved max | smooth median | smooth max | per entry il / sm |");
    println!("|---:|---:|---:|---:|---:|---|");
    for n in SIZES {
        let w = weights(n);
        let (il, sm) = (
            fill_time(&w, Policy::Interleaved),
            fill_time(&w, Policy::Smooth),
        );
        let med = |t: Option<(f64, f64)>| ns(t.map(|t| t.0));
        let max = |t: Option<(f64, f64)>| ns(t.map(|t| t.1));
        let per = |t: Option<(f64, f64)>, p| ns(t.map(|t| t.0 / block(p) as f64));
        println!(
            "| {n} | {} | {} | {} | {} | {} / {} |",
            med(il),
            max(il),
            med(sm),
            max(sm),
            per(il, Policy::Interleaved),
            per(sm, Policy::Smooth)
        );
    }
    println!("\nChanges through `RoundRobin` at n = {CHANGE_N}, and picks while another thread changes a weight every ms.\n");
    println!("| policy | one weight | upsert + remove | batch of 100 weights | pick, idle | pick, busy |");
    println!("|---|---:|---:|---:|---:|---:|");
    for name in ["interleaved", "smooth"] {
        let c = |f: &str| median(&dir, "change", &format!("{name}/{f}"), CHANGE_N);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            ns(c("weight")),
            ns(c("upsert+remove")),
            ns(c("batch100")),
            ns(median(&dir, "pick/threads=1", name, CHANGE_N)),
            ns(median(&dir, "busy", name, CHANGE_N)),
        );
    }
    println!("\nTwo threads picking at once, n = 1000: ns per pick seen by each.\n");
    println!("| interleaved | interleaved picker | smooth | smooth picker | pingora | mutex nginx loop |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let m = |f: &str| ns(median(&dir, "pick/threads=2", f, 1000));
    println!(
        "| {} | {} | {} | {} | {} | {} |",
        m("interleaved"),
        m("interleaved_picker"),
        m("smooth"),
        m("smooth_picker"),
        m("pingora"),
        m("mutex_nginx"),
    );
}

fn main() {
    // No plots: rendering them took longer than measuring on a 2-core machine.
    let mut c = Criterion::default().without_plots().configure_from_args();
    selection(&mut c);
    build(&mut c);
    change(&mut c);
    busy(&mut c);
    c.final_summary();
    // `cargo bench` also runs benches with `--bench`; `cargo test` runs them in test
    // mode (no measurements): print the summary only after a measuring run.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        summary();
    }
}
