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

/// A CA (PEM) and a server configuration with a certificate it signed for
/// `localhost`, made now.
fn pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(server))
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
        let (ca, server) = pki();
        let ca = TempFile::new("upstreams", "ca.pem", &ca);
        let plain = backend("h2c", None).await;
        let secure = backend("tls", Some(server)).await;
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
        let (_ca, server) = pki();
        let secure = backend("tls", Some(server)).await;
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
