//! The forwarder's own keep-alive pool for `http://` servers: HTTP/1.1 connections
//! from hyper's low-level client (`hyper::client::conn::http1`), with no pool task, no
//! channel hop to reach one, no task per connection and none per response.
//!
//! A request takes the most recently used idle connection of its server (LIFO, as
//! HAProxy does: the fewest connections stay warm), else opens one. The connection is
//! driven inside the request's own task: the request future polls it until the
//! response head arrives, then the response body ([`Lease`], held by
//! [`Download`](crate::timeout::Download)) polls it before each frame and puts it back
//! when the body ends. No other task is woken on the way, so a request never leaves
//! the thread its client's connection lives on. An upgrade request (`Upgrade`,
//! `CONNECT`) is the exception: its connection goes to a task of its own, which hands
//! the upgraded stream over, and is not pooled again.
//!
//! Bounds: at most [`MAX_IDLE_PER_SERVER`](crate::MAX_IDLE_PER_SERVER) idle connections
//! per server (the oldest goes first), each closed after [`POOL_IDLE_TIMEOUT`] unused.
//! An idle connection is not polled (no task holds it): one the server closed is
//! noticed when a request next looks at it, polled once without waiting, or by the
//! pool's sweeper task (every 10 s), which also closes expired ones of servers that
//! get no more traffic.
//!
//! A request sent on an idle connection that turns out to be closed (the server's
//! keep-alive timeout raced the request) is sent again on another connection when hyper
//! hands it back unsent: nothing of it reached the server, so nothing is recorded
//! against it.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use http::uri::{Authority, Uri};
use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::fnv::FnvBuild;
use crate::upstream::{MAX_IDLE_PER_SERVER, POOL_IDLE_TIMEOUT};
use crate::{BoxError, Error};

/// Idle connections by server authority (`host:port`; a shared buffer, so a key costs
/// no allocation).
type Idle<B> = HashMap<Key, VecDeque<Box<Pooled<B>>>, FnvBuild>;

/// A server's authority as a key: hashed and compared as the text it is, in one pass
/// (`Authority`'s own `Hash` and `Eq` ignore case a byte at a time; the authorities
/// here come from configured servers, written one way), and looked up by `&str`.
#[derive(Clone)]
struct Key(Authority);

impl core::hash::Hash for Key {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Key {}

impl core::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

/// A connection's future: hyper's HTTP/1.1 client connection with upgrades enabled
/// (its type cannot be named).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: its request handle and its connection future, boxed once
/// for its whole life, so that parking it or lending it to a response moves a pointer.
struct Pooled<B> {
    pool: Weak<Inner<B>>,
    /// The server's `host:port`.
    key: Authority,
    sender: SendRequest<B>,
    /// The connection future (upgrades enabled), driven by whoever holds this; `None`
    /// once it has ended (closed by either side, or failed).
    conn: Option<Driver>,
    /// Parked since.
    since: Instant,
    /// What the connection and its response body are polled with (see [`Relay`]).
    relay: Arc<Relay>,
    /// `relay` as a waker, made once.
    relay_waker: Waker,
    /// A copy of the task waker last given to `relay`, to compare without its lock.
    task: Waker,
}

/// The waker a pooled connection (and its response body) is polled with while a
/// request's task drives them: it passes wakes on to that task, except those that come
/// while that task is polling them ([`Pooled::hold`] to [`Pooled::release`]).
///
/// hyper's connection and its response body are two ends of channels (the response,
/// the body's chunks, and the body's "want" signal each way). Driven by one task with
/// that task's waker, each end wakes the task from inside the task's own poll when the
/// other end moves, and the whole client connection is polled once more per request for
/// nothing (measured: three polls of the client connection's task per proxied request,
/// two with the relay). A wake held during such a poll is given back to the task when
/// the poll ends without an answer; when it ends with one, the reader polls again for
/// the rest, and that poll drives the connection.
struct Relay {
    task: Mutex<Waker>,
    /// [`IDLE`], [`HOLDING`] or [`HELD`].
    state: AtomicU8,
}

/// No poll by the driving task under way: wakes go to it.
const IDLE: u8 = 0;
/// The driving task is polling: wakes are held.
const HOLDING: u8 = 1;
/// The same, and a wake came.
const HELD: u8 = 2;

impl Relay {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            task: Mutex::new(Waker::noop().clone()),
            state: AtomicU8::new(IDLE),
        })
    }

    /// Holds wakes from now on, for the task of `waker`; `copy` is the caller's copy of
    /// the task's waker (compared without the lock: the task rarely changes).
    fn hold(&self, copy: &mut Waker, waker: &Waker) {
        if !copy.will_wake(waker) {
            copy.clone_from(waker);
            self.task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone_from(waker);
        }
        self.state.store(HOLDING, Ordering::Release);
    }

    /// Stops holding wakes: whether one came meanwhile.
    fn release(&self) -> bool {
        self.state.swap(IDLE, Ordering::AcqRel) == HELD
    }
}

