//! The reference's HTTP-level balancing tests, translated.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::RoundRobin;
use roundrobin_hyper::Pool;

use crate::common::{bodies, get, named_backend, proxy, run};

const T: Duration = Duration::from_secs(5);

#[test]
fn no_servers_is_503() {
    run(async {
        let (p, _b) = proxy(RoundRobin::new(), T).await;
        let a = get(p.addr, "/", &[]).await;
        assert_eq!(a.status, 503);
        assert_eq!(a.body, "");
    });
}

#[test]
fn one_server() {
    run(async {
        let a = named_backend("a").await;
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        assert_eq!(bodies(p.addr, 3).await, ["a", "a", "a"]);
    });
}

#[test]
fn two_servers_alternate() {
    run(async {
        let (a, bk) = (named_backend("a").await, named_backend("b").await);
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        b.pool().upsert_server(bk.url(), None).unwrap();
        assert_eq!(bodies(p.addr, 3).await, ["a", "b", "a"]);
    });
}

#[test]
fn removed_server_is_not_used() {
    run(async {
        let (a, bk) = (named_backend("a").await, named_backend("b").await);
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        b.pool().upsert_server(bk.url(), None).unwrap();
        b.pool().remove_server(&a.url()).unwrap();
        assert_eq!(bodies(p.addr, 3).await, ["b", "b", "b"]);
        assert!(b.pool().remove_server(&a.url()).is_err());
    });
}

#[test]
fn upsert_same_server_twice() {
    run(async {
        let a = named_backend("a").await;
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        b.pool().upsert_server(a.url(), None).unwrap();
        assert_eq!(b.pool().servers().len(), 1);
        assert_eq!(bodies(p.addr, 3).await, ["a", "a", "a"]);
    });
}

#[test]
fn upsert_weight_three() {
    run(async {
        let (a, bk) = (named_backend("a").await, named_backend("b").await);
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        b.pool().upsert_server(bk.url(), None).unwrap();
        b.pool().upsert_server(bk.url(), Some(3)).unwrap();
        assert_eq!(b.pool().server_weight(&bk.url()), Some(3));
        assert_eq!(bodies(p.addr, 4).await, ["b", "b", "a", "b"]);
    });
}

#[test]
fn weights_three_two_zero() {
    run(async {
        let (a, bk, z) = (
            named_backend("a").await,
            named_backend("b").await,
            named_backend("z").await,
        );
        let (p, b) = proxy(Arc::new(RoundRobin::new()), T).await;
        b.pool().upsert_server(a.url(), Some(3)).unwrap();
        b.pool().upsert_server(bk.url(), Some(2)).unwrap();
        b.pool().upsert_server(z.url(), Some(0)).unwrap();
        assert_eq!(bodies(p.addr, 6).await, ["a", "a", "b", "a", "b", "a"]);
    });
}

#[test]
fn all_servers_removed_is_503_and_all_zero_is_503() {
    run(async {
        let a = named_backend("a").await;
        let (p, b) = proxy(RoundRobin::new(), T).await;
        b.pool().upsert_server(a.url(), None).unwrap();
        assert_eq!(get(p.addr, "/", &[]).await.status, 200);
        b.pool().upsert_server(a.url(), Some(0)).unwrap();
        assert_eq!(get(p.addr, "/", &[]).await.status, 503);
        b.pool().remove_server(&a.url()).unwrap();
        assert_eq!(get(p.addr, "/", &[]).await.status, 503);
    });
}

#[test]
fn request_is_rewritten_and_forwarded_headers_set() {
    run(async {
        let a = named_backend("a").await;
        let (p, b) = proxy(RoundRobin::new(), T).await;
        let prefixed =
            roundrobin_core::ServerUrl::parse(&format!("http://{}/api", a.addr)).unwrap();
        b.pool().upsert_server(prefixed, None).unwrap();
        let ans = get(
            p.addr,
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
        assert_eq!(h["echo-host"], a.addr.to_string());
        assert_eq!(h["echo-x-forwarded-host"], p.addr.to_string());
        assert_eq!(h["echo-x-forwarded-proto"], "http");
        assert_eq!(h["echo-x-forwarded-for"], "10.9.9.9, 127.0.0.1");
        assert_eq!(h["echo-x-keep"], "2");
        assert!(!h.contains_key("echo-x-drop"));
        assert!(!h.contains_key("echo-connection"));
    });
}

#[test]
fn rewrite_hook_sees_original_and_rewritten() {
    run(async {
        let a = named_backend("a").await;
        let balancer = roundrobin_hyper::Balancer::builder(RoundRobin::new())
            .rewrite(
                |original: &http::Uri,
                 server: &roundrobin_core::ServerUrl,
                 req: &mut http::request::Parts| {
                    let seen = format!("{original} -> {} via {server}", req.uri);
                    req.headers.insert("x-seen", seen.parse().unwrap());
                },
            )
            .service(roundrobin_hyper::Forwarder::new());
        balancer.pool().upsert_server(a.url(), None).unwrap();
        let p = crate::common::start(balancer).await;
        let ans = get(p.addr, "/p?q", &[]).await;
        assert_eq!(
            ans.headers["echo-x-seen"],
            format!("/p?q -> http://{0}/p?q via http://{0}", a.addr)
        );
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
                http::Request::get(format!("http://{}/h2?x=1", p.addr))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.headers()["echo-uri"], "/h2?x=1");
        assert_eq!(res.headers()["echo-x-forwarded-host"], p.addr.to_string());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "a");
    });
}
