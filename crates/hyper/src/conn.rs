//! One client connection's clock and orders: is it idle, reading a request head, or
//! busy, and what the server's sweeper tells it to do about that.
//!
//! A connection's task does not keep a timer of its own: the accept loop sweeps every
//! open connection a few times per shortest timeout ([`ConnState::sweep`]) and orders
//! the ones that are due (close when idle too long, drop when a head dribbles, hand back
//! the HTTP/1 buffers when idle for a moment), waking their task. A busy connection's
//! task is woken by its socket alone and checks its orders with one atomic load.

use core::net::SocketAddr;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
/// HTTP/2: many streams, no head to time (hyper's keep-alive pings cover it).
const H2: u8 = 3;

/// Orders (bits of [`ConnState::orders`]).
/// Idle for a moment: hand the HTTP/1 connection's buffers back, keep the socket.
pub(crate) const RELEASE: u8 = 1;
/// Close gracefully: idle past the idle timeout, or the server stops.
pub(crate) const CLOSE: u8 = 2;
/// Drop at once: a request head took longer than the header timeout.
pub(crate) const DROP: u8 = 4;
/// Nothing serves the connection any more, neither a task nor a resting entry (the
/// socket may live on in a tunnel): no more orders.
const DONE: u8 = 8;
/// End at once, whatever the connection is doing: its server is gone, or the server's
/// shutdown outlasted its timeout.
pub(crate) const ABORT: u8 = 16;

/// The sweeper's clock: milliseconds since the server started, as of the last sweep.
/// A connection notes when its phase changed by reading it (one atomic load, not the
/// system clock); a sweep reads the system clock once for all connections.
#[derive(Debug)]
pub(crate) struct Clock {
    base: Instant,
    now_ms: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            now_ms: AtomicU64::new(0),
        })
    }

    /// The time of the last [`tick`](Self::tick).
    fn read(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Reads the system clock: the time sweeps and connections see from now on.
    pub(crate) fn tick(&self) -> u64 {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.now_ms.store(now, Ordering::Relaxed);
        now
    }
}

/// What a connection is doing, and since when.
#[derive(Debug)]
pub(crate) struct ConnState {
    clock: Arc<Clock>,
    phase: AtomicU8,
    /// When the phase started ([`Clock`] milliseconds).
    since: AtomicU64,
    in_flight: AtomicU32,
    orders: AtomicU8,
    /// What waits on the connection (its task, or its entry among the server's resting
    /// connections), woken when an order arrives. Set once by each (a task's waker
    /// stays the same) and not consumed by a wake, so that polls need not register it
    /// again: registering on every poll cost two atomic read-modify-writes, an order is
    /// rare.
    waker: Mutex<Option<Waker>>,
    /// Released when the last holder of the state goes: the connection's task, its
    /// service, and its socket (`Watched`), which outlives both in a tunnel.
    held: Held,
    /// The client's address: kept here once, not in each future that logs it.
    peer: SocketAddr,
    /// What serves the connection: its task, or its entry among the server's resting
    /// connections (both, for a moment, when it is handed over).
    holders: AtomicU32,
}

/// What an open client connection holds, in the server or, once upgraded, in a tunnel:
/// its slot under the connection cap and its place in the open-connections gauge.
#[derive(Debug)]
pub(crate) struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Option<Arc<crate::Metrics>>,
}

impl Held {
    /// Counts the connection open until this is dropped.
    pub(crate) fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        metrics: Option<Arc<crate::Metrics>>,
    ) -> Self {
        if let Some(metrics) = &metrics {
            metrics.connection_opened();
        }
        Self {
            _permit: permit,
            metrics,
        }
    }

    /// Counts a rest of the connection (its HTTP state handed back).
    pub(crate) fn rested(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.connection_rested();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.connection_closed();
        }
    }
}

/// The timeouts a sweep applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) release: Duration,
}

impl Timeouts {
    /// How often to sweep: half the release delay or a quarter of the shortest
    /// timeout, within 5 ms ..= 1 s (a timeout fires one to two ticks late, see
    /// [`ConnState::sweep`]).
    pub(crate) fn tick(&self) -> Duration {
        (self.header.min(self.idle) / 4)
            .min(self.release / 2)
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

impl ConnState {
    pub(crate) fn new(held: Held, clock: Arc<Clock>, peer: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            peer,
            since: AtomicU64::new(clock.read()),
            clock,
            phase: AtomicU8::new(IDLE),
            in_flight: AtomicU32::new(0),
            holders: AtomicU32::new(0),
            orders: AtomicU8::new(0),
            waker: Mutex::new(None),
            held,
        })
    }

