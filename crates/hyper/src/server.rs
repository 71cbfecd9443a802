//! Running a service on a TCP listener.

use core::convert::Infallible;
use core::error::Error as StdError;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use roundrobin_core::ServerUrl;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::conn::{
    Clock, ConnState, Held, InFlight, Timeouts, TrackedBody, Watched, ABORT, CLOSE, DROP, RELEASE,
};
use crate::resting::{Parked, Resting};
use crate::ClientAddr;

/// A hyper service [`serve`] and [`spawn`] can run: it takes `Request<Incoming>`, is
/// shared by the connections of a listener (moved into one `Arc`, not cloned per
/// connection) and its futures move between tasks; `Clone` lets a caller serve it on
/// several listeners (one per worker, say). Implemented for every such service (the
/// bounds, named once).
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
/// The timeouts are enforced by a sweep of the server's connections every quarter of
/// the shortest of `header_timeout` and `idle_timeout`, or half `idle_release` if
/// shorter (5 ms to 1 s; 50 ms with the defaults): each fires between one and two
/// sweeps after its time, never before.
///
/// | field | default | HAProxy | nginx |
/// |---|---|---|---|
/// | `header_timeout`: from a request's first byte to its whole head | 10 s | `timeout http-request` | `client_header_timeout` 60 s |
/// | `idle_timeout`: a keep-alive connection with no request | 60 s | `timeout http-keep-alive` | `keepalive_timeout` 75 s |
/// | `idle_release`: an HTTP/1 keep-alive connection with no request hands back its buffers (it stays open) | 100 ms | at once | at once |
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
    /// How long an HTTP/1 keep-alive connection waits for its next request before it
    /// hands back its HTTP state and buffers (about 16 KiB) and keeps only its socket;
    /// the next request builds them again (a few microseconds). Shorter saves memory
    /// sooner, longer spares connections that pause briefly the rebuild; at or above
    /// `idle_timeout`, idle connections are closed instead and never rest.
    pub idle_release: Duration,
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
            idle_release: Duration::from_millis(100),
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
    // Boxed: the handshake's state (over a kilobyte) would otherwise stay in the
    // connection's task, unused, for as long as the connection lives.
    serve_io(listener, service, shutdown, limits, move |stream| {
        Box::pin(acceptor.accept(stream))
    })
    .await;
}

/// The accept loop of [`serve_with`]; `handshake` turns an accepted socket into the
/// stream served (at once for plain TCP, after a TLS handshake), in the connection's
/// task.
///
/// The loop also sweeps the open connections every [`Timeouts::tick`], ordering the
/// ones that are due (see [`ConnState::sweep`]): the connections' tasks keep no timers.
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
    F: Future<Output = io::Result<I>> + Unpin + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = Arc::new(service);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    let shared = Arc::new(Shared {
        h1,
        h2,
        limits: limits.clone(),
        live: AtomicUsize::new(0),
        ended: Notify::new(),
    });
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        release: limits.idle_release,
    };
    let clock = Clock::new();
    let mut sweep = tokio::time::interval(timeouts.tick());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Connection tasks are not joined (a `JoinSet` costs each connection an entry and
    // two locks): they count themselves out in `shared.live`, and `open` ends them if
    // this loop is dropped.
    let mut open = Open(Vec::new());
    let resting = Closing(Arc::new(Resting::new()));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut permit = None;
    let mut shutdown = core::pin::pin!(shutdown);
    let mut at_limit = false;
    loop {
        if permit.is_none() && permits.available_permits() == 0 && !at_limit {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached: new connections wait"
            );
            at_limit = true;
        }
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = sweep.tick() => {
                sweep_all(&mut open.0, &clock, &timeouts);
                continue;
            }
            never = resting.woken(&shared) => match never {},
            acquired = Arc::clone(&permits).acquire_owned(), if permit.is_none() => match acquired {
                Ok(acquired) => {
                    permit = Some(acquired);
                    at_limit = false;
                    continue;
                }
                Err(_closed) => break,
            },
            accepted = listener.accept(), if permit.is_some() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(error) => {
                    tracing::error!(%error, "accept failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = &mut shutdown => break,
                        never = resting.woken(&shared) => match never {},
                    }
                }
            },
        };
        let Some(permit) = permit.take() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The slot and the gauge go with the socket: a connection upgraded to a tunnel
        // keeps them until the tunnel closes.
        let state = ConnState::new(
            Held::new(permit, limits.metrics.clone()),
            Arc::clone(&clock),
            peer,
        );
        open.0.push(Arc::downgrade(&state));
        let future = connection(
            handshake(stream),
            Arc::clone(&state),
            Arc::clone(&shared),
            Arc::clone(&service),
            Arc::clone(&resting.0),
        );
        let hold = Hold::new(state, Arc::clone(&shared));
        drop(tokio::spawn(Counted { future, hold }));
    }
    drop(listener);
    resting.0.close();
    open.order(CLOSE);
    let drain = async {
        let mut ended = core::pin::pin!(shared.all_ended());
        loop {
            tokio::select! {
                () = &mut ended => break,
                _ = sweep.tick() => sweep_all(&mut open.0, &clock, &timeouts),
            }
        }
    };
    if tokio::time::timeout(limits.shutdown_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.live.load(Ordering::Acquire),
            "shutdown timeout: closing the connections still open"
        );
        open.order(ABORT);
        // Each task ends at its next poll, which the order's wake brings at once: a
        // bound all the same, so that a task that missed it cannot hold the server.
        if tokio::time::timeout(ABORT_GRACE, shared.all_ended())
            .await
            .is_err()
        {
            tracing::error!(
                open = shared.live.load(Ordering::Acquire),
                "connections still open after being aborted; leaving them"
            );
        }
    }
}

