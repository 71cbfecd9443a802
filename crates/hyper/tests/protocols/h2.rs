//! HTTP/2 both ways: `h2c://` servers, HTTP/2 clients (prior knowledge), trailers.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_core::ServerUrl;
use roundrobin_hyper::{spawn_on, Balancer, Forwarder};

use crate::common::{backend, pool, run};

fn url(scheme: &str, addr: core::net::SocketAddr) -> ServerUrl {
    ServerUrl::parse(&format!("{scheme}://{addr}")).unwrap()
}

#[test]
fn an_http1_client_reaches_h2c_servers_split_by_weight() {
    run(async {
        let (a, b) = (backend("a", None).await, backend("b", None).await);
        let pool = pool(&[(url("h2c", a.addr), 2), (url("h2c", b.addr), 1)]);
        let balancer = Balancer::builder(pool).service(Forwarder::new());
        let proxy = spawn_on("127.0.0.1:0", balancer).await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut counts = [0; 2];
        for _ in 0..30 {
            let req = Request::get(format!("http://{}/x?y=1", proxy.local_addr()))
                .header("host", "front.example")
                .body(Empty::new())
                .unwrap();
            let res = client.request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.version(), Version::HTTP_11, "the client's own version");
            let h = res.headers().clone();
            assert_eq!(h["seen-version"], "HTTP/2.0");
            // On the wire the scheme is http: h2c only says how to connect.
            assert!(h["seen-uri"]
                .to_str()
                .unwrap()
                .starts_with("http://127.0.0.1:"));
            assert!(h["seen-uri"].to_str().unwrap().ends_with("/x?y=1"));
            assert_eq!(h["seen-x-forwarded-host"], "front.example");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            counts[usize::from(body == "b")] += 1;
        }
        assert_eq!(counts, [20, 10]);
    });
}

#[test]
fn an_h2_client_reaches_http1_and_h2c_servers_and_its_authority_is_the_forwarded_host() {
    run(async {
        let (a, b) = (backend("a", None).await, backend("b", None).await);
        let pool = pool(&[(url("http", a.addr), 1), (url("h2c", b.addr), 1)]);
        let balancer = Balancer::builder(pool).service(Forwarder::new());
        let proxy = spawn_on("127.0.0.1:0", balancer).await.unwrap();
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let mut seen = Vec::new();
        for _ in 0..4 {
            // An HTTP/2 request has no Host header: `:authority` names the host.
            let req = Request::post(format!("http://{}/p", proxy.local_addr()))
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap();
            let res = client.request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.version(), Version::HTTP_2);
            let h = res.headers().clone();
            assert_eq!(
                h["seen-x-forwarded-host"],
                proxy.local_addr().to_string().as_str()
            );
            let body = res.into_body().collect().await.unwrap().to_bytes();
            seen.push((body, h["seen-version"].to_str().unwrap().to_owned()));
        }
        seen.sort();
        assert_eq!(
            seen.iter()
                .map(|(b, v)| (&b[..], v.as_str()))
                .collect::<Vec<_>>(),
            [
                (&b"a"[..], "HTTP/1.1"),
                (&b"a"[..], "HTTP/1.1"),
                (&b"b"[..], "HTTP/2.0"),
                (&b"b"[..], "HTTP/2.0")
            ]
        );
    });
}

#[test]
fn te_trailers_reaches_the_server_and_other_te_values_do_not() {
    run(async {
        let a = backend("a", None).await;
        let pool = pool(&[(url("h2c", a.addr), 1)]);
        let proxy = spawn_on(
            "127.0.0.1:0",
            Balancer::builder(pool).service(Forwarder::new()),
        )
        .await
        .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        for (te, seen) in [("trailers", Some("trailers")), ("gzip", None)] {
            let req = Request::get(format!("http://{}/", proxy.local_addr()))
                .header("host", "x")
                .header("te", te)
                .body(Empty::new())
                .unwrap();
            let res = client.request(req).await.unwrap();
            assert_eq!(
                res.headers().get("seen-te").map(|v| v.to_str().unwrap()),
                seen,
                "{te}"
            );
        }
    });
}
