//! What never reaches a server: requests refused before one is chosen, and bodies over
//! the limit. None of them is recorded against a server.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::{Empty, Full};
use roundrobin_hyper::Balancer;
use tower::ServiceExt;

use crate::support::{url, Echo, Recording};

type Pool = Arc<Recording<fn() -> Instant>>;

async fn status<B>(b: &Balancer<Echo, Pool>, req: Request<B>) -> u16
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<roundrobin_hyper::BoxError>,
{
    b.clone().oneshot(req).await.unwrap().status().as_u16()
}

fn balancer(max_body: Option<u64>) -> (Balancer<Echo, Pool>, Pool) {
    let pool = Arc::new(Recording::new(Instant::now as fn() -> Instant));
    pool.inner.upsert_server(url("a"), None).unwrap();
    let builder = Balancer::builder(Arc::clone(&pool));
    let builder = match max_body {
        Some(max) => builder.max_body(max),
        None => builder,
    };
    (builder.service(Echo), pool)
}

fn get(target: &str) -> http::request::Builder {
    Request::get(target).header("host", "front")
}

#[tokio::test]
async fn connect_is_405_and_never_reaches_a_server() {
    let (b, pool) = balancer(None);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("10.0.0.1:22")
        .header("host", "10.0.0.1:22")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(status(&b, req).await, 405);
    assert!(pool.statuses().is_empty());
}

#[tokio::test]
async fn request_targets_that_are_not_paths_are_400() {
    let (b, pool) = balancer(None);
    for target in ["foo", "example.com:80", "*"] {
        let req = get(target).body(Empty::<Bytes>::new()).unwrap();
        assert_eq!(status(&b, req).await, 400, "{target}");
    }
    let options = Request::options("*")
        .header("host", "front")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(status(&b, options).await, 200, "OPTIONS * is fine");
    let absolute = get("http://elsewhere.example:9/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        status(&b, absolute).await,
        200,
        "absolute-form: rewritten to the pool"
    );
    assert_eq!(pool.statuses().len(), 2);
}

#[tokio::test]
async fn http11_needs_exactly_one_host() {
    let (b, _pool) = balancer(None);
    let none = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(status(&b, none).await, 400);
    let two = Request::get("/")
        .header("host", "a")
        .header("host", "b")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(status(&b, two).await, 400);
    let http10 = Request::get("/")
        .version(Version::HTTP_10)
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(status(&b, http10).await, 200, "HTTP/1.0 may omit it");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let (b, pool) = balancer(Some(4));
    let declared = Request::post("/")
        .header("host", "front")
        .header("content-length", "5")
        .body(Full::new(Bytes::from("12345")))
        .unwrap();
    assert_eq!(status(&b, declared).await, 413);
    let small = Request::post("/")
        .header("host", "front")
        .body(Full::new(Bytes::from("1234")))
        .unwrap();
    assert_eq!(status(&b, small).await, 200);
    assert_eq!(pool.statuses().len(), 1, "the refused one is not recorded");
}
