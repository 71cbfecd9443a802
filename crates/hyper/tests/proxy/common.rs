//! Backends, proxies and a client on 127.0.0.1, all stopping by themselves.

use core::convert::Infallible;
use core::net::SocketAddr;
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{default_client, spawn_on, Balancer, Forwarder, Select, Serving};

/// Where test servers listen: a free port of the loopback interface.
pub(crate) const LOCAL: &str = "127.0.0.1:0";
use tokio::sync::Notify;

#[path = "../support/run.rs"]
mod run;
pub(crate) use run::run;

/// A backend answering its `name` and echoing selected request headers back as
/// `echo-<name>` response headers.
pub(crate) async fn named_backend(name: &'static str) -> Serving {
    spawn_on(
        LOCAL,
        service_fn(move |req: Request<Incoming>| async move {
            let mut res = Response::new(Full::new(Bytes::from(name)));
            for (k, v) in req.headers() {
                if let Ok(h) = http::HeaderName::from_bytes(format!("echo-{k}").as_bytes()) {
                    res.headers_mut().append(h, v.clone());
                }
            }
            let path = req.uri().to_string();
            res.headers_mut().insert("echo-uri", path.parse().unwrap());
            Ok::<_, Infallible>(res)
        }),
    )
    .await
    .unwrap()
}

/// A backend answering every request with `status`.
pub(crate) async fn status_backend(status: u16) -> Serving {
    spawn_on(
        LOCAL,
        service_fn(move |_req: Request<Incoming>| async move {
            let mut res = Response::new(Empty::<Bytes>::new());
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(res)
        }),
    )
    .await
    .unwrap()
}

/// A backend that never answers; `arrived` is notified for each request, `gone` when
/// the proxy gives a request up (its upstream connection closes).
pub(crate) async fn hanging_backend(arrived: Arc<Notify>, gone: Arc<Notify>) -> Serving {
    /// Notifies when dropped.
    struct OnDrop(Arc<Notify>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }
    spawn_on(
        LOCAL,
        service_fn(move |_req: Request<Incoming>| {
            let arrived = Arc::clone(&arrived);
            let gone = OnDrop(Arc::clone(&gone));
            async move {
                let _gone = gone;
                arrived.notify_one();
                core::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        }),
    )
    .await
    .unwrap()
}

/// A pool that remembers every recorded outcome.
#[derive(Default)]
pub(crate) struct Recording {
    pub(crate) inner: RoundRobin<ServerUrl>,
    pub(crate) outcomes: Mutex<Vec<(ServerUrl, u16)>>,
    pub(crate) recorded: Notify,
}

impl Select for Recording {
    fn select(&self) -> Result<ServerUrl, roundrobin_hyper::Error> {
        self.inner.select()
    }
    fn servers(&self) -> Vec<ServerUrl> {
        self.inner.servers()
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
    fn record(&self, server: &ServerUrl, status: u16, _latency: Duration, _now: Instant) {
        self.outcomes.lock().unwrap().push((server.clone(), status));
        self.recorded.notify_one();
    }
}

/// A proxy over `pool` with the default forwarder, timeout `timeout`.
pub(crate) async fn proxy<P: Select>(
    pool: P,
    timeout: Duration,
) -> (Serving, Balancer<Forwarder, P>) {
    let balancer = Balancer::builder(pool).service(Forwarder::new().timeout(timeout));
    (spawn_on(LOCAL, balancer.clone()).await.unwrap(), balancer)
}

/// A response, read whole.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// Sends `GET path` to `addr` with `headers`.
pub(crate) async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client: Client<_, Empty<Bytes>> = default_client();
    let mut req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The bodies of `n` sequential `GET /` through `addr`.
pub(crate) async fn bodies(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr, "/", &[]).await.body);
    }
    out
}
