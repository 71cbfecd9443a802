//! The outcome of one try of a request: recorded once in the pool, unless the client
//! caused it.

use std::sync::Arc;
use std::time::Instant;

use http::Response;
use roundrobin_core::ServerUrl;

use crate::config::{Chosen, Config};
use crate::{Error, ErrorHandler, ResponseBody, Select};

/// One try of a request on its way to a server. Latency and record time come from the
/// pool's clock ([`Select::now`]). A try that is dropped before its outcome is known
/// (the client went away) is not recorded: that is the client's doing, not the
/// server's.
pub(crate) struct Pending<P: Select, H: ErrorHandler> {
    config: Arc<Config<P, H>>,
    chosen: Chosen,
    start: Instant,
}

impl<P: Select, H: ErrorHandler> Pending<P, H> {
    pub(crate) fn new(config: Arc<Config<P, H>>, chosen: Chosen) -> Self {
        let start = config.pool.now();
        Self {
            config,
            chosen,
            start,
        }
    }

    pub(crate) fn config(&self) -> &Arc<Config<P, H>> {
        &self.config
    }

    pub(crate) fn server(&self) -> &ServerUrl {
        &self.chosen.server
    }

    /// Records `status` for this try's server.
    pub(crate) fn record(&self, status: u16) {
        let now = self.config.pool.now();
        let latency = now.saturating_duration_since(self.start);
        self.config
            .pool
            .record(&self.chosen.server, status, latency, now);
    }

    /// Records the response's status and sets the sticky cookie if needed.
    pub(crate) fn finish<B>(&self, res: &mut Response<B>) {
        self.record(res.status().as_u16());
        self.config.stick(&self.chosen, res.headers_mut());
    }

    /// The response for `error`: recorded against the server unless the client caused
    /// it.
    pub(crate) fn fail<B>(&self, error: &Error) -> Response<ResponseBody<B>> {
        tracing::debug!(%error, server = %self.chosen.server, "proxy error");
        let mut res = self.config.handler.handle(error).map(ResponseBody::local);
        if error.is_client_error() {
            return res;
        }
        self.finish(&mut res);
        res
    }
}