impl std::task::Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(HOLDING, HELD, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(HELD) => {}
            Err(_) => self
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wake_by_ref(),
        }
    }
}

impl<B> Pooled<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Polls the connection with `waker`: reads what the server sent into the response,
    /// writes the request. `Ready` once it has ended.
    fn poll_conn(conn: &mut Option<Driver>, waker: &Waker) -> Poll<()> {
        let Some(driver) = conn else {
            return Poll::Ready(());
        };
        let result = core::task::ready!(driver.as_mut().poll(&mut Context::from_waker(waker)));
        if let Err(error) = result {
            tracing::debug!(%error, "upstream connection ended");
        }
        *conn = None;
        Poll::Ready(())
    }

    /// [`Pooled::poll_conn`] with the [`Relay`].
    fn poll_relayed(&mut self) -> Poll<()> {
        Self::poll_conn(&mut self.conn, &self.relay_waker)
    }

    /// Starts a poll of the connection (and its response body) by the task of `cx`:
    /// wakes are held until [`Pooled::release`].
    fn hold(&mut self, cx: &Context<'_>) {
        self.relay.hold(&mut self.task, cx.waker());
    }

    /// Ends the poll [`Pooled::hold`] started: whether a wake came meanwhile.
    fn release(&mut self) -> bool {
        self.relay.release()
    }

    /// Whether it has been idle for [`POOL_IDLE_TIMEOUT`] by `now`.
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= POOL_IDLE_TIMEOUT
    }

    /// Whether it can serve no more requests: expired, or [`ended`](Self::ended).
    fn stale(&mut self, now: Instant) -> bool {
        self.expired(now) || self.ended()
    }

    /// Whether it has ended, polled once with a waker that does nothing, without
    /// waiting (which notices a close by the server; and the connection no longer
    /// holds the waker of whoever polled it before).
    fn ended(&mut self) -> bool {
        Self::poll_conn(&mut self.conn, Waker::noop()).is_ready() || self.sender.is_closed()
    }

    /// Sends `req` and drives the connection until the response head arrives.
    ///
    /// The request goes to hyper's connection at once (it is written on the first
    /// poll): the future holds hyper's response future and this connection, not the
    /// request as well.
    fn exchange(
        &mut self,
        req: Request<B>,
    ) -> Exchange<
        '_,
        B,
        impl Future<Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<B>>>>,
    > {
        let response = self.sender.try_send_request(req);
        Exchange {
            conn: self,
            response,
        }
    }

    /// Hands the connection to a task of its own, for an upgrade: the task drives it
    /// until the upgraded stream is handed over (or the server declines and closes).
    fn detach(&mut self) {
        if let Some(conn) = self.conn.take() {
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "upstream connection ended");
                }
            });
        }
    }
}

pin_project! {
    /// A request on its way over one connection: drives the connection until hyper's
    /// response future has the head.
    struct Exchange<'a, B, F> {
        conn: &'a mut Pooled<B>,
        #[pin]
        response: F,
    }
}

