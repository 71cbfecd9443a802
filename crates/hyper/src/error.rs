//! The crate's error type and the pluggable mapping of errors to responses.

use core::error::Error as StdError;
use core::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::ClientBodyError;

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request could not be proxied, or a pool operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The balancer could not pick a server (empty pool, all weights 0), or a pool
    /// operation was refused (server not found, invalid URL).
    #[error(transparent)]
    Balancer(#[from] roundrobin_core::Error),
    /// A rebalancer operation was refused.
    #[error(transparent)]
    Rebalancer(roundrobin_rebalancer::Error),
    /// The chosen server could not be connected to.
    #[error("cannot connect to the upstream server")]
    Connect(#[source] BoxError),
    /// The upstream did not answer within the forwarder's timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// A timeout of an inner layer elapsed (a tower `Timeout` around the forwarder, a
    /// tokio `timeout`, or an I/O error of kind `TimedOut`).
    #[error("timed out")]
    TimedOut(#[source] BoxError),
    /// The upstream connection failed after it was established (reset, early EOF, a
    /// malformed response), or the inner service failed in another way.
    #[error("upstream request failed")]
    Upstream(#[source] BoxError),
    /// The rewritten request URI is not valid.
    #[error("cannot build the upstream uri")]
    Uri(#[from] http::Error),
    /// The client went away before the response was ready. Never recorded against the
    /// server.
    #[error("client closed the request")]
    ClientGone,
    /// The client's request body failed while it was forwarded (an invalid chunked
    /// body, an upload cut short): answered 400 and never recorded against the server.
    #[error("the client's request body failed")]
    ClientBody(#[source] BoxError),
    /// The client's upload sat idle past the body timeout: 408, not recorded.
    #[error("the client's upload stalled")]
    ClientTimeout,
    /// The request body is larger than the balancer's limit: 413, not recorded.
    #[error("the request body is larger than the limit")]
    BodyTooLarge,
    /// The request is malformed (HTTP/1.1 without `Host` or with two, a request target
    /// that is not a path or an absolute URL): 400, not recorded, no server chosen.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The method is not proxied (`CONNECT`: a client never chooses the upstream):
    /// 405, not recorded, no server chosen.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl From<roundrobin_rebalancer::Error> for Error {
    fn from(e: roundrobin_rebalancer::Error) -> Self {
        match e {
            roundrobin_rebalancer::Error::Balancer(e) => Self::Balancer(e),
            e => Self::Rebalancer(e),
        }
    }
}

impl Error {
    /// Classifies an error returned by an inner (forwarding) service.
    ///
    /// An [`Error`] passes through unchanged; an error caused by the client's request
    /// body (a [`ClientBodyError`] in the source chain) becomes [`Error::ClientBody`]; a timeout of an inner layer (tower's
    /// `Elapsed`, tokio's `Elapsed`, or any error whose source chain holds an I/O error
    /// of kind `TimedOut`) becomes [`Error::TimedOut`] (504); a hyper-util client error
    /// that failed to connect becomes [`Error::Connect`]; anything else is
    /// [`Error::Upstream`].
    pub fn from_inner(err: BoxError) -> Self {
        let err = match err.downcast::<Self>() {
            Ok(e) => return *e,
            Err(err) => err,
        };
        let client = chain(&*err)
            .find_map(|e| e.downcast_ref::<ClientBodyError>())
            .map(|e| match e {
                ClientBodyError::TooLarge => Some(Self::BodyTooLarge),
                ClientBodyError::TimedOut => Some(Self::ClientTimeout),
                ClientBodyError::Failed(_) => None,
            });
        match client {
            Some(Some(known)) => return known,
            Some(None) => return Self::ClientBody(err),
            None => {}
        }
        if is_timeout(&*err) {
            return Self::TimedOut(err);
        }
        match err.downcast::<hyper_util::client::legacy::Error>() {
            Ok(e) if e.is_connect() => Self::Connect(e),
            Ok(e) => Self::Upstream(e),
            Err(err) => Self::Upstream(err),
        }
    }
}

impl Error {
    /// Whether the server's connection was reset or closed before a response arrived
    /// (an [`Error::Upstream`] whose cause is a reset, a broken pipe, an unexpected EOF
    /// or an incomplete message).
    pub fn is_reset(&self) -> bool {
        let Self::Upstream(source) = self else {
            return false;
        };
        chain(&**source).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
                || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::UnexpectedEof
                    )
                })
        })
    }

    /// Whether the client caused it: such errors are never recorded against a server.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::ClientGone
                | Self::ClientBody(_)
                | Self::BodyTooLarge
                | Self::ClientTimeout
                | Self::BadRequest(_)
                | Self::MethodNotAllowed
        )
    }
}

