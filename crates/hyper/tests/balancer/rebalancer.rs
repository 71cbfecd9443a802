//! The rebalancer wired into the balancer, on one manual clock: a server answering
//! 500 loses its share, gets it back when it heals, and latencies are the clock's.

use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Balancer, Manage, RequestBody};
use roundrobin_rebalancer::{ManualClock, Rebalancer};
use tower::service_fn;

use crate::bodies;
use crate::support::{echo, url};

fn weights(pool: &impl Manage) -> Vec<u32> {
    pool.snapshot().iter().map(|s| s.current_weight).collect()
}

#[tokio::test]
async fn a_failing_server_loses_weight_and_recovers() {
    let failing = Arc::new(AtomicBool::new(true));
    let clock = ManualClock::new();
    let inner = {
        let (failing, clock) = (Arc::clone(&failing), clock.clone());
        service_fn(move |req: Request<RequestBody<Empty<Bytes>>>| {
            let mut res = echo(&req);
            if req.uri().host() == Some("bad") && failing.load(Ordering::SeqCst) {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            clock.advance(Duration::from_millis(1));
            async move { Ok::<_, Infallible>(res) }
        })
    };
    let rebalancer = Rebalancer::builder(RoundRobin::<ServerUrl>::new())
        .backoff(Duration::from_secs(1))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let b = Balancer::builder(rebalancer).service(inner);
    for name in ["bad", "b", "c"] {
        b.pool().upsert_server(url(name), Some(1)).unwrap();
    }
    let round = || async {
        bodies(&b, 6).await;
        clock.advance(Duration::from_millis(1100));
    };
    let mut rounds = 0;
    while weights(b.pool()) != [1, 4096, 4096] {
        round().await;
        rounds += 1;
        assert!(rounds < 40, "never split: {:?}", b.pool().snapshot());
    }
    let snapshot = b.pool().snapshot();
    assert!(snapshot[0].rating > snapshot[1].rating);
    assert_eq!(snapshot[0].original_weight, 1);

    failing.store(false, Ordering::SeqCst);
    let mut rounds = 0;
    while weights(b.pool()) != [1, 1, 1] {
        round().await;
        rounds += 1;
        assert!(rounds < 60, "never recovered: {:?}", b.pool().snapshot());
    }
}