impl<B, F: Future> Future for Exchange<'_, B, F>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.conn.conn.is_none() {
            // Ended (the response has its error, or the request comes back unsent), or
            // driven by a task of its own (`detach`), which completes the response.
            return this.response.poll(cx);
        }
        // The connection first: what it reads may complete the response. Only that
        // completes it, and it is polled on every poll of this future: the response
        // needs no waker.
        this.conn.hold(cx);
        let _ = this.conn.poll_relayed();
        let response = this.response.poll(&mut Context::from_waker(Waker::noop()));
        if this.conn.release() && response.is_pending() {
            cx.waker().wake_by_ref();
        }
        response
    }
}

/// The pool of one forwarder (one per worker in the proxy). Cloning shares it.
pub(crate) struct Http1Pool<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    connector: HttpConnector,
    idle: Mutex<Idle<B>>,
    /// Whether the sweeper task runs (started with the first connection: a pool may be
    /// made outside a runtime).
    sweeping: AtomicBool,
}

impl<B> Inner<B> {
    /// The idle connections, locked (a panic elsewhere leaves them usable).
    fn idle(&self) -> MutexGuard<'_, Idle<B>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B> Clone for Http1Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> core::fmt::Debug for Http1Pool<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Http1Pool").finish_non_exhaustive()
    }
}

/// A response and, when it came from a pool, the connection it holds.
pub(crate) type Sent = (Response<Incoming>, Option<Box<dyn Lease>>);

/// The connection a response body is read from, lent by its pool: the body drives it
/// and gives it back when it has ended. Dropped before that, it closes the connection.
pub(crate) trait Lease: Send {
    /// Starts a poll of the response body by the task of `cx`; the body is polled with
    /// [`Lease::waker`] until [`Lease::release`].
    fn hold(&mut self, cx: &Context<'_>);
    /// The waker to poll the response body with.
    fn waker(&self) -> &Waker;
    /// Polls the connection, so that what the server sends reaches the body.
    fn drive(&mut self);
    /// Ends the poll: whether a wake came meanwhile (for the task to poll again if the
    /// body had nothing).
    fn release(&mut self) -> bool;
    /// The response was read whole: the connection may serve another request.
    fn checkin(self: Box<Self>);
}

impl<B> Lease for Pooled<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn hold(&mut self, cx: &Context<'_>) {
        Self::hold(self, cx);
    }

    fn waker(&self) -> &Waker {
        &self.relay_waker
    }

    fn drive(&mut self) {
        let _ = self.poll_relayed();
    }

    fn release(&mut self) -> bool {
        Self::release(self)
    }

    fn checkin(self: Box<Self>) {
        if let Some(inner) = self.pool.upgrade() {
            inner.park(self);
        }
    }
}

impl<B> Http1Pool<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool opening its connections with `connector` (its connect timeout and
    /// `TCP_NODELAY` apply).
    pub(crate) fn new(connector: HttpConnector) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector,
                idle: Mutex::new(HashMap::default()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (an absolute `http://` URI) to the server it names; the response and
    /// the connection it is read from, to drive while reading its body and to give
    /// back when the body has ended (`None` when the request asks for an `upgrade`).
    pub(crate) async fn send(&self, mut req: Request<B>, upgrade: bool) -> Result<Sent, Error> {
        let uri = core::mem::take(req.uri_mut());
        let Some(authority) = uri.authority() else {
            return Err(Error::Upstream("the upstream URI names no server".into()));
        };
        // On the wire: origin form, HTTP/1.1 whatever the client spoke.
        if let Some(path) = uri.path_and_query() {
            *req.uri_mut() = Uri::from(path.clone());
        }
        if req.version() != Version::HTTP_10 {
            *req.version_mut() = Version::HTTP_11;
        }
        while let Some(mut conn) = self.inner.checkout(authority) {
            if upgrade {
                conn.detach();
            }
            match conn.exchange(req).await {
                Ok(res) => return Ok((res, lease(conn, upgrade))),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closed under us. Next one.
                    Some(unsent) => req = unsent,
                    None => return Err(Error::from_inner(Box::new(e.into_error()))),
                },
            }
        }
        // Boxed: a new connection is the rare path, and its futures (connect, handshake)
        // would otherwise make every request's future larger (it is moved into a box
        // on every request).
        let mut conn = Box::pin(self.connect(uri.clone(), authority)).await?;
        if upgrade {
            conn.detach();
        }
        match conn.exchange(req).await {
            Ok(res) => Ok((res, lease(conn, upgrade))),
            Err(e) => Err(Error::from_inner(Box::new(e.into_error()))),
        }
    }

    /// Opens a connection to the server `uri` names.
    async fn connect(&self, uri: Uri, key: &Authority) -> Result<Box<Pooled<B>>, Error> {
        let mut connector = self.inner.connector.clone();
        let io = tower_service::Service::call(&mut connector, uri)
            .await
            .map_err(|e| Error::Connect(Box::new(e)))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Error::Connect(Box::new(e)))?;
        let relay = Relay::new();
        if !self.inner.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
        Ok(Box::new(Pooled {
            pool: Arc::downgrade(&self.inner),
            key: key.clone(),
            sender,
            conn: Some(Box::pin(conn.with_upgrades())),
            since: Instant::now(),
            relay: Arc::clone(&relay),
            relay_waker: Waker::from(relay),
            task: Waker::noop().clone(),
        }))
    }
}

