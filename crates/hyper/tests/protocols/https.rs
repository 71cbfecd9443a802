//! `https://` servers: certificates checked against a configured CA, ALPN choosing
//! HTTP/2 or HTTP/1.1, and what happens when the certificate is not trusted.

use core::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_core::ServerUrl;
use roundrobin_hyper::{spawn_on, Balancer, Connector, Forwarder, UpstreamTls};

use crate::common::{backend, pool, run};
use crate::pki::Ca;

async fn get(proxy: core::net::SocketAddr) -> (u16, String, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::get(format!("http://{proxy}/"))
        .header("host", "front")
        .body(Empty::new())
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let version = res
        .headers()
        .get("seen-version")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), version)
}

#[test]
fn an_https_server_signed_by_a_configured_ca_is_reached_over_h2() {
    run(async {
        let ca = Ca::new();
        let a = backend("secure", Some(ca.server_config())).await;
        let pool = pool(&[(
            ServerUrl::parse(&format!("https://localhost:{}", a.addr.port())).unwrap(),
            1,
        )]);
        let tls = UpstreamTls::new().add_ca_pem(ca.pem().as_bytes()).unwrap();
        let connector = Connector::with_tls(Duration::from_secs(2), &tls);
        let balancer = Balancer::builder(pool).service(Forwarder::with_connector(connector));
        let proxy = spawn_on("127.0.0.1:0", balancer).await.unwrap();
        for _ in 0..3 {
            let (status, body, version) = get(proxy.local_addr()).await;
            assert_eq!((status, body.as_str()), (200, "secure"));
            // ALPN offered h2 first and the server took it.
            assert_eq!(version.as_deref(), Some("HTTP/2.0"));
        }
    });
}

#[test]
fn an_untrusted_certificate_is_a_502_and_insecure_mode_accepts_it() {
    run(async {
        let ca = Ca::new();
        let a = backend("secure", Some(ca.server_config())).await;
        let server = ServerUrl::parse(&format!("https://127.0.0.1:{}", a.addr.port())).unwrap();
        let servers = || pool(&[(server.clone(), 1)]);
        // The default trusts only the public roots: the test CA is unknown.
        let strict = Balancer::builder(servers()).service(Forwarder::new());
        let strict = spawn_on("127.0.0.1:0", strict).await.unwrap();
        let (status, _, version) = get(strict.local_addr()).await;
        assert_eq!(status, 502);
        assert_eq!(version, None, "nothing reached the server");

        let tls = UpstreamTls::new().insecure();
        assert!(tls.is_insecure());
        let connector = Connector::with_tls(Duration::from_secs(2), &tls);
        let lax = Balancer::builder(servers()).service(Forwarder::with_connector(connector));
        let lax = spawn_on("127.0.0.1:0", lax).await.unwrap();
        let (status, body, _) = get(lax.local_addr()).await;
        assert_eq!((status, body.as_str()), (200, "secure"));
    });
}

#[test]
fn a_client_certificate_is_presented_to_a_server_that_requires_one() {
    run(async {
        let ca = Ca::new();
        let a = backend("mutual", Some(ca.server_config_requiring_clients())).await;
        let server = ServerUrl::parse(&format!("https://localhost:{}", a.addr.port())).unwrap();
        let trusted = UpstreamTls::new().add_ca_pem(ca.pem().as_bytes()).unwrap();
        let (cert, key, _) = ca.leaf("proxy");
        let mutual = trusted
            .clone()
            .client_cert_pem(cert.as_bytes(), key.as_bytes())
            .unwrap();
        let via = |tls: &UpstreamTls| {
            let connector = Connector::with_tls(Duration::from_secs(2), tls);
            Balancer::builder(pool(&[(server.clone(), 1)]))
                .retry(roundrobin_hyper::Retry::OFF)
                .service(Forwarder::with_connector(connector))
        };
        let with = spawn_on("127.0.0.1:0", via(&mutual)).await.unwrap();
        let (status, body, _) = get(with.local_addr()).await;
        assert_eq!((status, body.as_str()), (200, "mutual"));
        // The same CA trusted, no client certificate: the server refuses the handshake.
        let without = spawn_on("127.0.0.1:0", via(&trusted)).await.unwrap();
        assert_eq!(get(without.local_addr()).await.0, 502);
    });
}

#[test]
fn bad_pem_is_an_error_that_names_what_is_missing() {
    let err = UpstreamTls::new()
        .add_ca_pem(b"not a certificate")
        .unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = UpstreamTls::new()
        .add_ca_file("/nonexistent/ca.pem")
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let ca = Ca::new();
    let err = UpstreamTls::new()
        .client_cert_pem(ca.pem().as_bytes(), b"no key here")
        .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}
