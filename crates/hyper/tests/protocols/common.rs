//! Backends and clients of several protocols on 127.0.0.1, all stopping by themselves.

use core::convert::Infallible;
use core::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use roundrobin_core::{RoundRobin, ServerUrl};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[path = "../support/run.rs"]
mod run;
pub(crate) use run::run;

/// What a backend saw of one request, sent back as headers.
fn answer(name: &'static str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(name)));
    let h = res.headers_mut();
    h.insert(
        "seen-version",
        format!("{:?}", req.version()).parse().unwrap(),
    );
    h.insert("seen-uri", req.uri().to_string().parse().unwrap());
    for (k, v) in req.headers() {
        if let Ok(k) = http::HeaderName::from_bytes(format!("seen-{k}").as_bytes()) {
            h.append(k, v.clone());
        }
    }
    res
}

/// A backend stopped when dropped.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    pub(crate) fn new(addr: SocketAddr, task: JoinHandle<()>) -> Self {
        Self { addr, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend answering `name`, speaking HTTP/1.1 and HTTP/2 (prior knowledge) on plain
/// TCP, or, with `tls`, over TLS with that server configuration.
pub(crate) async fn backend(name: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(name, &req))
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Backend { addr, task }
}

/// A round-robin pool of `servers` (URL, weight).
pub(crate) fn pool(servers: &[(ServerUrl, u32)]) -> RoundRobin<ServerUrl> {
    let pool = RoundRobin::new();
    for (url, weight) in servers {
        pool.upsert_server(url.clone(), Some(*weight)).unwrap();
    }
    pool
}
