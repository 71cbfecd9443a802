//! Balancing over real sockets: hyper backends, the proxy and a hyper client on
//! 127.0.0.1. The balancing rules themselves are tested without sockets in
//! `tests/balancer`; these check what only a real hop shows: forwarded headers,
//! hop-by-hop removal and HTTP/2 clients.

use core::time::Duration;

use roundrobin_core::RoundRobin;

use crate::common::{bodies, get, named_backend, proxy, run};

const T: Duration = Duration::from_secs(5);

#[test]
fn two_servers_alternate() {
    run(async {
        let (a, bk) = (named_backend("a").await, named_backend("b").await);
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        b.pool().upsert_server(bk.url(), None).unwrap();
        assert_eq!(bodies(p.local_addr(), 3).await, ["a", "b", "a"]);
    });
}

#[test]
fn request_is_rewritten_and_forwarded_headers_set() {
    run(async {
        let a = named_backend("a").await;
        let (p, b) = proxy(RoundRobin::new(), T).await;
        let prefixed =
            roundrobin_core::ServerUrl::parse(&format!("http://{}/api", a.local_addr())).unwrap();
        b.pool().upsert_server(prefixed, None).unwrap();
        let ans = get(
            p.local_addr(),
            "/x/y?q=1",
            &[
                ("connection", "x-drop"),
                ("x-drop", "1"),
                ("x-keep", "2"),
                ("x-forwarded-for", "10.9.9.9"),
            ],
        )
        .await;
        assert_eq!(ans.status, 200);
        let h = &ans.headers;
        assert_eq!(h["echo-uri"], "/api/x/y?q=1");
        assert_eq!(h["echo-host"], a.local_addr().to_string());
        assert_eq!(h["echo-x-forwarded-host"], p.local_addr().to_string());
        assert_eq!(h["echo-x-forwarded-proto"], "http");
        assert_eq!(h["echo-x-forwarded-for"], "10.9.9.9, 127.0.0.1");
        assert_eq!(h["echo-x-keep"], "2");
        assert!(!h.contains_key("echo-x-drop"));
        assert!(!h.contains_key("echo-connection"));
    });
}

#[test]
fn http2_clients_are_served() {
    run(async {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Empty};

        let a = named_backend("a").await;
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http::<Empty<Bytes>>();
        let res = client
            .request(
                http::Request::get(format!("http://{}/h2?x=1", p.local_addr()))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.headers()["echo-uri"], "/h2?x=1");
        assert_eq!(
            res.headers()["echo-x-forwarded-host"],
            p.local_addr().to_string()
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "a");
    });
}
