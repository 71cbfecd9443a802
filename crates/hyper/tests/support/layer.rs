//! The socket-free fixture shared by the behaviour tests (`tests/balancer`), the
//! allocation test and `benches/balancer.rs`: inner services that answer at once, a
//! request builder, a pool filler and a recording pool.

#![allow(dead_code)] // each user takes a part

use core::convert::Infallible;
use core::future::{ready, Ready};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{Empty, Full};
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Manage, Select};
use tower_service::Service;

/// Answers every request with an empty 200.
#[derive(Clone)]
pub(crate) struct Answer;

impl<B> Service<Request<B>> for Answer {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Answers with the host of the request URI (the chosen server's, `a` for
/// `http://a:80`) as body, and echoes the URI and every request header back as
/// `echo-uri` and `echo-<name>` response headers.
#[derive(Clone)]
pub(crate) struct Echo;

impl<B> Service<Request<B>> for Echo {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(echo(&req)))
    }
}

/// The [`Echo`] response for `req`.
pub(crate) fn echo<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let host = req.uri().host().unwrap_or_default().to_owned();
    let mut res = Response::new(Full::new(Bytes::from(host)));
    for (k, v) in req.headers() {
        if let Ok(h) = http::HeaderName::from_bytes(format!("echo-{k}").as_bytes()) {
            res.headers_mut().append(h, v.clone());
        }
    }
    res.headers_mut()
        .insert("echo-uri", req.uri().to_string().parse().unwrap());
    res
}

/// A GET with a query, a `Host`, and the `cookie` header when given.
///
/// Its URI and header values share their bytes, as those hyper's server parses share
/// the connection's read buffer: copying them (a retry's copy of the head, the
/// rewritten URI's path) takes a reference, never an allocation. Parsed from `&str`
/// instead, each would allocate the first time it is copied, which hyper's don't.
pub(crate) fn request(cookie: Option<&str>) -> Request<Empty<Bytes>> {
    let uri = http::Uri::from_maybe_shared(Bytes::from_static(b"/api/items?page=2")).unwrap();
    let mut req = Request::get(uri)
        .header("host", HeaderValue::from_static("front.example"))
        .header("user-agent", HeaderValue::from_static("bench"));
    if let Some(cookie) = cookie {
        let value = HeaderValue::from_str(cookie).unwrap();
        // Its bytes made shared now (the first copy of a copied `&str` would allocate).
        drop(value.clone());
        req = req.header("cookie", value);
    }
    req.body(Empty::new()).unwrap()
}

/// `http://NAME:80`.
pub(crate) fn url(name: &str) -> ServerUrl {
    ServerUrl::parse(&format!("http://{name}:80")).unwrap()
}

/// Three servers, weights 1, 2 and 3.
pub(crate) fn fill(pool: &impl Manage) {
    for i in 1..=3 {
        let url = ServerUrl::parse(&format!("http://10.0.0.{i}:8080")).unwrap();
        pool.upsert_server(url, Some(i)).unwrap();
    }
}

/// One recorded outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recorded {
    pub(crate) server: ServerUrl,
    pub(crate) status: u16,
    pub(crate) latency: Duration,
    pub(crate) at: Instant,
}

/// A round-robin pool that remembers every recorded outcome, on the clock `now`.
pub(crate) struct Recording<C> {
    pub(crate) inner: RoundRobin<ServerUrl>,
    pub(crate) outcomes: Mutex<Vec<Recorded>>,
    pub(crate) clock: C,
}

impl<C: Fn() -> Instant + Send + Sync + 'static> Recording<C> {
    pub(crate) fn new(clock: C) -> Self {
        Self {
            inner: RoundRobin::new(),
            outcomes: Mutex::default(),
            clock,
        }
    }

    /// `(server, status)` of every outcome so far.
    pub(crate) fn statuses(&self) -> Vec<(ServerUrl, u16)> {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes
            .iter()
            .map(|o| (o.server.clone(), o.status))
            .collect()
    }
}

impl<C: Fn() -> Instant + Send + Sync + 'static> Select for Recording<C> {
    fn select(&self) -> Result<ServerUrl, roundrobin_hyper::Error> {
        self.inner.select()
    }
    fn servers(&self) -> Vec<ServerUrl> {
        self.inner.servers()
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration, at: Instant) {
        self.outcomes.lock().unwrap().push(Recorded {
            server: server.clone(),
            status,
            latency,
            at,
        });
    }
    fn now(&self) -> Instant {
        (self.clock)()
    }
}
