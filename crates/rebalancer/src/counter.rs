//! Lock-free rolling counters: a window of `buckets` buckets of `resolution` each.
//!
//! Semantics (the reference's rolling counters): a value lands in bucket `(time / resolution) mod buckets`;
//! a bucket not written for a whole window counts as zero; a counter is *ready* once it
//! has seen data in `buckets` distinct buckets. Time is an input: every call takes `now`,
//! measured from an origin that is the first `now` the counter sees.
//!
//! Each bucket is one `AtomicU64` holding a 32-bit tag of the time slot it belongs to and
//! a 32-bit count, updated with a compare-and-swap, so a writer that moves a bucket to a
//! new slot cannot lose a concurrent writer's increment. Counts saturate at `u32::MAX`
//! per bucket.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::OnceLock;
use std::time::Instant;

use crate::Error;

/// The largest number of buckets a rolling window may have.
pub const MAX_BUCKETS: usize = 65_536;

/// Time slots: `(now - origin) / resolution`.
#[derive(Debug)]
struct Window {
    origin: OnceLock<Instant>,
    resolution: Duration,
    resolution_nanos: u64,
    /// The resolution in seconds when it is a whole number of seconds, else 0.
    resolution_secs: u64,
    buckets: u64,
}

impl Window {
    fn new(buckets: usize, resolution: Duration) -> Result<Self, Error> {
        if buckets == 0 {
            return Err(Error::ZeroBuckets);
        }
        if buckets > MAX_BUCKETS {
            return Err(Error::TooManyBuckets(buckets));
        }
        if resolution < Duration::from_secs(1) {
            return Err(Error::ResolutionTooSmall(resolution));
        }
        Ok(Self {
            origin: OnceLock::new(),
            resolution,
            resolution_nanos: u64::try_from(resolution.as_nanos()).unwrap_or(u64::MAX),
            resolution_secs: if resolution.subsec_nanos() == 0 {
                resolution.as_secs()
            } else {
                0
            },
            buckets: buckets as u64,
        })
    }

    /// The slot `now` falls in; instants before the origin fall in slot 0.
    fn slot(&self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_init(|| now);
        let elapsed = now.saturating_duration_since(origin);
        match self.resolution_secs {
            // the common case, whole seconds, without 128-bit arithmetic
            1 => elapsed.as_secs(),
            0 => u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) / self.resolution_nanos,
            secs => elapsed.as_secs() / secs,
        }
    }
}

/// The tag stored with a bucket: the low 32 bits of `slot + 1`; 0 means "never written".
fn tag(slot: u64) -> u32 {
    // Truncation is intended: tags compare with wrapping arithmetic.
    (slot as u32).wrapping_add(1)
}

/// Whether `tag` is newer than `than` (wrapping comparison).
fn newer(tag: u32, than: u32) -> bool {
    let d = tag.wrapping_sub(than);
    d != 0 && d < 1 << 31
}

/// One array of tagged buckets.
#[derive(Debug)]
struct Cells {
    cells: Box<[AtomicU64]>,
    /// `u64::MAX / len + 1` (wrapping): the multiplier of Lemire's fast modulo, which
    /// keeps a division off the recording path.
    modulo_multiplier: u64,
}

impl Cells {
    /// `buckets` is at most [`MAX_BUCKETS`], so it fits in a `u32`.
    fn new(buckets: u64) -> Self {
        Self {
            cells: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            modulo_multiplier: (u64::MAX / buckets).wrapping_add(1),
        }
    }

    fn len(&self) -> usize {
        self.cells.len()
    }

    /// The bucket of `slot`: `slot mod len`, on the low 32 bits of the slot (which
    /// wrap after 2^32 resolutions, 136 years at 1 s, like the tags).
    fn index(&self, slot: u64) -> usize {
        let low = u64::from(slot as u32);
        let fraction = self.modulo_multiplier.wrapping_mul(low);
        ((u128::from(fraction) * self.len() as u128) >> 64) as usize
    }

    fn cell(&self, slot: u64) -> &AtomicU64 {
        &self.cells[self.index(slot)]
    }

