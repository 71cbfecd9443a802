//! STUB shared balancer: a mutex-guarded port of the reference, to be replaced by the
//! lock-free schedule.

use alloc::vec::Vec;
use std::sync::Mutex;

use crate::{Error, Policy};

/// A weighted round-robin balancer shared by every task of a server.
#[derive(Debug)]
pub struct RoundRobin<S> {
    default_weight: u32,
    policy: Policy,
    state: Mutex<State<S>>,
}

#[derive(Debug)]
struct State<S> {
    servers: Vec<(S, u32)>,
    index: isize,
    cw: i64,
    generation: u64,
}

/// Configures a [`RoundRobin`].
#[derive(Debug, Clone)]
pub struct Builder {
    default_weight: u32,
    policy: Policy,
}

impl Builder {
    /// Weight given to servers upserted without one (default 1).
    pub fn default_weight(mut self, w: u32) -> Self {
        self.default_weight = w;
        self
    }
    /// Use the smooth policy.
    pub fn smooth(mut self) -> Self {
        self.policy = Policy::Smooth;
        self
    }
    /// Use the given policy.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Builds the balancer.
    pub fn build<S>(self) -> RoundRobin<S> {
        RoundRobin {
            default_weight: self.default_weight,
            policy: self.policy,
            state: Mutex::new(State {
                servers: Vec::new(),
                index: -1,
                cw: 0,
                generation: 0,
            }),
        }
    }
}

impl<S> Default for RoundRobin<S> {
    fn default() -> Self {
        Self::builder().build()
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl<S> RoundRobin<S> {
    /// A balancer with default weight 1 and the interleaved policy.
    pub fn new() -> Self {
        Self::default()
    }
    /// A builder.
    pub fn builder() -> Builder {
        Builder {
            default_weight: 1,
            policy: Policy::Interleaved,
        }
    }
    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }
    /// Incremented on every change of the pool.
    pub fn generation(&self) -> u64 {
        self.state.lock().unwrap().generation
    }
}

impl<S: Clone + PartialEq> RoundRobin<S> {
    /// Inserts or updates a server; iteration restarts.
    pub fn upsert_server(&self, server: S, weight: Option<u32>) -> Result<(), Error> {
        let w = weight.unwrap_or(self.default_weight);
        let mut st = self.state.lock().unwrap();
        match st.servers.iter_mut().find(|(s, _)| *s == server) {
            Some(e) => e.1 = w,
            None => st.servers.push((server, w)),
        }
        st.index = -1;
        st.cw = 0;
        st.generation += 1;
        Ok(())
    }
    /// Removes a server; iteration restarts.
    pub fn remove_server(&self, server: &S) -> Result<(), Error> {
        let mut st = self.state.lock().unwrap();
        let i = st
            .servers
            .iter()
            .position(|(s, _)| s == server)
            .ok_or(Error::ServerNotFound)?;
        st.servers.remove(i);
        st.index = -1;
        st.cw = 0;
        st.generation += 1;
        Ok(())
    }
    /// The servers in insertion order.
    pub fn servers(&self) -> Vec<S> {
        self.state
            .lock()
            .unwrap()
            .servers
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }
    /// The weight of a server.
    pub fn server_weight(&self, server: &S) -> Option<u32> {
        self.state
            .lock()
            .unwrap()
            .servers
            .iter()
            .find(|(s, _)| s == server)
            .map(|e| e.1)
    }
    /// The next server.
    pub fn next_server(&self) -> Result<S, Error> {
        let mut st = self.state.lock().unwrap();
        let n = st.servers.len();
        if n == 0 {
            return Err(Error::NoServers);
        }
        let m = st.servers.iter().map(|e| e.1).max().unwrap_or(0);
        if m == 0 {
            return Err(Error::AllWeightsZero);
        }
        let g = st.servers.iter().fold(0, |g, e| gcd(g, e.1)) as i64;
        loop {
            st.index = (st.index + 1) % n as isize;
            if st.index == 0 {
                st.cw -= g;
                if st.cw <= 0 {
                    st.cw = m as i64;
                }
            }
            let (s, w) = &st.servers[st.index as usize];
            if *w as i64 >= st.cw {
                return Ok(s.clone());
            }
        }
    }
}
