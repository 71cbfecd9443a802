//! The balancing service and its layer.

use core::convert::Infallible;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{request, Request, Response};
use roundrobin_core::ServerUrl;
use roundrobin_sticky::{StickyIndex, StickySession};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::{BoxError, DefaultErrorHandler, Error, ErrorHandler, Pool, ResponseBody};

/// Sees each request after the balancer rewrote it for the chosen server.
///
/// `original` is the URI the client sent; `request` is what will be forwarded (its URI
/// already points at `server`). Any closure `Fn(&Uri, &ServerUrl, &mut request::Parts)`
/// is a hook.
pub trait RewriteHook: Send + Sync + 'static {
    /// Adjusts the rewritten request.
    fn rewrite(&self, original: &Uri, server: &ServerUrl, request: &mut request::Parts);
}

impl<F> RewriteHook for F
where
    F: Fn(&Uri, &ServerUrl, &mut request::Parts) + Send + Sync + 'static,
{
    fn rewrite(&self, original: &Uri, server: &ServerUrl, request: &mut request::Parts) {
        self(original, server, request);
    }
}

pub(crate) struct Shared<P, H> {
    pool: P,
    handler: H,
    rewrite: Option<Box<dyn RewriteHook>>,
    sticky: Option<Sticky>,
}

/// A sticky session with its index of the pool, rebuilt when the pool changes.
struct Sticky {
    session: StickySession,
    index: ArcSwap<Indexed>,
}

struct Indexed {
    generation: u64,
    index: StickyIndex,
}

impl Sticky {
    fn new(session: StickySession) -> Self {
        let index = session.index(&[]);
        Self {
            session,
            index: ArcSwap::from_pointee(Indexed {
                generation: u64::MAX,
                index,
            }),
        }
    }
}

impl<P: Pool, H> Shared<P, H> {
    /// The server for a request, and whether the response must set the cookie.
    fn choose(&self, headers: &HeaderMap) -> Result<(ServerUrl, bool), Error> {
        let Some(sticky) = &self.sticky else {
            return Ok((self.pool.next_server()?, false));
        };
        let generation = self.pool.generation();
        let mut cached = sticky.index.load();
        if cached.generation != generation {
            let index = sticky.session.index(&self.pool.servers());
            sticky.index.store(Arc::new(Indexed { generation, index }));
            cached = sticky.index.load();
        }
        if let Some(server) = cached.index.get_backend(headers) {
            return Ok((server.clone(), false));
        }
        Ok((self.pool.next_server()?, true))
    }
}

/// Configures a [`Balancer`] or a [`BalancerLayer`].
pub struct Builder<P, H = DefaultErrorHandler> {
    pool: P,
    handler: H,
    rewrite: Option<Box<dyn RewriteHook>>,
    sticky: Option<StickySession>,
}

impl<P: Pool> Builder<P> {
    fn new(pool: P) -> Self {
        Self {
            pool,
            handler: DefaultErrorHandler,
            rewrite: None,
            sticky: None,
        }
    }
}

impl<P: Pool, H: ErrorHandler> Builder<P, H> {
    /// Maps errors to responses with `handler` instead of [`DefaultErrorHandler`].
    pub fn error_handler<H2: ErrorHandler>(self, handler: H2) -> Builder<P, H2> {
        Builder {
            pool: self.pool,
            handler,
            rewrite: self.rewrite,
            sticky: self.sticky,
        }
    }

    /// Pins clients to servers with the cookie of `session`, as the reference does: a
    /// request whose cookie names a server of the pool goes there; any other request
    /// is balanced and its response sets the cookie. A cookie never routes to a server
    /// outside the pool.
    pub fn sticky(mut self, session: StickySession) -> Self {
        self.sticky = Some(session);
        self
    }

    /// Calls `hook` on every request after its URI was rewritten.
    pub fn rewrite(mut self, hook: impl RewriteHook) -> Self {
        self.rewrite = Some(Box::new(hook));
        self
    }

    /// A layer that wraps forwarding services in this balancer; every service it makes
    /// shares the pool.
    pub fn layer(self) -> BalancerLayer<P, H> {
        BalancerLayer {
            shared: Arc::new(Shared {
                pool: self.pool,
                handler: self.handler,
                rewrite: self.rewrite,
                sticky: self.sticky.map(Sticky::new),
            }),
        }
    }

    /// The balancer over `inner`, the service that forwards to the chosen server.
    pub fn service<S>(self, inner: S) -> Balancer<S, P, H> {
        self.layer().layer(inner)
    }
}

/// A tower [`Layer`] that puts a [`Balancer`] in front of a forwarding service.
pub struct BalancerLayer<P, H = DefaultErrorHandler> {
    shared: Arc<Shared<P, H>>,
}

