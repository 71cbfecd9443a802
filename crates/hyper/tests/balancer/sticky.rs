//! Sticky sessions: the reference's cases, cookie options, and cookies that must
//! never route outside the pool.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Balancer, RequestBody};
use roundrobin_sticky::codec::Raw;
use roundrobin_sticky::{CookieOptions, SameSite, StickySession};
use tower::service_fn;

use crate::get;
use crate::support::{echo, url, Echo};

/// A balancer with `session` over the servers `names` (weight 1 each, in order).
fn sticky(session: StickySession, names: &[&str]) -> Balancer<Echo, RoundRobin<ServerUrl>> {
    let b = Balancer::builder(RoundRobin::new())
        .sticky(session)
        .service(Echo);
    for name in names {
        b.pool().upsert_server(url(name), None).unwrap();
    }
    b
}

fn raw_cookie(url: &ServerUrl) -> String {
    format!("s={}", url.as_str())
}

#[tokio::test]
async fn a_raw_cookie_of_a_sticks_to_a_and_is_not_set_again() {
    let b = sticky(StickySession::with_codec("s", Raw), &["a", "b"]);
    let cookie = raw_cookie(&url("a"));
    for _ in 0..10 {
        let ans = get(&b, "/", &[("cookie", &cookie)]).await;
        assert_eq!(ans.body, "a");
        assert!(!ans.headers.contains_key("set-cookie"));
    }
}

#[tokio::test]
async fn the_first_response_sets_the_cookie_and_it_is_honoured() {
    let b = sticky(StickySession::new("s"), &["a", "b"]);
    let first = get(&b, "/", &[]).await;
    assert_eq!(first.body, "a");
    let set = first.headers["set-cookie"].to_str().unwrap();
    assert!(
        !set.contains("a:80"),
        "hmac cookies do not disclose the server"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    for _ in 0..4 {
        assert_eq!(get(&b, "/", &[("cookie", &cookie)]).await.body, "a");
    }
    assert_eq!(
        get(&b, "/", &[]).await.body,
        "b",
        "without the cookie: balanced"
    );
}

#[tokio::test]
async fn the_cookie_of_a_removed_server_is_replaced() {
    let b = sticky(StickySession::with_codec("s", Raw), &["a", "b"]);
    let cookie = raw_cookie(&url("a"));
    assert_eq!(get(&b, "/", &[("cookie", &cookie)]).await.body, "a");
    b.pool().remove_server(&url("a")).unwrap();
    let ans = get(&b, "/", &[("cookie", &cookie)]).await;
    assert_eq!(ans.body, "b");
    let set = ans.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with(&format!("s={};", url("b").as_str())),
        "{set}"
    );
}

#[tokio::test]
async fn garbage_cookies_are_served_normally() {
    let b = sticky(StickySession::new("s"), &["a"]);
    for garbage in ["s=%%%", "s=", "s=http://a", "other=1; s=\"x\"; s"] {
        let ans = get(&b, "/", &[("cookie", garbage)]).await;
        assert_eq!((ans.status, ans.body.as_str()), (200, "a"), "{garbage}");
        assert!(ans.headers.contains_key("set-cookie"));
    }
}

#[tokio::test]
async fn no_servers_with_sticky_is_503() {
    let b = sticky(StickySession::with_codec("s", Raw), &[]);
    assert_eq!(get(&b, "/", &[]).await.status, 503);
    b.pool().upsert_server(url("a"), None).unwrap();
    b.pool().remove_server(&url("a")).unwrap();
    let ans = get(&b, "/", &[("cookie", &raw_cookie(&url("a")))]).await;
    assert_eq!(ans.status, 503);
}

#[tokio::test]
async fn every_cookie_option_is_in_set_cookie() {
    let options = CookieOptions {
        http_only: true,
        secure: true,
        path: Some("/app".into()),
        domain: Some("example.com".into()),
        expires: Some(core::time::Duration::from_secs(3600)),
        max_age: Some(core::time::Duration::from_secs(600)),
        same_site: Some(SameSite::Strict),
    };
    let b = sticky(StickySession::with_codec("s", Raw).options(options), &["a"]);
    let ans = get(&b, "/", &[]).await;
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
}

#[tokio::test]
async fn a_cookie_naming_an_address_outside_the_pool_never_reaches_the_inner_service() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = {
        let seen = Arc::clone(&seen);
        service_fn(move |req: Request<RequestBody<Empty<Bytes>>>| {
            seen.lock()
                .unwrap()
                .push(req.uri().authority().unwrap().to_string());
            let res = echo(&req);
            async move { Ok::<_, core::convert::Infallible>(res) }
        })
    };
    let b = Balancer::builder(RoundRobin::new())
        .sticky(StickySession::with_codec("s", Raw))
        .service(inner);
    b.pool().upsert_server(url("a"), None).unwrap();
    for evil in [
        "http://169.254.169.254:80",
        "http://127.0.0.1:22",
        "http://a:81",
    ] {
        let ans = get(&b, "/", &[("cookie", &format!("s={evil}"))]).await;
        assert_eq!(ans.body, "a");
    }
    assert_eq!(*seen.lock().unwrap(), ["a:80", "a:80", "a:80"]);
}
