//! Error mapping and outcome recording: inner failures, inner timeouts, readiness
//! errors, clients that go away, and a custom handler.

use core::convert::Infallible;
use core::future::{poll_fn, Future};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use roundrobin_core::RoundRobin;
use roundrobin_hyper::{Balancer, BoxError, Error, RequestBody, Retry};
use roundrobin_rebalancer::{Clock, ManualClock};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_service::Service;

use crate::get;
use crate::support::{echo, url, Recording};

type Req = Request<RequestBody<Empty<Bytes>>>;

#[tokio::test]
async fn without_retries_connect_and_upstream_failures_are_502_and_recorded() {
    let pool = Arc::new(Recording::new(Instant::now));
    let inner = service_fn(|req: Req| async move {
        match req.uri().host() {
            Some("dead") => Err(Error::Connect("refused".into())),
            Some("reset") => Err(Error::Upstream("reset".into())),
            _ => Ok(echo(&req)),
        }
    });
    let b = Balancer::builder(Arc::clone(&pool))
        .retry(Retry::OFF)
        .service(inner);
    for name in ["dead", "reset", "live"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    let statuses: Vec<u16> = [(); 3].iter().map(|_| 0).collect();
    let mut got = statuses;
    for s in &mut got {
        let ans = get(&b, "/", &[]).await;
        *s = ans.status;
        assert!(
            ans.status == 200 || ans.body.is_empty(),
            "error bodies are empty"
        );
    }
    assert_eq!(got, [502, 502, 200]);
    assert_eq!(
        pool.statuses(),
        [(url("dead"), 502), (url("reset"), 502), (url("live"), 200)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_tower_timeout_around_the_inner_service_is_504() {
    let pool = Arc::new(Recording::new(Instant::now));
    let slow = service_fn(|req: Req| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Infallible>(echo(&req))
    });
    let inner = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(slow);
    let b = Balancer::builder(Arc::clone(&pool)).service(inner);
    pool.inner.upsert_server(url("slow"), None).unwrap();
    assert_eq!(get(&b, "/", &[]).await.status, 504);
    assert_eq!(pool.statuses(), [(url("slow"), 504)]);
}

/// An inner service that is never ready.
#[derive(Clone)]
struct Broken;

impl<B> Service<Request<B>> for Broken {
    type Response = Response<Empty<Bytes>>;
    type Error = BoxError;
    type Future = core::future::Ready<Result<Self::Response, BoxError>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err("broken".into()))
    }
    fn call(&mut self, _req: Request<B>) -> Self::Future {
        core::future::ready(Ok(Response::new(Empty::new())))
    }
}

#[tokio::test]
async fn inner_readiness_errors_are_answered_by_the_handler() {
    let pool = RoundRobin::new();
    pool.upsert_server(url("a"), None).unwrap();
    let mut balancer = Balancer::builder(pool).service(Broken);
    // With and without the tower `poll_ready` first, and through hyper's trait.
    poll_fn(|cx| Service::<Request<Empty<Bytes>>>::poll_ready(&mut balancer, cx))
        .await
        .unwrap();
    let res = Service::call(&mut balancer, crate::request(Empty::<Bytes>::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let res = Service::call(&mut balancer, crate::request(Empty::<Bytes>::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let res = hyper::service::Service::call(&balancer, crate::request(Empty::<Bytes>::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
}

#[tokio::test]
async fn a_client_that_goes_away_is_not_recorded_against_the_server() {
    let clock = ManualClock::new();
    let now = {
        let clock = clock.clone();
        move || clock.now()
    };
    let pool = Arc::new(Recording::new(now));
    let hang = service_fn(|_req: Req| {
        core::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    });
    let mut b = Balancer::builder(Arc::clone(&pool)).service(hang);
    pool.inner.upsert_server(url("hang"), None).unwrap();
    let mut future = Box::pin(b.ready().await.unwrap().call(crate::request(Empty::new())));
    assert!(poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await);
    clock.advance(Duration::from_millis(250));
    drop(future);
    assert!(
        pool.outcomes.lock().unwrap().is_empty(),
        "the client's doing"
    );
}

#[tokio::test]
async fn latency_and_record_time_come_from_the_pools_clock() {
    let clock = ManualClock::new();
    let now = {
        let clock = clock.clone();
        move || clock.now()
    };
    let pool = Arc::new(Recording::new(now));
    let inner = {
        let clock = clock.clone();
        service_fn(move |req: Req| {
            clock.advance(Duration::from_millis(250));
            let res = echo(&req);
            async move { Ok::<_, Infallible>(res) }
        })
    };
    let b = Balancer::builder(Arc::clone(&pool)).service(inner);
    pool.inner.upsert_server(url("a"), None).unwrap();
    let start = clock.now();
    assert_eq!(get(&b, "/", &[]).await.status, 200);
    let outcomes = pool.outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].latency, Duration::from_millis(250));
    assert_eq!(outcomes[0].at, start + Duration::from_millis(250));
}

#[tokio::test]
async fn a_custom_error_handler_answers_through_the_layer() {
    use tower_layer::Layer as _;
    let handler = |error: &Error| {
        let mut res = Response::new(Bytes::from(format!("proxy says: {error}")));
        *res.status_mut() = http::StatusCode::IM_A_TEAPOT;
        res
    };
    let layer = Balancer::builder(RoundRobin::new())
        .error_handler(handler)
        .layer();
    let b = layer.layer(service_fn(|req: Req| async move {
        Ok::<_, Infallible>(echo(&req))
    }));
    let ans = get(&b, "/", &[]).await;
    assert_eq!(ans.status, 418);
    assert_eq!(ans.body, "proxy says: no servers in the pool");
}
