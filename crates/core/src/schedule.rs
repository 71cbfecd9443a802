//! The immutable selection schedule (no_std + alloc): built once per pool change,
//! walked by a [`Cursor`] or an [`AtomicCursor`].

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

#[cfg(target_has_atomic = "64")]
use crate::ring::{self, Ring};
use crate::smooth::{self, Tree, MAX_SERVERS};
use crate::wavelet::Wavelet;
use crate::{Error, Policy};

/// Former cap on the smooth policy's period, when it precomputed the whole period into
/// a table. The smooth schedule is now O(n) memory whatever the weights, and no change
/// is rejected for its period.
#[deprecated(note = "the smooth policy no longer precomputes its period: there is no cap")]
pub const MAX_SMOOTH_PERIOD: u64 = 1 << 22;

/// How many heavier servers a pick follows (from a server to the next heavier one)
/// before it searches the max tree.
const CHAIN: usize = 8;

/// The selection sequence of one pool state, immutable once built.
///
/// Built from the weights in pool order; [`Schedule::next`] yields server indices into
/// that order. A [`Cursor`] (owned, `&mut`) or an [`AtomicCursor`] (shared, lock-free)
/// holds the position, so a rebuilt schedule with a fresh cursor restarts the
/// iteration. The sequence has no interior state; the only one the schedule has is a
/// cache for [`Schedule::next_atomic`] (a ring of prefetched blocks), which a clone
/// starts empty.
///
/// Memory is O(n) whatever the weights ([`Schedule::heap_bytes`]):
/// [`Policy::Interleaved`] keeps a max tree over the weights and the next heavier
/// server of every server (at most `5n` `u32`s),
/// [`Policy::Smooth`] an apportionment tree (at most `n - 1` nodes of 32 bytes, and 16
/// bytes per shared weight and a `u32` per server sharing it); either policy
/// adds, when the period has at most `4n + 65536` picks, the period itself as a table
/// of `u32` indices (at most `16n` bytes + 256 KiB), which makes a pick O(1), and
/// otherwise the ring of [`Schedule::next_atomic`] (16 KiB) and, for interleaved, an
/// index of its rounds (one 16-byte segment per distinct weight and a wavelet matrix
/// of `log2 n` bits per server, with a directory: at most about `6n` more `u32`s).
///
/// ```
/// use roundrobin_core::{Policy, Schedule};
/// let schedule = Schedule::new(&[3, 2, 0], Policy::Interleaved)?;
/// let mut cursor = schedule.start();
/// let picks: Vec<usize> = (0..6).map(|_| schedule.next(&mut cursor)).collect();
/// assert_eq!(picks, [0, 0, 1, 0, 1, 0]);
/// assert_eq!(schedule.period(), 5);
/// // The same sequence from its fourth pick (positions count from 0).
/// let mut cursor = schedule.start_at(3);
/// assert_eq!(schedule.next(&mut cursor), 0);
/// assert_eq!(schedule.next(&mut cursor), 1);
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
pub struct Schedule {
    kind: Kind,
    /// The whole period as server indices, when it has at most [`table_cap`] picks:
    /// then a pick is one read, for either policy.
    table: Option<Box<[u32]>>,
    period: u64,
    /// `u64::MAX / period`: positions are reduced modulo the period without a division.
    magic: u64,
    /// Beyond the table: the blocks of the sequence shared pickers are about to claim,
    /// generated a block at a time ([`Schedule::next_atomic`]).
    #[cfg(target_has_atomic = "64")]
    ring: Option<Ring>,
}

/// A clone starts with an empty ring of prefetched blocks (it is a cache).
impl Clone for Schedule {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            table: self.table.clone(),
            period: self.period,
            magic: self.magic,
            #[cfg(target_has_atomic = "64")]
            ring: self.ring.as_ref().map(|r| Ring::new(r.shift())),
        }
    }
}

/// Policy and period only: the trees can hold many nodes.
impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("policy", &self.policy())
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// How positions map to servers beyond the table: the interleaved cursor steps through
/// `(round, index)` pairs, the smooth position walks the apportionment tree.
#[derive(Clone)]
enum Kind {
    Interleaved(Interleaved),
    Smooth(Smooth),
}

/// The smooth sequence beyond the table: position → server by a walk of the
/// apportionment tree.
#[derive(Clone)]
struct Smooth {
    tree: Tree,
}

/// A position in a [`Schedule`]: the next pick it yields. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The position in the period.
    pos: u64,
    /// Interleaved schedules without a table: the same position as a packed
    /// `(round, index)`, stepped in O(1) amortised (0 otherwise).
    at: u64,
}

