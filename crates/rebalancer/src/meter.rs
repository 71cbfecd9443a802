//! Meters: rate a server from the responses it gave.

use core::fmt;
use core::time::Duration;
use std::time::Instant;

use crate::{Error, RatioCounter};

/// Rates one server from its responses; the rebalancer keeps one per server.
///
/// Implementations are shared by every request task, so all methods take `&self`
/// and must not block: use atomics (the counters of this crate are lock-free).
/// Time is passed in; a meter never reads a clock.
pub trait Meter: Send + Sync + fmt::Debug {
    /// How badly the server does at `now`; higher is worse. Meters of one rebalancer
    /// are compared to each other, so only the relative values matter.
    fn rating(&self, now: Instant) -> f64;
    /// Records one response: its HTTP status and how long it took.
    fn record(&self, status: u16, latency: Duration, now: Instant);
    /// Whether the meter has seen enough to be trusted. The rebalancer does nothing
    /// until every server's meter is ready.
    fn is_ready(&self, now: Instant) -> bool;
}

/// The default meter: the ratio of 5xx errors (500 to 504) among all responses over a
/// rolling window, 10 buckets of 1 s unless configured.
///
/// ```
/// use std::time::{Duration, Instant};
/// use roundrobin_rebalancer::{ErrorRatioMeter, Meter};
///
/// let meter = ErrorRatioMeter::default();
/// let now = Instant::now();
/// meter.record(200, Duration::from_millis(3), now);
/// meter.record(502, Duration::from_millis(1), now);
/// meter.record(404, Duration::from_millis(1), now); // a 4xx is the client's fault
/// meter.record(200, Duration::from_millis(2), now);
/// assert_eq!(meter.rating(now), 0.25);
/// assert!(!meter.is_ready(now)); // data in 1 of 10 buckets
/// ```
#[derive(Debug)]
pub struct ErrorRatioMeter {
    counter: RatioCounter,
}

impl ErrorRatioMeter {
    /// A meter over `buckets` buckets of `resolution` each.
    ///
    /// Errors when `buckets` is 0 or too large, or `resolution` is under 1 s.
    pub fn new(buckets: usize, resolution: Duration) -> Result<Self, Error> {
        Ok(Self {
            counter: RatioCounter::new(buckets, resolution)?,
        })
    }

    /// Whether the status counts as an error: 500 to 504.
    pub fn is_error(status: u16) -> bool {
        (500..=504).contains(&status)
    }
}

impl Default for ErrorRatioMeter {
    /// 10 buckets of 1 s.
    fn default() -> Self {
        Self {
            counter: RatioCounter::new(10, Duration::from_secs(1))
                .expect("10 buckets of 1 s is a valid window"),
        }
    }
}

impl Meter for ErrorRatioMeter {
    fn rating(&self, now: Instant) -> f64 {
        self.counter.ratio(now)
    }

    fn record(&self, status: u16, _latency: Duration, now: Instant) {
        if Self::is_error(status) {
            self.counter.inc_hits(1, now);
        } else {
            self.counter.inc_misses(1, now);
        }
    }

    fn is_ready(&self, _now: Instant) -> bool {
        self.counter.is_ready()
    }
}

/// A meter that rates a server by its mean latency over a rolling window (10 buckets
/// of 1 s unless configured), in the terms of [`split_latencies`]: the rating is the
/// mean of `latency / precision` (integer division) plus one, so the rebalancer's split
/// of these ratings with [`LATENCY_SPLIT_THRESHOLD`] is the latency split of the
/// servers' mean latencies. Configure the rebalancer with that threshold:
///
/// ```
/// use std::time::{Duration, Instant};
/// use roundrobin_core::RoundRobin;
/// use roundrobin_rebalancer::{LatencyMeter, Meter, Rebalancer, LATENCY_SPLIT_THRESHOLD};
///
/// let meter = LatencyMeter::new(Duration::from_millis(1))?;
/// let now = Instant::now();
/// meter.record(200, Duration::from_millis(10), now);
/// meter.record(500, Duration::from_micros(30_900), now);
/// assert_eq!(meter.rating(now), 21.0); // (10 + 30) / 2 + 1
///
/// let rebalancer = Rebalancer::builder(RoundRobin::<&str>::new())
///     .meter(|| Box::new(LatencyMeter::default()))
///     .split_threshold(LATENCY_SPLIT_THRESHOLD)
///     .build()?;
/// # let _ = rebalancer;
/// # Ok::<(), roundrobin_rebalancer::Error>(())
/// ```
///
/// Latencies are summed per bucket in units of the precision and saturate at
/// `u32::MAX` units per bucket.
///
/// [`split_latencies`]: crate::split_latencies
/// [`LATENCY_SPLIT_THRESHOLD`]: crate::LATENCY_SPLIT_THRESHOLD
#[derive(Debug)]
pub struct LatencyMeter {
    precision_nanos: u128,
    /// `a`: latency sum in units of the precision; `b`: the number of responses.
    counter: RatioCounter,
}

