//! Running a service on a TCP listener.

use core::error::Error as StdError;
use core::future::Future;
use core::net::SocketAddr;
use std::io;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use roundrobin_core::ServerUrl;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ClientAddr;

/// How long [`serve`] stops accepting after `accept` failed for a reason other than
/// one connection's.
pub const ACCEPT_ERROR_PAUSE: core::time::Duration = core::time::Duration::from_millis(100);

/// Serves `service` (HTTP/1.1 and HTTP/2) on `listener` until `shutdown` completes,
/// then stops accepting and waits for the open connections to finish their in-flight
/// requests.
///
/// Each request carries the peer address as a [`ClientAddr`] extension. Errors of
/// single connections are logged and do not stop the server. When `accept` itself
/// fails (out of file descriptors, say), the error is logged and accepting pauses for
/// [`ACCEPT_ERROR_PAUSE`] instead of spinning or giving up.
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = core::pin::pin!(shutdown);
    loop {
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
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            service.call(req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, %peer, "connection error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Serving {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and its address, as a server of a pool.
    pub fn url(&self) -> ServerUrl {
        ServerUrl::parse(&format!("http://{}", self.addr))
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
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
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
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    Serving {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}
