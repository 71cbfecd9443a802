//! The outcome of one try of a request: recorded once in the pool, unless the client
//! caused it.

use std::sync::Arc;
use std::time::Instant;

use http::Response;
use roundrobin_core::ServerUrl;

use crate::access::Access;
use crate::body::{BodyEnd, RecordEnd};
use crate::config::{Chosen, Config};
use crate::metrics::InFlight;
use crate::{Error, ErrorHandler, ResponseBody, Select};

impl<P: Select, H: Send + Sync> RecordEnd for Config<P, H> {
    fn record_end(&self, server: &ServerUrl, status: u16, latency: core::time::Duration) {
        self.pool.record(server, status, latency, self.pool.now());
    }
}

/// One try of a request on its way to a server. Latency and record time come from the
/// pool's clock ([`Select::now`]). A try that is dropped before its outcome is known
/// (the client went away) is not recorded: that is the client's doing, not the
/// server's.
pub(crate) struct Pending<P: Select, H: ErrorHandler> {
    config: Arc<Config<P, H>>,
    chosen: Chosen,
    start: Instant,
    access: Option<Access>,
    in_flight: Option<InFlight>,
}

impl<P: Select, H: ErrorHandler> Pending<P, H> {
    pub(crate) fn new(config: Arc<Config<P, H>>, chosen: Chosen, access: Option<Access>) -> Self {
        let start = config.pool.now();
        let mut access = access;
        if let Some(access) = &mut access {
            access.tried(&chosen.server);
        }
        let in_flight = config.metrics.as_ref().map(|m| m.start(&chosen.server));
        Self {
            config,
            chosen,
            start,
            access,
            in_flight,
        }
    }

    /// The access-log record, for the next try.
    pub(crate) fn take_access(&mut self) -> Option<Access> {
        self.access.take()
    }

    /// Logs the request (when the access log is on) with the status the client got.
    pub(crate) fn log(&mut self, status: u16) {
        if let Some(access) = self.access.take() {
            access.log(status);
        }
    }

    pub(crate) fn config(&self) -> &Arc<Config<P, H>> {
        &self.config
    }

    pub(crate) fn server(&self) -> &ServerUrl {
        &self.chosen.server
    }

    /// Records `status` for this try's server.
    pub(crate) fn record(&mut self, status: u16) {
        let now = self.config.pool.now();
        let latency = now.saturating_duration_since(self.start);
        self.config
            .pool
            .record(&self.chosen.server, status, latency, now);
        if let Some(in_flight) = &mut self.in_flight {
            in_flight.metrics().response(status, latency);
            in_flight.done();
        }
    }

    /// Counts this try as one the policy sends to another server.
    pub(crate) fn retried(&self) {
        if let Some(in_flight) = &self.in_flight {
            in_flight.metrics().retried();
        }
    }

    /// Records the response's status and sets the sticky cookie if needed.
    pub(crate) fn finish<B>(&mut self, res: &mut Response<B>) {
        self.record(res.status().as_u16());
        self.config.stick(&self.chosen, res.headers_mut());
    }

    /// The upstream's response for the client, sticky cookie set; its request is
    /// recorded when its body ends (at once when it has none), with the latency to the
    /// head.
    pub(crate) fn answer<B: http_body::Body>(self, res: Response<B>) -> Response<ResponseBody<B>>
    where
        P: 'static,
        H: 'static,
    {
        let mut this = self;
        let mut res = res;
        this.config.stick(&this.chosen, res.headers_mut());
        let status = res.status().as_u16();
        if res.body().is_end_stream() {
            this.record(status);
            this.log(status);
            return res.map(ResponseBody::upstream);
        }
        let latency = this.config.pool.now().saturating_duration_since(this.start);
        let access = this.access.take();
        let in_flight = this.in_flight.take();
        let sink: Arc<dyn RecordEnd> = this.config;
        let end = BodyEnd::new(sink, this.chosen.server, status, latency, access, in_flight);
        res.map(|body| ResponseBody::recorded(body, end))
    }

    /// The response for `error`: recorded against the server unless the client caused
    /// it.
    pub(crate) fn fail<B>(&mut self, error: &Error) -> Response<ResponseBody<B>> {
        tracing::debug!(%error, server = %self.chosen.server, "proxy error");
        let mut res = self.config.handler.handle(error).map(ResponseBody::local);
        if let Some(in_flight) = &self.in_flight {
            in_flight.metrics().error(error);
        }
        if error.is_client_error() {
            if let Some(in_flight) = &mut self.in_flight {
                in_flight.done();
            }
            return res;
        }
        self.finish(&mut res);
        res
    }
}
