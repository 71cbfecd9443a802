//! The reference's HTTP-level balancing cases, and the request rewrite.

use std::sync::Arc;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::Balancer;

use crate::support::{url, Echo};
use crate::{bodies, get};

fn balancer() -> Balancer<Echo, RoundRobin<ServerUrl>> {
    Balancer::builder(RoundRobin::new()).service(Echo)
}

#[tokio::test]
async fn no_servers_is_503_with_an_empty_body() {
    let a = get(&balancer(), "/", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (503, ""));
}

#[tokio::test]
async fn one_server_two_servers_and_a_removed_one() {
    let b = balancer();
    b.pool().upsert_server(url("a"), None).unwrap();
    assert_eq!(bodies(&b, 3).await, ["a", "a", "a"]);
    b.pool().upsert_server(url("b"), None).unwrap();
    assert_eq!(bodies(&b, 3).await, ["a", "b", "a"]);
    b.pool().remove_server(&url("a")).unwrap();
    assert_eq!(bodies(&b, 3).await, ["b", "b", "b"]);
    assert!(b.pool().remove_server(&url("a")).is_err());
}

#[tokio::test]
async fn upserting_the_same_server_twice_keeps_one() {
    let b = balancer();
    b.pool().upsert_server(url("a"), None).unwrap();
    b.pool().upsert_server(url("a"), None).unwrap();
    assert_eq!(b.pool().servers().len(), 1);
    assert_eq!(bodies(&b, 3).await, ["a", "a", "a"]);
}

#[tokio::test]
async fn weight_three_restarts_the_sequence() {
    let b = balancer();
    b.pool().upsert_server(url("a"), None).unwrap();
    b.pool().upsert_server(url("b"), None).unwrap();
    b.pool().upsert_server(url("b"), Some(3)).unwrap();
    assert_eq!(b.pool().server_weight(&url("b")), Some(3));
    assert_eq!(bodies(&b, 4).await, ["b", "b", "a", "b"]);
}

#[tokio::test]
async fn weights_three_two_zero_through_a_shared_pool() {
    let pool = Arc::new(RoundRobin::new());
    let b = Balancer::builder(Arc::clone(&pool)).service(Echo);
    pool.upsert_server(url("a"), Some(3)).unwrap();
    pool.upsert_server(url("b"), Some(2)).unwrap();
    pool.upsert_server(url("z"), Some(0)).unwrap();
    assert_eq!(bodies(&b, 6).await, ["a", "a", "b", "a", "b", "a"]);
}

#[tokio::test]
async fn all_weights_zero_or_all_removed_is_503() {
    let b = balancer();
    b.pool().upsert_server(url("a"), None).unwrap();
    assert_eq!(get(&b, "/", &[]).await.status, 200);
    b.pool().upsert_server(url("a"), Some(0)).unwrap();
    assert_eq!(get(&b, "/", &[]).await.status, 503);
    b.pool().remove_server(&url("a")).unwrap();
    assert_eq!(get(&b, "/", &[]).await.status, 503);
}

#[tokio::test]
async fn the_uri_points_at_the_server_with_its_path_prefix() {
    let b = balancer();
    b.pool()
        .upsert_server(ServerUrl::parse("http://a:81/api").unwrap(), None)
        .unwrap();
    let ans = get(&b, "/x/y?q=1", &[]).await;
    assert_eq!(ans.headers["echo-uri"], "http://a:81/api/x/y?q=1");
    assert_eq!(
        ans.headers["echo-host"], "front.example",
        "Host is the forwarder's job"
    );
}

#[tokio::test]
async fn the_rewrite_hook_sees_the_original_and_the_rewritten_request() {
    let b = Balancer::builder(RoundRobin::new())
        .rewrite(
            |original: &http::Uri, server: &ServerUrl, req: &mut http::request::Parts| {
                let seen = format!("{original} -> {} via {server}", req.uri);
                req.headers.insert("x-seen", seen.parse().unwrap());
            },
        )
        .service(Echo);
    b.pool().upsert_server(url("a"), None).unwrap();
    let ans = get(&b, "/p?q", &[]).await;
    assert_eq!(
        ans.headers["echo-x-seen"],
        "/p?q -> http://a:80/p?q via http://a:80"
    );
}

#[tokio::test]
async fn the_inner_service_is_reachable() {
    let mut b = balancer();
    let _: &Echo = b.get_ref();
    let _: &mut Echo = b.get_mut();
    let Echo = b.into_inner();
}