    fn enter(&self, phase: u8) {
        self.since.store(self.clock.read(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// Request bytes arrived: a head starts, unless one is being read or served.
    pub(crate) fn read(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(HEAD);
        }
    }

    /// The connection speaks HTTP/2 (the server read its preface): no heads to time,
    /// no buffers to hand back.
    pub(crate) fn h2(&self) {
        self.phase.store(H2, Ordering::Release);
    }

    /// Idle with nothing read since the last response: the HTTP/1 connection can stop
    /// here and start again on the next byte.
    fn at_rest(&self) -> bool {
        self.phase.load(Ordering::Acquire) == IDLE && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// A request's head was read: the connection is busy until its response is done.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.phase.load(Ordering::Acquire) != H2 {
            self.phase.store(BUSY, Ordering::Release);
        }
        InFlight(Arc::clone(self))
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Logs (at debug level) an error that ends the connection, with its peer.
    pub(crate) fn failed(&self, error: &dyn core::fmt::Display) {
        let peer = self.peer;
        tracing::debug!(%error, %peer, "connection error");
    }

    /// The orders given so far.
    pub(crate) fn orders(&self) -> u8 {
        self.orders.load(Ordering::Acquire)
    }

    /// Gives `orders`, waking the connection's task if any of them is new.
    pub(crate) fn order(&self, orders: u8) {
        let before = self.orders.fetch_or(orders, Ordering::AcqRel);
        if before & orders != orders {
            // Woken outside the lock: a waker that polls its task at once (not tokio's)
            // would otherwise find the lock held by its own thread.
            let waker = self.waker().clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// The connection handed back its HTTP state and buffers: counted.
    pub(crate) fn rested(&self) {
        self.held.rested();
    }

    /// Withdraws `orders` (a released connection that starts again).
    pub(crate) fn clear(&self, orders: u8) {
        self.orders.fetch_and(!orders, Ordering::AcqRel);
    }

    /// Notes the task to wake for the next orders, unless `known` says it is noted
    /// already: `known` is the caller's copy of the waker it registered last (a poll
    /// then costs a pointer comparison, no atomic operation).
    pub(crate) fn register(&self, cx: &Context<'_>, known: &mut Option<Waker>) {
        if known.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return;
        }
        let waker = cx.waker().clone();
        *self.waker() = Some(waker.clone());
        *known = Some(waker);
    }

    fn waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A task or a resting entry takes the connection on.
    pub(crate) fn hold(&self) {
        self.holders.fetch_add(1, Ordering::AcqRel);
    }

    /// A task or a resting entry lets the connection go: when it was the last, the
    /// connection's service is over ([`done`](Self::done)).
    pub(crate) fn unhold(&self) {
        if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done();
        }
    }

    /// Nothing serves the connection any more: sweeps skip it from now on.
    pub(crate) fn done(&self) {
        self.orders.fetch_or(DONE, Ordering::AcqRel);
        drop(self.waker().take());
    }

    /// One sweep over this connection at `now` (the [`Clock`]'s last tick): gives the
    /// orders that are due. Returns `false` once the connection's task is over (the
    /// sweeper forgets it). Phases are timed to a tick, so a timeout is counted from a
    /// tick later: it fires between one and two ticks past it, never before.
    pub(crate) fn sweep(&self, now: u64, timeouts: &Timeouts) -> bool {
        let orders = self.orders();
        if orders & DONE != 0 {
            return false;
        }
        let since = self.since.load(Ordering::Relaxed);
        let waited =
            Duration::from_millis(now.saturating_sub(since)).saturating_sub(timeouts.tick());
        let busy = self.in_flight.load(Ordering::Acquire) > 0;
        let due = match self.phase.load(Ordering::Acquire) {
            IDLE if waited >= timeouts.idle => CLOSE,
            IDLE if waited >= timeouts.release && !busy => RELEASE,
            HEAD if waited >= timeouts.header => DROP,
            H2 if !busy && waited >= timeouts.idle => CLOSE,
            // busy: body timeouts are the forwarder's
            _ => 0,
        };
        if due & !orders != 0 {
            self.order(due);
        }
        true
    }
}

/// A request in flight on a connection; when the last one is done (its response body
/// sent or dropped), the connection is idle.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            match state.phase.load(Ordering::Acquire) {
                BUSY => state.enter(IDLE),
                // HTTP/2 stays HTTP/2: its idle time counts from its last stream's end
                H2 => state.since.store(state.clock.read(), Ordering::Relaxed),
                _ => {}
            }
        }
    }
}

