//! When a failed request is tried again on another server.

use http::Method;

/// Which failures of a try send the request to another server ([`Retry::on`]).
///
/// Whatever the policy, a request is only retried while nothing of its response went to
/// the client, and only if it had no body (its upload cannot be replayed); every try is
/// recorded in its server's meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection to the server failed: refused, reset while connecting, connect
    /// timeout. Nothing was sent, so any method is retried. Default on.
    pub connect: bool,
    /// The connection was reset or closed before any response byte arrived (a server
    /// that died with the request in flight). Idempotent methods only. Default on.
    pub reset: bool,
    /// No response head within the forwarder's timeout. Idempotent methods only.
    /// Default off.
    pub timeout: bool,
    /// The server answered 502. Idempotent methods only. Default off.
    pub bad_gateway: bool,
    /// The server answered 503. Idempotent methods only. Default off.
    pub service_unavailable: bool,
    /// The server answered 504. Idempotent methods only. Default off.
    pub gateway_timeout: bool,
}

impl Default for RetryOn {
    /// `connect` and `reset`: nginx's `proxy_next_upstream error timeout` without the
    /// timeout, HAProxy's `retry-on conn-failure empty-response`.
    fn default() -> Self {
        Self {
            connect: true,
            reset: true,
            timeout: false,
            bad_gateway: false,
            service_unavailable: false,
            gateway_timeout: false,
        }
    }
}

impl RetryOn {
    /// Nothing: no retries.
    pub const NONE: Self = Self {
        connect: false,
        reset: false,
        timeout: false,
        bad_gateway: false,
        service_unavailable: false,
        gateway_timeout: false,
    };

    /// Parses a comma-separated list of `connect`, `reset`, `timeout`, `502`, `503`,
    /// `504` (the proxy's `--retry-on`).
    ///
    /// ```
    /// use roundrobin_hyper::RetryOn;
    /// let on = RetryOn::parse("connect,503")?;
    /// assert!(on.connect && on.service_unavailable && !on.reset);
    /// assert!(RetryOn::parse("connect,teapot").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut on = Self::NONE;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "connect" => on.connect = true,
                "reset" => on.reset = true,
                "timeout" => on.timeout = true,
                "502" => on.bad_gateway = true,
                "503" => on.service_unavailable = true,
                "504" => on.gateway_timeout = true,
                other => {
                    return Err(format!(
                    "unknown retry condition `{other}`: use connect, reset, timeout, 502, 503, 504"
                ))
                }
            }
        }
        Ok(on)
    }

    /// Whether an answer with `status` from the server is retried.
    pub(crate) fn status(&self, status: u16) -> bool {
        match status {
            502 => self.bad_gateway,
            503 => self.service_unavailable,
            504 => self.gateway_timeout,
            _ => false,
        }
    }
}

/// How many times a failed request is tried again, and on which failures
/// ([`Builder::retry`](crate::Builder::retry)).
///
/// Default: 2 retries (3 tries in all) on connect failures and resets, as HAProxy's
/// `retries 3` + `option redispatch` and nginx's `proxy_next_upstream` (which tries every
/// server) do by default. Each retry goes to a server not tried yet for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first try; 0 turns retrying off.
    pub retries: u32,
    /// The failures that are retried.
    pub on: RetryOn,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            retries: 2,
            on: RetryOn::default(),
        }
    }
}

impl Retry {
    /// No retries.
    pub const OFF: Self = Self {
        retries: 0,
        on: RetryOn::NONE,
    };
}

/// Whether a request with `method` may be sent twice (RFC 9110 §9.2.2).
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
