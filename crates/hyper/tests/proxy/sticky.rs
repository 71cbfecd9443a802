//! Sticky sessions over real sockets: a cookie set by the proxy and sent back by a
//! client, and a cookie naming a listening address outside the pool that must never
//! be contacted. The other cases run without sockets in `tests/balancer`.

use core::future::poll_fn;
use core::task::Poll;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{Balancer, Forwarder};
use roundrobin_sticky::codec::Raw;
use roundrobin_sticky::StickySession;
use tokio::net::TcpListener;

use roundrobin_hyper::Serving;

use roundrobin_hyper::spawn_on;

use crate::common::{get, named_backend, run, LOCAL};

/// A proxy with `session` in front of `backends` (weight 1 each, in order).
async fn sticky_proxy(
    session: StickySession,
    backends: &[&Serving],
) -> (Serving, Balancer<Forwarder, RoundRobin<ServerUrl>>) {
    let balancer = Balancer::builder(RoundRobin::new())
        .sticky(session)
        .service(Forwarder::new());
    for backend in backends {
        balancer.pool().upsert_server(backend.url(), None).unwrap();
    }
    (spawn_on(LOCAL, balancer.clone()).await.unwrap(), balancer)
}

fn raw_cookie(url: &ServerUrl) -> String {
    format!("s={}", url.as_str())
}

#[test]
fn first_response_sets_the_cookie_and_it_is_honoured() {
    run(async {
        let (a, b) = (named_backend("a").await, named_backend("b").await);
        let (p, _) = sticky_proxy(StickySession::new("s"), &[&a, &b]).await;
        let first = get(p.local_addr(), "/", &[]).await;
        assert_eq!(first.body, "a");
        let set = first.headers["set-cookie"].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        assert!(
            !set.contains(&a.local_addr().to_string()),
            "hmac cookies do not disclose the backend"
        );
        for _ in 0..4 {
            assert_eq!(
                get(p.local_addr(), "/", &[("cookie", &cookie)]).await.body,
                "a"
            );
        }
        // Without the cookie the balancer goes on: b is next.
        assert_eq!(get(p.local_addr(), "/", &[]).await.body, "b");
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
            let ans = get(p.local_addr(), "/", &[("cookie", &raw_cookie(&evil_url))]).await;
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
