//! One client connection's clock: is it idle, reading a request head, or busy? The
//! server closes connections that stay idle or dribble a head for too long.

use core::pin::Pin;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;
use std::sync::Arc;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
/// HTTP/2: many streams, no head to time (hyper's keep-alive pings cover it).
const H2: u8 = 3;

/// What a connection is doing, and since when.
#[derive(Debug)]
pub(crate) struct ConnState {
    base: Instant,
    phase: AtomicU8,
    /// Milliseconds from `base` to the start of the phase.
    since: AtomicU64,
    in_flight: AtomicU32,
    /// Released when the last holder of the state goes: the connection's task, its
    /// service, and its socket (`Watched`), which outlives both in a tunnel.
    _held: Held,
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
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.connection_closed();
        }
    }
}

/// What the watchdog should do about a connection.
pub(crate) enum Verdict {
    /// Nothing until then.
    Wait(Instant),
    /// Idle past the idle timeout: close it gracefully.
    Idle,
    /// A request head took longer than the header timeout: drop it.
    SlowHead,
}

impl ConnState {
    pub(crate) fn new(held: Held) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            _held: held,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: u8) {
        self.since.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// Bytes arrived; `first` tells whether they are the connection's first ones.
    fn read(&self, bytes: &[u8], first: bool) {
        if first && bytes.starts_with(b"PRI * HTTP/2") {
            self.phase.store(H2, Ordering::Release);
        } else if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(HEAD);
        }
    }

    /// A request's head was read: the connection is busy until its response is done.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.phase.load(Ordering::Acquire) != H2 {
            self.phase.store(BUSY, Ordering::Release);
        }
        InFlight(Arc::clone(self))
    }

    /// What to do at `now`, given the timeouts.
    pub(crate) fn verdict(&self, header: Duration, idle: Duration) -> Verdict {
        let since = self.base + Duration::from_millis(self.since.load(Ordering::Relaxed));
        let now = Instant::now();
        let (phase, busy) = (
            self.phase.load(Ordering::Acquire),
            self.in_flight.load(Ordering::Acquire) > 0,
        );
        let (limit, verdict) = match phase {
            IDLE => (idle, Verdict::Idle),
            HEAD => (header, Verdict::SlowHead),
            H2 if !busy => (idle, Verdict::Idle),
            // busy: body timeouts are the forwarder's; look again later
            _ => return Verdict::Wait(now + header.min(idle)),
        };
        let deadline = since + limit;
        if now >= deadline {
            verdict
        } else {
            Verdict::Wait(deadline)
        }
    }
}

/// A request in flight on a connection; when the last one is done (its response body
/// sent or dropped), the connection is idle.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1
            && state.phase.load(Ordering::Acquire) == BUSY
        {
            state.enter(IDLE);
        }
    }
}

pin_project! {
    /// A client connection's socket, noting when request bytes arrive.
    #[derive(Debug)]
    pub(crate) struct Watched<T> {
        #[pin]
        io: T,
        state: Arc<ConnState>,
        first: bool,
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>) -> Self {
        Self {
            io,
            state,
            first: true,
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
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.state.read(read, core::mem::take(this.first));
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
        self.project().io.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
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
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            in_flight: Some(in_flight),
        }
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
