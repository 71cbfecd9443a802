//! The default inner service: forwards a request whose URI names the upstream, over
//! the forwarder's own HTTP/1.1 pool (`connpool.rs`) or hyper-util's pooled clients.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;

use crate::connpool::{Http1Pool, Sent};
use crate::headers::{prepare, remove_hop_by_hop, Written};
use crate::timeout::{client_idle, Download, Upload};
use crate::upgrade::Upgrade;
use crate::upstream::{h2c_client, pooled_client_with, Clients, Connector};
use crate::{BoxError, Error, RequestBody, Tunnels};

/// Forwards requests to the server their URI names, over pooled clients.
///
/// - the server URL's scheme says how: `http://` is HTTP/1.1 over the forwarder's own
///   keep-alive pool (per forwarder, so per worker in the proxy: the most recently used
///   idle connection first, at most [`MAX_IDLE_PER_SERVER`](crate::MAX_IDLE_PER_SERVER)
///   idle per server, closed after 90 s unused; a request that meets a connection the
///   server just closed is sent again on another, as it never left), `https://` is TLS with
///   ALPN `h2` or `http/1.1` (see [`Connector`] and [`UpstreamTls`](crate::UpstreamTls)
///   for trusted CAs and client certificates), `h2c://` is cleartext HTTP/2 with prior
///   knowledge; HTTP/2 requests to one server share one connection. Any client version
///   reaches any server version;
/// - hop-by-hop headers are removed both ways, except `TE: trailers` (gRPC needs it);
///   trailers are forwarded;
/// - `X-Forwarded-For` gets the [`ClientAddr`](crate::ClientAddr) appended (earlier
///   hops, across repeated headers, kept), `X-Forwarded-Host` is the request's `Host`,
///   `X-Forwarded-Proto` is the configured scheme (`http`);
/// - bodies stream both ways, frame by frame;
/// - timeouts, as HAProxy splits them: connecting ([`DEFAULT_CONNECT_TIMEOUT`], 3 s; an
///   [`Error::Connect`]), the response head counted from the end of the upload
///   ([`timeout`](Self::timeout), 30 s; [`Error::Timeout`], 504), and the idle time
///   between body chunks both ways ([`body_timeout`](Self::body_timeout), 30 s): an
///   upload the client lets sit is [`Error::ClientTimeout`] (408, not the server's
///   fault), one the server stops reading is [`Error::Timeout`], and a response body
///   that stops coming is cut off;
/// - resets and early EOF are [`Error::Upstream`];
/// - an HTTP/1.1 request with `Connection: upgrade` and an `Upgrade` header (a
///   WebSocket handshake, say) keeps both; when the server answers `101 Switching
///   Protocols`, the client's connection and the server's become a tunnel (see
///   [`Tunnels`]; [`serve`](crate::serve) hands upgraded connections over), closed
///   when either side closes or after [`body_timeout`](Self::body_timeout) without a
///   byte either way.
///
/// It is the inner service of a [`Balancer`](crate::Balancer), which rewrites the URI to
/// the chosen server before calling it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use roundrobin_hyper::Forwarder;
/// let forwarder = Forwarder::new()
///     .timeout(Duration::from_millis(500))
///     .body_timeout(Duration::from_secs(10));
/// assert_eq!(forwarder.timeout_duration(), Duration::from_millis(500));
/// # }
/// ```
///
#[derive(Debug)]
pub struct Forwarder<B = RequestBody<Incoming>, C = Connector> {
    /// What every clone shares, behind one reference count: a balancer clones its inner
    /// service for each request.
    shared: Arc<Shared<C, Upload<B>>>,
    timeout: Duration,
    body_timeout: Duration,
    proto: HeaderValue,
}

/// A forwarder's connection pools and the tunnels it opened.
#[derive(Debug)]
struct Shared<C, B> {
    clients: Clients<C, B>,
    tunnels: Tunnels,
    written: Written,
}

impl<B, C> Clone for Forwarder<B, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            timeout: self.timeout,
            body_timeout: self.body_timeout,
            proto: self.proto.clone(),
        }
    }
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A forwarder of balanced hyper server requests with a fresh connection pool and
    /// the default timeouts. Needs a tokio runtime when it is used.
    pub fn new() -> Self {
        Self::with_connector(Connector::new(DEFAULT_CONNECT_TIMEOUT))
    }
}

impl<B> Forwarder<B, Connector>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A forwarder whose connections `connector` opens: its connect timeout and TLS
    /// settings apply to every scheme.
    pub fn with_connector(connector: Connector) -> Self {
        let h2c = h2c_client(connector.plain());
        let http1 = Http1Pool::new(connector.plain());
        Self::with_clients(pooled_client_with(connector), h2c, Some(http1))
    }
}

/// How long connecting to a server may take by default (HAProxy's `timeout connect` is
/// commonly 5 s, nginx's `proxy_connect_timeout` 60 s: a server that does not accept
/// within 3 s on a local network is better retried elsewhere).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The client a [`Forwarder`] uses by default: [`pooled_client`] with
/// [`DEFAULT_CONNECT_TIMEOUT`].
pub fn default_client<B>() -> Client<Connector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pooled_client(DEFAULT_CONNECT_TIMEOUT)
}

