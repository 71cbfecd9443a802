//! Protocol upgrades through the forwarder (WebSocket, or any `Connection: upgrade`):
//! when the server answers `101 Switching Protocols`, the client's connection and the
//! server's are spliced into a tunnel, counted in [`Tunnels`] until it closes.

use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;
use std::sync::Arc;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::headers::{asks_upgrade, remove_hop_by_hop_but_upgrade};
use crate::metrics::{OpenTunnel, TunnelGauge};
use crate::Error;

/// The tunnels of a [`Forwarder`](crate::Forwarder) (upgraded connections: WebSocket
/// and any other protocol a `101 Switching Protocols` switches to), shared by its
/// clones.
///
/// A tunnel outlives the request that opened it and the client connection's HTTP
/// life: once upgraded, the connection leaves [`serve`](crate::serve)'s hands (its
/// idle and header timeouts, its graceful shutdown), so a server shutting down drains
/// the tunnels through this handle: [`shutdown`](Self::shutdown) waits for them to
/// close, up to a timeout, then closes the rest. A tunnel is counted from the `101`
/// (before the client has read it) until both of its connections are dropped.
///
/// A tunnel closes when either side closes (an end of stream is passed on to the other
/// side, which then closes in turn; a reset closes both at once), when nothing moves
/// either way for the forwarder's [`body_timeout`](crate::Forwarder::body_timeout)
/// (like HAProxy's `timeout tunnel`), or when [`close_all`](Self::close_all) is called.
///
/// ```no_run
/// # async fn example(listener: tokio::net::TcpListener) {
/// use std::time::Duration;
/// use roundrobin_core::RoundRobin;
/// use roundrobin_hyper::{serve, Balancer, Forwarder};
///
/// let forwarder = Forwarder::new();
/// let tunnels = forwarder.tunnels().clone();
/// let balancer = Balancer::builder(RoundRobin::new()).service(forwarder);
/// let (stop, stopped) = tokio::sync::watch::channel(false);
/// let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
///     let _ = stopped.wait_for(|s| *s).await;
/// };
/// let drain_tunnels = {
///     let stopping = stopping(stopped.clone());
///     async move {
///         stopping.await;
///         tunnels.shutdown(Duration::from_secs(30)).await;
///     }
/// };
/// # let _ = stop;
/// // HTTP requests and tunnels drain side by side once `stop` is sent.
/// tokio::join!(serve(listener, balancer, stopping(stopped)), drain_tunnels);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Tunnels {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    open: AtomicUsize,
    /// Notified (all waiters) whenever a tunnel closes.
    closed: Notify,
    /// `true` once the tunnels are to close.
    close: watch::Sender<bool>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            close: watch::Sender::new(false),
        }
    }
}

/// How long [`Tunnels::shutdown`] waits for the tunnels it closed to let go of their
/// connections (they do at their next poll).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl Tunnels {
    /// No tunnels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tunnels are open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Waits until no tunnel is open, or until `deadline`; returns whether none is.
    pub async fn wait_closed(&self, deadline: Instant) -> bool {
        loop {
            // Registered before the count is read: a close in between still wakes us.
            let closed = self.shared.closed.notified();
            if self.open() == 0 {
                return true;
            }
            tokio::select! {
                () = closed => {}
                () = tokio::time::sleep_until(deadline) => return self.open() == 0,
            }
        }
    }

    /// Closes every open tunnel (both connections are dropped), and every tunnel
    /// opened from now on as soon as it opens.
    pub fn close_all(&self) {
        self.shared.close.send_replace(true);
    }

    /// Waits up to `timeout` for the open tunnels to close by themselves, then closes
    /// the rest ([`close_all`](Self::close_all)); returns how many it had to close.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        if self.wait_closed(Instant::now() + timeout).await {
            return 0;
        }
        let left = self.open();
        tracing::warn!(
            open = left,
            "shutdown timeout: closing the tunnels still open"
        );
        self.close_all();
        self.wait_closed(Instant::now() + CLOSE_WAIT).await;
        left
    }

    fn enter(&self) -> Slot {
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        Slot(Arc::clone(&self.shared))
    }
}

/// One open tunnel in its [`Tunnels`].
struct Slot(Arc<Shared>);

