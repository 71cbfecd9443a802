//! The response body of a [`Balancer`](crate::Balancer): the upstream's, streamed, or
//! the error handler's.

use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// A response body: the inner service's body passed through frame by frame, or
    /// the body of an error response. No boxing.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
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
        }
    }

    /// A body produced by the proxy itself (error responses).
    pub fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local {
                body: Full::new(bytes),
            },
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
        match self.project().kind.project() {
            KindProj::Upstream { body } => body.poll_frame(cx).map_err(Into::into),
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
