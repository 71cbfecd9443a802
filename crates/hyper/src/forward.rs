//! The default inner service: forwards a request whose URI names the upstream, over
//! hyper-util's pooled client.

use core::fmt::Write as _;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::{BoxError, Error, RequestBody};

/// The address of the client that sent a request, as a request extension.
///
/// [`serve`](crate::serve) inserts it; the [`Forwarder`] appends its IP to
/// `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Headers that apply to one connection only (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Forwards requests to the server their URI names, over a pooled HTTP/1.1 client.
///
/// - hop-by-hop headers are removed both ways;
/// - `X-Forwarded-For` gets the [`ClientAddr`] appended, `X-Forwarded-Host` is the
///   request's `Host`, `X-Forwarded-Proto` is the configured scheme (`http`);
/// - bodies stream both ways, frame by frame;
/// - the upstream must send its response head within the timeout (30 s by default),
///   else [`Error::Timeout`]; connect failures are [`Error::Connect`], resets and early
///   EOF [`Error::Upstream`].
///
/// It is the inner service of a [`Balancer`](crate::Balancer), which rewrites the URI to
/// the chosen server before calling it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use roundrobin_hyper::Forwarder;
/// let forwarder = Forwarder::new().timeout(Duration::from_millis(500));
/// assert_eq!(forwarder.timeout_duration(), Duration::from_millis(500));
/// # }
/// ```
///
/// Plain HTTP upstreams use [`HttpConnector`]; for HTTPS upstreams build the client
/// with a TLS connector (e.g. `hyper-rustls`) and pass it to [`Forwarder::with_client`].
#[derive(Debug)]
pub struct Forwarder<B = RequestBody<Incoming>, C = HttpConnector> {
    client: Client<C, B>,
    timeout: Duration,
    proto: HeaderValue,
}

impl<B, C: Clone> Clone for Forwarder<B, C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            timeout: self.timeout,
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
    /// A forwarder of hyper server requests with a fresh connection pool and a 30 s
    /// timeout. Needs a tokio runtime when it is used.
    pub fn new() -> Self {
        Self::with_client(default_client())
    }
}

/// How long connecting to a server may take by default (HAProxy's `timeout connect` is
/// commonly 5 s, nginx's `proxy_connect_timeout` 60 s: a server that does not accept
/// within 3 s on a local network is better retried elsewhere).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The client a [`Forwarder`] uses by default: [`pooled_client`] with
/// [`DEFAULT_CONNECT_TIMEOUT`].
pub fn default_client<B>() -> Client<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pooled_client(DEFAULT_CONNECT_TIMEOUT)
}

/// A keep-alive pool with a 90 s idle timeout, `TCP_NODELAY`, HTTP/1.1, and
/// `connect_timeout` for new connections (a connect that takes longer is an
/// [`Error::Connect`], retried on another server by default).
pub fn pooled_client<B>(connect_timeout: Duration) -> Client<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .set_host(false)
        .build(connector)
}

impl<B, C> Forwarder<B, C> {
    /// Forwards over an existing hyper-util client: one made by [`default_client`] for
    /// another request body type, or one with another connector (TLS).
    pub fn with_client(client: Client<C, B>) -> Self {
        Self {
            client,
            timeout: Duration::from_secs(30),
            proto: HeaderValue::from_static("http"),
        }
    }

    /// How long the upstream may take to send its response head.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configured timeout.
    pub fn timeout_duration(&self) -> Duration {
        self.timeout
    }

    /// The value of `X-Forwarded-Proto`: `https` when the proxy terminates TLS.
    pub fn forwarded_proto(mut self, proto: HeaderValue) -> Self {
        self.proto = proto;
        self
    }
}

fn prepare<B>(req: &mut Request<B>, proto: &HeaderValue) {
    // The client speaks HTTP/1.1 upstream whatever the downstream version was.
    *req.version_mut() = Version::HTTP_11;
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let headers = req.headers_mut();
    remove_hop_by_hop(headers);
    if let Some(ip) = client {
        // Every earlier hop, in order, across repeated headers (RFC 7239's list rule).
        let mut chain = String::new();
        for prior in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(prior) = prior.to_str() {
                chain.push_str(prior.trim());
                chain.push_str(", ");
            }
        }
        let _ = write!(chain, "{ip}");
        if let Ok(value) = HeaderValue::try_from(chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    headers.insert(X_FORWARDED_PROTO, proto.clone());
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let authority = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(authority) = authority {
        req.headers_mut().insert(header::HOST, authority);
    }
}

impl<B, C> tower_service::Service<Request<B>> for Forwarder<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        prepare(&mut req, &self.proto);
        let timeout = self.timeout;
        let sent = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(timeout, sent).await {
                Err(_elapsed) => Err(Error::Timeout(timeout)),
                Ok(Err(e)) if e.is_connect() => Err(Error::Connect(Box::new(e))),
                Ok(Err(e)) => Err(Error::Upstream(Box::new(e))),
                Ok(Ok(mut res)) => {
                    remove_hop_by_hop(res.headers_mut());
                    Ok(res)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    proptest::proptest! {
        #[test]
        fn no_hop_by_hop_header_survives(
            named in proptest::collection::vec("x-[a-z]{1,6}", 0..4),
            kept in proptest::collection::vec("y-[a-z]{1,6}", 0..4),
        ) {
            let mut h = HeaderMap::new();
            for name in HOP_BY_HOP.iter() {
                h.insert(name.clone(), HeaderValue::from_static("1"));
            }
            h.insert(header::CONNECTION, HeaderValue::try_from(named.join(", ")).unwrap());
            for name in named.iter().chain(&kept) {
                h.append(HeaderName::try_from(name.as_str()).unwrap(), HeaderValue::from_static("v"));
            }
            remove_hop_by_hop(&mut h);
            for name in HOP_BY_HOP.iter() {
                proptest::prop_assert!(!h.contains_key(name));
            }
            for name in &named {
                proptest::prop_assert!(!h.contains_key(name.as_str()));
            }
            for name in &kept {
                proptest::prop_assert!(h.contains_key(name.as_str()));
            }
        }
    }

    #[test]
    fn forwarded_headers() {
        let mut req = Request::builder()
            .uri("http://10.0.0.9:81/p")
            .header(header::HOST, "front.example")
            .header(X_FORWARDED_FOR, "1.2.3.4")
            .header(X_FORWARDED_FOR, "5.6.7.8, 9.9.9.9")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("127.0.0.7:5000".parse().unwrap()));
        prepare(&mut req, &HeaderValue::from_static("http"));
        let h = req.headers();
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.7");
        assert_eq!(h[&X_FORWARDED_HOST], "front.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::HOST], "10.0.0.9:81");
    }
}
