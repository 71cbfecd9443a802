//! The outcome of one forwarded request: recorded exactly once, even when the client
//! goes away.

use std::sync::Arc;
use std::time::Instant;

use http::Response;

use crate::config::{Chosen, Config};
use crate::{BoxError, Error, ErrorHandler, ResponseBody, Select};

/// A request on its way to a server. Records the response's status in the pool when
/// it is known, or the handler's status for [`Error::ClientGone`] when it is dropped
/// first. Latency and record time come from the pool's clock ([`Select::now`]).
pub(crate) struct Pending<P: Select, H: ErrorHandler> {
    config: Arc<Config<P, H>>,
    chosen: Chosen,
    start: Instant,
    done: bool,
}

impl<P: Select, H: ErrorHandler> Pending<P, H> {
    pub(crate) fn new(config: Arc<Config<P, H>>, chosen: Chosen) -> Self {
        let start = config.pool.now();
        Self {
            config,
            chosen,
            start,
            done: false,
        }
    }

    fn record(&mut self, status: u16) {
        self.done = true;
        let now = self.config.pool.now();
        let latency = now.saturating_duration_since(self.start);
        self.config
            .pool
            .record(&self.chosen.server, status, latency, now);
    }

    /// Records the response's status and sets the sticky cookie if needed.
    pub(crate) fn finish<B>(&mut self, res: &mut Response<B>) {
        self.record(res.status().as_u16());
        self.config.stick(&self.chosen, res.headers_mut());
    }

    /// The response for an error of the inner service.
    pub(crate) fn fail<B>(&mut self, error: BoxError) -> Response<ResponseBody<B>> {
        let error = Error::from_inner(error);
        tracing::debug!(%error, "proxy error");
        let mut res = self.config.handler.handle(&error).map(ResponseBody::local);
        self.finish(&mut res);
        res
    }
}

impl<P: Select, H: ErrorHandler> Drop for Pending<P, H> {
    fn drop(&mut self) {
        if !self.done {
            let status = self.config.handler.handle(&Error::ClientGone).status();
            self.record(status.as_u16());
        }
    }
}
