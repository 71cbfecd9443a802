//! The proxy binary in front of `h2c://` and `https://` backends: a private CA with
//! `--upstream-ca`, `--upstream-insecure`, and an untrusted certificate refused.

mod support;

use core::convert::Infallible;
use core::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use support::{run, start_proxy, TempFile};

#[path = "../../hyper/tests/support/pki.rs"]
mod pki;
use pki::Ca;

/// A backend answering `name` and the HTTP version it was spoken to in, over TLS when
/// `tls` is given; it stops with the test's runtime.
async fn backend(name: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let text = format!("{name} {:?}", req.version());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(tls) => {
                        if let Ok(tls) = tls.accept(stream).await {
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
    addr
}

/// The status and body of `GET /` through the proxy at `addr`.
async fn get(addr: SocketAddr) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::get(format!("http://{addr}/"))
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn h2c_and_https_backends_with_a_private_ca() {
    run(async {
        let authority = Ca::new();
        let ca = TempFile::new("upstreams", "ca.pem", &authority.pem());
        let plain = backend("h2c", None).await;
        let secure = backend("tls", Some(authority.server_config())).await;
        let (h2c, https) = (
            format!("h2c://{plain}"),
            format!("https://localhost:{}", secure.port()),
        );
        let (_proxy, listen, _) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &h2c,
            "--backend",
            &https,
            "--upstream-ca",
            ca.arg(),
        ])
        .await;
        let mut seen = vec![get(listen).await, get(listen).await];
        seen.sort();
        assert_eq!(
            seen,
            [(200, "h2c HTTP/2.0".into()), (200, "tls HTTP/2.0".into())]
        );
    });
}

#[test]
fn an_untrusted_backend_is_502_unless_checks_are_off() {
    run(async {
        let secure = backend("tls", Some(Ca::new().server_config())).await;
        let https = format!("https://localhost:{}", secure.port());
        let base = [
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &https,
            "--retries",
            "0",
        ];
        let (_strict, listen, _) = start_proxy(&base).await;
        assert_eq!(get(listen).await.0, 502);
        let mut lax = base.to_vec();
        lax.push("--upstream-insecure");
        let (_lax, listen, _) = start_proxy(&lax).await;
        assert_eq!(get(listen).await, (200, "tls HTTP/2.0".into()));
    });
}