impl<P, H> Clone for BalancerLayer<P, H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P: Pool> BalancerLayer<P> {
    /// A layer over `pool` with the default error handler.
    pub fn new(pool: P) -> Self {
        Builder::new(pool).layer()
    }
}

impl<S, P, H> Layer<S> for BalancerLayer<P, H> {
    type Service = Balancer<S, P, H>;
    fn layer(&self, inner: S) -> Balancer<S, P, H> {
        Balancer {
            inner,
            shared: Arc::clone(&self.shared),
            ready: false,
        }
    }
}

/// The load balancer as a service: picks a server from the pool, rewrites the request
/// URI to it, calls the inner service, records the outcome, and maps errors to
/// responses.
///
/// The request URI becomes the server's scheme and authority, with the server's path
/// (if any) as a prefix of the request's path; the query is kept. When the request has
/// no `Host` header, the original authority is put there so the forwarder can report
/// it in `X-Forwarded-Host`.
///
/// It is both a tower [`Service`] and a hyper
/// [`Service`](hyper::service::Service); its error type is [`Infallible`]: failures
/// are responses made by the [`ErrorHandler`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), roundrobin_hyper::Error> {
/// use roundrobin_core::{RoundRobin, ServerUrl};
/// use roundrobin_hyper::{Balancer, Forwarder, Pool};
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
    shared: Arc<Shared<P, H>>,
    /// Whether `inner` reported ready to the last `poll_ready` (tower path).
    ready: bool,
}

impl<S: Clone, P, H> Clone for Balancer<S, P, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            ready: false,
        }
    }
}

impl<S, P, H> core::fmt::Debug for Balancer<S, P, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl<P: Pool> Balancer<(), P> {
    /// Starts configuring a balancer over `pool`.
    pub fn builder(pool: P) -> Builder<P> {
        Builder::new(pool)
    }
}

impl<S, P, H> Balancer<S, P, H> {
    /// The pool: change servers at run time through it.
    pub fn pool(&self) -> &P {
        &self.shared.pool
    }
}

/// The URI of `original` rewritten to `server`.
pub fn rewrite_uri(original: &Uri, server: &ServerUrl) -> Result<Uri, http::Error> {
    let pq = original.path_and_query();
    let path_and_query = match (server.path().trim_end_matches('/'), pq) {
        ("", Some(pq)) => pq.clone(),
        ("", None) => PathAndQuery::from_static("/"),
        (prefix, Some(pq)) => {
            let rest = pq.as_str();
            if rest.starts_with('/') {
                PathAndQuery::try_from(format!("{prefix}{rest}"))?
            } else {
                PathAndQuery::try_from(format!("{prefix}/{rest}"))?
            }
        }
        (prefix, None) => PathAndQuery::try_from(format!("{prefix}/"))?,
    };
    Uri::builder()
        .scheme(server.scheme())
        .authority(server.authority())
        .path_and_query(path_and_query)
        .build()
}

/// Records 499 for the server if the request is dropped before its outcome is known.
pub(crate) struct Outcome<P: Pool, H: ErrorHandler> {
    shared: Arc<Shared<P, H>>,
    server: ServerUrl,
    stick: bool,
    start: Instant,
    done: bool,
}

impl<P: Pool, H: ErrorHandler> Outcome<P, H> {
    fn record(&mut self, status: u16) {
        self.done = true;
        self.shared
            .pool
            .record(&self.server, status, self.start.elapsed());
    }

    /// Records the response's status and sets the sticky cookie if needed.
    pub(crate) fn finish<B>(&mut self, res: &mut Response<B>) {
        self.record(res.status().as_u16());
        stick_to(&self.shared, self.stick, &self.server, res);
    }

    /// The response for an error of the inner service.
    pub(crate) fn fail<B>(&mut self, error: BoxError) -> Response<ResponseBody<B>> {
        let error = Error::from_inner(error);
        tracing::debug!(%error, "proxy error");
        let mut res = self.shared.handler.handle(&error).map(ResponseBody::local);
        self.finish(&mut res);
        res
    }
}

impl<P: Pool, H: ErrorHandler> Drop for Outcome<P, H> {
    fn drop(&mut self) {
        if !self.done {
            let status = self.shared.handler.handle(&Error::ClientGone).status();
            self.record(status.as_u16());
        }
    }
}