/// The lease of a connection that served `upgrade` or not: an upgraded connection
/// belongs to its task.
fn lease<B>(conn: Box<Pooled<B>>, upgrade: bool) -> Option<Box<dyn Lease>>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    (!upgrade).then_some(conn as Box<dyn Lease>)
}

/// Every [`SWEEP_EVERY`], closes the pool's idle connections that have expired or
/// that their server closed, and forgets servers with none left (a server removed from
/// the balancer, say), so that nothing stays open for a server that gets no more
/// traffic. Ends with the pool.
async fn sweep<B>(pool: Weak<Inner<B>>)
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        inner.idle().retain(|_, parked| {
            parked.retain_mut(|p| !p.stale(now));
            !parked.is_empty()
        });
    }
}

/// How often idle connections are swept (HAProxy checks its idle server connections
/// about as often).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl<B> Inner<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The most recently parked connection of `key` that can take a request now; the
    /// closed and expired ones met on the way are dropped. One still finishing its last
    /// exchange stays parked for a later request.
    ///
    /// One that is fresh and ready is taken without a poll: if its server closed it
    /// meanwhile, the request's first poll finds out, and hyper hands the request back
    /// unsent (see [`Http1Pool::send`]).
    fn checkout(&self, key: &Authority) -> Option<Box<Pooled<B>>> {
        let mut idle = self.idle();
        let parked = idle.get_mut(key.as_str())?;
        let now = Instant::now();
        let mut i = parked.len();
        while i > 0 {
            i -= 1;
            let p = &mut parked[i];
            if p.conn.is_some() && p.sender.is_ready() && !p.expired(now) {
                return parked.remove(i);
            }
            if p.stale(now) {
                parked.remove(i);
            } else if p.sender.is_ready() {
                return parked.remove(i);
            }
        }
        None
    }

    /// Parks `conn` as the most recently used connection of its server.
    ///
    /// It is polled once with a waker that does nothing first: the connection keeps the
    /// waker of whoever polled it last, and the next request's send would otherwise
    /// wake the task of this one's client connection for nothing (a whole poll of that
    /// connection).
    fn park(&self, mut conn: Box<Pooled<B>>) {
        if conn.ended() {
            return;
        }
        let now = Instant::now();
        conn.since = now;
        let mut idle = self.idle();
        // Looked up first: the key is cloned only for a server's first connection.
        let parked = match idle.get_mut(conn.key.as_str()) {
            Some(parked) => parked,
            None => idle.entry(Key(conn.key.clone())).or_default(),
        };
        // Only the clock here: whether the oldest was closed is seen when it is next
        // looked at (polling it now would cost every request a connection poll).
        while parked.len() >= MAX_IDLE_PER_SERVER || parked.front().is_some_and(|p| p.expired(now))
        {
            parked.pop_front();
        }
        parked.push_back(conn);
    }
}

