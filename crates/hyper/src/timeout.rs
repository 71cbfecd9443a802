//! The forwarder's body timeouts: an upload that stops moving, a download that stops
//! coming, and the moment an upload ends (when the response-head timeout starts).

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;
use std::sync::Arc;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::connpool::Lease;
use crate::{BoxError, ClientBodyError};

/// How an upload is going, shared by its body and the forwarder's future.
#[derive(Debug)]
pub(crate) struct UploadState {
    base: Instant,
    /// Milliseconds from `base` to the last frame.
    last: AtomicU64,
    /// The body waits for the client (not for the server to take data).
    waiting_on_client: AtomicBool,
    done: AtomicBool,
    notify: Notify,
}

impl UploadState {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            done: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    fn progress(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// When the upload stops being idle-for-too-long, if it does not move before.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }

    /// Whether the client (not the server) is the one holding the upload up.
    pub(crate) fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// Resolves once the upload ended (whole body sent, or failed).
    pub(crate) async fn ended(&self) {
        loop {
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

pin_project! {
    /// A request body on its way upstream: notes each frame and the end, so the
    /// forwarder can time the idle gaps and start the response-head timeout when the
    /// upload is over.
    #[derive(Debug)]
    pub struct Upload<B> {
        #[pin]
        body: B,
        state: Option<Finish>,
    }
}

/// Marks the upload ended when dropped (a body dropped unfinished ends it too).
#[derive(Debug)]
struct Finish(Arc<UploadState>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl<B: Body> Upload<B> {
    /// Wraps `body`; the state is `None` when there is nothing to upload.
    pub(crate) fn new(body: B) -> (Self, Option<Arc<UploadState>>) {
        let state = (!body.is_end_stream()).then(UploadState::new);
        let upload = Self {
            body,
            state: state.clone().map(Finish),
        };
        (upload, state)
    }
}

impl<B> Body for Upload<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx).map_err(Into::into);
        if let Some(Finish(state)) = this.state {
            match &polled {
                Poll::Pending => state.waiting_on_client.store(true, Ordering::Relaxed),
                Poll::Ready(Some(Ok(_))) => state.progress(),
                Poll::Ready(_) => state.finish(),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The error of an upload the client let sit idle past the body timeout.
pub(crate) fn client_idle() -> BoxError {
    Box::new(ClientBodyError::TimedOut)
}

pin_project! {
    /// A response body on its way from upstream: fails with an I/O `TimedOut` error
    /// when the server sends nothing for the body timeout (the response has started,
    /// so the client sees a cut-off response rather than a hung one).
    pub struct Download<B> {
        #[pin]
        body: B,
        // Made the first time a frame is not there yet: most small responses arrive
        // with their head and never need one (a timer costs a clock read and a wheel
        // entry, and its size would be moved with every response).
        idle: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        armed: bool,
        // The pooled connection the body is read from: driven before each frame,
        // given back when the body has ended.
        lease: Option<Box<dyn Lease>>,
        // The body's error, held back for one poll (see `poll_frame`).
        failed: Option<BoxError>,
    }
}

impl<B> Download<B> {
    pub(crate) fn new(body: B, timeout: Duration, lease: Option<Box<dyn Lease>>) -> Self {
        Self {
            body,
            idle: None,
            timeout,
            armed: false,
            lease,
            failed: None,
        }
    }
}

impl<B> core::fmt::Debug for Download<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Download")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<B> Body for Download<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let polled = match this.lease.as_mut() {
            None => this.body.as_mut().poll_frame(cx),
            Some(lease) => {
                // The body and its connection are polled with the lease's waker, which
                // holds the wakes one gives the other meanwhile (see `Relay`).
                lease.hold(cx);
                let mut polled = this
                    .body
                    .as_mut()
                    .poll_frame(&mut Context::from_waker(lease.waker()));
                if polled.is_pending() {
                    // Reads what the server sent into `body`, in this task.
                    lease.drive();
                    polled = this
                        .body
                        .as_mut()
                        .poll_frame(&mut Context::from_waker(lease.waker()));
                }
                if lease.release() && polled.is_pending() {
                    cx.waker().wake_by_ref();
                }
                polled
            }
        };
        match polled {
            Poll::Ready(frame) => {
                *this.armed = false;
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => this.body.is_end_stream(),
                    Some(Err(_)) => {
                        *this.lease = None; // a broken connection is not reused
                        false
                    }
                };
                if let Some(Err(e)) = frame {
                    // Held back for one poll: a server connection that gets the error in
                    // the same write pass as the data before it drops the data unsent
                    // (hyper does); yielding first lets it flush the head and the data,
                    // so the client sees a response cut short, not an empty reply.
                    *this.failed = Some(e.into());
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if ended {
                    if let Some(lease) = this.lease.take() {
                        lease.checkin();
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !*this.armed {
                    let deadline = Instant::now() + *this.timeout;
                    match this.idle.as_mut() {
                        Some(idle) => idle.as_mut().reset(deadline),
                        None => *this.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    *this.armed = true;
                }
                let Some(idle) = this.idle.as_mut() else {
                    return Poll::Pending; // armed above
                };
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(timeout = ?this.timeout, "upstream response body idle: cut off");
                        let e = io::Error::new(io::ErrorKind::TimedOut, "upstream body idle");
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};
    use core::time::Duration;

    use bytes::Bytes;
    use http_body::{Body, Frame};

    use super::Download;
    use crate::BoxError;

    /// A body that has a data frame and then an error ready at once.
    struct DataThenError(u8);

    impl Body for DataThenError {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: core::pin::Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0 += 1;
            Poll::Ready(Some(match self.0 {
                1 => Ok(Frame::data(Bytes::from_static(b"half"))),
                _ => Err("cut short".into()),
            }))
        }
    }

    #[tokio::test]
    async fn an_error_right_after_data_waits_one_poll_and_wakes() {
        let (woken, waker) = crate::conn::tests::WakeCount::waker();
        let mut cx = Context::from_waker(&waker);
        let mut body = pin!(Download::new(
            DataThenError(0),
            Duration::from_secs(5),
            None
        ));
        let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("the data first");
        };
        assert_eq!(frame.into_data().unwrap(), "half");
        // The error is there, but the reader gets a chance to flush the data first.
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(woken.get(), 1);
        assert!(matches!(
            body.as_mut()
                .poll_frame(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Some(Err(_)))
        ));
    }
}