impl Schedule {
    /// Builds the schedule of `weights` (pool order) under `policy`: O(n) for
    /// interleaved, O(n log n) for smooth, whatever the weights.
    ///
    /// Errors: [`Error::NoServers`] for an empty slice, [`Error::AllWeightsZero`] when
    /// no weight is positive, [`Error::TooManyServers`] above `u32::MAX` servers
    /// (interleaved) or `2^31` servers (smooth).
    pub fn new(weights: &[u32], policy: Policy) -> Result<Self, Error> {
        if weights.is_empty() {
            return Err(Error::NoServers);
        }
        let limit = match policy {
            Policy::Interleaved => u32::MAX as usize,
            Policy::Smooth => MAX_SERVERS,
        };
        if weights.len() > limit {
            return Err(Error::TooManyServers);
        }
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        if g == 0 {
            return Err(Error::AllWeightsZero);
        }
        // At most u32::MAX weights below 2^32 each: the sum fits in a u64.
        let period = weights.iter().map(|&w| u64::from(w / g)).sum::<u64>();
        let kind = match policy {
            Policy::Interleaved => Kind::Interleaved(Interleaved::new(weights, g)),
            Policy::Smooth => Kind::Smooth(Smooth {
                tree: smooth(weights, g),
            }),
        };
        let mut kind = kind;
        let table = (period <= table_cap(weights.len())).then(|| materialise(&kind, period));
        if let (Kind::Interleaved(il), None) = (&mut kind, &table) {
            il.seek = Some(Seek::new(il));
        }
        #[cfg(target_has_atomic = "64")]
        let ring = match (&table, &kind) {
            (Some(_), _) => None,
            // Wide trees (periods of 2^32 and more) walk each position anyway: no ring.
            (None, Kind::Smooth(sm)) if !sm.tree.is_narrow() => None,
            (None, Kind::Smooth(_)) => Some(Ring::new(ring::SMALL_SHIFT)),
            (None, Kind::Interleaved(_)) => Some(Ring::new(ring::SHIFT)),
        };
        Ok(Self {
            kind,
            table,
            period,
            magic: u64::MAX / period,
            #[cfg(target_has_atomic = "64")]
            ring,
        })
    }

    /// The policy the schedule follows.
    pub fn policy(&self) -> Policy {
        match self.kind {
            Kind::Interleaved(_) => Policy::Interleaved,
            Kind::Smooth(_) => Policy::Smooth,
        }
    }

    /// Picks per period: `sum(w) / gcd(w)`. Over one period every server `i` is picked
    /// exactly `w_i / gcd(w)` times.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Bytes the schedule holds on the heap (its trees and tables), beside the
    /// `size_of::<Schedule>()` bytes of the value itself.
    pub fn heap_bytes(&self) -> usize {
        let table = self.table.as_ref().map_or(0, |t| size_of_val(&**t));
        #[cfg(target_has_atomic = "64")]
        let table = table + self.ring.as_ref().map_or(0, Ring::heap_bytes);
        table
            + match &self.kind {
                Kind::Interleaved(il) => {
                    size_of_val(&*il.tree)
                        + size_of_val(&*il.heavier)
                        + il.seek.as_ref().map_or(0, Seek::heap_bytes)
                }
                Kind::Smooth(sm) => sm.tree.heap_bytes(),
            }
    }

    /// For [`Policy::Smooth`], a bound on every server's lag that holds for the whole
    /// sequence: in every prefix of `k` picks (counted from the start of a period),
    /// server `i`'s count is within `lag_bound` of `k · w_i / sum(w)`. At most 1.5 (see the
    /// [crate docs](crate)). `None` for [`Policy::Interleaved`], whose bursts make the lag
    /// grow with the weights.
    ///
    /// ```
    /// use roundrobin_core::{Policy, Schedule};
    /// let schedule = Schedule::new(&[5, 1, 1], Policy::Smooth)?;
    /// assert!(schedule.lag_bound().unwrap() <= 1.5);
    /// # Ok::<(), roundrobin_core::Error>(())
    /// ```
    pub fn lag_bound(&self) -> Option<f64> {
        match &self.kind {
            Kind::Interleaved(_) => None,
            Kind::Smooth(sm) => Some(sm.tree.lag_bound()),
        }
    }

    /// The cursor at the first pick of the sequence.
    pub fn start(&self) -> Cursor {
        Cursor {
            pos: 0,
            at: match &self.kind {
                Kind::Interleaved(il) if self.table.is_none() => il.first(),
                _ => 0,
            },
        }
    }

    /// The cursor at position `offset % period` of the sequence (position 0 is the
    /// [`Schedule::start`]). O(1) for smooth and for periods kept as a table, O(log n)
    /// for other interleaved schedules.
    pub fn start_at(&self, offset: u64) -> Cursor {
        let pos = smooth::rem(offset, self.period, self.magic);
        Cursor {
            pos,
            at: match &self.kind {
                Kind::Interleaved(il) if self.table.is_none() => il.position(pos),
                _ => 0,
            },
        }
    }

    /// Returns the server index at `cursor` and advances the cursor.
    ///
    /// A cursor from another schedule never panics: when it points outside this one it
    /// restarts at [`Schedule::start`].
    pub fn next(&self, cursor: &mut Cursor) -> usize {
        let stepped = match (&self.table, &self.kind) {
            (None, Kind::Interleaved(il)) => Some(il),
            _ => None,
        };
        if cursor.pos >= self.period || stepped.is_some_and(|il| !il.valid(cursor.at)) {
            *cursor = self.start();
        }
        let k = cursor.pos;
        cursor.pos = if k + 1 == self.period { 0 } else { k + 1 };
        match stepped {
            Some(il) => {
                let (index, next) = il.step(cursor.at);
                cursor.at = next;
                index
            }
            None => self.at(k),
        }
    }

    /// The server index at position `k` (below the period): a table read, a walk of
    /// the smooth tree, or a seek in the interleaved rounds (O(log n)).
    #[inline]
    fn at(&self, k: u64) -> usize {
        match (&self.table, &self.kind) {
            (Some(table), _) => table.get(k as usize).map_or(0, |&i| i as usize),
            (None, Kind::Smooth(sm)) => sm.tree.at(k),
            (None, Kind::Interleaved(il)) => il.index_at(k),
        }
    }

