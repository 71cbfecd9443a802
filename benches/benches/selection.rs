//! Placeholder: ns per pick of the core balancer (replaced by the full comparison).
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use roundrobin_core::RoundRobin;

fn pick(c: &mut Criterion) {
    let rr: RoundRobin<u32> = RoundRobin::new();
    for i in 0..10 {
        rr.upsert_server(i, Some(i + 1)).unwrap();
    }
    c.bench_function("interleaved/n=10", |b| {
        b.iter(|| black_box(rr.next_server().unwrap()))
    });
}

criterion_group!(benches, pick);
criterion_main!(benches);
