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
//! - Every accepted change restarts the sequence atomically from its first pick, or,
//!   opt-in, from position `seed % period` ([`Builder::start_offset`]: proxies of a
//!   fleet given the same configuration then do not all send their next request to the
//!   same server).
//! - Picking from an empty pool fails with [`Error::NoServers`], from a pool whose
//!   weights are all 0 with [`Error::AllWeightsZero`].
//! - Over every period of `sum(w) / gcd(w)` picks, server `i` is picked exactly
//!   `w_i / gcd(w)` times, with either policy, for any weights up to `u32::MAX`.
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
//! [`Policy::Smooth`] spreads the same shares evenly, like nginx's smooth weighted
//! round robin, but not pick for pick: `a=11, b=3` gives `a a b a a a a b a a a b a a`
//! (as nginx), `a=5, b=1, c=1` gives `a b a a a c a` (nginx: `a a b a c a a`); equal
//! weights take turns in pool order (`a b c a b c`, in pools below 2^30 servers). Its guarantee is a
//! bound on the lag: in every prefix of `k` picks of a period, every server's count is
//! within **1.5** picks of its exact share `k·w_i/W`
//! (proven below; [`Schedule::lag_bound`] gives the bound of one schedule, typically
//! 1.0–1.3).
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
//! # The smooth sequence, and its lag bound
//!
//! The servers with a positive weight (divided by the gcd) are the leaves of a binary
//! tree. An internal node of weight `T` with children of weights `A >= B` hands the
//! positions it owns to its children by a centred Bresenham rule: of its first `m`
//! positions, the heavy child gets `floor((m·A + floor(T/2)) / T)`. The root owns every
//! position, so the server at position `k` is found by walking down from the root, one
//! 64×64-bit multiplication per level (the node's ratios in exact fixed point while the
//! period is below 2^32 picks, `u128` divisions beyond), and every node's children get
//! exactly `A` and `B` of every `T` positions: exact quotas.
//!
//! Write `D_v(k) = c_v(k) - k·W_v/W` for the lag of node `v` after `k` picks. The rule
//! gives `D_child = (W_child / W_v)·D_v + e` with `|e| <= 1/2`, and `D_root = 0`, so a
//! server's lag is at most `1/2 · Σ w/W_v` over the nodes `v` of its path below the
//! root (itself included). The tree keeps that sum below 3:
//!
//! - It is built like a Huffman tree (merge the two lightest), except that a node
//!   lighter than half of the next lightest is set aside instead of merged. So every
//!   merge pairs weights within a factor 2, and each step up a path multiplies the
//!   weight by at least 1.5: along a path inside such a tree the terms are at most
//!   `1, 2/3, 4/9, ..`, summing to less than `3 - 2·(2/3)^d` at depth `d`.
//! - The set-aside nodes (each more than twice the previous, all together lighter than
//!   the tree they were set aside from) are built the same way into a tree that becomes
//!   the sibling of the first: going up the chain of such trees the weight more than
//!   doubles, adding less than `2·(2/3)^d`.
//!
//! Servers of equal weight share one leaf (of their summed weight) and take its
//! positions in turn, in pool order: such a server's lag is its leaf's divided by the
//! number `k` of servers sharing it, plus at most `(k - 1)/k`, again below 1.5. The
//! tree then has one leaf per distinct weight.
//!
//! Hence `lag < 1.5` for every pool. [`Schedule::lag_bound`] computes the sum of the
//! schedule at hand. The property tests check both the bound and the lag itself at every
//! pick (random pools of 0..=2000 servers with weights up to `u16::MAX`, `u32`
//! extremes, Fibonacci-like weights, the worst shape for weight trees). The largest
//! bound seen in random pools was 1.26 (measured lag 1.11), in a search over
//! Fibonacci-like weights 1.34. A plain Huffman tree, without setting light nodes
//! aside, can reach about 1.68 (weights growing like Fibonacci numbers).
//!
//! # Cost, and the trade-off between the policies
//!
//! Weights change rarely, picks happen on every request, so each change builds an
//! immutable [`Schedule`] and a pick only reads it. Both policies take O(n) memory
//! whatever the weights, plus at most 256 KiB for a table ([`Schedule::heap_bytes`]),
//! and a change never fails for large weights.
//!
//! A shared pick ([`Schedule::next_atomic`], hence [`RoundRobin`]) claims its position
//! with one `fetch_add` of a pick count, with either policy.
//!
//! - Short periods, either policy: when the period has at most `4n + 65536` picks
//!   (small pools, small or equal weights), the whole period is materialised as a
//!   table of `u32` server indices (at most `16n` bytes + 256 KiB): a pick is one
//!   `fetch_add` and one read, O(1).
//! - Longer periods: the positions are claimed in order, so the sequence is produced a
//!   block at a time. The schedule holds a ring of 4 blocks of server indices
//!   (1024 a block interleaved, 512 smooth: 16 or 8 KiB of atomics, a tag per block checked seqlock-style, no `unsafe`); the
//!   caller that claims a block's first position generates the next block, the others
//!   read one entry. A position whose block is not there (not generated yet, being
//!   written, or replaced already for a caller that was delayed) is computed alone:
//!   the same server.
//! - Interleaved: a max tree over the weights and, for every server, the next heavier
//!   one (at most `5n` `u32`s), built in O(n), plus, beyond the table, an index of the
//!   rounds (a segment per distinct weight, and the servers sorted by weight in a
//!   wavelet matrix), built in O(n log n): position → `(round, index)` in O(log n). A
//!   block is generated from its first position by comparing the weights with the
//!   round's threshold 16 at a time and skipping runs of ineligible servers through the
//!   links and the max tree: about 1–5 ns a position. An owned [`Cursor`] steps
//!   `(round, index)` directly: O(1) amortised, O(log n) at worst.
//! - Smooth: the tree above (a leaf per distinct weight, `d - 1` nodes of 32 bytes for
//!   `d` distinct weights, and a `u32` per server sharing its weight), built in
//!   O(n log n). Position → server is a walk of the tree: O(depth), about `log2 d`
//!   levels for similar weights (the tree is a Huffman tree, so heavy leaves sit near
//!   the root), one dependent multiplication and load a level. A block is generated by
//!   splitting its rank range down the tree (each node's positions give each child a
//!   contiguous range of ranks) and merging the children's servers by the node's
//!   pattern (additions, no multiplication); the positions of nodes with 8 of them or
//!   fewer are then walked down together, a level at a time for the whole block (eight
//!   at a time, measured faster, in trees beyond 4096 nodes): still
//!   `depth` steps a position, but cheap and independent ones (about 10–30 ns a
//!   position from n = 100 to 100k, against 30–150 ns for one walk). Choose it
//!   where burst-free spreading matters; interleaved picks are cheaper for large pools.
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
//!   `arc-swap` and cache them per picking thread with `thread_local`; `std` for
//!   `thiserror`. Without it the crate is `no_std` + `alloc`.
#![no_std]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod error;
mod pool;
#[cfg(target_has_atomic = "64")]
mod ring;
mod schedule;
mod smooth;
mod url;
mod wavelet;

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
    /// A smooth sequence (like nginx's smooth weighted round robin, not pick for pick):
    /// every prefix stays within 1.5 picks of every server's exact share. `a=5, b=1,
    /// c=1` gives `a b a a a c a`.
    Smooth,
}

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
