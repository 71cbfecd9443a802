//! The data plane's threads: one single-threaded tokio runtime per worker, each with
//! its own listening socket on the same port (`SO_REUSEPORT`: the kernel spreads new
//! connections) and its own upstream connection pool, so a connection and the upstream
//! requests it makes never change thread and no lock is shared between workers on the
//! request path (the balancer's pool is lock-free).

use core::net::SocketAddr;
use std::io;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};

/// Listen backlog of each worker's socket (nginx uses 511; the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

/// A listening socket on `addr` that other workers can share (`SO_REUSEPORT`). Needs a
/// tokio runtime; move it to a worker's runtime with [`into_std`](TcpListener::into_std).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How many workers: the flag, else one per core.
pub(crate) fn count(flag: Option<u16>) -> usize {
    flag.map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, core::num::NonZero::get))
}

/// Starts a worker thread running `work(listener)` on its own single-threaded
/// runtime.
pub(crate) fn spawn<F, Fut>(
    i: usize,
    listener: std::net::TcpListener,
    work: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: core::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(format!("roundrobin-worker-{i}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, worker = i, "cannot start the worker's runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => work(listener).await,
                    Err(error) => tracing::error!(%error, worker = i, "cannot use the listener"),
                }
            });
        })
}
