//! The bodies a [`Balancer`](crate::Balancer) passes on: the request body it hands to
//! its inner service, and the response body it answers with (the upstream's, streamed,
//! or the error handler's).

use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// A response body: the inner service's body passed through frame by frame, or
    /// the body of an error response. No boxing.
    ///
    /// An upstream body carries the outcome of its request until it ends: the request
    /// is recorded in the pool then, with the status of its head, or 502 when the body
    /// failed (a server that cuts responses short is a failing server); a client that
    /// goes away mid-body leaves the head's status.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
        end: Option<BodyEnd>,
    }
}

/// Records the outcome of a request when its response body is over.
pub(crate) trait RecordEnd: Send + Sync {
    fn record_end(
        &self,
        server: &roundrobin_core::ServerUrl,
        status: u16,
        latency: core::time::Duration,
    );
}

/// A request's outcome, recorded once when its body ends, fails or is dropped.
pub(crate) struct BodyEnd {
    sink: std::sync::Arc<dyn RecordEnd>,
    server: roundrobin_core::ServerUrl,
    status: u16,
    latency: core::time::Duration,
    access: Option<crate::access::Access>,
    in_flight: Option<crate::metrics::InFlight>,
}

impl BodyEnd {
    pub(crate) fn new(
        sink: std::sync::Arc<dyn RecordEnd>,
        server: roundrobin_core::ServerUrl,
        status: u16,
        latency: core::time::Duration,
        access: Option<crate::access::Access>,
        in_flight: Option<crate::metrics::InFlight>,
    ) -> Self {
        Self {
            sink,
            server,
            status,
            latency,
            access,
            in_flight,
        }
    }

    fn failed(&mut self) {
        if self.status < 500 {
            self.status = 502;
        }
    }
}

impl Drop for BodyEnd {
    fn drop(&mut self) {
        self.sink
            .record_end(&self.server, self.status, self.latency);
        if let Some(access) = self.access.take() {
            access.log(self.status);
        }
        if let Some(mut in_flight) = self.in_flight.take() {
            in_flight.metrics().response(self.status, self.latency);
            in_flight.done();
        }
    }
}

impl core::fmt::Debug for BodyEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BodyEnd")
            .field("server", &self.server)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Upstream { #[pin] body: B },
        Local { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps an upstream body.
    pub fn upstream(body: B) -> Self {
        Self {
            kind: Kind::Upstream { body },
            end: None,
        }
    }

    /// Wraps an upstream body whose request is recorded when it ends.
    pub(crate) fn recorded(body: B, end: BodyEnd) -> Self {
        Self {
            kind: Kind::Upstream { body },
            end: Some(end),
        }
    }

    /// A body produced by the proxy itself (error responses).
    pub fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local {
                body: Full::new(bytes),
            },
            end: None,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Upstream { body } => {
                let polled = body.poll_frame(cx).map_err(Into::into);
                match &polled {
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(mut end) = this.end.take() {
                            end.failed();
                        }
                    }
                    Poll::Ready(None) => drop(this.end.take()),
                    _ => {}
                }
                polled
            }
            KindProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The request body a [`Balancer`](crate::Balancer) hands to its inner service: the
    /// client's body, frame by frame, or no body at all (a retry of a request that had
    /// none).
    ///
    /// Its errors are [`ClientBodyError`]s, so that a failure of the client's upload
    /// (an invalid chunked body, a client that hangs up mid-upload, a body over the
    /// balancer's size limit) is told apart from a failure of the server: the balancer
    /// answers it with 400 (413 for the size limit) and never records it against the
    /// server.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: Option<B>,
        // Bytes the body may still carry.
        left: u64,
        // A body read whole beforehand (to be sent again on a retry), sent in one frame.
        buffered: Option<Bytes>,
    }
}

impl<B> RequestBody<B> {
    /// The client's body.
    pub fn new(body: B) -> Self {
        Self::limited(body, u64::MAX)
    }

    /// The client's body, failing with [`ClientBodyError::TooLarge`] past `max` bytes.
    pub fn limited(body: B, max: u64) -> Self {
        Self {
            inner: Some(body),
            left: max,
            buffered: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: None,
            left: 0,
            buffered: None,
        }
    }

    /// A body read whole beforehand, sent as one frame.
    pub fn buffered(bytes: Bytes) -> Self {
        Self {
            inner: None,
            left: 0,
            buffered: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

/// A request body failed while it was read from the client: the client's fault, not the
/// server's. [`Error::from_inner`](crate::Error::from_inner) finds it in an inner
/// service's error chain.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Reading it failed: [`Error::ClientBody`](crate::Error::ClientBody), 400.
    #[error("the client's request body failed")]
    Failed(#[source] BoxError),
    /// It was longer than the limit: [`Error::BodyTooLarge`](crate::Error::BodyTooLarge), 413.
    #[error("the request body is larger than the limit")]
    TooLarge,
    /// The client sent nothing for the body timeout:
    /// [`Error::ClientTimeout`](crate::Error::ClientTimeout), 408.
    #[error("the client's upload stalled")]
    TimedOut,
}

impl<B> Body for RequestBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, ClientBodyError>>> {
        let this = self.project();
        let Some(body) = this.inner.as_pin_mut() else {
            let frame = this
                .buffered
                .take()
                .map(|b| Ok(Frame::data(B::Data::from(b))));
            return Poll::Ready(frame);
        };
        let frame = match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(ClientBodyError::Failed(e.into()))))
            }
            other => return other.map_err(|e| ClientBodyError::Failed(e.into())),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.remaining() as u64;
            match this.left.checked_sub(len) {
                Some(left) => *this.left = left,
                None => return Poll::Ready(Some(Err(ClientBodyError::TooLarge))),
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(bytes) = &self.buffered {
            return SizeHint::with_exact(bytes.len() as u64);
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod sizes {
    use std::sync::Arc;

    use hyper::body::Incoming;
    use roundrobin_core::ServerUrl;
    use roundrobin_rebalancer::Rebalancer;

    use crate::future::ResponseFuture;
    use crate::timeout::Download;
    use crate::{DefaultErrorHandler, Forwarder, ResponseBody};

    /// Every request moves its response future and its response from layer to layer
    /// (a move is a copy): what only some requests need is boxed (the access-log
    /// record, a request waiting for its service or a retry).
    #[test]
    fn what_each_request_moves_stays_small() {
        type Pool = Arc<Rebalancer<ServerUrl>>;
        type Future = ResponseFuture<Forwarder, Incoming, Pool, DefaultErrorHandler>;
        let response = size_of::<http::Response<ResponseBody<Download<Incoming>>>>();
        assert!(response <= 320, "a response takes {response} bytes");
        let future = size_of::<Future>();
        assert!(future <= 704, "a response future takes {future} bytes");
    }
}
