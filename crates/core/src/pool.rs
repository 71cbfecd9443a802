//! An owned pool with `&mut self` updates: the no_std face of the balancer.

use alloc::vec::Vec;

use crate::schedule::{Cursor, Schedule};
use crate::{Error, Policy};

/// A weighted server pool that owns its schedule and cursor (no_std + alloc).
///
/// The single-owner counterpart of the shared `RoundRobin` (feature `std`): updates
/// take `&mut self`, picks advance a plain [`Cursor`]. Same sequences, same errors, same
/// rules: `None` weight = the pool's default weight, explicit 0 = drained (kept, never
/// picked), every change restarts the iteration, a rejected change leaves the pool as
/// it was.
///
/// ```
/// use roundrobin_core::{Policy, Pool};
/// let mut pool = Pool::new(Policy::Interleaved, 1);
/// pool.upsert_server("a", Some(3))?;
/// pool.upsert_server("b", Some(2))?;
/// pool.upsert_server("z", Some(0))?;
/// let picks: Vec<&str> = (0..6).map(|_| pool.next_server().copied()).collect::<Result<_, _>>()?;
/// assert_eq!(picks, ["a", "a", "b", "a", "b", "a"]);
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pool<S> {
    servers: Vec<S>,
    weights: Vec<u32>,
    default_weight: u32,
    policy: Policy,
    start_offset: u64,
    state: Result<(Schedule, Cursor), Error>,
}

impl<S> Pool<S> {
    /// An empty pool following `policy`; servers upserted without a weight get
    /// `default_weight`.
    pub fn new(policy: Policy, default_weight: u32) -> Self {
        Self {
            servers: Vec::new(),
            weights: Vec::new(),
            default_weight,
            policy,
            start_offset: 0,
            state: Err(Error::NoServers),
        }
    }

    /// After every change, start the sequence at position `seed % period` instead of
    /// its first pick (see `Builder::start_offset` of the shared balancer).
    ///
    /// ```
    /// use roundrobin_core::{Policy, Pool};
    /// let mut pool = Pool::new(Policy::Smooth, 1).with_start_offset(1);
    /// pool.upsert_server("a", None)?;
    /// pool.upsert_server("b", None)?;
    /// assert_eq!(pool.next_server(), Ok(&"b"));
    /// # Ok::<(), roundrobin_core::Error>(())
    /// ```
    pub fn with_start_offset(mut self, seed: u64) -> Self {
        self.start_offset = seed;
        self
    }

    /// The policy of the pool.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The servers in insertion order.
    pub fn servers(&self) -> &[S] {
        &self.servers
    }

    /// The weights, in the order of [`Pool::servers`].
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The current schedule, or why there is none ([`Error::NoServers`],
    /// [`Error::AllWeightsZero`]).
    pub fn schedule(&self) -> Result<&Schedule, Error> {
        self.state.as_ref().map(|(s, _)| s).map_err(Clone::clone)
    }

    /// The next server of the sequence.
    ///
    /// Errors: [`Error::NoServers`], [`Error::AllWeightsZero`].
    pub fn next_server(&mut self) -> Result<&S, Error> {
        match &mut self.state {
            Ok((schedule, cursor)) => Ok(&self.servers[schedule.next(cursor)]),
            Err(e) => Err(e.clone()),
        }
    }

    /// Rebuilds the schedule from the weights; a rejected pool leaves the state as it was.
    fn rebuild(&mut self) -> Result<(), Error> {
        self.state = build(&self.weights, self.policy)?.map(|s| {
            let c = s.start_at(self.start_offset);
            (s, c)
        });
        Ok(())
    }
}

impl<S: PartialEq> Pool<S> {
    /// Inserts `server` (appended) or updates its weight; `None` means the pool's
    /// default weight. The iteration restarts.
    ///
    /// Errors ([`Error::TooManyServers`]) leave the pool unchanged.
    pub fn upsert_server(&mut self, server: S, weight: Option<u32>) -> Result<(), Error> {
        let w = weight.unwrap_or(self.default_weight);
        match self.servers.iter().position(|s| *s == server) {
            Some(i) => {
                let old = core::mem::replace(&mut self.weights[i], w);
                self.rebuild().inspect_err(|_| self.weights[i] = old)
            }
            None => {
                self.servers.push(server);
                self.weights.push(w);
                self.rebuild().inspect_err(|_| {
                    self.servers.pop();
                    self.weights.pop();
                })
            }
        }
    }

    /// Removes `server`; the iteration restarts.
    ///
    /// Errors: [`Error::ServerNotFound`]. (A removal never lengthens the period: the
    /// remaining weights have a smaller sum and a gcd at least as large.)
    pub fn remove_server(&mut self, server: &S) -> Result<(), Error> {
        let i = self
            .servers
            .iter()
            .position(|s| s == server)
            .ok_or(Error::ServerNotFound)?;
        self.servers.remove(i);
        self.weights.remove(i);
        self.rebuild()
    }

    /// The weight of `server`, `None` when it is not in the pool.
    pub fn server_weight(&self, server: &S) -> Option<u32> {
        let i = self.servers.iter().position(|s| s == server)?;
        Some(self.weights[i])
    }
}

/// Builds the schedule for `weights`: `Err` when the change must be rejected, `Ok(Err)`
/// when the pool is valid but cannot pick (empty, all weights 0).
pub(crate) fn build(weights: &[u32], policy: Policy) -> Result<Result<Schedule, Error>, Error> {
    match Schedule::new(weights, policy) {
        Ok(s) => Ok(Ok(s)),
        Err(e @ (Error::NoServers | Error::AllWeightsZero)) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}
