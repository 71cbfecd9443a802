//! The forwarder's own keep-alive pool for `http://` servers: HTTP/1.1 connections
//! from hyper's low-level client (`hyper::client::conn::http1`), with no pool task, no
//! channel hop to reach one, and no task spawned per response.
//!
//! A request takes the most recently used idle connection of its server (LIFO, as
//! HAProxy does: the fewest connections stay warm), else opens one; the response body
//! puts the connection back when it ends ([`Checkin`]). Each connection is driven by one
//! task of its own for its whole life. Bounds: at most
//! [`MAX_IDLE_PER_SERVER`](crate::MAX_IDLE_PER_SERVER) idle connections per server (the
//! oldest goes first), each closed after [`POOL_IDLE_TIMEOUT`] unused; a connection the
//! server closes is dropped from the pool when next seen, or by the pool's sweeper task
//! (every 10 s), which also closes expired ones of servers that get no more traffic.
//!
//! A request sent on an idle connection that turns out to be closed (the server's
//! keep-alive timeout raced the request) is sent again on another connection when hyper
//! hands it back unsent: nothing of it reached the server, so nothing is recorded
//! against it.

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use http::uri::{Authority, Uri};
use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;

use crate::fnv::FnvBuild;
use crate::upstream::{MAX_IDLE_PER_SERVER, POOL_IDLE_TIMEOUT};
use crate::{BoxError, Error};

/// Idle connections by server authority (`host:port`; a shared buffer, so a key costs
/// no allocation).
type Idle<B> = HashMap<Authority, VecDeque<Parked<B>>, FnvBuild>;

/// An idle connection and since when.
struct Parked<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Parked<B> {
    /// Whether it can serve no more requests: its server closed it, or it has been
    /// idle for [`POOL_IDLE_TIMEOUT`] by `now`.
    fn stale(&self, now: Instant) -> bool {
        self.sender.is_closed() || now.duration_since(self.since) >= POOL_IDLE_TIMEOUT
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

/// A response and, when it came from a pool, its connection's way back.
pub(crate) type Sent = (Response<Incoming>, Option<Box<dyn Checkin>>);

/// Puts a connection back into its pool when the response body that used it ended.
pub(crate) trait Checkin: Send + Sync {
    /// The response was read whole: the connection may serve another request.
    fn checkin(self: Box<Self>);
}

/// One connection on its way back to the pool.
struct Returning<B> {
    pool: Http1Pool<B>,
    /// The server's `host:port` (a shared buffer: cloning it does not allocate).
    key: Authority,
    sender: SendRequest<B>,
}

impl<B: Send + 'static> Checkin for Returning<B> {
    fn checkin(self: Box<Self>) {
        let Self { pool, key, sender } = *self;
        pool.park(key, sender);
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
    /// the connection's way back to the pool, for when its body has ended.
    pub(crate) async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Box<dyn Checkin>), Error> {
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
        while let Some(mut sender) = self.checkout(authority) {
            match sender.try_send_request(req).await {
                Ok(res) => return Ok((res, self.returning(authority, sender))),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closed under us. Next one.
                    Some(unsent) => req = unsent,
                    None => return Err(Error::from_inner(Box::new(e.into_error()))),
                },
            }
        }
        let mut sender = self.connect(uri.clone()).await?;
        match sender.send_request(req).await {
            Ok(res) => Ok((res, self.returning(authority, sender))),
            Err(e) => Err(Error::from_inner(Box::new(e))),
        }
    }

    /// Opens a connection to the server `uri` names and starts its task.
    async fn connect(&self, uri: Uri) -> Result<SendRequest<B>, Error> {
        let mut connector = self.inner.connector.clone();
        let io = tower_service::Service::call(&mut connector, uri)
            .await
            .map_err(|e| Error::Connect(Box::new(e)))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Error::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        if !self.inner.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
        Ok(sender)
    }

    fn returning(&self, authority: &Authority, sender: SendRequest<B>) -> Box<dyn Checkin> {
        Box::new(Returning {
            pool: self.clone(),
            key: authority.clone(),
            sender,
        })
    }
}

/// Every [`SWEEP_EVERY`], closes the pool's idle connections that have expired or
/// that their server closed, and forgets servers with none left (a server removed from
/// the balancer, say), so that nothing stays open for a server that gets no more
/// traffic. Ends with the pool.
async fn sweep<B>(pool: Weak<Inner<B>>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        inner.idle().retain(|_, parked| {
            parked.retain(|p| !p.stale(now));
            !parked.is_empty()
        });
    }
}

/// How often idle connections are swept (HAProxy checks its idle server connections
/// about as often).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl<B> Http1Pool<B> {
    /// The most recently parked connection of `key` that can take a request now; the
    /// closed and expired ones met on the way are dropped. One still finishing its last
    /// exchange (parked as its response body ended, before its task took note) stays
    /// parked for a later request.
    fn checkout(&self, key: &Authority) -> Option<SendRequest<B>> {
        let mut idle = self.inner.idle();
        let parked = idle.get_mut(key)?;
        let now = Instant::now();
        let mut i = parked.len();
        while i > 0 {
            i -= 1;
            if parked[i].stale(now) {
                parked.remove(i);
            } else if parked[i].sender.is_ready() {
                return parked.remove(i).map(|p| p.sender);
            }
        }
        None
    }

    /// Parks `sender` as the most recently used connection of `key`.
    fn park(&self, key: Authority, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.inner.idle();
        let parked = idle.entry(key).or_default();
        while parked
            .front()
            .is_some_and(|p| parked.len() >= MAX_IDLE_PER_SERVER || p.stale(now))
        {
            parked.pop_front();
        }
        parked.push_back(Parked { sender, since: now });
    }

    /// Idle connections parked for `key` (tests).
    #[cfg(test)]
    fn idle_count(&self, key: &str) -> usize {
        let Ok(key) = key.parse::<Authority>() else {
            return 0;
        };
        let idle = self.inner.idle();
        idle.get(&key).map_or(0, VecDeque::len)
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

    /// Sends one GET and reads the body whole (which parks the connection).
    async fn get(pool: &Http1Pool<Empty<Bytes>>, addr: SocketAddr) -> Bytes {
        let req = request(addr);
        let (res, checkin) = pool.send(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        checkin.checkin();
        body
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
    async fn a_connection_parked_as_its_last_frame_arrives_serves_the_next_request() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        for _ in 0..50 {
            let req = request(addr);
            let (res, checkin) = pool.send(req).await.unwrap();
            let mut body = res.into_body();
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "ok");
            // As `Download` does: parked as soon as the body says it has ended, not
            // when it yields its end.
            assert!(http_body::Body::is_end_stream(&body));
            checkin.checkin();
        }
        // hyper marks the connection ready before it hands over the last frame, so
        // the next request takes it: no connection per request.
        assert!(accepted.load(Ordering::SeqCst) <= 2, "{accepted:?}");
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
        let req = request(addr);
        let (res, checkin) = pool.send(req).await.unwrap();
        drop((res, checkin)); // body never read
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
        assert_eq!(get(&pool, addr).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
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
        let err = pool().send(req).await.err().unwrap();
        assert!(matches!(err, crate::Error::Connect(_)), "{err:?}");
    }
}