impl Slot {
    /// Resolves once the tunnels are to close.
    async fn closing(&self) {
        let mut close = self.0.close.subscribe();
        let _ = close.wait_for(|close| *close).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

/// What a tunnel holds while it is open; the gauge goes down before the slot is
/// released (fields drop in order), so a [`Tunnels::wait_closed`] that returns sees the
/// gauge already down.
struct Held {
    _gauge: Option<OpenTunnel>,
    slot: Slot,
}

/// The client's side of an upgrade request, taken out of the request before it is
/// sent upstream.
pub(crate) struct Upgrade {
    client: OnUpgrade,
    gauge: Option<TunnelGauge>,
    tunnels: Tunnels,
}

impl Upgrade {
    /// The client's upgrade, when `req` is an HTTP/1.1 request that asks to switch
    /// protocols and its connection can be handed over (it came through a hyper
    /// server with upgrades on). Removed from the request: the request sent upstream
    /// does not carry it.
    pub(crate) fn take<B>(req: &mut Request<B>, tunnels: &Tunnels) -> Option<Self> {
        if req.version() != Version::HTTP_11 || !asks_upgrade(req.headers()) {
            return None;
        }
        let client = req.extensions_mut().remove::<OnUpgrade>()?;
        let gauge = req.extensions_mut().remove::<TunnelGauge>();
        Some(Self {
            client,
            gauge,
            tunnels: tunnels.clone(),
        })
    }
}

/// The server switched protocols: keeps the response's `Upgrade` and
/// `Connection: upgrade` for the client and splices the two connections once both are
/// handed over. A `101` to a request that did not ask for it (or whose connection
/// cannot be handed over) is the server's error.
pub(crate) fn switch(
    res: &mut Response<Incoming>,
    upgrade: Option<Upgrade>,
    idle: Duration,
) -> Result<(), Error> {
    let Some(upgrade) = upgrade else {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            "the server switched protocols for a request that did not ask to",
        );
        return Err(Error::Upstream(Box::new(e)));
    };
    remove_hop_by_hop_but_upgrade(res.headers_mut());
    let server = hyper::upgrade::on(res);
    let Upgrade {
        client,
        gauge,
        tunnels,
    } = upgrade;
    let held = Held {
        _gauge: gauge.map(TunnelGauge::open),
        slot: tunnels.enter(),
    };
    tokio::spawn(async move {
        let held = held; // released when the tunnel is over
        let closing = held.slot.closing();
        let mut closing = core::pin::pin!(closing);
        let both = async { tokio::try_join!(client, server) };
        let (client, server) = tokio::select! {
            both = both => match both {
                Ok(both) => both,
                Err(error) => {
                    tracing::debug!(%error, "upgrade not completed");
                    return;
                }
            },
            () = &mut closing => return,
        };
        splice(TokioIo::new(client), TokioIo::new(server), idle, closing).await;
    });
    Ok(())
}

/// Copies both ways until both sides are done, either fails, nothing moves for
/// `idle`, or `closing` resolves.
async fn splice<C, S>(
    client: C,
    server: S,
    idle: Duration,
    mut closing: Pin<&mut impl core::future::Future<Output = ()>>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let mut client = Active::new(client, &activity);
    let mut server = Active::new(server, &activity);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
    let mut copy = core::pin::pin!(copy);
    loop {
        tokio::select! {
            done = &mut copy => {
                match done {
                    Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
                    Err(error) => tracing::debug!(%error, "tunnel failed"),
                }
                return;
            }
            () = tokio::time::sleep_until(activity.deadline(idle)) => {
                if Instant::now() >= activity.deadline(idle) {
                    tracing::debug!(?idle, "tunnel idle: closed");
                    return;
                }
            }
            () = closing.as_mut() => {
                tracing::debug!("tunnel closed on shutdown");
                return;
            }
        }
    }
}

/// When bytes last moved through a tunnel, either way.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Milliseconds from `base` to the last bytes.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }
}

/// One side of a tunnel, noting when bytes move.
struct Active<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Active<T> {
    fn new(io: T, activity: &Arc<Activity>) -> Self {
        Self {
            io,
            activity: Arc::clone(activity),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_closes_and_a_busy_one_does_not() {
        let idle = Duration::from_secs(30);
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (server, mut server_peer) = tokio::io::duplex(64);
        let started = Instant::now();
        let tunnel = tokio::spawn(async move {
            let closing = core::pin::pin!(core::future::pending::<()>());
            splice(client, server, idle, closing).await;
        });
        // Bytes every 20 s keep it open past the idle time.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            tokio::io::AsyncWriteExt::write_all(&mut client_peer, b"x")
                .await
                .unwrap();
            let mut byte = [0];
            tokio::io::AsyncReadExt::read_exact(&mut server_peer, &mut byte)
                .await
                .unwrap();
        }
        assert!(!tunnel.is_finished());
        tunnel.await.unwrap();
        let open_for = started.elapsed();
        assert!(
            open_for >= Duration::from_secs(90) && open_for < Duration::from_secs(91),
            "{open_for:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tunnels_wait_then_close() {
        let tunnels = Tunnels::new();
        let slot = tunnels.enter();
        assert_eq!(tunnels.open(), 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(!tunnels.wait_closed(deadline).await);
        assert_eq!(Instant::now(), deadline);
        // A tunnel's task: it lets go when told to close.
        let tunnel = tokio::spawn(async move {
            slot.closing().await;
            drop(slot);
        });
        assert_eq!(tunnels.shutdown(Duration::from_secs(5)).await, 1);
        tunnel.await.unwrap();
        assert_eq!(tunnels.open(), 0);
        assert!(tunnels.wait_closed(Instant::now()).await);
    }
}
