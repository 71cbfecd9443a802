//! Running a service on a TCP listener.

use core::error::Error as StdError;
use core::future::Future;
use core::net::SocketAddr;
use core::time::Duration;
use std::io;
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use roundrobin_core::ServerUrl;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::conn::{ConnState, Held, TrackedBody, Verdict, Watched};
use crate::ClientAddr;

/// A hyper service [`serve`] and [`spawn`] can run: it takes `Request<Incoming>`, is
/// cloned for each connection and its futures move between tasks. Implemented for
/// every such service (the bounds, named once).
pub trait ServeService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<Box<dyn StdError + Send + Sync>>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> ServeService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Future: Send + 'static,
            Error: Into<Box<dyn StdError + Send + Sync>>,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body [`serve`] can send. Implemented for every such body.
pub trait ServeBody:
    Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

impl<B> ServeBody for B where
    B: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

/// How long [`serve`] stops accepting after `accept` failed for a reason other than
/// one connection's.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Limits and timeouts of the client side, with HAProxy's and nginx's counterparts.
///
/// | field | default | HAProxy | nginx |
/// |---|---|---|---|
/// | `header_timeout`: from a request's first byte to its whole head | 10 s | `timeout http-request` | `client_header_timeout` 60 s |
/// | `idle_timeout`: a keep-alive connection with no request | 60 s | `timeout http-keep-alive` | `keepalive_timeout` 75 s |
/// | `max_connections`: open client connections; more wait in the listen backlog | 10,000 | `maxconn` | `worker_connections` 512 |
/// | `shutdown_timeout`: how long a graceful shutdown waits before closing what is left | 30 s | `hard-stop-after` | `worker_shutdown_timeout` |
/// | `max_headers`: request header fields → 431 above | 100 | `tune.http.maxhdr` 101 | — |
/// | `max_header_bytes`: request head size → 431 above (at least 8 KiB) | 64 KiB | `tune.bufsize` 16 KiB | `large_client_header_buffers` 4×8 KiB |
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// From the first byte of a request to the end of its head (slowloris).
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Client connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// How long shutting down waits for in-flight requests before closing.
    pub shutdown_timeout: Duration,
    /// Header fields of a request (431 above).
    pub max_headers: usize,
    /// Bytes of a request head (431 above).
    pub max_header_bytes: usize,
    /// Counts open and accepted client connections when set.
    pub metrics: Option<Arc<crate::Metrics>>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            metrics: None,
        }
    }
}

/// Serves `service` (HTTP/1.1 and HTTP/2) on `listener` with the default
/// [`ServerLimits`] until `shutdown` completes; see [`serve_with`].
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>)
where
    S: ServeService<B>,
    B: ServeBody,
{
    serve_with(listener, service, shutdown, ServerLimits::default()).await;
}

/// Serves `service` (HTTP/1.1 and HTTP/2) on `listener` until `shutdown` completes,
/// then stops accepting, lets the open connections finish their in-flight requests
/// (idle ones are closed at once), and after `limits.shutdown_timeout` closes whatever
/// is still open.
///
/// Each request carries the peer address as a [`ClientAddr`] extension. A connection
/// that dribbles a request head longer than `header_timeout` is dropped, one idle
/// longer than `idle_timeout` is closed; at most `max_connections` are open, further
/// ones wait in the listen backlog. Errors of single connections are logged at debug
/// level and do not stop the server. When `accept` itself fails (out of file
/// descriptors, say), the error is logged and accepting pauses for
/// [`ACCEPT_ERROR_PAUSE`] instead of spinning or giving up.
pub async fn serve_with<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    limits: ServerLimits,
) where
    S: ServeService<B>,
    B: ServeBody,
{
    serve_io(listener, service, shutdown, limits, |stream| {
        core::future::ready(Ok(stream))
    })
    .await;
}