pin_project! {
    /// A client connection's socket, noting when request bytes arrive, replaying bytes
    /// read ahead of hyper, and ending an HTTP/1 connection at rest when it is ordered
    /// to hand its buffers back.
    #[derive(Debug)]
    pub(crate) struct Watched<T> {
        #[pin]
        io: T,
        state: Arc<ConnState>,
        // Read before hyper started (the protocol sniff, a released connection's
        // next bytes); hyper reads these first.
        replay: Bytes,
        // The end of stream given to hyper to release the connection: no shutdown.
        released: bool,
        // The last write or flush did not complete: not at rest.
        blocked: bool,
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>) -> Self {
        Self {
            io,
            state,
            replay: Bytes::new(),
            released: false,
            blocked: false,
        }
    }

    /// Bytes hyper reads before the socket's.
    pub(crate) fn replay(&mut self, bytes: Bytes) {
        debug_assert!(self.replay.is_empty());
        self.replay = bytes;
    }

    /// Its connection's state.
    pub(crate) fn state(&self) -> &ConnState {
        &self.state
    }

    /// The socket and the state apart, when nothing else is kept (no bytes to replay,
    /// no release or blocked write in progress): what a resting connection needs.
    #[cfg(rest_epoll)]
    pub(crate) fn split(self) -> Result<(T, Arc<ConnState>), Self> {
        if self.replay.is_empty() && !self.released && !self.blocked {
            Ok((self.io, self.state))
        } else {
            Err(self)
        }
    }

    /// Whether the connection ended because it was released (and not closed), and
    /// starts over: the next connection over this socket may be released again.
    pub(crate) fn take_released(&mut self) -> bool {
        core::mem::take(&mut self.released)
    }
}

