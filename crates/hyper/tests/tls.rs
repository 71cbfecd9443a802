//! Serving over TLS: a client trusting a CA generated here (rcgen) talks HTTP/1.1 and
//! HTTP/2 (ALPN) to the balancer in front of plain HTTP backends; clients that fail the
//! handshake are closed and counted without disturbing the others; a reload changes the
//! certificate of new handshakes only.
#![cfg(feature = "tls")]

use core::convert::Infallible;
use core::net::SocketAddr;
use core::time::Duration;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use roundrobin_core::RoundRobin;
use roundrobin_hyper::{
    serve_tls_with, spawn_on, Balancer, Forwarder, Metrics, ServerLimits, Serving, TlsAcceptor,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

#[path = "support/pki.rs"]
mod pki;
use pki::Ca;

/// Runs `f` on a current-thread runtime (so a server task's close and its counting
/// happen in one poll, before the client sees the close), bounded by 30 s.
fn run<F: core::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .expect("test timed out");
        });
}

/// A plain HTTP backend answering `NAME PROTO`: its name and the `X-Forwarded-Proto` it
/// got.
async fn backend(name: &'static str) -> Serving {
    spawn_on(
        "127.0.0.1:0",
        service_fn(move |req: Request<Incoming>| async move {
            let proto = req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "{name} {proto}"
            )))))
        }),
    )
    .await
    .unwrap()
}

/// The balancer over backends `a` and `b`, served over TLS with `tls`; stops when the
/// sender is dropped.
struct Proxy {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    pool: Arc<RoundRobin<roundrobin_core::ServerUrl>>,
    _backends: (Serving, Serving),
    _stop: oneshot::Sender<()>,
}

