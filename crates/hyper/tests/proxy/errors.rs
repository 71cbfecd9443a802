//! Error mapping end to end: dead backend, timeout, client gone; outcome recording.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::ServerUrl;
use roundrobin_hyper::Pool;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::common::{get, hanging_backend, named_backend, proxy, run, status_backend, Recording};

const T: Duration = Duration::from_secs(5);

async fn dead_url() -> ServerUrl {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    ServerUrl::parse(&format!("http://{addr}")).unwrap()
}

#[test]
fn dead_backend_is_502_and_next_request_goes_to_a_live_one() {
    run(async {
        let live = named_backend("live").await;
        let dead = dead_url().await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), T).await;
        b.pool().upsert_server(dead.clone(), None).unwrap();
        b.pool().upsert_server(live.url(), None).unwrap();
        let first = get(p.addr, "/", &[]).await;
        assert_eq!((first.status, first.body.as_str()), (502, ""));
        let second = get(p.addr, "/", &[]).await;
        assert_eq!((second.status, second.body.as_str()), (200, "live"));
        assert_eq!(
            *pool.outcomes.lock().unwrap(),
            [(dead, 502), (live.url(), 200)]
        );
    });
}

#[test]
fn upstream_status_is_recorded_and_passed_through() {
    run(async {
        let failing = status_backend(500).await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), T).await;
        b.pool().upsert_server(failing.url(), None).unwrap();
        assert_eq!(get(p.addr, "/", &[]).await.status, 500);
        assert_eq!(*pool.outcomes.lock().unwrap(), [(failing.url(), 500)]);
    });
}

#[test]
fn hanging_backend_times_out_with_504() {
    run(async {
        let hang = hanging_backend(Arc::new(Notify::new())).await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), Duration::from_millis(200)).await;
        b.pool().upsert_server(hang.url(), None).unwrap();
        assert_eq!(get(p.addr, "/", &[]).await.status, 504);
        assert_eq!(*pool.outcomes.lock().unwrap(), [(hang.url(), 504)]);
    });
}

#[test]
fn client_gone_is_recorded_as_499_and_the_proxy_keeps_serving() {
    run(async {
        let arrived = Arc::new(Notify::new());
        let hang = hanging_backend(Arc::clone(&arrived)).await;
        let live = named_backend("live").await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), T).await;
        b.pool().upsert_server(hang.url(), None).unwrap();
        b.pool().upsert_server(live.url(), None).unwrap();

        let mut client = TcpStream::connect(p.addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .unwrap();
        arrived.notified().await;
        drop(client);
        while pool.outcomes.lock().unwrap().is_empty() {
            pool.recorded.notified().await;
        }
        assert_eq!(*pool.outcomes.lock().unwrap(), [(hang.url(), 499)]);

        let next = get(p.addr, "/", &[]).await;
        assert_eq!((next.status, next.body.as_str()), (200, "live"));
    });
}

#[test]
fn custom_error_handler_answers_and_the_layer_wraps_any_service() {
    run(async {
        use bytes::Bytes;
        use tower_layer::Layer as _;

        let handler = |error: &roundrobin_hyper::Error| {
            let mut res = http::Response::new(Bytes::from(format!("proxy says: {error}")));
            *res.status_mut() = http::StatusCode::IM_A_TEAPOT;
            res
        };
        let layer = roundrobin_hyper::Balancer::builder(roundrobin_core::RoundRobin::new())
            .error_handler(handler)
            .layer();
        let balancer = layer.layer(roundrobin_hyper::Forwarder::new());
        let p = crate::common::start(balancer).await;
        let ans = get(p.addr, "/", &[]).await;
        assert_eq!(ans.status, 418);
        assert_eq!(ans.body, "proxy says: no servers in the pool");
    });
}