/// `err` and its sources, in order.
fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    core::iter::successors(Some(err), |&e| e.source())
}

/// Whether `err` or one of its sources is a timeout.
fn is_timeout(err: &(dyn StdError + 'static)) -> bool {
    chain(err).any(|e| {
        e.is::<tower::timeout::error::Elapsed>()
            || e.is::<tokio::time::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// The status nginx logs for a client that closed the connection before the response.
///
/// Never sent (the client is gone) and never recorded against the server.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Turns a proxying [`Error`] into the response sent to the client.
///
/// The status of the response is also what the rebalancer records for the server
/// that was tried, unless the client caused the error ([`Error::is_client_error`]):
/// those are never recorded against a server, and for [`Error::ClientGone`] nothing is
/// sent either.
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use roundrobin_hyper::{DefaultErrorHandler, Error, ErrorHandler};
///
/// /// Answers every failure with a JSON body.
/// struct JsonErrors;
/// impl ErrorHandler for JsonErrors {
///     fn handle(&self, error: &Error) -> Response<Bytes> {
///         let status = DefaultErrorHandler.handle(error).status();
///         let mut res = Response::new(Bytes::from(format!("{{\"error\":\"{error}\"}}")));
///         *res.status_mut() = status;
///         res
///     }
/// }
/// let res = JsonErrors.handle(&Error::Balancer(roundrobin_core::Error::NoServers));
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// ```
pub trait ErrorHandler: Send + Sync + 'static {
    /// The response for `error`.
    fn handle(&self, error: &Error) -> Response<Bytes>;
}

/// The default mapping: empty pool or all weights 0 → 503, connect failure, reset or
/// EOF → 502, timeout (the forwarder's or an inner layer's) → 504, a failed client
/// request body → 400, client gone → 499, anything else → 502; empty bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultErrorHandler;

impl DefaultErrorHandler {
    /// The status the default mapping gives `error`.
    pub fn status(error: &Error) -> StatusCode {
        match error {
            Error::Balancer(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout(_) | Error::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::ClientGone => {
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Error::Rebalancer(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ClientBody(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Connect(_) | Error::Upstream(_) | Error::Uri(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl ErrorHandler for DefaultErrorHandler {
    fn handle(&self, error: &Error) -> Response<Bytes> {
        let mut res = Response::new(Bytes::new());
        *res.status_mut() = Self::status(error);
        res
    }
}

impl<F> ErrorHandler for F
where
    F: Fn(&Error) -> Response<Bytes> + Send + Sync + 'static,
{
    fn handle(&self, error: &Error) -> Response<Bytes> {
        self(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mapping() {
        let cases: [(Error, u16); 10] = [
            (roundrobin_core::Error::NoServers.into(), 503),
            (roundrobin_core::Error::AllWeightsZero.into(), 503),
            (Error::Connect("refused".into()), 502),
            (Error::Upstream("reset".into()), 502),
            (Error::Timeout(Duration::from_millis(5)), 504),
            (Error::ClientGone, 499),
            (Error::ClientBody("bad chunk".into()), 400),
            (Error::BodyTooLarge, 413),
            (Error::BadRequest("no host"), 400),
            (Error::MethodNotAllowed, 405),
        ];
        for (err, status) in cases {
            assert_eq!(
                DefaultErrorHandler.handle(&err).status().as_u16(),
                status,
                "{err}"
            );
        }
    }

    #[test]
    fn from_inner_keeps_our_errors() {
        let e = Error::from_inner(Box::new(Error::Timeout(Duration::from_secs(1))));
        assert!(matches!(e, Error::Timeout(d) if d == Duration::from_secs(1)));
        let e = Error::from_inner("other".into());
        assert!(matches!(e, Error::Upstream(_)));
    }

    #[test]
    fn inner_timeouts_are_504() {
        let tower: BoxError = tower::timeout::error::Elapsed::new().into();
        let io: BoxError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        for e in [tower, io] {
            let e = Error::from_inner(e);
            assert!(matches!(e, Error::TimedOut(_)), "{e:?}");
            assert_eq!(DefaultErrorHandler.handle(&e).status(), 504);
        }
    }
}