impl<B> Http1Pool<B> {
    /// Idle connections parked for `key` (tests).
    #[cfg(test)]
    fn idle_count(&self, key: &str) -> usize {
        let idle = self.inner.idle();
        idle.get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use core::convert::Infallible;
    use core::net::SocketAddr;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use core::time::Duration;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::Http1Pool;

    /// A loopback HTTP/1.1 server answering `ok`; `close` answers every request with
    /// `Connection: close`. Returns its address and how many connections it accepted.
    async fn server(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                    if close {
                        res.headers_mut()
                            .insert(http::header::CONNECTION, "close".parse().unwrap());
                    }
                    Ok::<_, Infallible>(res)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, accepted)
    }

    fn pool() -> Http1Pool<Empty<Bytes>> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Http1Pool::new(connector)
    }

    /// A GET for `addr`.
    fn request(addr: SocketAddr) -> Request<Empty<Bytes>> {
        Request::get(format!("http://{addr}/path?q=1"))
            .header(http::header::HOST, addr.to_string())
            .body(Empty::new())
            .unwrap()
    }

    /// The response body as the forwarder reads it: driving its connection and
    /// parking it when the body ends.
    fn download((res, lease): super::Sent) -> crate::timeout::Download<hyper::body::Incoming> {
        assert_eq!(res.status(), 200);
        crate::timeout::Download::new(res.into_body(), Duration::from_secs(5), lease)
    }

    /// Sends one GET and reads the body whole (which parks the connection).
    async fn get(pool: &Http1Pool<Empty<Bytes>>, addr: SocketAddr) -> Bytes {
        let sent = pool.send(request(addr), false).await.unwrap();
        download(sent).collect().await.unwrap().to_bytes()
    }

    #[test]
    fn the_relay_holds_the_wakes_of_a_poll_and_passes_the_others() {
        let (task, waker) = crate::conn::tests::WakeCount::waker();
        let relay = super::Relay::new();
        let relayed = core::task::Waker::from(Arc::clone(&relay));
        let mut copy = core::task::Waker::noop().clone();
        let woken = || task.get();
        // Before any hold, the task is a no-op waker.
        relayed.wake_by_ref();
        assert_eq!(woken(), 0);
        relay.hold(&mut copy, &waker);
        assert!(!relay.release(), "no wake came");
        relayed.wake_by_ref();
        assert_eq!(woken(), 1, "outside a poll: passed on");
        relay.hold(&mut copy, &waker);
        relayed.wake_by_ref();
        relayed.wake_by_ref();
        assert_eq!(woken(), 1, "during a poll: held");
        assert!(relay.release(), "and reported");
        assert!(!relay.release());
        relayed.wake_by_ref();
        assert_eq!(woken(), 2);
    }

    pin_project_lite::pin_project! {
        /// Polls `inner` and counts the wakes its task gets from inside those polls.
        struct SelfWakes<F> {
            #[pin]
            inner: F,
            during: Arc<Spy>,
        }
    }

    struct Spy {
        polling: core::sync::atomic::AtomicBool,
        count: AtomicUsize,
        task: std::sync::Mutex<Option<core::task::Waker>>,
    }

    impl std::task::Wake for Spy {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            if self.polling.load(Ordering::SeqCst) {
                self.count.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(task) = &*self.task.lock().unwrap() {
                task.wake_by_ref();
            }
        }
    }

    impl<F: core::future::Future> core::future::Future for SelfWakes<F> {
        type Output = F::Output;

        fn poll(
            self: core::pin::Pin<&mut Self>,
            cx: &mut core::task::Context<'_>,
        ) -> core::task::Poll<F::Output> {
            let this = self.project();
            *this.during.task.lock().unwrap() = Some(cx.waker().clone());
            let waker = core::task::Waker::from(Arc::clone(this.during));
            this.during.polling.store(true, Ordering::SeqCst);
            let out = this
                .inner
                .poll(&mut core::task::Context::from_waker(&waker));
            this.during.polling.store(false, Ordering::SeqCst);
            out
        }
    }

    /// hyper's connection and its response body are ends of channels: driven by one
    /// task, each used to wake that task from inside its own poll (one more poll of a
    /// proxied client connection per request). The relay holds those wakes.
    #[tokio::test]
    async fn an_exchange_does_not_wake_its_own_task() {
        let (addr, _) = server(false).await;
        let pool = pool();
        assert_eq!(get(&pool, addr).await, "ok"); // connected
        for _ in 0..5 {
            let during = Arc::new(Spy {
                polling: core::sync::atomic::AtomicBool::new(false),
                count: AtomicUsize::new(0),
                task: std::sync::Mutex::new(None),
            });
            let got = SelfWakes {
                inner: get(&pool, addr),
                during: Arc::clone(&during),
            }
            .await;
            assert_eq!(got, "ok");
            assert_eq!(during.count.load(Ordering::SeqCst), 0);
        }
    }

    #[tokio::test]
    async fn a_connection_serves_request_after_request() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(get(&pool, addr).await, "ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(&addr.to_string()), 1);
    }

    #[tokio::test]
    async fn a_connection_is_parked_as_its_last_frame_arrives() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        for _ in 0..50 {
            let mut body =
                core::pin::pin!(download(pool.send(request(addr), false).await.unwrap()));
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "ok");
            // Parked as soon as the body says it has ended, before it yields its end.
            assert_eq!(pool.idle_count(&addr.to_string()), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// No task per connection: the request's task drives it, and the body's reader.
    #[tokio::test]
    async fn connections_have_no_task_of_their_own() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks(); // the server's accept loop
        for _ in 0..3 {
            assert_eq!(get(&pool, addr).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // The server's task for its one connection, and the pool's sweeper.
        assert_eq!(tasks(), before + 2);
    }

    #[tokio::test]
    async fn an_upgrade_request_gets_a_connection_task_and_is_not_parked() {
        let (addr, _) = server(false).await;
        let pool = pool();
        let mut req = request(addr);
        req.headers_mut()
            .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        let (res, lease) = pool.send(req, true).await.unwrap();
        assert!(lease.is_none());
        // The server declined (200): the body still arrives, driven by the task.
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused() {
        let (addr, accepted) = server(true).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(get(&pool, addr).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unread_response_does_not_park_its_connection() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        let sent = pool.send(request(addr), false).await.unwrap();
        drop(sent); // body never read
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
        assert_eq!(get(&pool, addr).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A server that answers with half of a 100-byte body, then closes.
    async fn half_server() -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_response_cut_short_yields_its_data_then_an_error_and_is_not_parked() {
        let addr = half_server().await;
        let pool = pool();
        for _ in 0..20 {
            let mut body =
                core::pin::pin!(download(pool.send(request(addr), false).await.unwrap()));
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "0123456789");
            assert!(body.frame().await.unwrap().is_err());
            assert_eq!(pool.idle_count(&addr.to_string()), 0);
        }
    }

    /// A request that meets an idle connection its server closed (without saying so
    /// in the response) goes on a new connection, and the caller sees no error.
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_unseen() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::sync::mpsc::unbounded_channel;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close_tx, mut close) = unbounded_channel::<()>();
        let (closed_tx, mut closed) = unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                close.recv().await; // then a keep-alive timeout
                drop(stream);
                let _ = closed_tx.send(());
            }
        });
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(get(&pool, addr).await, "ok");
            assert_eq!(pool.idle_count(&addr.to_string()), 1);
            close_tx.send(()).unwrap();
            closed.recv().await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        assert_eq!(get(&pool, addr).await, "ok");
        tokio::task::yield_now().await;
        tokio::time::advance(crate::upstream::POOL_IDLE_TIMEOUT + Duration::from_secs(1)).await;
        assert_eq!(get(&pool, addr).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_closes_expired_connections_of_a_quiet_server() {
        let (addr, _) = server(false).await;
        let pool = pool();
        assert_eq!(get(&pool, addr).await, "ok");
        assert_eq!(pool.idle_count(&addr.to_string()), 1);
        // No more requests to this server: only the sweeper can close its connection.
        tokio::time::sleep(crate::upstream::POOL_IDLE_TIMEOUT + 2 * super::SWEEP_EVERY).await;
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
        assert!(pool.inner.idle().is_empty(), "the server is forgotten");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let req = request(addr);
        let err = pool().send(req, false).await.err().unwrap();
        assert!(matches!(err, crate::Error::Connect(_)), "{err:?}");
    }
}