impl LatencyMeter {
    /// A meter with the given precision over 10 buckets of 1 s.
    ///
    /// Errors when `precision` is zero.
    pub fn new(precision: Duration) -> Result<Self, Error> {
        Self::with_window(precision, 10, Duration::from_secs(1))
    }

    /// A meter with the given precision over `buckets` buckets of `resolution` each.
    ///
    /// Errors when `precision` is zero, `buckets` is 0 or too large, or `resolution` is
    /// under 1 s.
    pub fn with_window(
        precision: Duration,
        buckets: usize,
        resolution: Duration,
    ) -> Result<Self, Error> {
        if precision.is_zero() {
            return Err(Error::ZeroPrecision);
        }
        Ok(Self {
            precision_nanos: precision.as_nanos(),
            counter: RatioCounter::new(buckets, resolution)?,
        })
    }
}

impl Default for LatencyMeter {
    /// Precision 1 ms, 10 buckets of 1 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(1)).expect("1 ms is a valid precision")
    }
}

impl Meter for LatencyMeter {
    fn rating(&self, now: Instant) -> f64 {
        let responses = self.counter.misses(now);
        if responses == 0 {
            return 0.0;
        }
        self.counter.hits(now) as f64 / responses as f64 + 1.0
    }

    fn record(&self, _status: u16, latency: Duration, now: Instant) {
        let units = u32::try_from(latency.as_nanos() / self.precision_nanos).unwrap_or(u32::MAX);
        self.counter.inc(units, 1, now);
    }

    fn is_ready(&self, _now: Instant) -> bool {
        self.counter.is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn error_ratio_counts_500_to_504_only() {
        let m = ErrorRatioMeter::default();
        let now = Instant::now();
        assert_eq!(m.rating(now), 0.0);
        for status in [499, 500, 501, 502, 503, 504, 505, 200, 302] {
            m.record(status, Duration::ZERO, now);
        }
        assert_eq!(m.rating(now), 5.0 / 9.0);
    }

    #[test]
    fn error_ratio_is_ready_after_ten_distinct_seconds_and_forgets_old_data() {
        let m = ErrorRatioMeter::default();
        let t0 = Instant::now();
        for s in 0..9 {
            m.record(500, Duration::ZERO, t0 + SEC * s);
            assert!(!m.is_ready(t0 + SEC * s));
        }
        m.record(200, Duration::ZERO, t0 + SEC * 9);
        assert!(m.is_ready(t0 + SEC * 9));
        assert_eq!(m.rating(t0 + SEC * 9), 0.9);
        // 5 s later only the last 5 records are in the window
        assert_eq!(m.rating(t0 + SEC * 14), 4.0 / 5.0);
        assert_eq!(m.rating(t0 + SEC * 19), 0.0);
    }

    #[test]
    fn error_ratio_window_is_configurable_and_validated() {
        assert_eq!(
            ErrorRatioMeter::new(0, SEC).unwrap_err(),
            Error::ZeroBuckets
        );
        let m = ErrorRatioMeter::new(2, SEC).unwrap();
        let t0 = Instant::now();
        m.record(503, Duration::ZERO, t0);
        m.record(200, Duration::ZERO, t0 + SEC);
        assert!(m.is_ready(t0 + SEC));
        assert_eq!(m.rating(t0 + SEC), 0.5);
    }

    #[test]
    fn latency_meter_rates_by_mean_latency_in_precision_units() {
        assert_eq!(
            LatencyMeter::new(Duration::ZERO).unwrap_err(),
            Error::ZeroPrecision
        );
        let m = LatencyMeter::new(Duration::from_millis(10)).unwrap();
        let t0 = Instant::now();
        assert_eq!(m.rating(t0), 0.0);
        m.record(200, Duration::from_millis(19), t0); // 1 unit
        m.record(200, Duration::from_millis(50), t0); // 5 units
        assert_eq!(m.rating(t0), 4.0);
        assert!(!m.is_ready(t0));
        let m = LatencyMeter::with_window(Duration::from_millis(1), 2, SEC).unwrap();
        m.record(200, Duration::from_secs(1 << 40), t0); // saturates
        m.record(200, Duration::ZERO, t0 + SEC);
        assert!(m.is_ready(t0 + SEC));
        assert_eq!(m.rating(t0 + SEC), f64::from(u32::MAX) / 2.0 + 1.0);
    }
}