impl<T: AsyncRead> Watched<T> {
    /// Reads at least one byte into `buf` (at most its length), waking on orders:
    /// `Ready(Ok(n))` with `n == 0` at the end of the stream, `Ready(Err)` on a socket
    /// error, and `Ready(Ok(0))` too when an order says to stop waiting (check
    /// [`ConnState::orders`]).
    pub(crate) fn poll_bytes(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        stop: u8,
    ) -> Poll<io::Result<usize>> {
        // Rare (a connection at rest waits for its next bytes): registered each time.
        self.state.register(cx, &mut None);
        if self.state.orders() & stop != 0 {
            return Poll::Ready(Ok(0));
        }
        let this = self.project();
        let mut read = ReadBuf::new(buf);
        match this.io.poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n > 0 {
                    this.state.read();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            if this.replay.is_empty() {
                // its allocation goes now, not with the next replay
                *this.replay = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        if this.state.orders() & RELEASE != 0 && !*this.released {
            if this.state.at_rest() && !*this.blocked {
                // hyper sees the client close and ends the connection, handing the
                // socket back with no shutdown (see `poll_shutdown`)
                *this.released = true;
                return Poll::Ready(Ok(()));
            }
            // a request came first: the order lapses
            this.state.clear(RELEASE);
        }
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.read();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        *this.blocked = polled.is_pending();
        polled
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.io.poll_flush(cx);
        *this.blocked = polled.is_pending();
        polled
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.released {
            return Poll::Ready(Ok(()));
        }
        this.io.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        *this.blocked = polled.is_pending();
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it is sent or dropped.
    #[derive(Debug)]
    pub struct TrackedBody<B> {
        #[pin]
        body: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> TrackedBody<B> {
    /// `in_flight` is `None` only for a future polled again after it completed.
    pub(crate) fn new(body: B, in_flight: Option<InFlight>) -> Self {
        Self { body, in_flight }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_flight.take();
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;
    use tokio::time::advance;

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(1),
        idle: Duration::from_secs(10),
        release: Duration::from_millis(100),
    };

    /// A waker that counts its wakes (tests of who wakes a task, and how often).
    pub(crate) struct WakeCount(core::sync::atomic::AtomicUsize);

    impl WakeCount {
        /// The counter and a waker counting into it.
        pub(crate) fn waker() -> (Arc<Self>, Waker) {
            let count = Arc::new(Self(core::sync::atomic::AtomicUsize::new(0)));
            let waker = Waker::from(Arc::clone(&count));
            (count, waker)
        }

        /// The wakes so far.
        pub(crate) fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A connection's state, for tests.
    pub(crate) async fn state() -> Arc<ConnState> {
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let clock = Clock::new();
        clock.tick();
        ConnState::new(
            Held::new(permit, None),
            clock,
            SocketAddr::from(([127, 0, 0, 1], 1)),
        )
    }

    /// Sweeps now; returns the orders given by this sweep, withdrawing them.
    fn sweep(state: &ConnState) -> u8 {
        assert!(state.sweep(state.clock.tick(), &TIMEOUTS));
        let orders = state.orders();
        state.clear(orders);
        orders
    }

    /// Advances the clock by `after` and one tick (a timeout fires a tick late).
    async fn pass(after: Duration) {
        advance(after + TIMEOUTS.tick()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_orders_what_is_due_and_nothing_before() {
        // A timeout counts from the tick after the phase began: it fires a tick late,
        // at most two, never early.
        let tick = TIMEOUTS.tick();
        let idle = state().await;
        advance(TIMEOUTS.release + tick - Duration::from_millis(1)).await;
        assert_eq!(sweep(&idle), 0);
        advance(Duration::from_millis(1)).await;
        assert_eq!(sweep(&idle), RELEASE, "at rest for the release delay");
        let request = idle.begin();
        advance(Duration::from_secs(60)).await;
        assert_eq!(sweep(&idle), 0, "busy: the forwarder's timeouts apply");
        drop(request);
        pass(TIMEOUTS.idle - Duration::from_millis(1)).await;
        assert_eq!(sweep(&idle), RELEASE);
        advance(Duration::from_millis(1)).await;
        assert_eq!(sweep(&idle), CLOSE, "idle for the idle timeout");

        let head = state().await;
        head.read();
        pass(TIMEOUTS.header - Duration::from_millis(1)).await;
        assert_eq!(sweep(&head), 0, "a head is not at rest");
        advance(Duration::from_millis(1)).await;
        assert_eq!(sweep(&head), DROP);

        let h2 = state().await;
        h2.h2();
        let stream = h2.begin();
        advance(Duration::from_secs(60)).await;
        assert_eq!(sweep(&h2), 0, "a stream in flight");
        drop(stream);
        pass(TIMEOUTS.idle - Duration::from_secs(1)).await;
        assert_eq!(
            sweep(&h2),
            0,
            "idle from its last stream's end; no rest for HTTP/2"
        );
        advance(Duration::from_secs(1)).await;
        assert_eq!(sweep(&h2), CLOSE);

        h2.done();
        assert!(!h2.sweep(h2.clock.tick(), &TIMEOUTS), "forgotten once done");
    }

    /// The task's waker is noted once and every new order wakes it, also after a wake
    /// and after an order lapsed (a registration that a wake consumed would miss the
    /// second `RELEASE` and the `CLOSE` here); an order already given wakes nothing.
    #[tokio::test]
    async fn orders_wake_the_task_noted_once() {
        let (count, waker) = WakeCount::waker();
        let state = state().await;
        let mut known = None;
        state.register(&Context::from_waker(&waker), &mut known);
        let woken = || count.get();
        state.order(RELEASE);
        assert_eq!(woken(), 1);
        state.order(RELEASE);
        assert_eq!(woken(), 1, "nothing new");
        state.clear(RELEASE); // the order lapsed (a request came first)
        state.register(&Context::from_waker(&waker), &mut known); // the next poll: no-op
        state.order(RELEASE);
        state.order(CLOSE);
        assert_eq!(woken(), 3);
        state.done();
        state.order(DROP);
        assert_eq!(woken(), 3, "a finished task is not woken");
    }

    #[tokio::test]
    async fn watched_replays_first_and_ends_only_at_rest_without_a_shutdown() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = state().await;
        let mut io = Watched::new(server, Arc::clone(&state));
        io.replay(Bytes::from_static(b"GE"));
        client.write_all(b"T /").await.unwrap();
        let mut buf = [0u8; 8];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GE", "the replayed bytes come first");
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"T /");
        // ordered to rest while a head is coming: the order lapses, the bytes are read
        state.order(RELEASE);
        client.write_all(b" HTTP/1.1").await.unwrap();
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b" HTTP/1.");
        assert_eq!(state.orders() & RELEASE, 0);
        // at rest (the request answered) and ordered: the end of the stream, no shutdown
        drop(state.begin());
        state.order(RELEASE);
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        io.shutdown().await.unwrap();
        assert!(io.take_released());
        // resting: the next bytes are waited for without hyper, the socket still open
        client.write_all(b"next").await.unwrap();
        let n = core::future::poll_fn(|cx| Pin::new(&mut io).poll_bytes(cx, &mut buf, CLOSE))
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"1next");
        // and an order to close ends the wait
        state.order(CLOSE);
        let n = core::future::poll_fn(|cx| Pin::new(&mut io).poll_bytes(cx, &mut buf, CLOSE))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