/// [`serve_with`] over TLS: each accepted connection first completes a TLS handshake
/// with `acceptor` (ALPN `h2`, `http/1.1`; see [`TlsAcceptor`](crate::TlsAcceptor)),
/// then is served as [`serve_with`] serves a plain one, the decrypted stream watched by
/// the same idle and header timeouts (HTTP/2 is recognised by its preface, whatever
/// ALPN chose).
///
/// The handshake runs in the connection's own task, within `limits.header_timeout`
/// (HAProxy's `timeout client` and nginx's `ssl_handshake_timeout` 60 s cover it there).
/// A handshake that fails (a client speaking plain HTTP to the port, one that does not
/// trust the certificate) or times out closes that connection without a response, is
/// logged at debug level and counted in `limits.metrics`
/// (`roundrobin_client_tls_handshake_failures`); the server goes on serving the others.
/// Set [`Forwarder::forwarded_proto`](crate::Forwarder::forwarded_proto) to `https` so
/// that servers see `X-Forwarded-Proto: https`.
///
/// ```no_run
/// use std::sync::Arc;
/// use http::HeaderValue;
/// use roundrobin_core::{RoundRobin, ServerUrl};
/// use roundrobin_hyper::{serve_tls_with, Balancer, Forwarder, ServerLimits, TlsAcceptor};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Arc::new(RoundRobin::new());
/// pool.upsert_server(ServerUrl::parse("http://127.0.0.1:9001")?, Some(1))?;
/// let balancer = Balancer::builder(pool)
///     .service(Forwarder::new().forwarded_proto(HeaderValue::from_static("https")));
/// let tls = TlsAcceptor::from_pem_files("cert.pem", "key.pem")?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// serve_tls_with(listener, tls, balancer, stop, ServerLimits::default()).await;
/// # Ok(()) }
/// ```
#[cfg(feature = "tls")]
pub async fn serve_tls_with<S, B>(
    listener: TcpListener,
    acceptor: crate::TlsAcceptor,
    service: S,
    shutdown: impl Future<Output = ()>,
    limits: ServerLimits,
) where
    S: ServeService<B>,
    B: ServeBody,
{
    serve_io(listener, service, shutdown, limits, move |stream| {
        acceptor.accept(stream)
    })
    .await;
}

