//! Where the rebalancer gets `now` from when the caller does not pass it.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

/// A source of the current time (the reference's `RebalancerClock` option).
///
/// Only the convenience methods that do not take `now` ([`Rebalancer::record`],
/// [`Rebalancer::snapshot`]) read it; the algorithm itself gets time as a value.
///
/// [`Rebalancer::record`]: crate::Rebalancer::record
/// [`Rebalancer::snapshot`]: crate::Rebalancer::snapshot
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The operating system's monotonic clock, [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests and simulations.
///
/// Clones share the same time, so a test can keep one and hand another to the
/// rebalancer (wrapped in an `Arc`).
///
/// ```
/// use std::time::Duration;
/// use roundrobin_rebalancer::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(11));
/// assert_eq!(shared.now() - start, Duration::from_secs(11));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that starts at `Instant::now()` and then stands still.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock that starts at `start` and then stands still.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            start,
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock (and every clone of it) forward by `by`.
    ///
    /// An advance past what [`Instant`] can represent (or past about 584 years in
    /// total) is ignored: the clock stays where it was.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Err only means the advance was out of range and ignored, as documented.
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                let next = n.checked_add(by)?;
                self.start.checked_add(Duration::from_nanos(next))?;
                Some(next)
            });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.offset_nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let start = Instant::now();
        let clock = ManualClock::starting_at(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.now(), start);
        let other = clock.clone();
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + Duration::from_millis(1500));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
    }
}
