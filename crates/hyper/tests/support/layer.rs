//! The socket-free fixture shared by `benches/balancer.rs` and `tests/allocations.rs`:
//! an inner service that answers at once, a request, and a pool of three servers.

use core::convert::Infallible;
use core::future::{ready, Ready};
use core::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use roundrobin_core::ServerUrl;
use roundrobin_hyper::Pool;
use tower_service::Service;

/// Answers every request with an empty 200.
#[derive(Clone)]
pub(crate) struct Answer;

impl Service<Request<Empty<Bytes>>> for Answer {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<Empty<Bytes>>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// A GET with a query, a `Host`, and the `cookie` header when given.
pub(crate) fn request(cookie: Option<&str>) -> Request<Empty<Bytes>> {
    let mut req = Request::get("/api/items?page=2")
        .header("host", "front.example")
        .header("user-agent", "bench");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.body(Empty::new()).unwrap()
}

/// Three servers, weights 1, 2 and 3.
pub(crate) fn fill(pool: &impl Pool) {
    for i in 1..=3 {
        let url = ServerUrl::parse(&format!("http://10.0.0.{i}:8080")).unwrap();
        pool.upsert_server(url, Some(i)).unwrap();
    }
}