    /// Adds `n` to the bucket of `slot`, zeroing it first when it holds an older slot.
    /// A write for a slot older than the bucket's is dropped: it lies outside the window.
    fn add(&self, slot: u64, n: u32) {
        let cell = self.cell(slot);
        let tag = tag(slot);
        let mut current = cell.load(Ordering::Relaxed);
        loop {
            let held = (current >> 32) as u32;
            let next = if held == tag {
                let count = (current as u32).saturating_add(n);
                (u64::from(tag) << 32) | u64::from(count)
            } else if held != 0 && newer(held, tag) {
                return;
            } else {
                (u64::from(tag) << 32) | u64::from(n)
            };
            match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The sum of the buckets written less than a window before `slot` (or after it).
    fn sum(&self, slot: u64) -> u64 {
        let now = tag(slot);
        let window = self.len() as u64;
        self.cells
            .iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .filter(|value| {
                let held = (value >> 32) as u32;
                held != 0 && (u64::from(now.wrapping_sub(held)) < window || newer(held, now))
            })
            .map(|value| u64::from(value as u32))
            .sum()
    }
}

/// Counts the distinct slots written, up to the number needed to be ready.
#[derive(Debug)]
struct Readiness {
    /// One past the highest slot written so far; 0 before any write.
    next_slot: AtomicU64,
    seen: AtomicU64,
    needed: u64,
}

impl Readiness {
    fn new(needed: u64) -> Self {
        Self {
            next_slot: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            needed,
        }
    }

    fn note(&self, slot: u64) {
        if self.is_ready() {
            return;
        }
        let next = slot.saturating_add(1);
        // A plain load first: only the first write of a slot pays a read-modify-write.
        if self.next_slot.load(Ordering::Relaxed) >= next {
            return;
        }
        if self.next_slot.fetch_max(next, Ordering::Relaxed) < next {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_ready(&self) -> bool {
        self.seen.load(Ordering::Relaxed) >= self.needed
    }
}

/// A counter over a rolling window (the reference's `RollingCounter`).
///
/// ```
/// use std::time::{Duration, Instant};
/// use roundrobin_rebalancer::RollingCounter;
///
/// let counter = RollingCounter::new(3, Duration::from_secs(1))?;
/// let t0 = Instant::now();
/// counter.inc(2, t0);
/// counter.inc(1, t0 + Duration::from_secs(1));
/// assert_eq!(counter.count(t0 + Duration::from_secs(1)), 3);
/// assert!(!counter.is_ready()); // data in 2 of 3 buckets so far
/// // three seconds after the first write, its bucket has left the window
/// assert_eq!(counter.count(t0 + Duration::from_secs(3)), 1);
/// # Ok::<(), roundrobin_rebalancer::Error>(())
/// ```
#[derive(Debug)]
pub struct RollingCounter {
    window: Window,
    cells: Cells,
    ready: Readiness,
}

impl RollingCounter {
    /// A counter of `buckets` buckets of `resolution` each.
    ///
    /// Errors when `buckets` is 0 or above [`MAX_BUCKETS`], or `resolution` is under 1 s.
    pub fn new(buckets: usize, resolution: Duration) -> Result<Self, Error> {
        let window = Window::new(buckets, resolution)?;
        Ok(Self {
            cells: Cells::new(window.buckets),
            ready: Readiness::new(window.buckets),
            window,
        })
    }

    /// Adds `n` at time `now`.
    pub fn inc(&self, n: u32, now: Instant) {
        let slot = self.window.slot(now);
        self.cells.add(slot, n);
        self.ready.note(slot);
    }

    /// The total over the window that ends at `now`.
    pub fn count(&self, now: Instant) -> u64 {
        self.cells.sum(self.window.slot(now))
    }

    /// Whether data has landed in as many distinct buckets as the window has.
    /// Once ready, a counter stays ready.
    pub fn is_ready(&self) -> bool {
        self.ready.is_ready()
    }

    /// The number of buckets.
    pub fn buckets(&self) -> usize {
        self.cells.len()
    }

    /// The duration of one bucket.
    pub fn resolution(&self) -> Duration {
        self.window.resolution
    }
}

/// Two counters `a` and `b` over one rolling window and their ratio `a / (a + b)`
/// (the reference's `RatioCounter`).
///
/// It is ready once the two together have seen data in as many distinct buckets as
/// the window has.
///
/// ```
/// use std::time::{Duration, Instant};
/// use roundrobin_rebalancer::RatioCounter;
///
/// let errors_vs_ok = RatioCounter::new(10, Duration::from_secs(1))?;
/// let now = Instant::now();
/// assert_eq!(errors_vs_ok.ratio(now), 0.0);
/// errors_vs_ok.inc_hits(1, now);
/// errors_vs_ok.inc_misses(3, now);
/// assert_eq!(errors_vs_ok.ratio(now), 0.25);
/// # Ok::<(), roundrobin_rebalancer::Error>(())
/// ```
#[derive(Debug)]
pub struct RatioCounter {
    window: Window,
    hits: Cells,
    misses: Cells,
    ready: Readiness,
}

impl RatioCounter {
    /// A ratio counter of `buckets` buckets of `resolution` each.
    ///
    /// Errors when `buckets` is 0 or above [`MAX_BUCKETS`], or `resolution` is under 1 s.
    pub fn new(buckets: usize, resolution: Duration) -> Result<Self, Error> {
        let window = Window::new(buckets, resolution)?;
        Ok(Self {
            hits: Cells::new(window.buckets),
            misses: Cells::new(window.buckets),
            ready: Readiness::new(window.buckets),
            window,
        })
    }

    /// Adds `n` hits (the events whose share is measured, such as errors) at `now`.
    pub fn inc_hits(&self, n: u32, now: Instant) {
        let slot = self.window.slot(now);
        self.hits.add(slot, n);
        self.ready.note(slot);
    }

    /// Adds `n` misses (every other event, such as successes) at `now`.
    pub fn inc_misses(&self, n: u32, now: Instant) {
        let slot = self.window.slot(now);
        self.misses.add(slot, n);
        self.ready.note(slot);
    }

    /// Adds `hits` hits and `misses` misses at `now`, counting one slot for readiness.
    pub fn inc(&self, hits: u32, misses: u32, now: Instant) {
        let slot = self.window.slot(now);
        self.hits.add(slot, hits);
        self.misses.add(slot, misses);
        self.ready.note(slot);
    }

    /// The hits over the window that ends at `now`.
    pub fn hits(&self, now: Instant) -> u64 {
        self.hits.sum(self.window.slot(now))
    }

    /// The misses over the window that ends at `now`.
    pub fn misses(&self, now: Instant) -> u64 {
        self.misses.sum(self.window.slot(now))
    }

    /// Old name of [`RatioCounter::inc_hits`] (the reference's `IncA`).
    #[deprecated(since = "0.2.0", note = "renamed to `inc_hits`")]
    pub fn inc_a(&self, n: u32, now: Instant) {
        self.inc_hits(n, now);
    }

    /// Old name of [`RatioCounter::inc_misses`] (the reference's `IncB`).
    #[deprecated(since = "0.2.0", note = "renamed to `inc_misses`")]
    pub fn inc_b(&self, n: u32, now: Instant) {
        self.inc_misses(n, now);
    }

    /// Old name of [`RatioCounter::hits`] (the reference's `CountA`).
    #[deprecated(since = "0.2.0", note = "renamed to `hits`")]
    pub fn count_a(&self, now: Instant) -> u64 {
        self.hits(now)
    }

    /// Old name of [`RatioCounter::misses`] (the reference's `CountB`).
    #[deprecated(since = "0.2.0", note = "renamed to `misses`")]
    pub fn count_b(&self, now: Instant) -> u64 {
        self.misses(now)
    }

    /// `hits / (hits + misses)` over the window that ends at `now`; 0 when both are 0.
    pub fn ratio(&self, now: Instant) -> f64 {
        let slot = self.window.slot(now);
        let (a, b) = (self.hits.sum(slot), self.misses.sum(slot));
        if a == 0 {
            0.0
        } else {
            a as f64 / (a as f64 + b as f64)
        }
    }

    /// Whether data has landed in as many distinct buckets as the window has.
    /// Once ready, a counter stays ready.
    pub fn is_ready(&self) -> bool {
        self.ready.is_ready()
    }

    /// The number of buckets.
    pub fn buckets(&self) -> usize {
        self.hits.len()
    }

    /// The duration of one bucket.
    pub fn resolution(&self) -> Duration {
        self.window.resolution
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_fast_modulo_is_the_modulo() {
        for len in [1u64, 2, 3, 7, 10, 60, 1000, MAX_BUCKETS as u64] {
            let cells = Cells::new(len);
            for slot in (0..5000).chain([u64::from(u32::MAX) - 3, u64::from(u32::MAX)]) {
                assert_eq!(
                    cells.index(slot) as u64,
                    slot % len,
                    "slot {slot} len {len}"
                );
            }
        }
    }

    #[test]
    fn invalid_construction_is_an_error() {
        assert_eq!(RollingCounter::new(0, SEC).unwrap_err(), Error::ZeroBuckets);
        assert_eq!(
            RollingCounter::new(10, Duration::from_millis(999)).unwrap_err(),
            Error::ResolutionTooSmall(Duration::from_millis(999))
        );
        assert_eq!(
            RatioCounter::new(MAX_BUCKETS + 1, SEC).unwrap_err(),
            Error::TooManyBuckets(MAX_BUCKETS + 1)
        );
        assert!(RollingCounter::new(MAX_BUCKETS, SEC).is_ok());
    }

    #[test]
    fn buckets_rotate_and_go_stale_after_a_full_window() {
        let c = RollingCounter::new(3, SEC).unwrap();
        let t0 = Instant::now();
        c.inc(1, t0);
        c.inc(1, t0 + Duration::from_millis(999));
        assert_eq!(c.count(t0), 2);
        c.inc(5, t0 + secs(1));
        c.inc(7, t0 + secs(2));
        assert_eq!(c.count(t0 + secs(2)), 14);
        // Slot 3 reuses bucket 0: the 2 from slot 0 are gone, read or written.
        assert_eq!(c.count(t0 + secs(3)), 12);
        c.inc(1, t0 + secs(3));
        assert_eq!(c.count(t0 + secs(3)), 13);
        // Slot 5: only slots 3, 4, 5 are in the window.
        assert_eq!(c.count(t0 + secs(5)), 1);
        // A whole window with no writes: everything is stale.
        assert_eq!(c.count(t0 + secs(6)), 0);
        assert_eq!(c.count(t0 + secs(100)), 0);
    }

    #[test]
    fn a_write_for_a_slot_older_than_the_bucket_is_dropped() {
        let c = RollingCounter::new(2, SEC).unwrap();
        let t0 = Instant::now();
        c.inc(1, t0);
        c.inc(4, t0 + secs(2)); // bucket 0 now holds slot 2
        c.inc(9, t0); // late write for slot 0: outside the window of slot 2
        assert_eq!(c.count(t0 + secs(2)), 4);
    }

    #[test]
    fn resolution_longer_than_a_second_groups_seconds() {
        let c = RollingCounter::new(2, secs(5)).unwrap();
        let t0 = Instant::now();
        c.inc(1, t0);
        c.inc(1, t0 + secs(4));
        c.inc(1, t0 + secs(5));
        assert_eq!(c.count(t0 + secs(9)), 3);
        assert_eq!(c.count(t0 + secs(10)), 1);
        assert_eq!(c.resolution(), secs(5));
        assert_eq!(c.buckets(), 2);
    }

    #[test]
    fn ready_after_data_in_as_many_distinct_buckets_as_the_window() {
        let c = RollingCounter::new(3, SEC).unwrap();
        let t0 = Instant::now();
        c.inc(1, t0);
        c.inc(1, t0 + Duration::from_millis(500));
        c.inc(1, t0 + secs(1));
        assert!(!c.is_ready());
        // an empty slot in between does not count
        c.inc(1, t0 + secs(3));
        assert!(c.is_ready());
        // and it stays ready, even when the data goes stale
        assert_eq!(c.count(t0 + secs(60)), 0);
        assert!(c.is_ready());
    }

    #[test]
    fn ratio_counter_readiness_counts_both_sides_together() {
        let r = RatioCounter::new(3, SEC).unwrap();
        let t0 = Instant::now();
        r.inc_hits(1, t0);
        r.inc_misses(1, t0);
        r.inc_misses(1, t0 + secs(1));
        assert!(!r.is_ready());
        r.inc_hits(1, t0 + secs(2));
        assert!(r.is_ready());
        assert_eq!(r.hits(t0 + secs(2)), 2);
        assert_eq!(r.misses(t0 + secs(2)), 2);
        assert_eq!(r.ratio(t0 + secs(2)), 0.5);
        assert_eq!(r.ratio(t0 + secs(3)), 1.0 / 2.0);
        assert_eq!(r.ratio(t0 + secs(4)), 1.0);
        assert_eq!(r.ratio(t0 + secs(5)), 0.0);
    }

    #[test]
    fn counts_saturate_instead_of_spilling_into_the_tag() {
        let c = RollingCounter::new(1, SEC).unwrap();
        let t0 = Instant::now();
        c.inc(u32::MAX, t0);
        c.inc(5, t0);
        assert_eq!(c.count(t0), u64::from(u32::MAX));
    }

    #[test]
    fn concurrent_increments_are_not_lost_across_a_rotation() {
        let c = Arc::new(RatioCounter::new(4, SEC).unwrap());
        let t0 = Instant::now();
        c.inc_hits(1, t0); // fixes the origin
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    for i in 0..10_000u64 {
                        // every thread moves the same buckets to slots 1 and 2
                        let now = t0 + secs(1 + (i + k) % 2);
                        if i % 3 == 0 {
                            c.inc_hits(1, now);
                        } else {
                            c.inc_misses(1, now);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let now = t0 + secs(2);
        let a_per_thread = (0..10_000u64).filter(|i| i % 3 == 0).count() as u64;
        assert_eq!(c.hits(now), 1 + 4 * a_per_thread);
        assert_eq!(c.misses(now), 4 * (10_000 - a_per_thread));
    }

    proptest::proptest! {
        /// With time moving forward, the counter agrees with a plain list of events.
        #[test]
        fn agrees_with_a_model_of_the_window(
            buckets in 1usize..=12,
            resolution_s in 1u64..=3,
            // (gap to the previous event in ms, amount)
            events in proptest::collection::vec((0u64..=4_000, 1u32..=5), 1..60),
            query_gap_ms in 0u64..=40_000,
        ) {
            let resolution = secs(resolution_s);
            let c = RollingCounter::new(buckets, resolution).unwrap();
            let t0 = Instant::now();
            // the origin is the first `now` the counter sees: the first event's time
            let mut at = 0u64;
            let mut model: Vec<(u64, u32)> = Vec::new();
            let first = events[0].0;
            let slot = |ms: u64| (ms - first) / (resolution_s * 1000);
            for (gap, n) in &events {
                at += gap;
                c.inc(*n, t0 + Duration::from_millis(at));
                model.push((slot(at), *n));
                let now = slot(at);
                let expected: u64 = model
                    .iter()
                    .filter(|(s, _)| now - s < buckets as u64)
                    .map(|(_, n)| u64::from(*n))
                    .sum();
                proptest::prop_assert_eq!(c.count(t0 + Duration::from_millis(at)), expected);
                let mut distinct: Vec<u64> = model.iter().map(|(s, _)| *s).collect();
                distinct.dedup();
                proptest::prop_assert_eq!(c.is_ready(), distinct.len() >= buckets);
            }
            let query = at + query_gap_ms;
            let now = slot(query);
            let expected: u64 = model
                .iter()
                .filter(|(s, _)| now - s < buckets as u64)
                .map(|(_, n)| u64::from(*n))
                .sum();
            proptest::prop_assert_eq!(c.count(t0 + Duration::from_millis(query)), expected);
        }
    }
}
