//! Sequential request latency, one keep-alive client: straight to a local hyper
//! backend (`proxy/direct`) vs through the `roundrobin-hyper` balancer to the same
//! backend (`proxy/via_balancer`). The difference of the medians is the balancer's
//! cost per request (an extra hop on loopback plus the balancer's work).
//!
//! For throughput under concurrent load, run `cargo xtask bench-proxy`.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use roundrobin_benches::{client, get, start_backend, start_balancer, url_of};

fn proxy(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (backend, balancer) = runtime.block_on(async {
        let backend = start_backend().await.expect("backend");
        let balancer = start_balancer(&[&backend]).await.expect("balancer");
        (backend, balancer)
    });
    let client = client();
    let mut group = c.benchmark_group("proxy");
    for (name, url) in [
        ("direct", url_of(&backend)),
        ("via_balancer", url_of(&balancer)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(get(&client, url.clone()))
                    .expect("the request succeeds");
            });
        });
    }
    group.finish();
    drop((balancer, backend));
}

criterion_group!(benches, proxy);
criterion_main!(benches);
