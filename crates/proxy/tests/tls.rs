//! `--tls-cert FILE --tls-key FILE`: the binary serves HTTPS (HTTP/1.1 and h2 by ALPN)
//! with a certificate generated here, sets `X-Forwarded-Proto: https`, reloads the pair
//! on SIGHUP (keeping the running one when the new files are bad), and refuses half or
//! broken flags with status 2.

use core::convert::Infallible;
use core::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_hyper::{spawn_on, Serving};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{ChildStderr, Command};

#[path = "../../hyper/tests/support/pki.rs"]
mod pki;
mod support;
use pki::Ca;
use support::{bin, run, start_proxy, TempFile};

/// The certificate a fresh handshake with `addr`, trusting `ca`, is shown.
async fn presented(ca: &Ca, addr: SocketAddr) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(&[])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A plain HTTP backend answering `NAME PROTO` (`X-Forwarded-Proto` as it got it).
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
            let body = format!("{name} {proto}");
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }),
    )
    .await
    .unwrap()
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTPS client trusting `ca`, offering ALPN `h2` alone or `http/1.1` alone.
fn client(ca: &Ca, h2: bool) -> HttpsClient {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config(&[]))
        .https_only();
    if h2 {
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(builder.enable_http2().build())
    } else {
        Client::builder(TokioExecutor::new()).build(builder.enable_http1().build())
    }
}

async fn get(client: &HttpsClient, addr: SocketAddr) -> (Version, String) {
    let res = client
        .get(format!("https://{addr}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let version = res.version();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn serves_https_with_h2_and_http1() {
    run(async {
        let ca = Ca::new();
        let (cert, key, _) = ca.leaf("proxy");
        let cert = TempFile::new("tls", "serve-cert.pem", &cert);
        let key = TempFile::new("tls", "serve-key.pem", &key);
        let (a, b) = (backend("a").await, backend("b").await);
        let (_child, listen, _) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--backend",
            a.url().as_str(),
            "--backend",
            b.url().as_str(),
            "--tls-cert",
            cert.arg(),
            "--tls-key",
            key.arg(),
        ])
        .await;
        for (h2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
            let client = client(&ca, h2);
            let mut bodies = Vec::new();
            for _ in 0..4 {
                let (v, body) = get(&client, listen).await;
                assert_eq!(v, version);
                bodies.push(body);
            }
            bodies.sort();
            assert_eq!(bodies, ["a https", "a https", "b https", "b https"]);
        }
    });
}

/// Waits for a stderr line containing `needle` and returns it.
async fn line_with(stderr: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
    while let Some(line) = stderr.next_line().await.unwrap() {
        if line.contains(needle) {
            return line;
        }
    }
    panic!("stderr ended without {needle:?}");
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_bad() {
    run(async {
        let ca = Ca::new();
        let (cert_pem, key_pem, first) = ca.leaf("proxy");
        let cert = TempFile::new("tls", "hup-cert.pem", &cert_pem);
        let key = TempFile::new("tls", "hup-key.pem", &key_pem);
        let a = backend("a").await;
        let mut child = Command::new(bin())
            .args(["--listen", "127.0.0.1:0", "--backend", a.url().as_str()])
            .args(["--tls-cert", cert.arg(), "--tls-key", key.arg()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = stdout.next_line().await.unwrap().unwrap();
        let listen: SocketAddr = line.strip_prefix("listening on ").unwrap().parse().unwrap();
        assert_eq!(presented(&ca, listen).await, first);
        let hup = || {
            let pid = child.id().unwrap().to_string();
            let status = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap();
            assert!(status.success());
        };

        // a key that does not match: refused, the first certificate stays
        let (cert_pem, key_pem, second) = ca.leaf("proxy");
        cert.write(&cert_pem);
        hup();
        let line = line_with(&mut stderr, "TLS certificate not reloaded").await;
        assert!(line.contains("does not match"), "{line}");
        assert_eq!(presented(&ca, listen).await, first);

        key.write(&key_pem);
        hup();
        line_with(&mut stderr, "TLS certificate and key reloaded").await;
        assert_eq!(presented(&ca, listen).await, second);
        let (_, body) = get(&client(&ca, true), listen).await;
        assert_eq!(body, "a https");
    });
}

/// `POST /reload` to the admin API at `admin`: the whole answer, as text.
async fn post_reload(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = TcpStream::connect(admin).await.unwrap();
    let req = format!(
        "POST /reload HTTP/1.1\r\nhost: {admin}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn post_reload_reloads_the_certificate_and_keeps_it_when_the_new_one_is_bad() {
    run(async {
        let ca = Ca::new();
        let (cert_pem, key_pem, first) = ca.leaf("proxy");
        let cert = TempFile::new("tls", "post-cert.pem", &cert_pem);
        let key = TempFile::new("tls", "post-key.pem", &key_pem);
        let a = backend("a").await;
        let (_proxy, listen, admin) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--backend",
            a.url().as_str(),
            "--tls-cert",
            cert.arg(),
            "--tls-key",
            key.arg(),
        ])
        .await;
        let admin = admin.unwrap();
        assert_eq!(presented(&ca, listen).await, first);

        let (cert_pem, key_pem, second) = ca.leaf("proxy");
        cert.write(&cert_pem);
        let answer = post_reload(admin).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("does not match"), "{answer}");
        assert_eq!(presented(&ca, listen).await, first);

        key.write(&key_pem);
        let answer = post_reload(admin).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#"{"tls":"reloaded"}"#), "{answer}");
        assert_eq!(presented(&ca, listen).await, second);
    });
}

#[test]
fn half_or_bad_tls_flags_exit_2_with_a_message() {
    let ca = Ca::new();
    let (cert_pem, key_pem, _) = ca.leaf("proxy");
    let cert = TempFile::new("tls", "flags-cert.pem", &cert_pem);
    let key = TempFile::new("tls", "flags-key.pem", &key_pem);
    let (_, other_key, _) = ca.leaf("proxy");
    let other_key = TempFile::new("tls", "flags-other-key.pem", &other_key);
    for (args, says) in [
        (vec!["--tls-cert", cert.arg()], "--tls-key"),
        (vec!["--tls-key", key.arg()], "--tls-cert"),
        (
            vec![
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                key.arg(),
            ],
            "/nonexistent/cert.pem: cannot read it",
        ),
        (
            vec!["--tls-cert", key.arg(), "--tls-key", key.arg()],
            "no certificate",
        ),
        (
            vec!["--tls-cert", cert.arg(), "--tls-key", other_key.arg()],
            "does not match",
        ),
    ] {
        run(async {
            let out = Command::new(bin())
                .args(["--listen", "127.0.0.1:0"])
                .args(&args)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        });
    }
}
