//! The forwarder's timeouts over real sockets, as HAProxy splits them: the response
//! head is timed from the end of the upload, idle gaps in bodies are timed both ways,
//! and a stalled upload is the client's fault.

use core::convert::Infallible;
use core::time::Duration;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use roundrobin_hyper::{spawn_on, Balancer, Forwarder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{run, Recording, LOCAL};

const SHORT: Duration = Duration::from_millis(200);

/// A body of `chunks` chunks, one every `gap`.
fn trickle(
    chunks: usize,
    gap: Duration,
) -> StreamBody<impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    StreamBody::new(async_stream(chunks, gap))
}

fn async_stream(
    chunks: usize,
    gap: Duration,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..chunks {
            tokio::time::sleep(gap).await;
            if tx
                .send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio_stream(rx)
}

fn tokio_stream<T>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_core::Stream<Item = T> {
    struct Rx<T>(tokio::sync::mpsc::Receiver<T>);
    impl<T> futures_core::Stream for Rx<T> {
        type Item = T;
        fn poll_next(
            mut self: core::pin::Pin<&mut Self>,
            cx: &mut core::task::Context<'_>,
        ) -> core::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
    Rx(rx)
}

/// A balancer over one backend with `head` and `body` timeouts; its pool records.
async fn proxy_to(
    backend: &roundrobin_hyper::Serving,
    head: Duration,
    body: Duration,
) -> (roundrobin_hyper::Serving, Arc<Recording>) {
    let pool = Arc::new(Recording::default());
    pool.inner.upsert_server(backend.url(), None).unwrap();
    let balancer = Balancer::builder(Arc::clone(&pool))
        .service(Forwarder::new().timeout(head).body_timeout(body));
    (spawn_on(LOCAL, balancer).await.unwrap(), pool)
}

/// Echoes the length of the request body.
async fn counting_backend() -> roundrobin_hyper::Serving {
    spawn_on(
        LOCAL,
        service_fn(|req: Request<Incoming>| async move {
            let n = req
                .into_body()
                .collect()
                .await
                .map_or(0, |b| b.to_bytes().len());
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                n.to_string(),
            ))))
        }),
    )
    .await
    .unwrap()
}

#[test]
fn a_slow_upload_is_not_cut_by_the_response_head_timeout() {
    run(async {
        let backend = counting_backend().await;
        let (p, pool) = proxy_to(&backend, SHORT, Duration::from_secs(2)).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        // 6 chunks, 100 ms apart: 600 ms of upload against a 200 ms head timeout
        let req = Request::post(format!("http://{}/", p.local_addr()))
            .body(trickle(6, SHORT / 2))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "60");
        assert_eq!(pool.outcomes.lock().unwrap().len(), 1);
    });
}

#[test]
fn an_upload_the_client_lets_sit_is_408_and_not_the_servers_fault() {
    run(async {
        let backend = counting_backend().await;
        let (p, pool) = proxy_to(&backend, Duration::from_secs(5), SHORT).await;
        let mut client = TcpStream::connect(p.local_addr()).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(
            pool.outcomes.lock().unwrap().is_empty(),
            "{:?}",
            pool.outcomes
        );
    });
}

#[test]
fn a_response_body_that_stops_coming_is_cut_off() {
    run(async {
        let stalling = spawn_on(
            LOCAL,
            service_fn(|_req: Request<Incoming>| async move {
                // a head, one chunk, then nothing for a long time
                Ok::<_, Infallible>(Response::new(trickle(2, Duration::from_secs(20))))
            }),
        )
        .await
        .unwrap();
        let (p, _pool) = proxy_to(&stalling, Duration::from_secs(5), SHORT).await;
        let mut client = TcpStream::connect(p.local_addr()).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        // the first chunk takes 20 s to come: the cut comes after the idle timeout
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    });
}