/// The accept loop of [`serve_with`]; `handshake` turns an accepted socket into the
/// stream served (at once for plain TCP, after a TLS handshake), in the connection's
/// task.
async fn serve_io<S, B, H, F, I>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    limits: ServerLimits,
    handshake: H,
) where
    S: ServeService<B>,
    B: ServeBody,
    H: Fn(TcpStream) -> F,
    F: Future<Output = io::Result<I>> + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = core::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        if permits.available_permits() == 0 {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached: new connections wait"
            );
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(error) => {
                    tracing::error!(%error, "accept failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            // A finished connection's task gives its memory back now, not at the next
            // accept (a burst of connections that all close would otherwise stay).
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The slot and the gauge go with the socket: a connection upgraded to a tunnel
        // keeps them until the tunnel closes.
        let state = ConnState::new(Held::new(permit, limits.metrics.clone()));
        let svc = {
            let (service, state) = (service.clone(), Arc::clone(&state));
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                let in_flight = state.begin();
                // Boxed once here: hyper moves the future it is given (into a task of
                // its own for HTTP/2), and a balancer's future is large.
                let response = Box::pin(service.call(req));
                async move {
                    let response = response.await?;
                    Ok::<_, S::Error>(response.map(|body| TrackedBody::new(body, in_flight)))
                }
            })
        };
        let (builder, handshake) = (Arc::clone(&builder), handshake(stream));
        let limits = limits.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            let Some(stream) = handshaken(handshake, &limits, peer).await else {
                return;
            };
            let io = TokioIo::new(Watched::new(stream, Arc::clone(&state)));
            let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
            // Runs the connection to its end, closing it when it stays idle or dribbles
            // a head too long, and gracefully once the server stops.
            let mut stopped = stopped;
            let mut conn = core::pin::pin!(conn);
            let mut closing = false;
            loop {
                let wake = match state.verdict(limits.header_timeout, limits.idle_timeout) {
                    Verdict::Wait(at) => at,
                    Verdict::Idle => {
                        if !closing {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        tokio::time::Instant::now() + limits.idle_timeout
                    }
                    Verdict::SlowHead => {
                        tracing::debug!(%peer, "request head not complete within the header timeout: closed");
                        break;
                    }
                };
                tokio::select! {
                    done = conn.as_mut() => {
                        if let Err(error) = done {
                            tracing::debug!(%error, %peer, "connection error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(wake) => {}
                    changed = stopped.changed(), if !closing => {
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "shutdown timeout: closing the connections still open"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// The stream `handshake` makes, or `None` when it fails or takes longer than the
/// header timeout (logged and counted).
async fn handshaken<F, I>(handshake: F, limits: &ServerLimits, peer: SocketAddr) -> Option<I>
where
    F: Future<Output = io::Result<I>>,
{
    let error = match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => error,
        Err(_elapsed) => io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake not complete within the header timeout",
        ),
    };
    tracing::debug!(%error, %peer, "TLS handshake failed: closed");
    if let Some(metrics) = &limits.metrics {
        metrics.tls_handshake_failed();
    }
    None
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A server running in the background, from [`spawn`]. It stops gracefully when
/// [`shut down`](Self::shutdown), and stops accepting when dropped.
#[derive(Debug)]
pub struct Serving {
    addr: SocketAddr,
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Serving {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` (`https://` from `spawn_tls`) and its address, as a server of a pool.
    pub fn url(&self) -> ServerUrl {
        ServerUrl::parse(&format!("{}://{}", self.scheme, self.addr))
            .expect("a socket address is a valid authority")
    }

    /// Stops accepting and waits for the open connections to finish their in-flight
    /// requests (see [`serve`]).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A panicked connection task has already been reported by tokio.
            let _ = task.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` and [`spawn`]s `service` on it: a server in the background in one call
/// (`127.0.0.1:0` picks a free port; see [`Serving::local_addr`]).
pub async fn spawn_on<S, B>(addr: impl ToSocketAddrs, service: S) -> io::Result<Serving>
where
    S: ServeService<B>,
    B: ServeBody,
{
    Ok(spawn(TcpListener::bind(addr).await?, service))
}

/// Runs [`serve`] on `listener` in a task of the current tokio runtime, until the
/// returned [`Serving`] is shut down or dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use core::convert::Infallible;
/// use http_body_util::Full;
/// use hyper::service::service_fn;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let hello = service_fn(|_req| async { Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi")))) });
/// let server = roundrobin_hyper::spawn(listener, hello);
/// assert_eq!(server.url().as_str(), format!("http://{}", server.local_addr()));
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub fn spawn<S, B>(listener: TcpListener, service: S) -> Serving
where
    S: ServeService<B>,
    B: ServeBody,
{
    let addr = local_addr(&listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    Serving {
        addr,
        scheme: "http",
        stop: Some(stop),
        task: Some(task),
    }
}

/// [`spawn`] over TLS: runs [`serve_tls_with`] with the default [`ServerLimits`] in a
/// task of the current tokio runtime; [`Serving::url`] is `https://` and the address.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use core::convert::Infallible;
/// use http_body_util::Full;
/// use hyper::service::service_fn;
/// use roundrobin_hyper::{spawn_tls, TlsAcceptor};
///
/// let tls = TlsAcceptor::from_pem_files("cert.pem", "key.pem")?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let hello = service_fn(|_req| async { Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi")))) });
/// let server = spawn_tls(listener, tls, hello);
/// assert_eq!(server.url().as_str(), format!("https://{}", server.local_addr()));
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tls")]
pub fn spawn_tls<S, B>(listener: TcpListener, acceptor: crate::TlsAcceptor, service: S) -> Serving
where
    S: ServeService<B>,
    B: ServeBody,
{
    let addr = local_addr(&listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = tokio::spawn(serve_tls_with(
        listener,
        acceptor,
        service,
        shutdown,
        ServerLimits::default(),
    ));
    Serving {
        addr,
        scheme: "https",
        stop: Some(stop),
        task: Some(task),
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