/// How long a server waits for its aborted connections' tasks to end.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// The server's open connections (weakly: a finished one's state goes), for the
/// sweeps and the server's orders. Dropped with the accept loop, it ends the
/// connections still open.
struct Open(Vec<Weak<ConnState>>);

impl Open {
    /// Gives `orders` to every open connection.
    fn order(&self, orders: u8) {
        for state in self.0.iter().filter_map(Weak::upgrade) {
            state.order(orders);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.order(ABORT);
    }
}

/// The server's resting connections, closed when the accept loop stops or is dropped.
struct Closing<I, S>(Arc<Resting<I, Rest<S>>>);

impl<I, S> Closing<I, S> {
    /// Serves the resting connections that woke (see [`Resting::poll_woken`]): those
    /// with a request coming get a task again. Never ends.
    fn woken<'a, B>(&'a self, shared: &'a Arc<Shared>) -> impl Future<Output = Infallible> + 'a
    where
        S: ServeService<B>,
        B: ServeBody,
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        core::future::poll_fn(move |cx| {
            self.0.poll_woken(
                cx,
                |Parked {
                     io,
                     rest: (service, hold),
                 }| {
                    let future = http1(
                        io,
                        service,
                        Arc::clone(&hold.state),
                        Arc::clone(shared),
                        Arc::clone(&self.0),
                    );
                    drop(tokio::spawn(Counted { future, hold }));
                },
            )
        })
    }
}

impl<I, S> Drop for Closing<I, S> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Gives every open connection the orders that are due, forgetting finished ones.
fn sweep_all(open: &mut Vec<Weak<ConnState>>, clock: &Clock, timeouts: &Timeouts) {
    let now = clock.tick();
    open.retain(|state| {
        state
            .upgrade()
            .is_some_and(|state| state.sweep(now, timeouts))
    });
}

/// What every connection of a server shares.
struct Shared {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    limits: ServerLimits,
    /// Connections served (their tasks, and the resting ones parked); [`ended`](Self::ended)
    /// wakes the waiters when it drops to zero.
    live: AtomicUsize,
    ended: Notify,
}

impl Shared {
    /// Waits until no connection is served any more (no task, none parked).
    async fn all_ended(&self) {
        loop {
            // Made before the count is read: a notification in between is not lost.
            let ended = self.ended.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's task as spawned: its future, ended at any poll once the
    /// connection is ordered to abort, then its hold on the server. Fields drop in
    /// order: the hold goes last, once all the future held is gone (its slot under the
    /// cap, its clone of the service).
    struct Counted<F> {
        #[pin]
        future: F,
        hold: Hold,
    }
}

impl<F: Future<Output = ()>> Future for Counted<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.hold.state.orders() & ABORT != 0 {
            return Poll::Ready(());
        }
        this.future.poll(cx)
    }
}

/// The hold of a connection's task, or of its entry among the resting connections, on
/// the connection and its server. Dropped however the task ends (also unpolled), it
/// lets the connection go (when nothing else holds it, sweeps skip it from then on)
/// and counts it out of [`Shared::live`], waking the server's waiters when the last
/// goes.
struct Hold {
    state: Arc<ConnState>,
    shared: Arc<Shared>,
}

impl Hold {
    fn new(state: Arc<ConnState>, shared: Arc<Shared>) -> Self {
        state.hold();
        shared.live.fetch_add(1, Ordering::AcqRel);
        Self { state, shared }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.state.unhold();
        if self.shared.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ended.notify_waiters();
        }
    }
}

/// A connection at rest: its service and its hold, beside its socket.
type Rest<S> = (ConnService<S>, Hold);

