//! Cost of the balancer layer per request, without sockets: `Balancer::call` over an
//! inner service that answers at once, against calling that inner service directly.
//! Measured: pick (round robin over 3 servers), URI rewrite, hooks, outcome recording,
//! the response future, and with sticky sessions the cookie lookup (HMAC) or
//! the `Set-Cookie`. Socket I/O and hyper's own costs are not included.
#![allow(
    missing_docs,
    reason = "criterion_group! generates a public function without docs"
)]

use core::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use roundrobin_core::RoundRobin;
use roundrobin_hyper::Balancer;
use roundrobin_rebalancer::Rebalancer;
use roundrobin_sticky::StickySession;
use tower_service::Service;

#[path = "../tests/support/layer.rs"]
mod support;
use support::{fill, request, Answer};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("per_request");

    let mut direct = Answer;
    group.bench_function("inner_service_alone", |b| {
        b.iter(|| rt.block_on(direct.call(black_box(request(None)))).unwrap());
    });

    let mut plain = Balancer::builder(RoundRobin::new()).service(Answer);
    fill(plain.pool());
    group.bench_function("balancer_round_robin", |b| {
        b.iter(|| rt.block_on(plain.call(black_box(request(None)))).unwrap());
    });

    let mut rebalanced =
        Balancer::builder(Arc::new(Rebalancer::new(RoundRobin::new()))).service(Answer);
    fill(rebalanced.pool());
    group.bench_function("balancer_rebalancer", |b| {
        b.iter(|| {
            rt.block_on(rebalanced.call(black_box(request(None))))
                .unwrap()
        });
    });

    let session = StickySession::new("s");
    let mut sticky = Balancer::builder(RoundRobin::new())
        .sticky(session.clone())
        .service(Answer);
    fill(sticky.pool());
    let first = rt.block_on(sticky.call(request(None))).unwrap();
    let cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    group.bench_function("balancer_sticky_hit", |b| {
        b.iter(|| {
            rt.block_on(sticky.call(black_box(request(Some(&cookie)))))
                .unwrap()
        });
    });
    group.bench_function("balancer_sticky_set_cookie", |b| {
        b.iter(|| rt.block_on(sticky.call(black_box(request(None)))).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