    /// Claims the position held by `cursor` for this caller and returns its server
    /// index. Lock-free: one `fetch_add` of the pick count claims exactly one position
    /// (taken modulo the period; it would only wrap after 2^64 picks), so concurrent
    /// callers get distinct positions of the same sequence.
    ///
    /// Periods kept as a table: one read. Longer periods: the schedule holds a small
    /// ring of prefetched blocks of the sequence (4 blocks of 1024 server indices,
    /// interleaved, or of 512, smooth);
    /// the caller that claims the first position of a block generates the next block
    /// (O(1) amortised a position for interleaved, a few additions per tree level for
    /// smooth), the others read their entry, checked seqlock-style. A position whose
    /// block is missing (not generated yet, or already overwritten for a caller that
    /// was delayed) is computed on its own: the same server, O(log n) or O(depth).
    #[cfg(target_has_atomic = "64")]
    #[inline]
    pub fn next_atomic(&self, cursor: &AtomicCursor) -> usize {
        use core::sync::atomic::Ordering::Relaxed;
        let k = cursor.0.fetch_add(1, Relaxed);
        if let Some(table) = &self.table {
            let p = smooth::rem(k, self.period, self.magic);
            return table.get(p as usize).map_or(0, |&i| i as usize);
        }
        let Some(ring) = &self.ring else {
            return self.at(smooth::rem(k, self.period, self.magic));
        };
        if ring.starts_block(k) {
            self.fill(ring, (k >> ring.shift()) + 1);
        }
        match ring.get(k) {
            Ok(index) => index as usize,
            Err(seen) => self.missed(ring, k, seen),
        }
    }

    /// The entry of position count `k` was not in the ring: generate its block when
    /// the ring holds an older one (the start of a cursor, or a block nobody generated),
    /// else compute it alone.
    #[cfg(target_has_atomic = "64")]
    #[cold]
    #[inline(never)]
    fn missed(&self, ring: &Ring, k: u64, seen: u64) -> usize {
        let block = k >> ring.shift();
        if ring::older(seen, block) {
            self.fill(ring, block);
            if let Ok(index) = ring.get(k) {
                return index as usize;
            }
        }
        self.at(smooth::rem(k, self.period, self.magic))
    }

