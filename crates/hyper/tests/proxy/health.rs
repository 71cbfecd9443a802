//! Active health checks over real sockets: a backend whose health endpoint fails is
//! marked down after `fall` checks and gets no traffic; it comes back after `rise`.

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
use roundrobin_hyper::{spawn_on, Health, HealthCheck};
use roundrobin_rebalancer::{Checks, Rebalancer};

use crate::common::{run, LOCAL};

/// Waits (bounded by the test's timeout) until `pool` reports `health` for `server`.
async fn until(pool: &Rebalancer<ServerUrl>, server: &ServerUrl, health: Health) {
    while pool.health(server) != Some(health) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_failing_health_endpoint_takes_a_server_out_and_back() {
    run(async {
        let sick = Arc::new(AtomicBool::new(false));
        let backend = {
            let sick = Arc::clone(&sick);
            spawn_on(
                LOCAL,
                service_fn(move |req: Request<Incoming>| {
                    let status = if req.uri().path() == "/healthz" && sick.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *res.status_mut() = status;
                    async move { Ok::<_, Infallible>(res) }
                }),
            )
            .await
            .unwrap()
        };
        let other = ServerUrl::parse("http://127.0.0.1:9").unwrap();
        let pool = Arc::new(
            Rebalancer::builder(RoundRobin::new())
                .rebalance(false)
                .checks(Checks { rise: 2, fall: 2 })
                .build()
                .unwrap(),
        );
        pool.upsert_server(backend.url(), Some(1)).unwrap();
        pool.upsert_server(other, Some(1)).unwrap();
        let checks = HealthCheck::new("healthz")
            .interval(Duration::from_millis(20))
            .timeout(Duration::from_millis(500))
            .spawn(Arc::clone(&pool));
        until(&pool, &backend.url(), Health::Up).await;
        sick.store(true, Ordering::SeqCst);
        until(&pool, &backend.url(), Health::Down).await;
        assert_eq!(pool.server_weight(&backend.url()), Some(0));
        assert!(!pool.available_servers().contains(&backend.url()));
        sick.store(false, Ordering::SeqCst);
        until(&pool, &backend.url(), Health::Up).await;
        assert_eq!(pool.server_weight(&backend.url()), Some(1));
        checks.abort();
    });
}