impl Proxy {
    async fn start(tls: TlsAcceptor, header_timeout: Duration) -> Self {
        let backends = (backend("a").await, backend("b").await);
        let pool = Arc::new(RoundRobin::new());
        pool.upsert_server(backends.0.url(), None).unwrap();
        pool.upsert_server(backends.1.url(), None).unwrap();
        let metrics = Metrics::new();
        let balancer = Balancer::builder(Arc::clone(&pool))
            .metrics(Arc::clone(&metrics))
            .service(Forwarder::new().forwarded_proto(HeaderValue::from_static("https")));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = ServerLimits {
            header_timeout,
            metrics: Some(Arc::clone(&metrics)),
            ..ServerLimits::default()
        };
        tokio::spawn(serve_tls_with(
            listener,
            tls,
            balancer,
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        Self {
            addr,
            metrics,
            pool,
            _backends: backends,
            _stop: stop,
        }
    }

    /// The value of the proxy's metric `name` (its first series).
    fn metric(&self, name: &str) -> f64 {
        let text = self.metrics.encode(&*self.pool);
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// [`start`](Self::start) with a certificate for "proxy" signed by `ca`.
    async fn signed_by(ca: &Ca, header_timeout: Duration) -> Self {
        let (cert, key, _) = ca.leaf("proxy");
        let tls = TlsAcceptor::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        Self::start(tls, header_timeout).await
    }

    fn handshake_failures(&self) -> u64 {
        self.metric("roundrobin_client_tls_handshake_failures_total") as u64
    }

    /// Waits (yielding to the server's tasks, no timer) until `n` handshakes failed.
    async fn handshake_failures_reach(&self, n: u64) {
        for _ in 0..10_000 {
            if self.handshake_failures() >= n {
                assert_eq!(self.handshake_failures(), n);
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "{} handshake failures counted, expected {n}",
            self.handshake_failures()
        );
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A pooled HTTPS client trusting `ca`, offering ALPN `h2` alone (HTTP/2 only) or
/// `http/1.1` alone.
fn client(ca: &Ca, h2: bool) -> HttpsClient {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config(&[]))
        .https_only();
    if h2 {
        let connector = builder.enable_http2().build();
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector)
    } else {
        Client::builder(TokioExecutor::new()).build(builder.enable_http1().build())
    }
}

/// `GET /` over `client`: the version answered and the body.
async fn get(
    client: &HttpsClient,
    addr: SocketAddr,
) -> Result<(Version, String), hyper_util::client::legacy::Error> {
    let res = client
        .get(format!("https://{addr}/").parse().unwrap())
        .await?;
    let version = res.version();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Ok((version, String::from_utf8(body.to_vec()).unwrap()))
}

#[test]
fn http1_and_h2_over_tls_are_balanced_with_forwarded_proto_https() {
    run(async {
        let ca = Ca::new();
        let proxy = Proxy::signed_by(&ca, Duration::from_secs(10)).await;
        for (h2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
            let client = client(&ca, h2);
            let mut bodies = Vec::new();
            for _ in 0..4 {
                let (v, body) = get(&client, proxy.addr).await.unwrap();
                assert_eq!(v, version);
                bodies.push(body);
            }
            let a = bodies.iter().filter(|b| *b == "a https").count();
            let b = bodies.iter().filter(|b| *b == "b https").count();
            assert_eq!((a, b), (2, 2), "{version:?}: {bodies:?}");
        }
        assert_eq!(proxy.handshake_failures(), 0);
    });
}

#[test]
fn failed_handshakes_get_no_response_and_others_are_served() {
    run(async {
        let ca = Ca::new();
        let proxy = Proxy::signed_by(&ca, Duration::from_secs(10)).await;

        // plain HTTP to the TLS port: closed, no HTTP response
        let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer).await;
        assert!(
            !answer.windows(5).any(|w| w == b"HTTP/"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        proxy.handshake_failures_reach(1).await;

        // a client that does not trust the certificate (another CA)
        let stranger = client(&Ca::new(), false);
        let e = get(&stranger, proxy.addr).await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        proxy.handshake_failures_reach(2).await;

        // the others are served
        let trusting = client(&ca, true);
        let (_, body) = get(&trusting, proxy.addr).await.unwrap();
        assert!(body.ends_with(" https"), "{body}");
    });
}

#[test]
fn a_silent_client_is_closed_after_the_header_timeout() {
    run(async {
        let ca = Ca::new();
        let proxy = Proxy::signed_by(&ca, Duration::from_millis(200)).await;
        let started = tokio::time::Instant::now();
        let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        let read = silent.read_to_end(&mut buf).await;
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?} {buf:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        proxy.handshake_failures_reach(1).await;
    });
}

#[test]
fn a_handshake_in_progress_is_closed_at_once_when_the_server_stops() {
    run(async {
        let ca = Ca::new();
        // Neither the header timeout nor the shutdown timeout (30 s) ends it.
        let proxy = Proxy::signed_by(&ca, Duration::from_secs(30)).await;
        let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
        // Accepted (its handshake waiting for a ClientHello) before the server stops.
        let open = "roundrobin_client_connections_open";
        for _ in 0..10_000 {
            if proxy.metric(open) >= 1.0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(proxy.metric(open), 1.0);
        let Proxy { _stop: stop, .. } = proxy;
        drop(stop);
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf))
            .await
            .expect("closed when the server stops, not after a timeout");
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?} {buf:?}");
    });
}

/// A TLS connection to `addr` trusting `ca`, and the certificate the server presented.
async fn connect(
    ca: &Ca,
    addr: SocketAddr,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(&[b"http/1.1"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, presented)
}

/// One `GET /` on an HTTP/1.1 connection already open.
async fn get_on(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> String {
    let req = Request::get("/")
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn reload_changes_the_certificate_of_new_handshakes_only() {
    run(async {
        let dir = TempDir(
            std::env::temp_dir().join(format!("roundrobin-tls-test-{}-reload", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).unwrap();
        let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        let ca = Ca::new();
        let (cert, key, first) = ca.leaf("first");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let tls = TlsAcceptor::from_pem_files(&cert_path, &key_path).unwrap();
        let proxy = Proxy::start(tls.clone(), Duration::from_secs(10)).await;

        let (old, presented) = connect(&ca, proxy.addr).await;
        assert_eq!(presented, first);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
            .await
            .unwrap();
        tokio::spawn(conn);
        assert!(get_on(&mut sender).await.ends_with(" https"));

        // a bad pair is refused and the running certificate stays
        let (cert2, key2, second) = ca.leaf("second");
        std::fs::write(&cert_path, &cert2).unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert_eq!(connect(&ca, proxy.addr).await.1, first);

        std::fs::write(&key_path, &key2).unwrap();
        tls.reload().unwrap();
        assert_eq!(connect(&ca, proxy.addr).await.1, second);
        // the connection opened before the reload goes on
        assert!(get_on(&mut sender).await.ends_with(" https"));
    });
}