    /// Generates block `block` of the sequence (position counts `block · B ..`) into
    /// its slot of the ring, unless another caller is writing that slot or it holds a
    /// newer block.
    #[cfg(target_has_atomic = "64")]
    #[cold]
    #[inline(never)]
    fn fill(&self, ring: &Ring, block: u64) {
        let Some(claim) = ring.claim(block) else {
            return;
        };
        let pos = smooth::rem(block << ring.shift(), self.period, self.magic);
        match &self.kind {
            Kind::Interleaved(il) => il.fill(il.position(pos), claim.entries()),
            Kind::Smooth(sm) => {
                // The block and the scratch of its merges, on the stack (no allocation
                // on the picking thread), 64 entries further than 4 KiB apart (loads
                // from one at the offset of a recent store to the other stall on 4K
                // aliasing).
                const LEN: usize = 1 << ring::SMALL_SHIFT;
                let mut buf = [0u32; 2 * LEN + 64];
                let (out, tmp) = buf.split_at_mut(LEN);
                let out = &mut out[..claim.entries().len().min(LEN)];
                sm.tree.fill_wrapping(pos, self.period, out, &mut tmp[64..]);
                for (dst, &e) in claim.entries().iter().zip(&*out) {
                    dst.store(e, core::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        claim.publish();
    }
}

/// A cursor shared by threads: [`Schedule::next_atomic`] advances it lock-free.
///
/// ```
/// use roundrobin_core::{AtomicCursor, Policy, Schedule};
/// let schedule = Schedule::new(&[5, 1, 1], Policy::Smooth)?;
/// let cursor = AtomicCursor::new(&schedule);
/// let picks: Vec<usize> = (0..7).map(|_| schedule.next_atomic(&cursor)).collect();
/// assert_eq!(picks, [0, 1, 0, 0, 0, 2, 0]);
/// // Or from any position: here the fifth.
/// let cursor = AtomicCursor::from(schedule.start_at(4));
/// assert_eq!(schedule.next_atomic(&cursor), 0);
/// assert_eq!(schedule.next_atomic(&cursor), 2);
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[cfg(target_has_atomic = "64")]
#[derive(Debug)]
pub struct AtomicCursor(core::sync::atomic::AtomicU64);

#[cfg(target_has_atomic = "64")]
impl AtomicCursor {
    /// A cursor at the start of `schedule`.
    pub fn new(schedule: &Schedule) -> Self {
        Self::from(schedule.start())
    }
}

#[cfg(target_has_atomic = "64")]
impl From<Cursor> for AtomicCursor {
    /// A shared cursor at the position of `cursor` (of the same schedule).
    fn from(cursor: Cursor) -> Self {
        Self(core::sync::atomic::AtomicU64::new(cursor.pos))
    }
}

/// The smooth tree of `weights` (gcd `g`).
fn smooth(weights: &[u32], g: u32) -> Tree {
    let active: Vec<(u32, u64)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0)
        .map(|(i, &w)| (i as u32, u64::from(w / g)))
        .collect();
    Tree::new(&active)
}

/// The whole period of `kind` as server indices (`period` at most [`table_cap`]).
fn materialise(kind: &Kind, period: u64) -> Box<[u32]> {
    match kind {
        Kind::Smooth(sm) => (0..period).map(|k| sm.tree.at(k) as u32).collect(),
        Kind::Interleaved(il) => {
            let mut pos = il.first();
            (0..period)
                .map(|_| {
                    let (index, next) = il.step(pos);
                    pos = next;
                    index as u32
                })
                .collect()
        }
    }
}

/// The longest period kept as a table, either policy: `4n` entries (as many bytes as
/// the trees, at most) plus [`TABLE_FLOOR`] (256 KiB of `u32`) in any pool, so that
/// small pools with ordinary weights get O(1) picks too. Building the table costs a
/// walk per entry (smooth) or a step per entry (interleaved): at most a few ms.
fn table_cap(n: usize) -> u64 {
    4 * n as u64 + TABLE_FLOOR
}

/// The part of [`table_cap`] that does not grow with the pool, in entries.
const TABLE_FLOOR: u64 = 1 << 16;

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The interleaved (LVS) sequence: rounds with thresholds `cw = R, R-1, .., 1` (weights
/// divided by their gcd, `R` the largest); round by round, the servers with weight
/// `>= cw` in index order.
///
/// A position packs `(round << 32) | index`. The next eligible index is found by
/// following a few links from a server to the next heavier one (the servers skipped
/// are lighter than one already found too light), then by a descent of an implicit
/// binary max tree over the weights, so a pick costs O(1) amortised for typical weights
/// and O(log n) at worst.
#[derive(Clone)]
struct Interleaved {
    /// Implicit max tree: leaves at `size..size + n` hold the scaled weights, node `v`
    /// holds the max of `2v` and `2v + 1`; padding leaves are 0.
    tree: Box<[u32]>,
    size: usize,
    n: usize,
    /// Rounds per period: the largest scaled weight.
    rounds: u32,
    /// The first index holding the largest weight: eligible in every round.
    first_max: u32,
    /// For every server, the next index holding a larger weight (`n` if none).
    heavier: Box<[u32]>,
    /// Position → `(round, index)` in O(log n); built when the period is not a table.
    seek: Option<Seek>,
}

impl Interleaved {
    fn new(weights: &[u32], g: u32) -> Self {
        let n = weights.len();
        let size = n.next_power_of_two();
        let mut tree = vec![0u32; 2 * size];
        for (leaf, &w) in tree[size..].iter_mut().zip(weights) {
            *leaf = w / g;
        }
        for v in (1..size).rev() {
            tree[v] = tree[2 * v].max(tree[2 * v + 1]);
        }
        let rounds = tree[1];
        let first_max = tree[size..size + n]
            .iter()
            .position(|&w| w == rounds)
            .unwrap_or(0) as u32;
        // Next greater element, right to left with a stack of candidates.
        let mut heavier = vec![n as u32; n];
        let mut stack: Vec<usize> = Vec::new();
        for i in (0..n).rev() {
            let w = tree[size + i];
            while stack.last().is_some_and(|&j| tree[size + j] <= w) {
                stack.pop();
            }
            if let Some(&j) = stack.last() {
                heavier[i] = j as u32;
            }
            stack.push(i);
        }
        Self {
            tree: tree.into_boxed_slice(),
            size,
            n,
            rounds,
            first_max,
            heavier: heavier.into_boxed_slice(),
            seek: None,
        }
    }

    fn first(&self) -> u64 {
        u64::from(self.first_max)
    }

    /// The packed position of pick `p` (below the period): O(log n) with the seek
    /// structure (else the first pick).
    fn position(&self, p: u64) -> u64 {
        match &self.seek {
            Some(seek) => {
                let (round, index) = seek.find(p);
                pack(round, index as usize)
            }
            None => self.first(),
        }
    }

    /// The server index of pick `p` (below the period).
    fn index_at(&self, p: u64) -> usize {
        self.seek
            .as_ref()
            .map_or(self.first_max, |seek| seek.find(p).1) as usize
    }

    /// The server indices from the packed position `at` on, into `out` (a ring
    /// slot, written in place): each round's eligible servers found 64 at a time (a
    /// bit mask of the weights reaching the threshold); a run of 64 ineligible servers
    /// is skipped by [`Interleaved::find`].
    #[cfg(target_has_atomic = "64")]
    fn fill(&self, at: u64, out: &[core::sync::atomic::AtomicU32]) {
        use core::sync::atomic::Ordering::Relaxed;
        let leaves = &self.tree[self.size..self.size + self.n];
        let (mut round, mut j) = if self.valid(at) {
            ((at >> 32) as u32, at as u32 as usize)
        } else {
            (0, self.first_max as usize)
        };
        let mut o = 0;
        loop {
            let cw = self.rounds - round;
            while j < self.n {
                if o >= out.len() {
                    return;
                }
                let end = (j + 64).min(self.n);
                let mut mask = eligible(&leaves[j..end], cw);
                if mask == 0 {
                    j = self.find(end, cw).unwrap_or(self.n);
                    continue;
                }
                let count = mask.count_ones() as usize;
                let dst = out.get(o..out.len().min(o + count)).unwrap_or_default();
                for slot in dst {
                    slot.store((j + mask.trailing_zeros() as usize) as u32, Relaxed);
                    mask &= mask - 1;
                }
                o += count;
                j = end;
            }
            round = if round + 1 == self.rounds {
                0
            } else {
                round + 1
            };
            j = self.find(0, self.rounds - round).unwrap_or(0);
        }
    }

    /// Whether `pos` is a `(round, index)` of this schedule.
    fn valid(&self, pos: u64) -> bool {
        let (round, index) = ((pos >> 32) as u32, pos as u32 as usize);
        let leaves = &self.tree[self.size..self.size + self.n];
        round < self.rounds && leaves.get(index).is_some_and(|&w| w >= self.rounds - round)
    }

    #[inline]
    fn step(&self, pos: u64) -> (usize, u64) {
        let (round, index) = ((pos >> 32) as u32, pos as u32 as usize);
        let leaves = &self.tree[self.size..self.size + self.n];
        let cw = self.rounds.wrapping_sub(round);
        match leaves.get(index) {
            Some(&w) if round < self.rounds && w >= cw => {}
            // Not a position of this schedule (a foreign cursor): restart.
            _ => return self.step(self.first()),
        }
        // Fast path: the next server is eligible in the same round.
        if leaves.get(index + 1).is_some_and(|&w| w >= cw) {
            return (index, pos + 1);
        }
        (index, self.after(round, index))
    }

    /// The position after `(round, index)` when `index + 1` is not eligible.
    fn after(&self, round: u32, index: usize) -> u64 {
        if let Some(j) = self.find(index + 2, self.rounds - round) {
            return pack(round, j);
        }
        let round = if round + 1 == self.rounds {
            0
        } else {
            round + 1
        };
        let j = self
            .find(0, self.rounds - round)
            .unwrap_or(self.first_max as usize);
        pack(round, j)
    }

    /// The first index `>= from` whose weight is `>= cw` (`cw >= 1`).
    #[inline]
    fn find(&self, from: usize, cw: u32) -> Option<usize> {
        // Every index between `j` and `heavier[j]` weighs at most `w_j`: when `w_j < cw`
        // none of them is eligible.
        let mut j = from;
        for _ in 0..CHAIN {
            let w = *self.tree.get(self.size + j).filter(|_| j < self.n)?;
            if w >= cw {
                return Some(j);
            }
            j = self.heavier[j] as usize;
        }
        if j >= self.n {
            return None;
        }
        self.descend(j, cw)
    }

    /// Max-tree search for the first index `>= from` with weight `>= cw`.
    fn descend(&self, from: usize, cw: u32) -> Option<usize> {
        let mut v = self.size + from;
        loop {
            if self.tree[v] >= cw {
                while v < self.size {
                    v *= 2;
                    if self.tree[v] < cw {
                        v += 1;
                    }
                }
                return Some(v - self.size);
            }
            // Climb while `v` is a right child, then move to the right sibling.
            while v & 1 == 1 {
                v >>= 1;
            }
            if v == 0 {
                return None;
            }
            v += 1;
        }
    }
}

/// Position → `(round, index)` of an interleaved schedule. While the threshold `cw`
/// runs between two consecutive distinct weights, every round has the same eligible
/// servers: one segment per distinct weight (where it starts, its top threshold, its
/// servers per round). Within a round, the eligible servers are the heaviest `per`
/// ones, a prefix of the servers sorted by weight (then index): the `rank`-th in pool
/// order is that prefix's `rank`-th smallest index, found in a wavelet matrix.
#[derive(Clone)]
struct Seek {
    segments: Box<[Segment]>,
    sorted: Wavelet,
    /// Rounds per period.
    rounds: u32,
}

#[derive(Clone, Copy)]
struct Segment {
    /// The position of the segment's first pick.
    start: u64,
    /// The threshold of its first round (a weight).
    high: u32,
    /// Servers eligible in each of its rounds.
    per: u32,
}

impl Seek {
    fn new(il: &Interleaved) -> Self {
        let leaves = &il.tree[il.size..il.size + il.n];
        // Heaviest first, then by index, as one sort key.
        let mut keys: Vec<u64> = (0u32..)
            .zip(leaves)
            .filter(|(_, &w)| w > 0)
            .map(|(i, &w)| (u64::from(!w) << 32) | u64::from(i))
            .collect();
        keys.sort_unstable();
        let weight = |key: u64| !((key >> 32) as u32);
        let mut segments = Vec::new();
        let mut start = 0u64;
        for (end, pair) in keys.windows(2).enumerate() {
            let (high, low) = (weight(pair[0]), weight(pair[1]));
            if high != low {
                segments.push(Segment {
                    start,
                    high,
                    per: end as u32 + 1,
                });
                start += u64::from(high - low) * (end as u64 + 1);
            }
        }
        if let Some(&last) = keys.last() {
            segments.push(Segment {
                start,
                high: weight(last),
                per: keys.len() as u32,
            });
        }
        let indices: Vec<u32> = keys.iter().map(|&k| k as u32).collect();
        Self {
            segments: segments.into_boxed_slice(),
            sorted: Wavelet::new(&indices),
            rounds: il.rounds,
        }
    }

    /// `(round, index)` of pick `p` (below the period).
    fn find(&self, p: u64) -> (u32, u32) {
        let i = self.segments.partition_point(|s| s.start <= p);
        let Some(seg) = i.checked_sub(1).and_then(|i| self.segments.get(i)) else {
            return (0, 0);
        };
        let (off, per) = (p - seg.start, u64::from(seg.per));
        let cw = seg.high - (off / per) as u32;
        let index = self
            .sorted
            .kth_smallest(seg.per as usize, (off % per) as usize);
        (self.rounds - cw, index)
    }

    fn heap_bytes(&self) -> usize {
        size_of_val(&*self.segments) + self.sorted.heap_bytes()
    }
}

/// Bit `k` set when `weights[k] >= cw` (at most 64 weights): 16 at a time, in the
/// shape compilers turn into vector compares and a byte mask.
#[inline]
fn eligible(weights: &[u32], cw: u32) -> u64 {
    let mut mask = 0u64;
    let mut chunks = weights.chunks_exact(16);
    let mut shift = 0;
    for chunk in &mut chunks {
        let mut m = 0u16;
        for (k, &w) in chunk.iter().enumerate() {
            m |= u16::from(w >= cw) << k;
        }
        mask |= u64::from(m) << shift;
        shift += 16;
    }
    for (k, &w) in chunks.remainder().iter().enumerate() {
        mask |= u64::from(w >= cw) << (shift + k);
    }
    mask
}

#[inline]
fn pack(round: u32, index: usize) -> u64 {
    (u64::from(round) << 32) | index as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(weights: &[u32], policy: Policy, len: usize) -> Vec<usize> {
        let s = Schedule::new(weights, policy).unwrap();
        let mut c = s.start();
        (0..len).map(|_| s.next(&mut c)).collect()
    }

    #[test]
    fn pinned_interleaved_sequences() {
        assert_eq!(seq(&[1, 1], Policy::Interleaved, 3), [0, 1, 0]);
        assert_eq!(seq(&[1, 3], Policy::Interleaved, 4), [1, 1, 0, 1]);
        assert_eq!(seq(&[3, 2, 0], Policy::Interleaved, 6), [0, 0, 1, 0, 1, 0]);
    }

    #[test]
    fn smooth_pinned_sequences() {
        // nginx gives `a a b a c a a`: the apportionment tree gives `b` its share one
        // pick earlier and `c` one pick later (same quotas, lag 0.71 instead of 0.57).
        assert_eq!(seq(&[5, 1, 1], Policy::Smooth, 7), [0, 1, 0, 0, 0, 2, 0]);
        // Same as nginx: `a a b a a a a b a a a b a a`.
        assert_eq!(
            seq(&[11, 3], Policy::Smooth, 14),
            [0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(seq(&[1, 1], Policy::Smooth, 3), [0, 1, 0]);
        assert_eq!(seq(&[0, 2, 0, 1], Policy::Smooth, 6), [1, 3, 1, 1, 3, 1]);
    }

    #[test]
    fn errors() {
        for p in [Policy::Interleaved, Policy::Smooth] {
            assert_eq!(Schedule::new(&[], p).unwrap_err(), Error::NoServers);
            assert_eq!(
                Schedule::new(&[0, 0], p).unwrap_err(),
                Error::AllWeightsZero
            );
        }
    }

    /// Periods of 2^32 picks and more take the `u128` walk.
    #[test]
    fn smooth_huge_weights() {
        let s = Schedule::new(&[u32::MAX, 1], Policy::Smooth).unwrap();
        assert_eq!(s.period(), u64::from(u32::MAX) + 1);
        assert_eq!(s.heap_bytes(), 24);
        let mut c = s.start_at(s.period() / 2 - 1);
        assert_eq!([s.next(&mut c), s.next(&mut c)], [0, 1]);
        let mut counts = [0u64; 2];
        let Kind::Smooth(sm) = &s.kind else {
            panic!("smooth")
        };
        sm.tree.counts_before(s.period(), &mut counts);
        assert_eq!(counts, [u64::from(u32::MAX), 1]);
        let s = Schedule::new(&[u32::MAX; 3], Policy::Smooth).unwrap();
        assert_eq!(s.period(), 3);
        let s = Schedule::new(&[u32::MAX, u32::MAX - 1, 1], Policy::Smooth).unwrap();
        assert_eq!(s.period(), 2 * u64::from(u32::MAX));
        assert!(s.lag_bound().unwrap() <= 1.5);
        let c = AtomicCursor::from(s.start_at(u64::MAX));
        assert!(s.next_atomic(&c) < 3);
    }

    #[test]
    fn start_at_is_the_same_sequence_shifted() {
        for policy in [Policy::Interleaved, Policy::Smooth] {
            for weights in [&[3u32, 2, 0][..], &[7, 1, 4, 0, 9, 2], &[5, 5, 5], &[1]] {
                let all = seq(weights, policy, 60);
                let s = Schedule::new(weights, policy).unwrap();
                let p = s.period() as usize;
                for offset in 0..2 * p {
                    let mut c = s.start_at(offset as u64);
                    let got: Vec<usize> = (0..10).map(|_| s.next(&mut c)).collect();
                    let want: Vec<usize> = (0..10).map(|j| all[(offset % p) + j]).collect();
                    assert_eq!(got, want, "{policy:?} {weights:?} offset {offset}");
                }
            }
        }
    }

    /// The search for the next eligible server agrees with a scan, through the links
    /// to heavier servers and past them (increasing weights make long chains).
    #[test]
    fn find_agrees_with_a_scan() {
        let increasing: Vec<u32> = (1..=40).collect();
        let mixed: Vec<u32> = (0..300u32).map(|i| (i * 7919) % 61).collect();
        let spikes: Vec<u32> = (0..100u32)
            .map(|i| if i % 17 == 0 { 50 } else { i % 3 })
            .collect();
        for weights in [increasing, mixed, spikes] {
            let il = Interleaved::new(&weights, 1);
            let max = weights.iter().copied().max().unwrap();
            for from in 0..=weights.len() {
                for cw in 1..=max + 1 {
                    let want = (from..weights.len()).find(|&j| weights[j] >= cw);
                    assert_eq!(il.find(from, cw), want, "{weights:?} from {from} cw {cw}");
                }
            }
        }
    }

    /// A schedule with its table and the same schedule without it give one sequence.
    #[test]
    fn table_and_walk_agree() {
        for policy in [Policy::Interleaved, Policy::Smooth] {
            for weights in [
                &[3u32, 2, 0][..],
                &[7, 1, 4, 0, 9, 2],
                &[4096, 17, 1, 999],
                &[1],
            ] {
                let s = Schedule::new(weights, policy).unwrap();
                assert!(s.table.is_some());
                let mut walk = s.clone();
                walk.table = None;
                let (mut a, mut b) = (s.start(), walk.start());
                for k in 0..3 * s.period() {
                    assert_eq!(
                        s.next(&mut a),
                        walk.next(&mut b),
                        "{policy:?} {weights:?} {k}"
                    );
                }
            }
        }
    }

    /// Periods beyond the table: `start_at` is the sequence shifted, and the shared
    /// cursor claims the same sequence.
    #[test]
    fn long_periods_start_at_and_atomic() {
        let cap = table_cap(5);
        for policy in [Policy::Interleaved, Policy::Smooth] {
            let weights = [70_000u32, 3, 40_000, 0, 70_001];
            let s = Schedule::new(&weights, policy).unwrap();
            assert!(s.period() > cap && s.table.is_none());
            let mut c = s.start();
            let all: Vec<usize> = (0..s.period() + 10).map(|_| s.next(&mut c)).collect();
            for offset in [
                1,
                2,
                77,
                69_999,
                70_003,
                110_000,
                s.period() - 1,
                s.period() + 5,
            ] {
                let mut c = s.start_at(offset);
                let p = (offset % s.period()) as usize;
                let got: Vec<usize> = (0..10).map(|_| s.next(&mut c)).collect();
                assert_eq!(got, all[p..p + 10], "{policy:?} offset {offset}");
                let shared = AtomicCursor::from(s.start_at(offset));
                let got: Vec<usize> = (0..10).map(|_| s.next_atomic(&shared)).collect();
                assert_eq!(got, all[p..p + 10], "{policy:?} offset {offset}");
            }
        }
    }

    /// Large smooth trees (beyond the 4096 nodes walked a level at a time, and
    /// below): the ring's blocks give the owned cursor's sequence.
    #[test]
    fn large_smooth_trees_ring_follows_the_owned_sequence() {
        for n in [3000u32, 6000] {
            // Mostly distinct weights, some shared (groups), one drained server.
            let mut weights: Vec<u32> = (0..n)
                .map(|i| {
                    if i % 10 == 0 {
                        5
                    } else {
                        (i * 7919) % 50_000 + 1
                    }
                })
                .collect();
            weights[17] = 0;
            let s = Schedule::new(&weights, Policy::Smooth).unwrap();
            assert!(s.table.is_none() && s.ring.is_some());
            for offset in [0, 123_457, s.period() - 700] {
                let mut c = s.start_at(offset);
                let shared = AtomicCursor::from(s.start_at(offset));
                for k in 0..3 * 512 + 100 {
                    let want = s.next(&mut c);
                    assert_eq!(
                        s.next_atomic(&shared),
                        want,
                        "n {n} offset {offset} pick {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn huge_weights_interleaved_use_no_weight_sized_memory() {
        let s = Schedule::new(&[u32::MAX, u32::MAX - 1, 1], Policy::Interleaved).unwrap();
        assert_eq!(s.period(), 2 * u64::from(u32::MAX));
        let mut c = s.start();
        let picks: Vec<usize> = (0..4).map(|_| s.next(&mut c)).collect();
        assert_eq!(picks, [0, 0, 1, 0]);
    }

    #[test]
    fn debug_leaves_the_tables_out() {
        let s = Schedule::new(&[4096; 64], Policy::Smooth).unwrap();
        // One leaf (a group of 64 servers: 16 bytes and 64 indices), the table.
        assert_eq!(s.heap_bytes(), 16 + 64 * 4 + 64 * 4);
        assert_eq!(
            std::format!("{s:?}"),
            "Schedule { policy: Smooth, period: 64, .. }"
        );
    }

    #[test]
    fn foreign_cursor_restarts() {
        let long = Schedule::new(&[1, 1, 1, 9], Policy::Interleaved).unwrap();
        let short = Schedule::new(&[2, 1], Policy::Interleaved).unwrap();
        let mut c = long.start();
        for _ in 0..5 {
            long.next(&mut c);
        }
        assert_eq!(short.next(&mut c), 0);
        let smooth = Schedule::new(&[1, 1], Policy::Smooth).unwrap();
        let mut c = Cursor { pos: 99, at: 99 };
        assert_eq!(smooth.next(&mut c), 0);
        let long = Schedule::new(&[1000, 999], Policy::Smooth).unwrap();
        let mut c = Cursor { pos: 99, at: 99 };
        assert_eq!(long.next(&mut c), 1);
        let mut c = Cursor {
            pos: u64::MAX,
            at: u64::MAX,
        };
        assert_eq!(long.next(&mut c), 0);
    }

    /// Weights whose period is beyond the table (for any n up to 300): one weight of
    /// at least 2^17 and a pool of mixed weights, zeros and `u32` extremes.
    #[cfg(target_has_atomic = "64")]
    fn long_weights() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        use proptest::prelude::*;
        let one = prop_oneof![
            1 => Just(0u32),
            3 => 1..=8u32,
            6 => 1..=4096u32,
            3 => 0..=u32::from(u16::MAX),
            1 => (u32::MAX - 8)..=u32::MAX,
        ];
        (prop::collection::vec(one, 0..=300), (1u32 << 17)..(1 << 20)).prop_map(|(mut w, big)| {
            // gcd 1: the period is above 2^17, beyond the table.
            w.extend([big, 1]);
            w
        })
    }

    /// The sequence of `len` picks from `offset`, with an owned cursor.
    #[cfg(target_has_atomic = "64")]
    fn owned(s: &Schedule, offset: u64, len: usize) -> Vec<usize> {
        let mut c = s.start_at(offset);
        (0..len).map(|_| s.next(&mut c)).collect()
    }

    #[cfg(target_has_atomic = "64")]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        /// The ring-backed shared pick gives the owned cursor's sequence over several
        /// blocks, from any start (mid-block, and just before the period wraps).
        #[test]
        fn shared_picks_follow_the_owned_sequence(
            weights in long_weights(),
            interleaved: bool,
            offset: u64,
            before_end in 0u64..3000,
        ) {
            let policy = if interleaved { Policy::Interleaved } else { Policy::Smooth };
            let s = Schedule::new(&weights, policy).unwrap();
            proptest::prop_assert!(s.table.is_none());
            let len = 3 * ring::BLOCK + 100;
            for offset in [offset, s.period().saturating_sub(before_end), 0] {
                let want = owned(&s, offset, len);
                let shared = AtomicCursor::from(s.start_at(offset));
                let got: Vec<usize> = (0..len).map(|_| s.next_atomic(&shared)).collect();
                proptest::prop_assert_eq!(&got, &want, "{:?} offset {}", policy, offset);
                // A fresh schedule (empty ring) and a late cursor on this one (its
                // blocks overwritten by newer ones) give the same picks.
                let fresh = s.clone();
                let shared = AtomicCursor::from(fresh.start_at(offset));
                let got: Vec<usize> = (0..len).map(|_| fresh.next_atomic(&shared)).collect();
                proptest::prop_assert_eq!(&got, &want);
            }
        }
    }

    /// A cursor far behind another on the same schedule finds newer blocks in the
    /// ring: it computes its positions alone, and still gets the sequence.
    #[cfg(target_has_atomic = "64")]
    #[test]
    fn late_cursor_gets_the_same_sequence() {
        for policy in [Policy::Interleaved, Policy::Smooth] {
            let s = Schedule::new(&[70_000, 3, 40_000, 0, 70_001, 17], policy).unwrap();
            let block = 1usize << s.ring.as_ref().map_or(0, Ring::shift);
            let len = 12 * block;
            let want = owned(&s, 5, len);
            let (ahead, behind) = (
                AtomicCursor::from(s.start_at(5)),
                AtomicCursor::from(s.start_at(5)),
            );
            // `ahead` keeps 3.5 blocks ahead of `behind`: the ring holds 4, so half the
            // time `behind`'s block has already been replaced by a newer one.
            let lead = 7 * block / 2;
            for &w in &want[..lead] {
                assert_eq!(s.next_atomic(&ahead), w);
            }
            for k in 0..len {
                assert_eq!(s.next_atomic(&behind), want[k], "{policy:?} {k}");
                if let Some(&w) = want.get(k + lead) {
                    assert_eq!(s.next_atomic(&ahead), w);
                }
            }
            // Far behind: every block it needs was overwritten.
            let late = AtomicCursor::from(s.start_at(5));
            for (k, &w) in want.iter().enumerate().take(2 * block) {
                assert_eq!(s.next_atomic(&late), w, "{policy:?} late {k}");
            }
        }
    }

    /// Threads claiming positions at once (each also starting blocks, and some reading
    /// blocks being written or already overwritten) take every position exactly once:
    /// over whole periods, every server gets exactly its quota.
    #[cfg(target_has_atomic = "64")]
    #[test]
    fn threads_through_the_ring_keep_exact_quotas() {
        use std::sync::Barrier;
        use std::thread;
        const THREADS: usize = 4;
        // A multiple of THREADS: the threads together take whole periods.
        const PERIODS: u64 = 4;
        let weights = [70_000u32, 3, 40_000, 0, 70_001, 17, 1, 999];
        for (policy, offset) in [
            (Policy::Interleaved, 12_345),
            (Policy::Smooth, 12_345),
            (Policy::Interleaved, 181_000),
            (Policy::Smooth, 181_000),
        ] {
            let s = Schedule::new(&weights, policy).unwrap();
            assert!(s.table.is_none());
            let total = PERIODS * s.period();
            let per_thread = total / THREADS as u64;
            assert_eq!(per_thread * THREADS as u64, total);
            let cursor = AtomicCursor::from(s.start_at(offset));
            let barrier = Barrier::new(THREADS);
            let counts: Vec<Vec<u64>> = thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut counts = vec![0u64; weights.len()];
                            barrier.wait();
                            for _ in 0..per_thread {
                                counts[s.next_atomic(&cursor)] += 1;
                            }
                            counts
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let g = weights.iter().fold(0, |g, &w| gcd(g, w));
            for (i, &w) in weights.iter().enumerate() {
                let got: u64 = counts.iter().map(|c| c[i]).sum();
                assert_eq!(got, PERIODS * u64::from(w / g), "{policy:?} server {i}");
            }
        }
    }
}
