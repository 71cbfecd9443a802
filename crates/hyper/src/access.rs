//! The access log: one `tracing` event per request, on the target
//! [`ACCESS_LOG_TARGET`], when [`Builder::access_log`](crate::Builder::access_log) is
//! on.

use core::net::SocketAddr;
use std::time::Instant;

use http::Method;
use roundrobin_core::ServerUrl;

/// The `tracing` target of access-log events: route it to its own output (the proxy
/// writes it to stdout as text or JSON) and filter it apart from diagnostics.
///
/// Fields: `client` (IP and port, `-` when unknown), `method`, `path` (with the query),
/// `server` (`-` when none was chosen), `status` (what the client got; 499 when it went
/// away first), `latency_ms` (from the request's arrival to its last byte), `retries`.
pub const ACCESS_LOG_TARGET: &str = "roundrobin::access";

/// What the access log says of one request; logs it once, when told the outcome or,
/// failing that, when dropped (the client went away: 499).
///
/// Boxed: the record travels with the request's future and its response body, which are
/// moved from layer to layer, and the access log is off by default (`None` then takes
/// 8 bytes instead of the record's 144).
pub(crate) struct Access(Box<Record>);

struct Record {
    client: Option<SocketAddr>,
    method: Method,
    path: String,
    server: Option<ServerUrl>,
    retries: u32,
    start: Instant,
    done: bool,
}

impl Access {
    pub(crate) fn new(client: Option<SocketAddr>, method: &Method, path: &str) -> Self {
        Self(Box::new(Record {
            client,
            method: method.clone(),
            path: path.to_owned(),
            server: None,
            retries: 0,
            start: Instant::now(),
            done: false,
        }))
    }

    /// The server of the current try.
    pub(crate) fn tried(&mut self, server: &ServerUrl) {
        let record = &mut self.0;
        if record.server.is_some() {
            record.retries += 1;
        }
        record.server = Some(server.clone());
    }

    /// Logs the request with the status the client got.
    pub(crate) fn log(mut self, status: u16) {
        self.0.emit(status);
    }
}

impl Record {
    fn emit(&mut self, status: u16) {
        self.done = true;
        let server = self.server.as_ref().map_or("-", ServerUrl::as_str);
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            client = %OrDash(self.client),
            method = %self.method,
            path = %self.path,
            server = %server,
            status,
            latency_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            retries = self.retries,
        );
    }
}

/// The value's text, or `-` for none: written as the event is formatted, not copied
/// into a `String` first.
struct OrDash<T>(Option<T>);

impl<T: core::fmt::Display> core::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        if !self.0.done {
            self.0.emit(499);
        }
    }
}
