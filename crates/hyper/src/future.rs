//! The response future of a [`Balancer`](crate::Balancer): named, not boxed; it drives
//! the tries of one request.

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::{request, Request, Response};
use pin_project_lite::pin_project;
use roundrobin_core::ServerUrl;
use tower_service::Service;

use crate::headers::asks_upgrade;
use crate::outcome::Pending;
use crate::retry::idempotent;
use crate::{BoxError, ClientAddr, Error, ErrorHandler, RequestBody, ResponseBody, Select};

/// What a retry needs: the request as the client sent it (it had no body), the servers
/// tried before the current try (filled at the first retry: no allocation until then)
/// and how many tries are left.
pub(crate) struct Replay {
    parts: request::Parts,
    /// When the request's only extension was its [`ClientAddr`] (what `serve` adds),
    /// that address, and `parts` has no extensions: copying an extension map costs three
    /// allocations per request, and most requests are never retried.
    client: Option<ClientAddr>,
    /// The request's body when it was read whole beforehand (opt-in).
    body: Option<Bytes>,
    tried: Vec<ServerUrl>,
    left: u32,
}

impl Replay {
    /// A copy of the head of a request that has no body, for `left` more tries.
    pub(crate) fn new(original: &request::Parts, left: u32) -> Self {
        let mut head = Request::new(());
        *head.method_mut() = original.method.clone();
        *head.uri_mut() = original.uri.clone();
        *head.version_mut() = original.version;
        *head.headers_mut() = original.headers.clone();
        let (mut parts, ()) = head.into_parts();
        let extensions = &original.extensions;
        let client = extensions
            .get::<ClientAddr>()
            .copied()
            .filter(|_| extensions.len() == 1);
        if client.is_none() {
            parts.extensions = extensions.clone();
        }
        Self {
            parts,
            client,
            body: None,
            tried: Vec::new(),
            left,
        }
    }

    /// The request head to send again.
    fn head(&self) -> request::Parts {
        let mut parts = self.parts.clone();
        if let Some(client) = self.client {
            parts.extensions.insert(client);
        }
        parts
    }
}

/// A request body being read whole before the first try, so that it can be sent
/// again ([`Builder::replay_bodies`](crate::Builder::replay_bodies)).
pub(crate) struct Buffering<B> {
    /// The request pointed at the first server, and as the client sent it.
    pointed: request::Parts,
    original: request::Parts,
    body: Pin<Box<B>>,
    data: bytes::BytesMut,
    max: usize,
    retries: u32,
}

impl<B> Buffering<B> {
    pub(crate) fn new(
        pointed: request::Parts,
        original: request::Parts,
        body: B,
        max: usize,
        retries: u32,
    ) -> Self {
        Self {
            pointed,
            original,
            body: Box::pin(body),
            data: bytes::BytesMut::new(),
            max,
            retries,
        }
    }
}

pin_project! {
    /// The future of a [`Balancer`](crate::Balancer)'s response.
    ///
    /// It sends the request to the chosen server and, when that try fails in a way the
    /// [`Retry`](crate::Retry) policy allows, to another server, before anything of a
    /// response went to the client. Dropping it (the client went away) records nothing.
    pub struct ResponseFuture<S, B, P, H>
    where
        S: Service<Request<RequestBody<B>>>,
        P: Select,
        H: ErrorHandler,
    {
        #[pin]
        state: State<S::Future>,
        inner: Option<S>,
        // Boxed: only held while the inner service is not ready, or for a retry (the
        // future is moved on every request, a request head is 224 bytes).
        request: Option<Box<Request<RequestBody<B>>>>,
        pending: Option<Pending<P, H>>,
        replay: Option<Replay>,
        // Boxed: rare (`replay_bodies`), and it would double the future's size, which
        // is moved on every request.
        buffering: Option<Box<Buffering<B>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Answered without the inner service (no server, bad URI).
        Done { response: Option<Response<Bytes>> },
        // Waiting for the inner service to be ready.
        Ready,
        // Waiting for the inner service's response.
        Call { #[pin] future: F },
        // Reading the request body whole before the first try.
        Buffer,
    }
}

impl<S, B, P, H> ResponseFuture<S, B, P, H>
where
    S: Service<Request<RequestBody<B>>>,
    P: Select,
    H: ErrorHandler,
{
    pub(crate) fn done(response: Response<Bytes>) -> Self {
        Self {
            state: State::Done {
                response: Some(response),
            },
            inner: None,
            request: None,
            pending: None,
            replay: None,
            buffering: None,
        }
    }

    /// A request whose body is read whole first, then sent once `inner` is ready.
    pub(crate) fn buffer(pending: Pending<P, H>, inner: S, buffering: Buffering<B>) -> Self {
        Self {
            state: State::Buffer,
            inner: Some(inner),
            request: None,
            pending: Some(pending),
            replay: None,
            buffering: Some(Box::new(buffering)),
        }
    }

    /// A request to send once `inner` is ready (`ready`: it already is).
    pub(crate) fn send(
        pending: Pending<P, H>,
        mut inner: S,
        request: Request<RequestBody<B>>,
        ready: bool,
        replay: Option<Replay>,
    ) -> Self {
        // Most inner services are always ready (the forwarder is): asking now, without
        // a waker to register, saves the future a poll and the request a box. One that
        // is not ready, or failed, is asked again when the future is first polled (which
        // answers a failure through the error handler).
        let ready = ready
            || matches!(
                inner.poll_ready(&mut Context::from_waker(Waker::noop())),
                Poll::Ready(Ok(()))
            );
        let (state, request) = if ready {
            (
                State::Call {
                    future: inner.call(request),
                },
                None,
            )
        } else {
            (State::Ready, Some(Box::new(request)))
        };
        Self {
            state,
            inner: Some(inner),
            request,
            pending: Some(pending),
            replay,
            buffering: None,
        }
    }
}

/// What a finished try leads to.
// A value returned and matched at once, never stored: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Next<RB, P: Select, H: ErrorHandler> {
    /// The answer for the client.
    Answer(Response<ResponseBody<RB>>),
    /// Another try, or this answer when there is no other server.
    Retry(Response<ResponseBody<RB>>, Pending<P, H>),
}

