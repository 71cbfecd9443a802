//! The `Balancer`'s behaviour without sockets: requests go through
//! `tower::ServiceExt::oneshot` to inner services that answer at once, so every test
//! runs in microseconds. The end-to-end tests over real sockets are in `tests/proxy`.

#[path = "../support/layer.rs"]
mod support;

mod balancing;
mod conformance;
mod errors;
mod rebalancer;
mod retries;
mod sticky;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;

/// A response, read whole.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// Sends `GET path` with `headers` through a clone of `service`.
pub(crate) async fn get<S, B>(service: &S, path: &str, headers: &[(&str, &str)]) -> Answer
where
    S: tower::Service<Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: core::fmt::Debug,
    B: http_body::Body,
    B::Error: core::fmt::Debug,
{
    let mut req = Request::get(path).header("host", "front.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = service
        .clone()
        .oneshot(req.body(Empty::new()).unwrap())
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

/// The bodies of `n` sequential `GET /`.
pub(crate) async fn bodies<S, B>(service: &S, n: usize) -> Vec<String>
where
    S: tower::Service<Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: core::fmt::Debug,
    B: http_body::Body,
    B::Error: core::fmt::Debug,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(service, "/", &[]).await.body);
    }
    out
}

/// `GET /` with a `Host` and `body`.
pub(crate) fn request<B>(body: B) -> Request<B> {
    let mut req = Request::new(body);
    req.headers_mut()
        .insert(http::header::HOST, http::HeaderValue::from_static("x"));
    req
}
