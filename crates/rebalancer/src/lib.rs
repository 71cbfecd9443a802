//! Meters and the rebalancer state machine for `roundrobin-core`.
//!
//! # Contract
//!
//! - [`Rebalancer`] wraps a [`RoundRobin`](roundrobin_core::RoundRobin) and moves its
//!   weights toward the servers that do better, by the reference's state machine:
//!   every backoff period (10 s by default), if the servers' [`Meter`] ratings split
//!   into good and bad ([`split_f64`], threshold 1.5), the good servers' weights grow
//!   by [`FSM_GROW_FACTOR`] up to [`FSM_MAX_WEIGHT`]; when they no longer split, the
//!   weights shrink back by the same factor to the original weights' proportions, and
//!   then stop changing. A step's weights reach the balancer as one `upsert_servers`
//!   change; the rebalancer is the one home of the weights, so `server_weight` and
//!   `snapshot` always report what the balancer applies (a refused change changes
//!   nothing, and is returned or counted in `refused_steps`).
//! - Sans-IO: every time-dependent call takes `now` (or reads the one [`Clock`] you pass
//!   in, which layers above also use for latencies). Nothing here sleeps, spawns or does
//!   I/O; tests drive a [`ManualClock`]. [`Rebalancer::next_step_due`] says when the
//!   next step is due, for callers that drive steps from a timer.
//! - Recording a response is lock-free: the server's meter is found in an immutable
//!   snapshot of the pool and counts with atomics. The state machine runs on a
//!   recording thread under a try-lock, so a recorder never waits for it; it changes
//!   weights at most once per backoff period and, while it has nothing to do,
//!   re-evaluates at most once per [`IDLE_RECHECK`] (the reference re-evaluates on
//!   every request).
//! - Fixed from the reference: re-upserting a server never creates a second record; a
//!   record for a server that was removed is ignored; weights of servers with a common
//!   factor (2 and 2) converge and stop instead of being pushed again every period;
//!   drained servers (weight 0) take no part in the split.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use roundrobin_core::RoundRobin;
//! use roundrobin_rebalancer::{ManualClock, Rebalancer};
//!
//! let clock = ManualClock::new();
//! let rebalancer = Rebalancer::builder(RoundRobin::new())
//!     .clock(Arc::new(clock.clone()))
//!     .build()?;
//! rebalancer.upsert_server("10.0.0.1:80", Some(1))?;
//! rebalancer.upsert_server("10.0.0.2:80", Some(1))?;
//! let server = rebalancer.next_server()?;
//! // ... forward the request, then:
//! rebalancer.record(&server, 200, Duration::from_millis(12));
//! for state in rebalancer.snapshot() {
//!     println!("{:?}: weight {} of {}", state.server, state.current_weight, state.original_weight);
//! }
//! # Ok::<(), roundrobin_rebalancer::Error>(())
//! ```
//!
//! # Crate features
//!
//! None: the crate needs `std` (threads share the rebalancer through atomics and an
//! `Arc` swap).

extern crate alloc;

mod clock;
mod counter;
mod error;
mod fsm;
mod health;
mod health_state;
mod meter;
mod rebalancer;
mod split;

pub use clock::{Clock, ManualClock, SystemClock};
pub use counter::{RatioCounter, RollingCounter, MAX_BUCKETS};
pub use error::Error;
pub use fsm::{FSM_GROW_FACTOR, FSM_MAX_WEIGHT};
pub use health::{Checks, Ejection, Health, SlowStart};
pub use meter::{ErrorRatioMeter, LatencyMeter, Meter};
pub use rebalancer::{Rebalancer, RebalancerBuilder, ServerState, DEFAULT_BACKOFF, IDLE_RECHECK};
pub use split::{
    split_f64, split_latencies, Split, LATENCY_SPLIT_THRESHOLD, RATING_SPLIT_THRESHOLD,
};
