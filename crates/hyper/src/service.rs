//! The balancing service.

use core::convert::Infallible;
use core::task::{Context, Poll};
use std::sync::Arc;

use http::{header, Method, Request, Response, Version};
use http_body::Body;
use tower_service::Service;

use crate::access::Access;
use crate::config::Config;
use crate::future::{Buffering, Replay, ResponseFuture};
use crate::outcome::Pending;
use crate::retry::idempotent;
use crate::{
    BoxError, ClientAddr, DefaultErrorHandler, Error, ErrorHandler, RequestBody, ResponseBody,
    Select,
};

/// The load balancer as a service: picks a server from the pool, rewrites the request
/// URI to it, calls the inner service, records the outcome, retries a failed request on
/// another server when the [`Retry`](crate::Retry) policy allows, and maps errors to
/// responses.
///
/// The inner service gets the request with its body wrapped in a [`RequestBody`], whose
/// errors mark a failed upload as the client's fault.
///
/// The request URI becomes the server's scheme and authority, with the server's path
/// (if any) as a prefix of the request's path; the query is kept ([`rewrite_uri`](crate::rewrite_uri)).
/// When the request has no `Host` header, the original authority is put there so the
/// forwarder can report it in `X-Forwarded-Host`.
///
/// It is both a tower [`Service`] and a hyper
/// [`Service`](hyper::service::Service); its error type is [`Infallible`]: failures
/// are responses made by the [`ErrorHandler`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), roundrobin_hyper::Error> {
/// use roundrobin_core::{RoundRobin, ServerUrl};
/// use roundrobin_hyper::{Balancer, Forwarder};
///
/// let balancer = Balancer::builder(RoundRobin::new()).service(Forwarder::new());
/// balancer.pool().upsert_server(ServerUrl::parse("http://127.0.0.1:9001")?, None)?;
/// balancer.pool().upsert_server(ServerUrl::parse("http://127.0.0.1:9002")?, Some(2))?;
/// assert_eq!(balancer.pool().servers().len(), 2);
/// // Serve it: roundrobin_hyper::serve(listener, balancer, shutdown).await
/// # Ok(())
/// # }
/// ```
pub struct Balancer<S, P, H = DefaultErrorHandler> {
    inner: S,
    config: Arc<Config<P, H>>,
    /// Whether `inner` reported ready to the last `poll_ready` (tower path).
    ready: bool,
}

impl<S: Clone, P, H> Clone for Balancer<S, P, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            ready: false,
        }
    }
}

impl<S, P, H> core::fmt::Debug for Balancer<S, P, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl<S, P, H> Balancer<S, P, H> {
    pub(crate) fn new(inner: S, config: Arc<Config<P, H>>) -> Self {
        Self {
            inner,
            config,
            ready: false,
        }
    }

    /// The pool: change servers at run time through it.
    pub fn pool(&self) -> &P {
        &self.config.pool
    }

    /// The inner (forwarding) service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner (forwarding) service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner (forwarding) service, consuming the balancer.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Picks the server and rewrites the request: the synchronous part of a request,
/// run in `call`. Returns the future that forwards it (and retries it).
fn start<S, P, H, B>(
    config: Arc<Config<P, H>>,
    inner: S,
    req: Request<B>,
    ready: bool,
) -> ResponseFuture<S, B, P, H>
where
    S: Service<Request<RequestBody<B>>>,
    B: Body,
    P: Select,
    H: ErrorHandler,
{
    let access = config.access_log.then(|| {
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Access::new(client, req.method(), path)
    });
    if let Err(e) = conform(&req, config.max_body) {
        tracing::debug!(error = %e, "request refused");
        let res = config.handler.handle(&e);
        if let Some(access) = access {
            access.log(res.status().as_u16());
        }
        return ResponseFuture::done(res);
    }
    let chosen = match config.choose(req.headers()) {
        Ok(chosen) => chosen,
        Err(e) => {
            let res = config.handler.handle(&e);
            if let Some(access) = access {
                access.log(res.status().as_u16());
            }
            return ResponseFuture::done(res);
        }
    };
    let (mut parts, body) = req.into_parts();
    // A request without a body can be sent again: keep it as the client sent it.
    let retries = config.retry.retries;
    let replay = (retries > 0 && body.is_end_stream()).then(|| Replay::new(&parts, retries));
    // With `replay_bodies`, so can an idempotent one whose body is small enough: it is
    // read whole first.
    let buffer = config.replay_bodies.filter(|&max| {
        retries > 0
            && replay.is_none()
            && idempotent(&parts.method)
            && body.size_hint().upper().is_some_and(|n| n <= max as u64)
    });
    let original = buffer.map(|_| parts.clone());
    if let Err(e) = config.point_at(&mut parts, &chosen.server) {
        let mut res = config.handler.handle(&Error::Uri(e));
        config.stick(&chosen, res.headers_mut());
        if let Some(access) = access {
            access.log(res.status().as_u16());
        }
        return ResponseFuture::done(res);
    }
    let max_body = config.max_body;
    let pending = Pending::new(config, chosen, access);
    if let (Some(max), Some(original)) = (buffer, original) {
        let buffering = Buffering::new(parts, original, body, max, retries);
        return ResponseFuture::buffer(pending, inner, buffering);
    }
    let body = match max_body {
        Some(max) => RequestBody::limited(body, max),
        None => RequestBody::new(body),
    };
    let req = Request::from_parts(parts, body);
    ResponseFuture::send(pending, inner, req, ready, replay)
}

/// Refuses what must never reach a server, before one is chosen (RFC 9112 §3.2,
/// §3.2.3): `CONNECT` (405: a client never chooses the upstream); a request target that
/// is neither a path nor an absolute URL (`*` only for `OPTIONS`); HTTP/1.1 without
/// `Host` or with more than one (400); a `Content-Length` over the body limit (413).
fn conform<B>(req: &Request<B>, max_body: Option<u64>) -> Result<(), Error> {
    if req.method() == Method::CONNECT {
        return Err(Error::MethodNotAllowed);
    }
    let path = req.uri().path();
    let asterisk = path == "*" && req.method() == Method::OPTIONS;
    if !(path.starts_with('/') || asterisk) {
        return Err(Error::BadRequest(
            "the request target is not a path or an absolute URL",
        ));
    }
    if req.version() == Version::HTTP_11 {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) => return Err(Error::BadRequest("HTTP/1.1 request without Host")),
            (Some(_), Some(_)) => return Err(Error::BadRequest("more than one Host header")),
            (Some(_), None) => {}
        }
    }
    if let Some(max) = max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(Error::BodyTooLarge);
        }
    }
    Ok(())
}

impl<S, P, H, B, RB> Service<Request<B>> for Balancer<S, P, H>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    RB: Body,
    P: Select,
    H: ErrorHandler,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, B, P, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A readiness error of the inner service is not ours to return: `call` then
        // polls the inner service again and answers its error through the handler.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.ready = result.is_ok();
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = core::mem::replace(&mut self.inner, clone);
        let ready = core::mem::take(&mut self.ready);
        start(Arc::clone(&self.config), inner, req, ready)
    }
}

impl<S, P, H, B, RB> hyper::service::Service<Request<B>> for Balancer<S, P, H>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    RB: Body,
    P: Select,
    H: ErrorHandler,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, B, P, H>;

    fn call(&self, req: Request<B>) -> Self::Future {
        start(Arc::clone(&self.config), self.inner.clone(), req, false)
    }
}