impl<S, B, P, H, RB> Future for ResponseFuture<S, B, P, H>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
    RB: http_body::Body,
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
                StateProj::Buffer => {
                    let (Some(buffering), Some(pending)) =
                        (this.buffering.as_mut(), this.pending.as_mut())
                    else {
                        return Poll::Ready(Ok(Response::default().map(ResponseBody::local)));
                    };
                    match buffering.body.as_mut().poll_frame(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(mut data) = frame.into_data() {
                                if buffering.data.len() + data.remaining() > buffering.max {
                                    let response = pending.fail(&Error::BodyTooLarge);
                                    pending.log(response.status().as_u16());
                                    return Poll::Ready(Ok(response));
                                }
                                while data.has_remaining() {
                                    let chunk = data.chunk();
                                    let n = chunk.len();
                                    buffering.data.extend_from_slice(chunk);
                                    data.advance(n);
                                }
                            }
                            continue;
                        }
                        Poll::Ready(Some(Err(e))) => {
                            let response = pending.fail(&Error::ClientBody(e.into()));
                            pending.log(response.status().as_u16());
                            return Poll::Ready(Ok(response));
                        }
                        Poll::Ready(None) => {
                            let Some(b) = this.buffering.take() else {
                                return Poll::Ready(Ok(
                                    Response::default().map(ResponseBody::local)
                                ));
                            };
                            let b = *b;
                            let bytes = b.data.freeze();
                            *this.replay = Some(Replay {
                                parts: b.original,
                                client: None,
                                body: Some(bytes.clone()),
                                tried: Vec::new(),
                                left: b.retries,
                            });
                            *this.request = Some(Box::new(Request::from_parts(
                                b.pointed,
                                RequestBody::buffered(bytes),
                            )));
                            State::Ready
                        }
                    }
                }
                StateProj::Ready => {
                    let (Some(inner), Some(pending)) = (this.inner.as_mut(), this.pending.as_mut())
                    else {
                        return Poll::Ready(Ok(Response::default().map(ResponseBody::local)));
                    };
                    match inner.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            let error = Error::from_inner(e.into());
                            let response = pending.fail(&error);
                            pending.log(response.status().as_u16());
                            return Poll::Ready(Ok(response));
                        }
                        Poll::Ready(Ok(())) => match this.request.take() {
                            Some(request) => State::Call {
                                future: inner.call(*request),
                            },
                            None => State::Done { response: None },
                        },
                    }
                }
                StateProj::Call { future } => {
                    let result = match future.poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    let Some(pending) = this.pending.take() else {
                        return Poll::Ready(Ok(Response::default().map(ResponseBody::local)));
                    };
                    match judge(pending, this.replay.as_ref(), result) {
                        Next::Answer(response) => return Poll::Ready(Ok(response)),
                        Next::Retry(fallback, mut pending) => {
                            match retry(&mut pending, this.replay.as_mut()) {
                                Some((again, request)) => {
                                    *this.pending = Some(again);
                                    *this.request = Some(Box::new(request));
                                    State::Ready
                                }
                                // No other server to try: the failed try's answer stands.
                                None => {
                                    pending.log(fallback.status().as_u16());
                                    return Poll::Ready(Ok(fallback));
                                }
                            }
                        }
                    }
                }
            };
            this.state.set(next);
        }
    }
}

