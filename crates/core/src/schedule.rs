//! The immutable selection schedule (no_std + alloc): built once per pool change,
//! walked by a [`Cursor`] or an [`AtomicCursor`].

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::{Error, Policy};

/// Longest period (picks) the smooth policy precomputes: `2^22` picks, a 16 MiB table
/// at most (a 2-million-pick period took 665 ms to build in the `build/smooth/1000`
/// bench). Pools whose `sum(w) / gcd(w)` exceeds it are rejected with
/// [`Error::PeriodTooLong`].
pub const MAX_SMOOTH_PERIOD: u64 = 1 << 22;

/// How many following servers a pick probes one by one before it searches the max tree.
const PROBE: usize = 4;

/// The selection sequence of one pool state, immutable once built.
///
/// Built from the weights in pool order; [`Schedule::next`] yields server indices into
/// that order. The schedule has no interior state: a [`Cursor`] (owned, `&mut`) or an
/// [`AtomicCursor`] (shared, lock-free) holds the position, so a rebuilt schedule with a
/// fresh cursor restarts the iteration.
///
/// Memory: [`Policy::Interleaved`] keeps a max tree over the weights, at most `4n`
/// `u32`s, whatever the weights. [`Policy::Smooth`] keeps one `u32` per pick of the
/// period (`sum(w) / gcd(w)`), capped by [`MAX_SMOOTH_PERIOD`].
///
/// ```
/// use roundrobin_core::{Policy, Schedule};
/// let schedule = Schedule::new(&[3, 2, 0], Policy::Interleaved)?;
/// let mut cursor = schedule.start();
/// let picks: Vec<usize> = (0..6).map(|_| schedule.next(&mut cursor)).collect();
/// assert_eq!(picks, [0, 0, 1, 0, 1, 0]);
/// assert_eq!(schedule.period(), 5);
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    period: u64,
}

/// Policy and period only: the tables can hold millions of entries.
impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("policy", &self.policy())
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Kind {
    Interleaved(Interleaved),
    Smooth(Box<[u32]>),
}

/// A position in a [`Schedule`]: the next pick it yields. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(u64);

