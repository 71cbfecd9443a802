//! Retries with redispatch: which failures send a request to another server, how many
//! times, and what is recorded.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use roundrobin_hyper::{Balancer, Error, RequestBody, Retry, RetryOn};
use roundrobin_sticky::codec::Raw;
use roundrobin_sticky::StickySession;
use tower::{service_fn, ServiceExt};

use crate::support::{echo, url, Recording};
use crate::{bodies, get};

/// A server's behaviour, by host name: `dead*` refuse connections, `reset*` reset them
/// before answering, `busy*` answer 503, anything else echoes.
fn fleet<B: http_body::Body>(
    seen: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<RequestBody<B>>,
    Response = Response<Full<Bytes>>,
    Error = Error,
    Future = impl Send,
> + Clone
where
    B::Error: Into<roundrobin_hyper::BoxError>,
{
    service_fn(move |req: Request<RequestBody<B>>| {
        let host = req.uri().host().unwrap_or_default().to_owned();
        seen.lock().unwrap().push(host.clone());
        let answer = if host.starts_with("dead") {
            Err(Error::Connect("connection refused".into()))
        } else if host.starts_with("reset") {
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            Err(Error::Upstream(Box::new(reset)))
        } else if host.starts_with("busy") {
            let mut res = echo(&req);
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok(res)
        } else {
            Ok(echo(&req))
        };
        async move { answer }
    })
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_the_next_server_and_both_tries_are_recorded() {
    let pool = Arc::new(Recording::new(Instant::now));
    let seen = Arc::default();
    let b = Balancer::builder(Arc::clone(&pool)).service(fleet(Arc::clone(&seen)));
    for name in ["dead", "live"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    let ans = get(&b, "/", &[]).await;
    assert_eq!((ans.status, ans.body.as_str()), (200, "live"));
    assert_eq!(pool.statuses(), [(url("dead"), 502), (url("live"), 200)]);
    assert_eq!(*seen.lock().unwrap(), ["dead", "live"]);
}

#[tokio::test]
async fn retries_stop_after_the_limit_and_never_try_a_server_twice() {
    let pool = Arc::new(Recording::new(Instant::now));
    let seen = Arc::default();
    let b = Balancer::builder(Arc::clone(&pool))
        .retry(Retry {
            retries: 2,
            on: RetryOn::default(),
        })
        .service(fleet(Arc::clone(&seen)));
    for name in ["dead1", "dead2", "dead3", "dead4"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    assert_eq!(get(&b, "/", &[]).await.status, 502);
    assert_eq!(
        *seen.lock().unwrap(),
        ["dead1", "dead2", "dead3"],
        "3 tries"
    );
    // with only two servers, the third try has nowhere to go: the last answer stands
    let pool = Arc::new(Recording::new(Instant::now));
    let seen = Arc::default();
    let b = Balancer::builder(Arc::clone(&pool)).service(fleet(Arc::clone(&seen)));
    for name in ["dead1", "dead2"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    assert_eq!(get(&b, "/", &[]).await.status, 502);
    assert_eq!(*seen.lock().unwrap(), ["dead1", "dead2"]);
    assert_eq!(pool.statuses().len(), 2, "every try recorded once");
}

#[tokio::test]
async fn a_reset_is_retried_for_idempotent_methods_only() {
    let pool = Arc::new(Recording::new(Instant::now));
    let seen = Arc::default();
    let b = Balancer::builder(Arc::clone(&pool)).service(fleet(Arc::clone(&seen)));
    for name in ["reset", "live"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    assert_eq!(bodies(&b, 1).await, ["live"], "GET: retried");
    // POST without a body after a reset: the server may have acted on it
    let post = Request::post("/")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = b.clone().oneshot(post).await.unwrap();
    assert_eq!(res.status(), 502);
    // ... but a refused connection sent nothing: POST is retried then
    pool.inner.remove_server(&url("reset")).unwrap();
    pool.inner.upsert_server(url("dead"), None).unwrap();
    let post = Request::post("/")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = b.clone().oneshot(post).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_request_with_a_body_is_never_retried() {
    let pool = Arc::new(Recording::new(Instant::now));
    let seen = Arc::default();
    let b = Balancer::builder(Arc::clone(&pool)).service(fleet(Arc::clone(&seen)));
    for name in ["dead", "live"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    let put = Request::put("/")
        .header("host", "x")
        .body(Full::new(Bytes::from("data")))
        .unwrap();
    let res = b.clone().oneshot(put).await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(*seen.lock().unwrap(), ["dead"]);
}

#[tokio::test]
async fn statuses_are_retried_only_when_asked_and_the_last_answer_stands() {
    let pool = Arc::new(Recording::new(Instant::now));
    let seen = Arc::default();
    let default = Balancer::builder(Arc::clone(&pool)).service(fleet(Arc::clone(&seen)));
    for name in ["busy1", "busy2", "live"] {
        pool.inner.upsert_server(url(name), None).unwrap();
    }
    assert_eq!(get(&default, "/", &[]).await.status, 503, "off by default");
    let on = RetryOn::parse("connect,reset,503").unwrap();
    let retrying = Balancer::builder(Arc::clone(&pool))
        .retry(Retry { retries: 1, on })
        .service(fleet(Arc::clone(&seen)));
    // the sequence goes on at busy2: retried once, to live
    let ans = get(&retrying, "/", &[]).await;
    assert_eq!((ans.status, ans.body.as_str()), (200, "live"));
    // busy1 then busy2: one retry only, busy2's 503 is the answer
    let ans = get(&retrying, "/", &[]).await;
    assert_eq!((ans.status, ans.body.as_str()), (503, "busy2"));
}

#[tokio::test]
async fn a_sticky_request_whose_server_is_down_gets_another_server_and_a_new_cookie() {
    let seen = Arc::default();
    let b = Balancer::builder(roundrobin_core::RoundRobin::new())
        .sticky(StickySession::with_codec("s", Raw))
        .service(fleet(Arc::clone(&seen)));
    for name in ["live", "dead"] {
        b.pool().upsert_server(url(name), None).unwrap();
    }
    let cookie = format!("s={}", url("dead").as_str());
    let ans = get(&b, "/", &[("cookie", &cookie)]).await;
    assert_eq!((ans.status, ans.body.as_str()), (200, "live"));
    let set = ans.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with(&format!("s={};", url("live").as_str())),
        "{set}"
    );
}

#[tokio::test]
async fn a_failed_client_body_is_400_and_not_recorded_against_the_server() {
    let pool = Arc::new(Recording::new(Instant::now));
    // the inner service reads the body, as a forwarder does
    let inner = service_fn(|req: Request<RequestBody<_>>| async move {
        let host = req.uri().host().unwrap_or_default().to_owned();
        match req.into_body().collect().await {
            Ok(_) => Ok(Response::new(Full::new(Bytes::from(host)))),
            Err(e) => Err(Box::new(e) as roundrobin_hyper::BoxError),
        }
    });
    let b = Balancer::builder(Arc::clone(&pool)).service(inner);
    pool.inner.upsert_server(url("a"), None).unwrap();
    let body = BrokenUpload(false);
    let res = b
        .clone()
        .oneshot(Request::post("/").header("host", "x").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        pool.statuses().is_empty(),
        "the client's fault, not the server's"
    );
}

/// An upload that sends one chunk, then fails as an invalid chunked body does.
struct BrokenUpload(bool);

impl http_body::Body for BrokenUpload {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: core::pin::Pin<&mut Self>,
        _cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if core::mem::replace(&mut self.0, true) {
            let bad = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size");
            core::task::Poll::Ready(Some(Err(bad)))
        } else {
            core::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from("half")))))
        }
    }
}

/// Answers with the host and the length of the body it read, or refuses for `dead*`.
fn reading_fleet(
    seen: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<RequestBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = roundrobin_hyper::BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<RequestBody<Full<Bytes>>>| {
        let seen = Arc::clone(&seen);
        async move {
            let host = req.uri().host().unwrap_or_default().to_owned();
            seen.lock().unwrap().push(host.clone());
            if host.starts_with("dead") {
                return Err(Box::new(Error::Connect("connection refused".into()))
                    as roundrobin_hyper::BoxError);
            }
            let body = req.into_body().collect().await?.to_bytes();
            Ok(Response::new(Full::new(Bytes::from(format!(
                "{host} {}",
                body.len()
            )))))
        }
    })
}

#[tokio::test]
async fn with_replay_bodies_an_idempotent_request_with_a_small_body_is_retried_whole() {
    // A fresh pool for each request: its first pick is `dead`, which refuses.
    let send = |req: Request<Full<Bytes>>| async move {
        let pool = Arc::new(Recording::new(Instant::now));
        let seen = Arc::default();
        let b = Balancer::builder(Arc::clone(&pool))
            .replay_bodies(1024)
            .service(reading_fleet(Arc::clone(&seen)));
        for name in ["dead", "live"] {
            pool.inner.upsert_server(url(name), None).unwrap();
        }
        let res = b.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let seen = seen.lock().unwrap().clone();
        (status, body, seen)
    };
    let request = |method: http::Method, body: Vec<u8>| {
        Request::builder()
            .method(method)
            .uri("/")
            .header("host", "x")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let (status, body, seen) = send(request(http::Method::PUT, b"0123456789".to_vec())).await;
    assert_eq!(
        (status, &body[..]),
        (200, &b"live 10"[..]),
        "the whole body, again"
    );
    assert_eq!(seen, ["dead", "live"]);
    // POST is not idempotent: never buffered, never retried with its body
    let (status, _, seen) = send(request(http::Method::POST, b"x".to_vec())).await;
    assert_eq!((status, seen.len()), (502, 1));
    // above the limit: streamed, not retried
    let (status, _, seen) = send(request(http::Method::PUT, vec![b'x'; 2048])).await;
    assert_eq!((status, seen.len()), (502, 1));
}
