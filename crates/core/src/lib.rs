//! Weighted round-robin server selection: layer L0 of `roundrobin`.
//!
//! A port of the selection of vulcand/oxy's `roundrobin` package: a pool of servers in
//! insertion order, each with a weight, and a sequence of picks in which every server
//! gets its share. The core is sans-IO (no clock, no I/O, no randomness, no globals)
//! and `#![no_std]` + `alloc`.
//!
//! # Contract
//!
//! - `upsert_server(s, None)` appends `s` with the balancer's default weight (1 unless
//!   configured), `Some(w)` with weight `w`; an existing server gets the new weight.
//!   `Some(0)` drains a server: kept in [`RoundRobin::servers`], never picked.
//! - Every accepted change restarts the sequence from its first pick.
//! - Picking from an empty pool fails with [`Error::NoServers`], from a pool whose
//!   weights are all 0 with [`Error::AllWeightsZero`].
//! - Over one period of `sum(w) / gcd(w)` picks, server `i` is picked exactly
//!   `w_i / gcd(w)` times, with either policy.
//!
//! # Policies
//!
//! [`Policy::Interleaved`] (the default) reproduces the reference (LVS interleaved
//! weighted round robin) position for position: rounds with a threshold going down
//! from the largest weight to the gcd, in each round the servers whose weight reaches
//! the threshold, in pool order. `a=1, b=1` gives `a b a b`; after `b` gets weight 3,
//! `b b a b`; `a=3, b=2, z=0` gives `a a b a b`. Heavy servers come in bursts: with
//! `a=11, b=3` the sequence starts with nine `a` in a row (`a a a a a a a a a b a b a b`).
//!
//! [`Policy::Smooth`] is nginx's smooth weighted round robin: same shares, spread as
//! evenly as possible. `a=5, b=1, c=1` gives `a a b a c a a`; `a=11, b=3` gives
//! `a a b a a a a b a a a b a a` (never more than four `a` in a row). No server's count
//! in any prefix of the sequence gets a whole pick ahead of its exact share.
//!
//! ```
//! use roundrobin_core::RoundRobin;
//! let interleaved = RoundRobin::new();
//! let smooth = RoundRobin::<&str>::builder().smooth().build();
//! for rr in [&interleaved, &smooth] {
//!     rr.upsert_server("a", Some(11))?;
//!     rr.upsert_server("b", Some(3))?;
//! }
//! let take = |rr: &RoundRobin<&'static str>| -> Result<String, roundrobin_core::Error> {
//!     (0..14).map(|_| rr.next_server()).collect()
//! };
//! assert_eq!(take(&interleaved)?, "aaaaaaaaababab");
//! assert_eq!(take(&smooth)?, "aabaaaabaaabaa");
//! # Ok::<(), roundrobin_core::Error>(())
//! ```
//!
//! # Cost, and the trade-off between the policies
//!
//! Weights change rarely, picks happen on every request, so each change builds an
//! immutable [`Schedule`] and a pick only walks it.
//!
//! - Interleaved: O(n) memory whatever the weights (a max tree over the weights, at
//!   most `4n` `u32`s; a weight of `u32::MAX` costs nothing more). The position is a
//!   `(round, index)` pair packed in one `AtomicU64`; a pick finds the next eligible
//!   server by probing a few neighbours, then by descending the max tree, and claims the
//!   position with one compare-and-swap: O(1) amortised for typical weights, O(log n)
//!   at worst.
//! - Smooth: nginx's sequence has no closed form and its state is per server, so the
//!   whole period is precomputed at change time into a table of `u32` indices (O(period)
//!   memory, not O(n)) and a pick is one `fetch_add` of a pick counter and one table read. The
//!   table is built by a kinetic tournament over the servers' `current` values; with
//!   weights 1..=4096 at n = 1000 (a 2-million-pick period) it took 665 ms (bench
//!   `build/smooth/1000` of `roundrobin-benches`), paid by the writer, never by picks,
//!   which keep using the old snapshot meanwhile. The period is capped at [`MAX_SMOOTH_PERIOD`] picks (16 MiB); a
//!   change that would exceed it is rejected with [`Error::PeriodTooLong`] and the pool
//!   stays as it was (weights are divided by their gcd first, so rebalancer-style weights
//!   such as 1 and 4096 stay far below it). Choose it for small and medium pools where
//!   burst-free spreading matters; choose interleaved for large pools or large weights.
//!
//! # Layers
//!
//! [`Schedule`] (with a [`Cursor`] or an [`AtomicCursor`]) and [`Pool`] are the no_std
//! building blocks; [`RoundRobin`] (feature `std`, with its caching [`Picker`] handle for
//! hot loops) is the shared balancer the other crates use. [`ServerUrl`] is the identity
//! of an HTTP server.
//!
//! # Crate features
//!
//! - `std` (default): [`RoundRobin`] and its [`Builder`], which swap `Arc` snapshots with
//!   `arc-swap`; `std` for `thiserror`. Without it the crate is `no_std` + `alloc`.
#![no_std]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod error;
mod pool;
mod schedule;
mod smooth;
mod url;

pub use error::Error;
pub use pool::Pool;
#[cfg(target_has_atomic = "64")]
pub use schedule::AtomicCursor;
#[allow(deprecated)]
pub use schedule::MAX_SMOOTH_PERIOD;
pub use schedule::{Cursor, Schedule};
pub use url::ServerUrl;

#[cfg(feature = "std")]
mod balancer;
#[cfg(feature = "std")]
pub use balancer::{Builder, Picker, RoundRobin};

/// Which sequence a balancer produces. Both give every server its exact share over a
/// period; they differ in how the picks are spread (see the [crate docs](crate)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The reference (LVS) interleaved weighted round robin sequence, position for
    /// position. `a=3, b=2` gives `a a b a b`.
    #[default]
    Interleaved,
    /// nginx's smooth weighted round robin sequence. `a=5, b=1, c=1` gives
    /// `a a b a c a a`.
    Smooth,
}

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
