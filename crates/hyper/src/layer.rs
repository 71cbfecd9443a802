//! Configuring a balancer: the [`Builder`] and the tower [`BalancerLayer`].

use std::sync::Arc;

use roundrobin_sticky::{CachedIndex, StickySession};
use tower_layer::Layer;

use crate::config::Config;
use crate::{Balancer, DefaultErrorHandler, ErrorHandler, Metrics, Retry, RewriteHook, Select};

/// Configures a [`Balancer`] or a [`BalancerLayer`]; from [`Balancer::builder`].
pub struct Builder<P, H = DefaultErrorHandler> {
    pool: P,
    handler: H,
    rewrite: Option<Box<dyn RewriteHook>>,
    sticky: Option<StickySession>,
    retry: Retry,
    max_body: Option<u64>,
    access_log: bool,
    metrics: Option<Arc<Metrics>>,
    replay_bodies: Option<usize>,
}

impl<P, H> core::fmt::Debug for Builder<P, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Builder")
            .field("sticky", &self.sticky)
            .finish_non_exhaustive()
    }
}

impl<P: Select> Balancer<(), P> {
    /// Starts configuring a balancer over `pool`.
    pub fn builder(pool: P) -> Builder<P> {
        Builder {
            pool,
            handler: DefaultErrorHandler,
            rewrite: None,
            sticky: None,
            retry: Retry::default(),
            max_body: None,
            access_log: false,
            metrics: None,
            replay_bodies: None,
        }
    }
}

impl<P: Select, H: ErrorHandler> Builder<P, H> {
    /// Maps errors to responses with `handler` instead of [`DefaultErrorHandler`].
    pub fn error_handler<H2: ErrorHandler>(self, handler: H2) -> Builder<P, H2> {
        Builder {
            pool: self.pool,
            handler,
            rewrite: self.rewrite,
            sticky: self.sticky,
            retry: self.retry,
            max_body: self.max_body,
            access_log: self.access_log,
            metrics: self.metrics,
            replay_bodies: self.replay_bodies,
        }
    }

    /// Lets the [`Retry`] policy send idempotent requests with a body again: a body
    /// whose announced size is at most `max_bytes` is read whole before the first try
    /// (opt-in: that delays the first byte to the server until the upload is done, and
    /// costs its copy in memory). Larger or unannounced bodies stream and are never
    /// retried, as without it.
    pub fn replay_bodies(mut self, max_bytes: usize) -> Self {
        self.replay_bodies = Some(max_bytes);
        self
    }

    /// Counts every try in `metrics` (requests by status class, errors by kind,
    /// latency, in flight, retries), served by [`Admin::metrics`](crate::Admin::metrics).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Emits one `tracing` event per request on the target
    /// [`ACCESS_LOG_TARGET`](crate::ACCESS_LOG_TARGET) (client, method, path, server,
    /// status, latency, retries). Off by default: it costs a copy of the path per
    /// request.
    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// The largest request body forwarded, in bytes: a larger `Content-Length` is
    /// answered 413 at once, a longer streamed body fails with 413 when it passes the
    /// limit (never recorded against the server). Default: no limit (nginx's
    /// `client_max_body_size` is 1 MiB, HAProxy has none).
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// How failed requests are retried on other servers (default [`Retry::default`]:
    /// 2 retries on connect failures and resets; [`Retry::OFF`] turns it off).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
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
            config: Arc::new(Config {
                pool: self.pool,
                handler: self.handler,
                rewrite: self.rewrite,
                sticky: self.sticky.map(CachedIndex::new),
                retry: self.retry,
                max_body: self.max_body,
                access_log: self.access_log,
                metrics: self.metrics,
                replay_bodies: self.replay_bodies,
                targets: crate::rewrite::Targets::default(),
            }),
        }
    }

    /// The balancer over `inner`, the service that forwards to the chosen server.
    pub fn service<S>(self, inner: S) -> Balancer<S, P, H> {
        self.layer().layer(inner)
    }
}

/// A tower [`Layer`] that puts a [`Balancer`] in front of a forwarding service (the
/// reference's `New(next http.Handler)`).
///
/// ```
/// use roundrobin_core::RoundRobin;
/// use roundrobin_hyper::{BalancerLayer, Forwarder};
/// use tower_layer::Layer;
///
/// let layer = BalancerLayer::new(RoundRobin::new());
/// let balancer = layer.layer(Forwarder::new());
/// assert!(balancer.pool().servers().is_empty());
/// ```
pub struct BalancerLayer<P, H = DefaultErrorHandler> {
    config: Arc<Config<P, H>>,
}

impl<P, H> Clone for BalancerLayer<P, H> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<P, H> core::fmt::Debug for BalancerLayer<P, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BalancerLayer").finish_non_exhaustive()
    }
}

impl<P: Select> BalancerLayer<P> {
    /// A layer over `pool` with the default error handler.
    pub fn new(pool: P) -> Self {
        Balancer::builder(pool).layer()
    }
}

impl<S, P, H> Layer<S> for BalancerLayer<P, H> {
    type Service = Balancer<S, P, H>;
    fn layer(&self, inner: S) -> Balancer<S, P, H> {
        Balancer::new(inner, Arc::clone(&self.config))
    }
}