/// HTTP/2's connection preface: a connection that starts with it speaks HTTP/2.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one accepted connection to its end.
///
/// Its first bytes tell HTTP/2 from HTTP/1. An HTTP/1 connection that rests (no
/// request for [`ServerLimits::idle_release`]) is ended by its socket (see
/// [`Watched`]): hyper's buffers and state go, the socket stays open, and the next
/// bytes start a new hyper connection over it. So a resting keep-alive connection
/// holds its socket and an entry among the server's resting connections (see
/// [`Resting`]), not hyper's buffers, nor a task.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep each argument twice in the task"
)]
fn connection<S, B, F, I>(
    handshake: F,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
    service: Arc<S>,
    resting: Arc<Resting<I, Rest<S>>>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: ServeService<B>,
    B: ServeBody,
    F: Future<Output = io::Result<I>> + Unpin + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // An `async` block, not an `async fn`: an `async fn` keeps a second copy of each
    // argument in its task for as long as the connection lives. Every local held
    // across an `await` here is in the task too, so the rare paths' state (the
    // protocol sniff, a TLS handshake's timer, hyper's connection) lives in futures
    // that are done, or boxed, before the connection rests.
    async move {
        let (state, shared) = (&state, &shared);
        // (A block: the socket, borrowed by the sniff, is moved out of it, so that
        // it is not kept twice while hyper serves it.)
        let (io, h2) = {
            let Some(stream) = handshaken(handshake, &shared.limits, state).await else {
                return;
            };
            let mut io = Watched::new(stream, Arc::clone(state));
            let Some(h2) = sniff(&mut io).await else {
                return;
            };
            (io, h2)
        };
        let service = ConnService {
            service,
            state: Arc::clone(state),
        };
        if h2 {
            state.h2();
            let mut conn = Box::pin(shared.h2.serve_connection(TokioIo::new(io), service));
            supervise(conn.as_mut(), state).await;
            return;
        }
        http1(io, service, Arc::clone(state), Arc::clone(shared), resting).await;
    }
}

/// Serves an HTTP/1 connection until it ends, or rests: then it is parked among the
/// server's resting connections, and this task ends (the accept loop starts another
/// when the connection's next bytes come).
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep each argument twice in the task"
)]
fn http1<S, B, I>(
    mut io: Watched<I>,
    mut service: ConnService<S>,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
    resting: Arc<Resting<I, Rest<S>>>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: ServeService<B>,
    B: ServeBody,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        loop {
            let mut conn = Box::new(
                shared
                    .h1
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            );
            if !supervise(Pin::new(&mut *conn), &state).await {
                return;
            }
            // Upgraded (the tunnel has the socket), or closed by the client: done. In a
            // block, with the box moved in: the box, emptied by `into_parts`, is freed
            // at the block's end.
            let at_rest = {
                let conn = conn;
                let Some(parts) = (*conn).into_parts() else {
                    return;
                };
                io = parts.io.into_inner();
                service = parts.service;
                if parts.read_buf.is_empty() {
                    true
                } else {
                    io.replay(parts.read_buf);
                    false
                }
            };
            if !io.take_released() {
                return;
            }
            state.rested();
            if at_rest {
                // Nothing of hyper's is kept (its read buffer neither), and no task.
                let hold = Hold::new(state, shared);
                resting.park(Parked {
                    io,
                    rest: (service, hold),
                });
                return;
            }
            state.clear(RELEASE);
        }
    }
}

/// Reads a new connection's first bytes, enough to tell HTTP/2's preface from
/// HTTP/1, and keeps them for hyper to read: whether it speaks HTTP/2, or `None` when
/// it closed first.
async fn sniff<I: AsyncRead + Unpin>(io: &mut Watched<I>) -> Option<bool> {
    let mut head = [0u8; PREFACE.len()];
    let mut n = 0;
    while n == 0 || (n < PREFACE.len() && head[..n] == PREFACE[..n]) {
        match next_bytes(io, &mut head[n..]).await {
            0 => return None,
            read => n += read,
        }
    }
    io.replay(Bytes::copy_from_slice(&head[..n]));
    Some(head == *PREFACE)
}

/// Waits for the connection's next bytes with no hyper connection over it: their
/// count, or 0 when it closes, fails or is ordered to close (idle, slow head, the
/// server stopping) or abort (the server dropped, or its shutdown timed out).
fn next_bytes<'a, I: AsyncRead + Unpin>(
    io: &'a mut Watched<I>,
    buf: &'a mut [u8],
) -> impl Future<Output = usize> + 'a {
    core::future::poll_fn(move |cx| {
        let stop = CLOSE | DROP | ABORT;
        let read = core::task::ready!(Pin::new(&mut *io).poll_bytes(cx, buf, stop));
        Poll::Ready(match read {
            Ok(0) if io.state().orders() & (DROP | ABORT) == DROP => {
                slow_head(io.state());
                0
            }
            Ok(read) => read,
            Err(error) => {
                io.state().failed(&error);
                0
            }
        })
    })
}

