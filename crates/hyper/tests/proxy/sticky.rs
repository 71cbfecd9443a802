//! Sticky sessions end to end: the reference's cases, cookie options, and a cookie
//! naming an address outside the pool.

use core::future::poll_fn;
use core::task::Poll;
use core::time::Duration;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Balancer, Forwarder};
use roundrobin_sticky::codec::Raw;
use roundrobin_sticky::{CookieOptions, SameSite, StickySession};
use tokio::net::TcpListener;

use crate::common::{get, named_backend, run, start, Running};

/// A proxy with `session` in front of `backends` (weight 1 each, in order).
async fn sticky_proxy(
    session: StickySession,
    backends: &[&Running],
) -> (Running, Balancer<Forwarder, RoundRobin<ServerUrl>>) {
    let balancer = Balancer::builder(RoundRobin::new())
        .sticky(session)
        .service(Forwarder::new());
    for backend in backends {
        balancer.pool().upsert_server(backend.url(), None).unwrap();
    }
    (start(balancer.clone()).await, balancer)
}

fn raw_cookie(url: &ServerUrl) -> String {
    format!("s={}", url.as_str())
}

#[test]
fn raw_cookie_of_a_sticks_to_a() {
    run(async {
        let (a, b) = (named_backend("a").await, named_backend("b").await);
        let (p, _) = sticky_proxy(StickySession::with_codec("s", Raw), &[&a, &b]).await;
        let cookie = raw_cookie(&a.url());
        for _ in 0..10 {
            let ans = get(p.addr, "/", &[("cookie", &cookie)]).await;
            assert_eq!(ans.body, "a");
            assert!(
                !ans.headers.contains_key("set-cookie"),
                "a valid cookie is not re-set"
            );
        }
    });
}

#[test]
fn first_response_sets_the_cookie_and_it_is_honoured() {
    run(async {
        let (a, b) = (named_backend("a").await, named_backend("b").await);
        let (p, _) = sticky_proxy(StickySession::new("s"), &[&a, &b]).await;
        let first = get(p.addr, "/", &[]).await;
        assert_eq!(first.body, "a");
        let set = first.headers["set-cookie"].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        assert!(
            !set.contains(&a.addr.to_string()),
            "hmac cookies do not disclose the backend"
        );
        for _ in 0..4 {
            assert_eq!(get(p.addr, "/", &[("cookie", &cookie)]).await.body, "a");
        }
        // Without the cookie the balancer goes on: b is next.
        assert_eq!(get(p.addr, "/", &[]).await.body, "b");
    });
}

#[test]
fn removed_server_cookie_is_replaced() {
    run(async {
        let (a, b) = (named_backend("a").await, named_backend("b").await);
        let (p, bal) = sticky_proxy(StickySession::with_codec("s", Raw), &[&a, &b]).await;
        let cookie = raw_cookie(&a.url());
        assert_eq!(get(p.addr, "/", &[("cookie", &cookie)]).await.body, "a");
        bal.pool().remove_server(&a.url()).unwrap();
        let ans = get(p.addr, "/", &[("cookie", &cookie)]).await;
        assert_eq!(ans.body, "b");
        let set = ans.headers["set-cookie"].to_str().unwrap();
        assert!(
            set.starts_with(&format!("s={};", b.url().as_str())),
            "{set}"
        );
    });
}

#[test]
fn garbage_cookie_is_served_normally() {
    run(async {
        let a = named_backend("a").await;
        let (p, _) = sticky_proxy(StickySession::new("s"), &[&a]).await;
        for garbage in ["s=%%%", "s=", "s=http://a", "other=1; s=\"x\"; s"] {
            let ans = get(p.addr, "/", &[("cookie", garbage)]).await;
            assert_eq!((ans.status, ans.body.as_str()), (200, "a"), "{garbage}");
            assert!(ans.headers.contains_key("set-cookie"));
        }
    });
}

#[test]
fn no_servers_with_sticky_is_503() {
    run(async {
        let a = named_backend("a").await;
        let (p, bal) = sticky_proxy(StickySession::with_codec("s", Raw), &[]).await;
        assert_eq!(get(p.addr, "/", &[]).await.status, 503);
        bal.pool().upsert_server(a.url(), None).unwrap();
        bal.pool().remove_server(&a.url()).unwrap();
        let ans = get(p.addr, "/", &[("cookie", &raw_cookie(&a.url()))]).await;
        assert_eq!(ans.status, 503);
    });
}

#[test]
fn every_cookie_option_is_in_set_cookie() {
    run(async {
        let a = named_backend("a").await;
        let options = CookieOptions {
            http_only: true,
            secure: true,
            path: Some("/app".into()),
            domain: Some("example.com".into()),
            expires: Some(Duration::from_secs(3600)),
            max_age: Some(Duration::from_secs(600)),
            same_site: Some(SameSite::Strict),
        };
        let (p, _) =
            sticky_proxy(StickySession::with_codec("s", Raw).options(options), &[&a]).await;
        let ans = get(p.addr, "/", &[]).await;
        let set = ans.headers["set-cookie"].to_str().unwrap();
        for part in [
            "HttpOnly",
            "Secure",
            "Path=/app",
            "Domain=example.com",
            "Expires=",
            "Max-Age=600",
            "SameSite=Strict",
        ] {
            assert!(set.contains(part), "{part} missing from {set}");
        }
    });
}

#[test]
fn cookie_naming_an_address_outside_the_pool_is_never_contacted() {
    run(async {
        let a = named_backend("a").await;
        let evil = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let evil_url = ServerUrl::parse(&format!("http://{}", evil.local_addr().unwrap())).unwrap();
        let (p, _) = sticky_proxy(StickySession::with_codec("s", Raw), &[&a]).await;
        for _ in 0..5 {
            let ans = get(p.addr, "/", &[("cookie", &raw_cookie(&evil_url))]).await;
            assert_eq!(ans.body, "a");
        }
        // Every request was answered, so any connection to `evil` would be queued by now.
        let accepted = poll_fn(|cx| Poll::Ready(evil.poll_accept(cx).is_ready())).await;
        assert!(
            !accepted,
            "the proxy connected to an address outside the pool"
        );
    });
}