/// A keep-alive client for `http://` and `https://` servers (at most
/// [`MAX_IDLE_PER_SERVER`](crate::MAX_IDLE_PER_SERVER) idle connections per server,
/// each closed after 90 s idle), `TCP_NODELAY`, and `connect_timeout` for new
/// connections (a connect that takes longer is an [`Error::Connect`], retried on
/// another server by default). [`pooled_client_with`] takes a [`Connector`] with TLS
/// settings of your own.
pub fn pooled_client<B>(connect_timeout: Duration) -> Client<Connector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pooled_client_with(Connector::new(connect_timeout))
}

impl<B, C> Forwarder<B, C>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Forwards to `http://` and `https://` servers over an existing hyper-util
    /// client: one made by [`pooled_client`] with another connect timeout, or one with
    /// a connector of your own. `h2c://` servers get a client of their own with
    /// [`DEFAULT_CONNECT_TIMEOUT`]. The request body type is the forwarder's
    /// [`Upload`].
    pub fn with_client(client: Client<C, Upload<B>>) -> Self {
        let mut plain = HttpConnector::new();
        plain.set_nodelay(true);
        plain.set_connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT));
        Self::with_clients(client, h2c_client(plain), None)
    }

    fn with_clients(
        main: Client<C, Upload<B>>,
        h2c: Client<HttpConnector, Upload<B>>,
        http1: Option<Http1Pool<Upload<B>>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                clients: Clients { main, h2c, http1 },
                written: Written::default(),
                tunnels: Tunnels::new(),
            }),
            timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            proto: HeaderValue::from_static("http"),
        }
    }
}

impl<B, C> Forwarder<B, C> {
    /// How long the upstream may take to send its response head, counted from the end
    /// of the request's upload (default 30 s, HAProxy's `timeout server`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configured response-head timeout.
    pub fn timeout_duration(&self) -> Duration {
        self.timeout
    }

    /// How long a body may sit idle between two chunks, both ways (default 30 s).
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The tunnels this forwarder (and its clones) opened: drain them on shutdown.
    pub fn tunnels(&self) -> &Tunnels {
        &self.shared.tunnels
    }

    /// The value of `X-Forwarded-Proto`: `https` when the proxy terminates TLS.
    pub fn forwarded_proto(mut self, proto: HeaderValue) -> Self {
        self.proto = proto;
        self
    }
}

impl<B, C> tower_service::Service<Request<B>> for Forwarder<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Download<Incoming>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let upgrade = Upgrade::take(&mut req, &self.shared.tunnels);
        prepare(
            &mut req,
            &self.proto,
            upgrade.is_some(),
            &self.shared.written,
        );
        let (parts, body) = req.into_parts();
        let (body, upload) = Upload::new(body);
        let req = Request::from_parts(parts, body);
        let shared = Arc::clone(&self.shared);
        let (timeout, body_timeout) = (self.timeout, self.body_timeout);
        Box::pin(async move {
            let sent = shared.clients.send(req, upgrade.is_some());
            let mut sent = core::pin::pin!(sent);
            // While the upload goes on, only its idle gaps are timed: the response may
            // also come first (an early 413, say).
            if let Some(upload) = upload {
                let ended = upload.ended();
                let mut ended = core::pin::pin!(ended);
                loop {
                    tokio::select! {
                        result = &mut sent => return answer(result, body_timeout, upgrade),
                        () = &mut ended => break,
                        () = tokio::time::sleep_until(upload.idle_deadline(body_timeout)) => {
                            if tokio::time::Instant::now() < upload.idle_deadline(body_timeout) {
                                continue;
                            }
                            return Err(if upload.waiting_on_client() {
                                Error::from_inner(client_idle())
                            } else {
                                Error::Timeout(body_timeout)
                            });
                        }
                    }
                }
            }
            match tokio::time::timeout(timeout, sent).await {
                Err(_elapsed) => Err(Error::Timeout(timeout)),
                Ok(result) => answer(result, body_timeout, upgrade),
            }
        })
    }
}

/// The response, or the error, of one upstream request (`upgrade`: the client's side
/// of an upgrade it asked for). A pooled connection goes back to its pool when the
/// response body ends; an upgraded one belongs to the tunnel.
fn answer(
    result: Result<Sent, Error>,
    body_timeout: Duration,
    upgrade: Option<Upgrade>,
) -> Result<Response<Download<Incoming>>, Error> {
    let (mut res, lease) = result?;
    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        crate::upgrade::switch(&mut res, upgrade, body_timeout)?;
        return Ok(res.map(|body| Download::new(body, body_timeout, None)));
    }
    remove_hop_by_hop(res.headers_mut());
    Ok(res.map(|body| Download::new(body, body_timeout, lease)))
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;
    use tower_service::Service;

    use super::*;

    /// The forwarder's future is boxed on every request (a move of all of it): the
    /// clients' futures keep no second copy of the request, and a new connection's
    /// futures are boxed apart.
    #[tokio::test]
    async fn the_future_of_a_request_stays_small() {
        let mut forwarder =
            Forwarder::<Empty<Bytes>>::with_connector(Connector::new(DEFAULT_CONNECT_TIMEOUT));
        let req = Request::get("http://127.0.0.1:1/")
            .body(Empty::new())
            .unwrap();
        let future = forwarder.call(req);
        let bytes = size_of_val(&*future);
        assert!(bytes <= 1536, "the forwarder's future takes {bytes} bytes");
    }
}
