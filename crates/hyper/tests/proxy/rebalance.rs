//! The rebalancer end to end, driven by a manual clock: a backend answering 500 loses
//! its share, and gets it back when it heals.

use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Balancer, Forwarder, Pool};
use roundrobin_rebalancer::{ManualClock, Rebalancer};

use crate::common::{get, named_backend, run, start, Running};

/// A backend failing with 500 while `failing` is set.
async fn flaky(failing: Arc<AtomicBool>) -> Running {
    start(service_fn(move |_req: Request<Incoming>| {
        let failing = Arc::clone(&failing);
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"flaky")));
            if failing.load(Ordering::SeqCst) {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Ok::<_, Infallible>(res)
        }
    }))
    .await
}

fn weights(pool: &impl Pool) -> Vec<u32> {
    pool.snapshot().iter().map(|s| s.weight).collect()
}

#[test]
fn failing_backend_loses_weight_and_recovers() {
    run(async {
        let failing = Arc::new(AtomicBool::new(true));
        let bad = flaky(Arc::clone(&failing)).await;
        let (b, c) = (named_backend("b").await, named_backend("c").await);
        let clock = ManualClock::new();
        let rebalancer = Rebalancer::builder(RoundRobin::<ServerUrl>::new())
            .backoff(Duration::from_secs(1))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let balancer = Balancer::builder(rebalancer).service(Forwarder::new());
        let pool = balancer.pool();
        for url in [bad.url(), b.url(), c.url()] {
            pool.upsert_server(url, Some(1)).unwrap();
        }
        let p = start(balancer.clone()).await;

        // One second of virtual time per round, a few requests each.
        let round = || {
            let clock = clock.clone();
            async move {
                for _ in 0..6 {
                    get(p.addr, "/", &[]).await;
                }
                clock.advance(Duration::from_millis(1100));
            }
        };
        let mut seen_split = false;
        for _ in 0..40 {
            round().await;
            if weights(pool) == [1, 4096, 4096] {
                seen_split = true;
                break;
            }
        }
        assert!(seen_split, "never split: {:?}", pool.snapshot());
        let snapshot = pool.snapshot();
        assert!(snapshot[0].rating > snapshot[1].rating);
        assert_eq!(snapshot[0].original_weight, 1);

        failing.store(false, Ordering::SeqCst);
        let mut recovered = false;
        for _ in 0..60 {
            round().await;
            if weights(pool) == [1, 1, 1] {
                recovered = true;
                break;
            }
        }
        assert!(recovered, "never recovered: {:?}", pool.snapshot());
    });
}
