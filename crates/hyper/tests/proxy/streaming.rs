//! A 64 MiB body goes through the proxy both ways without being buffered.

use core::convert::Infallible;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use roundrobin_core::RoundRobin;
use roundrobin_hyper::default_client;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use roundrobin_hyper::spawn_on;

use crate::common::{proxy, run, LOCAL};

const TOTAL: u64 = 64 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A body produced lazily, chunk by chunk. Half-way it stops producing until the
/// client has received echoed bytes back: a proxy that buffered either body whole would
/// never deliver them, and the test would time out.
struct Lazy {
    left: u64,
    echoed: Arc<AtomicU64>,
    echo_seen: Arc<Notify>,
    waiting: Option<Pin<Box<OwnedNotified>>>,
}

impl Body for Lazy {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        while self.left <= TOTAL / 2 && self.echoed.load(Ordering::SeqCst) == 0 {
            let echo_seen = Arc::clone(&self.echo_seen);
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(echo_seen.notified_owned()));
            if waiting.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.waiting = None;
        }
        let n = self.left.min(CHUNK as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &ZEROS[..n as usize],
        )))))
    }
}

#[test]
fn large_body_streams_both_ways() {
    run(async {
        // The backend echoes the request body as it arrives.
        let echo = spawn_on(
            LOCAL,
            service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(Response::new(req.into_body()))
            }),
        )
        .await
        .unwrap();
        let (p, b) = proxy(RoundRobin::new(), Duration::from_secs(10)).await;
        b.pool().upsert_server(echo.url(), None).unwrap();

        let echoed = Arc::new(AtomicU64::new(0));
        let echo_seen = Arc::new(Notify::new());
        let body = Lazy {
            left: TOTAL,
            echoed: Arc::clone(&echoed),
            echo_seen: Arc::clone(&echo_seen),
            waiting: None,
        };
        let client = default_client::<Lazy>();
        let req = Request::post(format!("http://{}/echo", p.local_addr()))
            .header("host", p.local_addr().to_string())
            .body(body)
            .unwrap();
        let mut res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        while let Some(frame) = poll_fn(|cx| Pin::new(res.body_mut()).poll_frame(cx)).await {
            if let Ok(data) = frame.unwrap().into_data() {
                echoed.fetch_add(data.len() as u64, Ordering::SeqCst);
                echo_seen.notify_one();
            }
        }
        assert_eq!(echoed.load(Ordering::SeqCst), TOTAL);
    });
}
