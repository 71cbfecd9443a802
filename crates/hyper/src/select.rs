//! The request path's view of a pool: pick a server, learn from the outcome.

use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_rebalancer::Rebalancer;

use crate::Error;

/// Chooses the server of each request and learns from how it answered: all a
/// [`Balancer`](crate::Balancer) needs of a pool.
///
/// Implemented for [`RoundRobin`] (outcomes ignored), [`Rebalancer`] (outcomes move the
/// weights) and, through `Arc`, for shared pools. Every method takes `&self` and is
/// called on request threads: none may block for long. A pool of your own needs three
/// methods:
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_hyper::{Error, Select};
///
/// /// Always the same server.
/// struct One(ServerUrl);
///
/// impl Select for One {
///     fn select(&self) -> Result<ServerUrl, Error> {
///         Ok(self.0.clone())
///     }
///     fn servers(&self) -> Vec<ServerUrl> {
///         vec![self.0.clone()]
///     }
///     fn generation(&self) -> u64 {
///         0
///     }
/// }
/// # let one = One("http://10.0.0.1:80".parse().unwrap());
/// # assert_eq!(one.select().unwrap().as_str(), "http://10.0.0.1:80");
/// ```
pub trait Select: Send + Sync + 'static {
    /// The server for the next request.
    fn select(&self) -> Result<ServerUrl, Error>;

    /// Every server of the pool, drained ones included, in pool order (a sticky cookie
    /// may name any of them).
    fn servers(&self) -> Vec<ServerUrl>;

    /// A number that changes whenever the set of servers changes; caches keyed by it
    /// (the sticky index) are rebuilt when it does.
    fn generation(&self) -> u64;

    /// Records the outcome of a request sent to `server`: the status answered (or the
    /// error handler's status), its latency from the pick to the response head, and
    /// the time `now` it was known, read from [`Select::now`]. Default: ignored.
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration, now: Instant) {
        let _ = (server, status, latency, now);
    }

    /// The pool's clock: the balancer takes latencies and record times from it, so a
    /// pool on a manual clock sees only virtual time. Default: [`Instant::now`].
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl Select for RoundRobin<ServerUrl> {
    fn select(&self) -> Result<ServerUrl, Error> {
        Ok(self.next_server()?)
    }
    fn servers(&self) -> Vec<ServerUrl> {
        Self::servers(self)
    }
    fn generation(&self) -> u64 {
        Self::generation(self)
    }
}

impl Select for Rebalancer<ServerUrl> {
    fn select(&self) -> Result<ServerUrl, Error> {
        Ok(self.next_server()?)
    }
    /// The available servers: a sticky cookie never routes to an ejected or down one.
    fn servers(&self) -> Vec<ServerUrl> {
        self.available_servers()
    }
    fn generation(&self) -> u64 {
        self.balancer().generation()
    }
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration, now: Instant) {
        self.record_at(server, status, latency, now);
    }
    fn now(&self) -> Instant {
        Self::now(self)
    }
}

impl<P: Select + ?Sized> Select for Arc<P> {
    fn select(&self) -> Result<ServerUrl, Error> {
        (**self).select()
    }
    fn servers(&self) -> Vec<ServerUrl> {
        (**self).servers()
    }
    fn generation(&self) -> u64 {
        (**self).generation()
    }
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration, now: Instant) {
        (**self).record(server, status, latency, now);
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
}