/// Decides on the result of a try: answer the client, or record it and retry.
fn judge<P, H, RB, E>(
    pending: Pending<P, H>,
    replay: Option<&Replay>,
    result: Result<Response<RB>, E>,
) -> Next<RB, P, H>
where
    P: Select,
    H: ErrorHandler,
    RB: http_body::Body,
    E: Into<BoxError>,
{
    let policy = pending.config().retry;
    let can_retry = replay.is_some_and(|r| r.left > 0);
    // An upgrade is never sent twice (the client's connection may be handed over to
    // the first server); one that could not connect may still go elsewhere.
    let replayable = can_retry
        && replay.is_some_and(|r| idempotent(&r.parts.method) && !asks_upgrade(&r.parts.headers));
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            if replayable && policy.on.status(status) {
                let mut pending = pending;
                let mut response = response.map(ResponseBody::upstream);
                pending.finish(&mut response);
                pending.retried();
                return Next::Retry(response, pending);
            }
            Next::Answer(pending.answer(response))
        }
        Err(e) => {
            let error = Error::from_inner(e.into());
            let retried = match &error {
                Error::Connect(_) => can_retry && policy.on.connect,
                Error::Timeout(_) | Error::TimedOut(_) => replayable && policy.on.timeout,
                e if e.is_reset() => replayable && policy.on.reset,
                _ => false,
            };
            let mut pending = pending;
            let response = pending.fail(&error);
            if retried {
                tracing::debug!(%error, server = %pending.server(), "retrying on another server");
                pending.retried();
                return Next::Retry(response, pending);
            }
            pending.log(response.status().as_u16());
            Next::Answer(response)
        }
    }
}

/// The next try: its outcome guard, and the request pointed at its server.
type NextTry<P, H, B> = (Pending<P, H>, Request<RequestBody<B>>);

/// The next try: another server, and the request pointed at it.
fn retry<P, H, B>(
    pending: &mut Pending<P, H>,
    replay: Option<&mut Replay>,
) -> Option<NextTry<P, H, B>>
where
    P: Select,
    H: ErrorHandler,
{
    let replay = replay?;
    replay.left = replay.left.checked_sub(1)?;
    replay.tried.push(pending.server().clone());
    let config = std::sync::Arc::clone(pending.config());
    let chosen = config.choose_other(&replay.tried)?;
    let mut parts = replay.head();
    config.point_at(&mut parts, &chosen.server).ok()?;
    let access = pending.take_access();
    let again = Pending::new(config, chosen, access);
    let body = replay
        .body
        .clone()
        .map_or_else(RequestBody::empty, RequestBody::buffered);
    Some((again, Request::from_parts(parts, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(ext: impl FnOnce(&mut http::Extensions)) -> request::Parts {
        let mut req = Request::get("/a?b").header("x-h", "1").body(()).unwrap();
        ext(req.extensions_mut());
        req.into_parts().0
    }

    #[test]
    fn a_replayed_head_keeps_the_client_address() {
        let addr = ClientAddr("192.0.2.1:5000".parse().unwrap());
        let original = head_with(|e| {
            e.insert(addr);
        });
        let replay = Replay::new(&original, 1);
        assert!(replay.parts.extensions.is_empty(), "not copied up front");
        let head = replay.head();
        assert_eq!(head.extensions.get::<ClientAddr>(), Some(&addr));
        assert_eq!((head.method, head.uri), (original.method, original.uri));
        assert_eq!(head.headers, original.headers);
    }

    #[test]
    fn a_replayed_head_keeps_every_other_extension() {
        #[derive(Clone, Debug, PartialEq)]
        struct Mine(u8);
        let addr = ClientAddr("192.0.2.1:5000".parse().unwrap());
        let original = head_with(|e| {
            e.insert(addr);
            e.insert(Mine(7));
        });
        let head = Replay::new(&original, 1).head();
        assert_eq!(head.extensions.get::<ClientAddr>(), Some(&addr));
        assert_eq!(head.extensions.get::<Mine>(), Some(&Mine(7)));
        let bare = Replay::new(&head_with(|_| {}), 1).head();
        assert!(bare.extensions.is_empty());
    }
}
