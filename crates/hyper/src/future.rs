//! The response future of a [`Balancer`](crate::Balancer): named, not boxed.

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::outcome::Pending;
use crate::{BoxError, ErrorHandler, ResponseBody, Select};

pin_project! {
    /// The future of a [`Balancer`](crate::Balancer)'s response.
    ///
    /// Dropping it before it completes (the client went away) records
    /// [`Error::ClientGone`](crate::Error::ClientGone)'s status for the server.
    pub struct ResponseFuture<S, B, P, H>
    where
        S: Service<Request<B>>,
        P: Select,
        H: ErrorHandler,
    {
        #[pin]
        state: State<S, B, S::Future>,
        outcome: Option<Pending<P, H>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        // Answered without the inner service (no server, bad URI).
        Done { response: Option<Response<Bytes>> },
        // Waiting for the inner service to be ready (hyper path).
        Ready { inner: S, request: Option<Request<B>> },
        // Waiting for the inner service's response.
        Call { #[pin] future: F },
    }
}

impl<S, B, P, H> ResponseFuture<S, B, P, H>
where
    S: Service<Request<B>>,
    P: Select,
    H: ErrorHandler,
{
    pub(crate) fn done(response: Response<Bytes>) -> Self {
        Self {
            state: State::Done {
                response: Some(response),
            },
            outcome: None,
        }
    }

    pub(crate) fn ready(outcome: Pending<P, H>, inner: S, request: Request<B>) -> Self {
        Self {
            state: State::Ready {
                inner,
                request: Some(request),
            },
            outcome: Some(outcome),
        }
    }

    pub(crate) fn call(outcome: Pending<P, H>, future: S::Future) -> Self {
        Self {
            state: State::Call { future },
            outcome: Some(outcome),
        }
    }
}

impl<S, B, P, H, RB> Future for ResponseFuture<S, B, P, H>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    P: Select,
    H: ErrorHandler,
{
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Done { response } => {
                    let response = response.take().unwrap_or_default();
                    return Poll::Ready(Ok(response.map(ResponseBody::local)));
                }
                StateProj::Ready { inner, request } => {
                    let ready = match inner.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(ready) => ready,
                    };
                    match (ready, request.take(), this.outcome.as_mut()) {
                        (Ok(()), Some(request), Some(_)) => State::Call {
                            future: inner.call(request),
                        },
                        (Err(e), _, Some(outcome)) => {
                            return Poll::Ready(Ok(outcome.fail(e.into())));
                        }
                        // Polled again after completion.
                        (_, _, None) | (Ok(()), None, _) => State::Done { response: None },
                    }
                }
                StateProj::Call { future } => {
                    let result = match future.poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    let Some(outcome) = this.outcome.as_mut() else {
                        return Poll::Ready(Ok(Response::default().map(ResponseBody::local)));
                    };
                    let response = match result {
                        Ok(response) => {
                            let mut response = response.map(ResponseBody::upstream);
                            outcome.finish(&mut response);
                            response
                        }
                        Err(e) => outcome.fail(e.into()),
                    };
                    return Poll::Ready(Ok(response));
                }
            };
            this.state.set(next);
        }
    }
}
