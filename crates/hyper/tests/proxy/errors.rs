//! Error mapping over real sockets: a dead backend (connection refused), a backend that
//! never answers (the forwarder's timeout), and a client that hangs up; outcomes
//! recorded. The mapping rules themselves are tested without sockets in `tests/balancer`.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::ServerUrl;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use roundrobin_hyper::{spawn_on, Balancer, Forwarder, Retry};

use crate::common::{
    get, hanging_backend, named_backend, proxy, run, status_backend, Recording, LOCAL,
};

const T: Duration = Duration::from_secs(5);

async fn dead_url() -> ServerUrl {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    ServerUrl::parse(&format!("http://{addr}")).unwrap()
}

#[test]
fn a_dead_backend_is_retried_on_a_live_one_and_502_without_retries() {
    run(async {
        let live = named_backend("live").await;
        let dead = dead_url().await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), T).await;
        b.pool().inner.upsert_server(dead.clone(), None).unwrap();
        b.pool().inner.upsert_server(live.url(), None).unwrap();
        let first = get(p.local_addr(), "/", &[]).await;
        assert_eq!((first.status, first.body.as_str()), (200, "live"));
        assert_eq!(
            *pool.outcomes.lock().unwrap(),
            [(dead.clone(), 502), (live.url(), 200)]
        );
        // without retries the refused connection is the client's answer
        let only_dead = Arc::new(Recording::default());
        let balancer = Balancer::builder(Arc::clone(&only_dead))
            .retry(Retry::OFF)
            .service(Forwarder::new().timeout(T));
        only_dead.inner.upsert_server(dead.clone(), None).unwrap();
        only_dead.inner.upsert_server(live.url(), None).unwrap();
        let p = spawn_on(LOCAL, balancer).await.unwrap();
        let first = get(p.local_addr(), "/", &[]).await;
        assert_eq!((first.status, first.body.as_str()), (502, ""));
        assert_eq!(*only_dead.outcomes.lock().unwrap(), [(dead, 502)]);
    });
}

#[test]
fn upstream_status_is_recorded_and_passed_through() {
    run(async {
        let failing = status_backend(500).await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), T).await;
        b.pool().inner.upsert_server(failing.url(), None).unwrap();
        assert_eq!(get(p.local_addr(), "/", &[]).await.status, 500);
        assert_eq!(*pool.outcomes.lock().unwrap(), [(failing.url(), 500)]);
    });
}

#[test]
fn hanging_backend_times_out_with_504() {
    run(async {
        let hang = hanging_backend(Arc::new(Notify::new()), Arc::new(Notify::new())).await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), Duration::from_millis(200)).await;
        b.pool().inner.upsert_server(hang.url(), None).unwrap();
        assert_eq!(get(p.local_addr(), "/", &[]).await.status, 504);
        assert_eq!(*pool.outcomes.lock().unwrap(), [(hang.url(), 504)]);
    });
}

#[test]
fn a_client_that_hangs_up_is_not_recorded_and_the_proxy_keeps_serving() {
    run(async {
        let arrived = Arc::new(Notify::new());
        let gone = Arc::new(Notify::new());
        let hang = hanging_backend(Arc::clone(&arrived), Arc::clone(&gone)).await;
        let live = named_backend("live").await;
        let pool = Arc::new(Recording::default());
        let (p, b) = proxy(Arc::clone(&pool), T).await;
        b.pool().inner.upsert_server(hang.url(), None).unwrap();
        b.pool().inner.upsert_server(live.url(), None).unwrap();

        let mut client = TcpStream::connect(p.local_addr()).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .unwrap();
        arrived.notified().await;
        drop(client);
        // the proxy gave the upstream request up: the backend's connection closed
        gone.notified().await;
        assert!(
            pool.outcomes.lock().unwrap().is_empty(),
            "the client's doing"
        );

        let next = get(p.local_addr(), "/", &[]).await;
        assert_eq!((next.status, next.body.as_str()), (200, "live"));
    });
}