/// Logs a connection dropped for dribbling its head past the header timeout.
fn slow_head(state: &ConnState) {
    let peer = state.peer();
    tracing::debug!(%peer, "request head not complete within the header timeout: closed");
}

/// A hyper connection the sweeper can close.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` to its end under the connection's orders: closes it gracefully when
/// told to close (idle, the server stopping), drops it when a head dribbles or when
/// told to abort. Whether it ended by itself without an error.
fn supervise<'a, C: Graceful>(
    mut conn: Pin<&'a mut C>,
    state: &'a ConnState,
) -> impl Future<Output = bool> + 'a {
    let mut closing = false;
    let mut known = None;
    core::future::poll_fn(move |cx| {
        state.register(cx, &mut known);
        let orders = state.orders();
        if orders & (DROP | ABORT) != 0 {
            if orders & ABORT == 0 {
                slow_head(state);
            }
            return Poll::Ready(false);
        }
        if orders & CLOSE != 0 && !closing {
            conn.as_mut().graceful();
            closing = true;
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Ready(Err(error)) => {
                state.failed(&error);
                Poll::Ready(false)
            }
            Poll::Pending => Poll::Pending,
        }
    })
}

/// The service of one connection: each request gets the client's address and keeps
/// the connection busy until its response body is sent or dropped.
struct ConnService<S> {
    /// Shared by the listener's connections; behind a pointer, as a hyper connection
    /// must be `Unpin` to hand its socket back.
    service: Arc<S>,
    state: Arc<ConnState>,
}

impl<S, B> Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ClientAddr(self.state.peer()));
        let in_flight = self.state.begin();
        Tracked {
            response: self.service.call(req),
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way, its request in flight on the connection. Not boxed:
    /// hyper keeps an HTTP/1 connection's response future in one box for all its
    /// requests (and an HTTP/2 stream's in the stream's task).
    struct Tracked<F> {
        #[pin]
        response: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = core::task::ready!(this.response.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody::new(body, in_flight))))
    }
}

/// The stream `handshake` makes, or `None` when it fails or takes longer than the
/// header timeout (logged and counted), or the connection is ordered to close or
/// abort first.
///
/// The timer is made (and boxed) only when the handshake does not end at its first
/// poll: a plain TCP connection's never needs one, and a TLS handshake's timer is gone
/// from the connection's task once the handshake is done.
fn handshaken<'a, F, I>(
    mut handshake: F,
    limits: &'a ServerLimits,
    state: &'a ConnState,
) -> impl Future<Output = Option<I>> + 'a
where
    F: Future<Output = io::Result<I>> + Unpin + 'a,
{
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut known = None;
    core::future::poll_fn(move |cx| {
        let error = match Pin::new(&mut handshake).poll(cx) {
            Poll::Ready(Ok(stream)) => return Poll::Ready(Some(stream)),
            Poll::Ready(Err(error)) => error,
            Poll::Pending => {
                // Noted after the poll: a plain connection's handshake never waits.
                // Closing or aborting ends a handshake at once: it has no request to
                // finish.
                state.register(cx, &mut known);
                if state.orders() & (CLOSE | ABORT) != 0 {
                    return Poll::Ready(None);
                }
                let deadline = deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limits.header_timeout)));
                core::task::ready!(deadline.as_mut().poll(cx));
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handshake not complete within the header timeout",
                )
            }
        };
        let peer = state.peer();
        tracing::debug!(%error, %peer, "TLS handshake failed: closed");
        if let Some(metrics) = &limits.metrics {
            metrics.tls_handshake_failed();
        }
        Poll::Ready(None)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task is small: the hyper connection is boxed, the service shared,
    /// and no argument kept twice (256 bytes on x86_64: tokio's task with it fits in
    /// 384). A connection at rest has none (see [`Resting`]).
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            Ok::<_, io::Error>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let shared = Arc::new(Shared {
            h1: http1::Builder::new(),
            h2: http2::Builder::new(TokioExecutor::new()),
            limits: ServerLimits::default(),
            live: AtomicUsize::new(0),
            ended: Notify::new(),
        });
        let state = ConnState::new(Held::new(permit, None), Clock::new(), peer);
        let task = connection(
            core::future::ready(Ok(stream)),
            state,
            shared,
            Arc::new(service),
            Arc::new(Resting::new()),
        );
        let bytes = size_of_val(&task);
        assert!(bytes <= 320, "a connection's task takes {bytes} bytes");
    }

    /// Connection tasks are not joined by the accept loop, yet a server dropped (its
    /// future, not a [`Serving`], which stops gracefully) ends its connections.
    #[tokio::test]
    async fn dropping_the_server_ends_its_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            Ok::<_, io::Error>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        let server = tokio::spawn(serve_with(
            listener,
            service,
            core::future::pending(),
            ServerLimits::default(),
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the connection ends with its server");
        assert_eq!(read.unwrap(), 0);
    }
}
