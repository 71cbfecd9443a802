//! The administration's view of a pool: change it at run time and look at it.

use std::sync::Arc;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_rebalancer::{Health, Rebalancer, ServerState};

use crate::Error;

/// Changes a pool at run time and reports its state: what the [`Admin`](crate::Admin)
/// API and dashboards need. Implemented for [`RoundRobin`], [`Rebalancer`] and, through
/// `Arc`, for shared pools.
pub trait Manage: Send + Sync + 'static {
    /// Adds a server, or changes its weight, and returns the weight it now has. `None`
    /// is the pool's default weight for a new server and the unchanged weight for an
    /// existing one.
    fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<u32, Error>;

    /// Removes a server; [`roundrobin_core::Error::ServerNotFound`] when absent.
    fn remove_server(&self, server: &ServerUrl) -> Result<(), Error>;

    /// Every server with its configured and current weight, rating and readiness, in
    /// pool order; O(n) in total.
    fn snapshot(&self) -> Vec<ServerState<ServerUrl>>;

    /// A server's health (up, slow start, ejected, down); `Up` for pools without
    /// health tracking, `None` when the server is not in the pool.
    fn health(&self, server: &ServerUrl) -> Option<Health> {
        self.snapshot()
            .iter()
            .any(|s| s.server == *server)
            .then_some(Health::Up)
    }

    /// Steps of a rebalancer that changed weights; 0 for pools without one.
    fn steps(&self) -> u64 {
        0
    }
}

impl Manage for RoundRobin<ServerUrl> {
    fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<u32, Error> {
        let weight = weight
            .or_else(|| self.server_weight(&server))
            .unwrap_or_else(|| self.default_weight());
        Self::upsert_server(self, server, Some(weight))?;
        Ok(weight)
    }
    fn remove_server(&self, server: &ServerUrl) -> Result<(), Error> {
        Ok(Self::remove_server(self, server)?)
    }
    fn snapshot(&self) -> Vec<ServerState<ServerUrl>> {
        self.weights()
            .into_iter()
            .map(|(server, weight)| ServerState {
                server,
                original_weight: weight,
                current_weight: weight,
                rating: 0.0,
                ready: true,
            })
            .collect()
    }
}

impl Manage for Rebalancer<ServerUrl> {
    fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<u32, Error> {
        Ok(self.upsert_server_weight(server, weight)?)
    }
    fn remove_server(&self, server: &ServerUrl) -> Result<(), Error> {
        Ok(Self::remove_server(self, server)?)
    }
    fn snapshot(&self) -> Vec<ServerState<ServerUrl>> {
        Self::snapshot(self)
    }
    fn health(&self, server: &ServerUrl) -> Option<Health> {
        Self::health(self, server)
    }
    fn steps(&self) -> u64 {
        Self::steps(self)
    }
}

impl<P: Manage + ?Sized> Manage for Arc<P> {
    fn upsert_server(&self, server: ServerUrl, weight: Option<u32>) -> Result<u32, Error> {
        (**self).upsert_server(server, weight)
    }
    fn remove_server(&self, server: &ServerUrl) -> Result<(), Error> {
        (**self).remove_server(server)
    }
    fn snapshot(&self) -> Vec<ServerState<ServerUrl>> {
        (**self).snapshot()
    }
    fn health(&self, server: &ServerUrl) -> Option<Health> {
        (**self).health(server)
    }
    fn steps(&self) -> u64 {
        (**self).steps()
    }
}
