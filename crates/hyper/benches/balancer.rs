//! Cost of the balancer layer per request, without sockets: `Balancer::call` over an
//! inner service that answers at once, against calling that inner service directly.
//! Measured: pick (round robin over 3 servers), URI rewrite, hooks, outcome recording,
//! the response future, and with sticky sessions the cookie lookup (HMAC) or
//! the `Set-Cookie`. Socket I/O and hyper's own costs are not included.
#![allow(
    missing_docs,
    reason = "criterion_group! generates a public function without docs"
)]

use core::convert::Infallible;
use core::future::{ready, Ready};
use core::hint::black_box;
use core::task::{Context, Poll};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Empty;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Balancer, Pool};
use roundrobin_rebalancer::Rebalancer;
use roundrobin_sticky::StickySession;
use tower_service::Service;

/// Answers every request with an empty 200.
#[derive(Clone)]
struct Answer;

impl Service<Request<Empty<Bytes>>> for Answer {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<Empty<Bytes>>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

fn request(cookie: Option<&str>) -> Request<Empty<Bytes>> {
    let mut req = Request::get("/api/items?page=2")
        .header("host", "front.example")
        .header("user-agent", "bench");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.body(Empty::new()).unwrap()
}

fn fill(pool: &impl Pool) {
    for i in 1..=3 {
        let url = ServerUrl::parse(&format!("http://10.0.0.{i}:8080")).unwrap();
        pool.upsert_server(url, Some(i)).unwrap();
    }
}

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
