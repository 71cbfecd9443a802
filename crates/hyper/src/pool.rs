//! The pool of servers a [`Balancer`](crate::Balancer) picks from.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_rebalancer::Rebalancer;

use crate::Error;

/// One server as the admin API and dashboards see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    /// The server.
    pub url: ServerUrl,
    /// The weight the balancer uses now.
    pub weight: u32,
    /// The weight it was configured with (differs from `weight` while a rebalancer
    /// moves traffic away from a failing server).
    pub original_weight: u32,
    /// How badly the server does: 0 is best (a plain balancer always reports 0).
    pub rating: f64,
}

/// "The pool": picks servers, learns from outcomes, and is changed at run time.
///
/// Implemented for [`RoundRobin`] (outcomes ignored), for [`Rebalancer`] (outcomes
/// move the weights) and, through `Arc`, for shared pools. Every method takes `&self` and must not block other callers for long: the
/// request path calls [`next_server`](Self::next_server) and [`record`](Self::record)
/// once per request.
pub trait Pool: Send + Sync + 'static {
    /// The server for the next request.
    fn next_server(&self) -> Result<ServerUrl, Error>;
    /// Records the outcome of a request sent to `server`: the status that was answered
    /// (or the error handler's status) and how long it took, from the pick until the
    /// response head (body streaming is not included).
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration);
    /// Adds a server, or changes its weight; `None` is the pool's default weight.
    fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<(), Error>;
    /// Removes a server; [`roundrobin_core::Error::ServerNotFound`] when absent.
    fn remove_server(&self, server: &ServerUrl) -> Result<(), Error>;
    /// The servers, in pool order.
    fn servers(&self) -> Vec<ServerUrl>;
    /// The weight in use for `server`.
    fn server_weight(&self, server: &ServerUrl) -> Option<u32>;
    /// Every server with its weights and rating, in pool order.
    fn snapshot(&self) -> Vec<ServerStatus>;
    /// A number that changes whenever the set of servers changes.
    fn generation(&self) -> u64;
}

/// The server operations `RoundRobin` and `Rebalancer` share by name: the `Pool`
/// methods that only forward to the inherent ones (errors converted).
macro_rules! forward_server_ops {
    () => {
        fn next_server(&self) -> Result<ServerUrl, Error> {
            Ok(Self::next_server(self)?)
        }
        fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<(), Error> {
            Ok(Self::upsert_server(self, server, weight)?)
        }
        fn remove_server(&self, server: &ServerUrl) -> Result<(), Error> {
            Ok(Self::remove_server(self, server)?)
        }
        fn servers(&self) -> Vec<ServerUrl> {
            Self::servers(self)
        }
        fn server_weight(&self, server: &ServerUrl) -> Option<u32> {
            Self::server_weight(self, server)
        }
    };
}

impl Pool for RoundRobin<ServerUrl> {
    forward_server_ops!();
    fn record(&self, _server: &ServerUrl, _status: u16, _latency: Duration) {}
    fn snapshot(&self) -> Vec<ServerStatus> {
        Self::servers(self)
            .into_iter()
            .filter_map(|url| {
                let weight = Self::server_weight(self, &url)?;
                Some(ServerStatus {
                    url,
                    weight,
                    original_weight: weight,
                    rating: 0.0,
                })
            })
            .collect()
    }
    fn generation(&self) -> u64 {
        Self::generation(self)
    }
}

impl Pool for Rebalancer<ServerUrl> {
    forward_server_ops!();
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration) {
        Self::record(self, server, status, latency);
    }
    fn snapshot(&self) -> Vec<ServerStatus> {
        Self::snapshot(self)
            .into_iter()
            .map(|s| ServerStatus {
                url: s.server,
                weight: s.current_weight,
                original_weight: s.original_weight,
                rating: s.rating,
            })
            .collect()
    }
    fn generation(&self) -> u64 {
        self.balancer().generation()
    }
}

impl<P: Pool + ?Sized> Pool for Arc<P> {
    fn next_server(&self) -> Result<ServerUrl, Error> {
        (**self).next_server()
    }
    fn record(&self, server: &ServerUrl, status: u16, latency: Duration) {
        (**self).record(server, status, latency);
    }
    fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<(), Error> {
        (**self).upsert_server(server, weight)
    }
    fn remove_server(&self, server: &ServerUrl) -> Result<(), Error> {
        (**self).remove_server(server)
    }
    fn servers(&self) -> Vec<ServerUrl> {
        (**self).servers()
    }
    fn server_weight(&self, server: &ServerUrl) -> Option<u32> {
        (**self).server_weight(server)
    }
    fn snapshot(&self) -> Vec<ServerStatus> {
        (**self).snapshot()
    }
    fn generation(&self) -> u64 {
        (**self).generation()
    }
}