impl Schedule {
    /// Builds the schedule of `weights` (pool order) under `policy`.
    ///
    /// Errors: [`Error::NoServers`] for an empty slice, [`Error::AllWeightsZero`] when
    /// no weight is positive, [`Error::TooManyServers`] above `u32::MAX` servers and, for
    /// the smooth policy, [`Error::PeriodTooLong`] above [`MAX_SMOOTH_PERIOD`].
    pub fn new(weights: &[u32], policy: Policy) -> Result<Self, Error> {
        if weights.is_empty() {
            return Err(Error::NoServers);
        }
        if u32::try_from(weights.len()).is_err() {
            return Err(Error::TooManyServers);
        }
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        if g == 0 {
            return Err(Error::AllWeightsZero);
        }
        let period = weights.iter().map(|&w| u64::from(w / g)).sum::<u64>();
        let kind = match policy {
            Policy::Interleaved => Kind::Interleaved(Interleaved::new(weights, g)),
            Policy::Smooth => {
                if period > MAX_SMOOTH_PERIOD {
                    return Err(Error::PeriodTooLong {
                        period,
                        max: MAX_SMOOTH_PERIOD,
                    });
                }
                Kind::Smooth(smooth_table(weights, g, period))
            }
        };
        Ok(Self { kind, period })
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

    /// The cursor at the first pick of the sequence.
    pub fn start(&self) -> Cursor {
        Cursor(match &self.kind {
            Kind::Interleaved(il) => il.first(),
            Kind::Smooth(_) => 0,
        })
    }

    /// Returns the server index at `cursor` and advances the cursor.
    ///
    /// A cursor from another schedule never panics: when it points outside this one it
    /// restarts at [`Schedule::start`].
    pub fn next(&self, cursor: &mut Cursor) -> usize {
        let (index, next) = self.step(cursor.0);
        cursor.0 = next;
        index
    }

    /// The index at position `pos` (sanitised) and the position after it.
    #[inline]
    fn step(&self, pos: u64) -> (usize, u64) {
        match &self.kind {
            Kind::Interleaved(il) => il.step(pos),
            Kind::Smooth(table) => {
                let (k, index) = match table.get(pos as usize) {
                    Some(&i) => (pos, i),
                    None => (0, table[0]),
                };
                let next = if k + 1 == self.period { 0 } else { k + 1 };
                (index as usize, next)
            }
        }
    }

    /// Claims the position held by `cursor` for this caller and returns its server
    /// index. Lock-free: one atomic read-modify-write claims exactly one position, so
    /// concurrent callers get distinct positions of the same sequence. (Interleaved: a
    /// compare-and-swap of the packed `(round, index)`; smooth: a `fetch_add` of the pick
    /// count, taken modulo the period, which would only wrap after 2^64 picks.)
    #[cfg(target_has_atomic = "64")]
    #[inline]
    pub fn next_atomic(&self, cursor: &AtomicCursor) -> usize {
        use core::sync::atomic::Ordering::Relaxed;
        match &self.kind {
            Kind::Smooth(table) => {
                let k = cursor.0.fetch_add(1, Relaxed) % self.period;
                table[k as usize] as usize
            }
            Kind::Interleaved(il) => {
                let mut pos = cursor.0.load(Relaxed);
                loop {
                    let (index, next) = il.step(pos);
                    match cursor.0.compare_exchange_weak(pos, next, Relaxed, Relaxed) {
                        Ok(_) => return index,
                        Err(actual) => pos = actual,
                    }
                }
            }
        }
    }
}

/// A cursor shared by threads: [`Schedule::next_atomic`] advances it lock-free.
///
/// ```
/// use roundrobin_core::{AtomicCursor, Policy, Schedule};
/// let schedule = Schedule::new(&[5, 1, 1], Policy::Smooth)?;
/// let cursor = AtomicCursor::new(&schedule);
/// let picks: Vec<usize> = (0..7).map(|_| schedule.next_atomic(&cursor)).collect();
/// assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[cfg(target_has_atomic = "64")]
#[derive(Debug)]
pub struct AtomicCursor(core::sync::atomic::AtomicU64);

#[cfg(target_has_atomic = "64")]
impl AtomicCursor {
    /// A cursor at the start of `schedule`.
    pub fn new(schedule: &Schedule) -> Self {
        Self(core::sync::atomic::AtomicU64::new(schedule.start().0))
    }
}

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
/// probing a few neighbours, then by a descent of an implicit binary max tree over the
/// weights, so a pick costs O(1) amortised for typical weights and O(log n) at worst.
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
        Self {
            tree: tree.into_boxed_slice(),
            size,
            n,
            rounds,
            first_max,
        }
    }

    fn first(&self) -> u64 {
        u64::from(self.first_max)
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

    #[inline]
    fn leaf(&self, i: usize) -> u32 {
        self.tree[self.size + i]
    }

    /// The first index `>= from` whose weight is `>= cw` (`cw >= 1`).
    #[inline]
    fn find(&self, from: usize, cw: u32) -> Option<usize> {
        let probe_end = self.n.min(from + PROBE);
        if let Some(j) = (from..probe_end).find(|&j| self.leaf(j) >= cw) {
            return Some(j);
        }
        if probe_end >= self.n {
            return None;
        }
        self.descend(probe_end, cw)
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

#[inline]
fn pack(round: u32, index: usize) -> u64 {
    (u64::from(round) << 32) | index as u64
}

/// nginx's smooth weighted round robin over one period, computed with a kinetic
/// tournament: a pick costs O(log n) plus one step per change of a node's leader
/// (the textbook loop costs O(n) a pick).
///
/// Before pick `s` (1-based) server `i`'s `current` is `s * w_i - W * c_i` (`c_i` its
/// picks so far, `W` the total); the largest wins, the first on ties. Each tree node
/// keeps its winner and the first step at which its loser overtakes it.
fn smooth_table(weights: &[u32], g: u32, period: u64) -> Box<[u32]> {
    let active: Vec<(u32, i64)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0)
        .map(|(i, &w)| (i as u32, i64::from(w / g)))
        .collect();
    let mut t = Tournament::new(&active, period as i64);
    let mut table = Vec::with_capacity(period as usize);
    for s in 1..=period as i64 {
        let winner = t.pick(s);
        table.push(active[winner].0);
    }
    table.into_boxed_slice()
}

const NEVER: i64 = i64::MAX;

struct Tournament {
    /// Scaled weight of each active server.
    weight: Vec<i64>,
    /// Picks so far of each active server.
    count: Vec<i64>,
    total: i64,
    size: usize,
    /// Winner of each node (`u32::MAX` for an empty subtree).
    winner: Vec<u32>,
    /// The earliest step at which some certificate in the subtree expires.
    expiry: Vec<i64>,
}

impl Tournament {
    fn new(active: &[(u32, i64)], total: i64) -> Self {
        let size = active.len().next_power_of_two();
        let mut winner = vec![u32::MAX; 2 * size];
        for (i, slot) in winner[size..size + active.len()].iter_mut().enumerate() {
            *slot = i as u32;
        }
        let mut expiry = vec![NEVER; 2 * size];
        expiry[1..size].fill(0);
        Self {
            weight: active.iter().map(|a| a.1).collect(),
            count: vec![0; active.len()],
            total,
            size,
            winner,
            expiry,
        }
    }

    fn pick(&mut self, s: i64) -> usize {
        self.refresh(1, s);
        let w = self.winner[1] as usize;
        self.count[w] += 1;
        let mut v = (self.size + w) / 2;
        while v > 0 {
            self.expiry[v] = 0;
            v /= 2;
        }
        w
    }

    fn current(&self, i: usize, s: i64) -> i64 {
        s * self.weight[i] - self.total * self.count[i]
    }

    fn refresh(&mut self, v: usize, s: i64) {
        if self.expiry[v] > s {
            return;
        }
        let (l, r) = (2 * v, 2 * v + 1);
        self.refresh(l, s);
        self.refresh(r, s);
        let (a, b) = (self.winner[l], self.winner[r]);
        let (win, cert) = if b == u32::MAX {
            (a, NEVER)
        } else if a == u32::MAX {
            (b, NEVER)
        } else {
            let (a, b) = (a as usize, b as usize);
            // `a` has the smaller index, so it wins ties.
            let (win, lose) = if self.current(a, s) >= self.current(b, s) {
                (a, b)
            } else {
                (b, a)
            };
            (win as u32, self.overtake(win, lose))
        };
        self.winner[v] = win;
        self.expiry[v] = cert.min(self.expiry[l]).min(self.expiry[r]);
    }

    /// The first step at which `lose` beats `win`, given their current counts.
    fn overtake(&self, win: usize, lose: usize) -> i64 {
        let d = self.weight[lose] - self.weight[win];
        if d <= 0 {
            return NEVER;
        }
        // `lose` wins at step s when s * d > k, or s * d >= k when it has the
        // smaller index; `k > 0` because it loses now.
        let k = self.total * (self.count[lose] - self.count[win]);
        if lose < win {
            k.div_euclid(d) + i64::from(k.rem_euclid(d) != 0)
        } else {
            k.div_euclid(d) + 1
        }
    }
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
    fn nginx_example() {
        assert_eq!(seq(&[5, 1, 1], Policy::Smooth, 7), [0, 0, 1, 0, 2, 0, 0]);
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
        let big = [u32::MAX, 1];
        assert_eq!(
            Schedule::new(&big, Policy::Smooth).unwrap_err(),
            Error::PeriodTooLong {
                period: u64::from(u32::MAX) + 1,
                max: MAX_SMOOTH_PERIOD
            }
        );
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
        let mut c = Cursor(99);
        assert_eq!(smooth.next(&mut c), 0);
    }
}