/// Picks the server and rewrites the request: the synchronous part of a request,
/// run in `call`. Returns the future that forwards it.
fn start<S, P, H, B>(
    shared: Arc<Shared<P, H>>,
    inner: S,
    req: Request<B>,
    needs_ready: bool,
) -> ResponseFuture<S, B, P, H>
where
    S: Service<Request<B>>,
    P: Pool,
    H: ErrorHandler,
{
    let (server, stick) = match shared.choose(req.headers()) {
        Ok(chosen) => chosen,
        Err(e) => return ResponseFuture::done(shared.handler.handle(&e)),
    };
    let (mut parts, body) = req.into_parts();
    let uri = match rewrite_uri(&parts.uri, &server) {
        Ok(uri) => uri,
        Err(e) => {
            let mut res = shared.handler.handle(&Error::Uri(e));
            stick_to(&shared, stick, &server, &mut res);
            return ResponseFuture::done(res);
        }
    };
    let original = core::mem::replace(&mut parts.uri, uri);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(host) = original
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, host);
        }
    }
    if let Some(hook) = &shared.rewrite {
        hook.rewrite(&original, &server, &mut parts);
    }
    let outcome = Outcome {
        shared,
        server,
        stick,
        start: Instant::now(),
        done: false,
    };
    let req = Request::from_parts(parts, body);
    if needs_ready {
        ResponseFuture::ready(outcome, inner, req)
    } else {
        let mut inner = inner;
        ResponseFuture::call(outcome, inner.call(req))
    }
}

fn stick_to<P, H, B>(
    shared: &Shared<P, H>,
    stick: bool,
    server: &ServerUrl,
    res: &mut Response<B>,
) {
    if let (true, Some(sticky)) = (stick, &shared.sticky) {
        sticky.session.stick_backend(server, res.headers_mut());
    }
}

impl<S, P, H, B, RB> Service<Request<B>> for Balancer<S, P, H>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    P: Pool,
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
        let needs_ready = !core::mem::take(&mut self.ready);
        start(Arc::clone(&self.shared), inner, req, needs_ready)
    }
}

impl<S, P, H, B, RB> hyper::service::Service<Request<B>> for Balancer<S, P, H>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    P: Pool,
    H: ErrorHandler,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, B, P, H>;

    fn call(&self, req: Request<B>) -> Self::Future {
        start(Arc::clone(&self.shared), self.inner.clone(), req, true)
    }
}

#[cfg(test)]
mod tests {
    use core::future::poll_fn;

    use super::*;

    /// An inner service that is never ready.
    #[derive(Clone)]
    struct Broken;

    impl Service<Request<()>> for Broken {
        type Response = Response<http_body_util::Empty<bytes::Bytes>>;
        type Error = BoxError;
        type Future = core::future::Ready<Result<Self::Response, BoxError>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("broken".into()))
        }
        fn call(&mut self, _req: Request<()>) -> Self::Future {
            core::future::ready(Ok(Response::new(http_body_util::Empty::new())))
        }
    }

    #[tokio::test]
    async fn inner_readiness_errors_are_answered_by_the_handler() {
        let pool = roundrobin_core::RoundRobin::new();
        pool.upsert_server(ServerUrl::parse("http://10.0.0.1:80").unwrap(), None)
            .unwrap();
        let mut balancer = Balancer::builder(pool).service(Broken);
        // With and without the tower `poll_ready` first.
        poll_fn(|cx| Service::poll_ready(&mut balancer, cx))
            .await
            .unwrap();
        let res = Service::call(&mut balancer, Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
        let res = Service::call(&mut balancer, Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
        let res = hyper::service::Service::call(&balancer, Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
    }

    fn rw(uri: &str, server: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        rewrite_uri(&uri, &ServerUrl::parse(server).unwrap())
            .unwrap()
            .to_string()
    }

    proptest::proptest! {
        #[test]
        fn rewrite_targets_the_server_and_keeps_path_and_query(
            path in "(/[a-zA-Z0-9._~%-]{0,8}){1,4}",
            query in proptest::option::of("[a-zA-Z0-9=&%]{0,12}"),
            prefix in "(/[a-z0-9]{1,6}){0,2}/?",
            port in 1u16..,
        ) {
            let original = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let server = ServerUrl::parse(&format!("http://10.1.2.3:{port}{prefix}")).unwrap();
            let uri = rewrite_uri(&original.parse().unwrap(), &server).unwrap();
            proptest::prop_assert_eq!(uri.scheme_str(), Some("http"));
            proptest::prop_assert_eq!(uri.authority().unwrap().as_str(), server.authority());
            let trimmed = prefix.trim_end_matches('/');
            proptest::prop_assert_eq!(uri.path(), format!("{trimmed}{path}"));
            proptest::prop_assert_eq!(uri.query(), query.as_deref());
        }
    }

    #[test]
    fn uri_rewrite_keeps_path_and_query_and_honours_prefix() {
        assert_eq!(
            rw("/a/b?x=1", "http://10.0.0.1:81"),
            "http://10.0.0.1:81/a/b?x=1"
        );
        assert_eq!(rw("http://front/a?x", "https://b:1"), "https://b:1/a?x");
        assert_eq!(rw("/a?x=1", "http://b:1/api"), "http://b:1/api/a?x=1");
        assert_eq!(rw("/a", "http://b:1/api/"), "http://b:1/api/a");
        assert_eq!(rw("/", "http://b:1/api"), "http://b:1/api/");
    }
}
