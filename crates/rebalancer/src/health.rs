//! Passive ejection, active health-check results and slow start: the health of each
//! server, as time passed in (sans-IO), turned into the weight the balancer applies.

use core::time::Duration;

/// Passive ejection (Envoy's outlier detection, HAProxy's `observe layer7` +
/// `on-error mark-down`): a server that fails `after` requests in a row (status 500 or
/// above, connect failures included: the adapter records them as 502) gets no new
/// picks for `base_time × times ejected` (capped at `max_time`), then comes back,
/// through slow start when that is on. Requests the client caused (never recorded) do
/// not count.
///
/// Never more than `max_percent` of the pool is ejected at once; whatever the
/// percentage, one server may always be ejected and one always stays.
///
/// | | here | HAProxy | nginx | Envoy |
/// |---|---|---|---|---|
/// | failures in a row | `after` (library default 0 = off; the proxy binary: 5) | `error-limit 10` | `max_fails 1` per `fail_timeout` | `consecutive_5xx 5` |
/// | ejected for | `base_time` 30 s × times ejected, ≤ `max_time` 300 s | until checks pass | `fail_timeout 10s` | `base_ejection_time 30s` × n, ≤ 300 s |
/// | at most ejected | `max_percent` 50 % | — | — | `max_ejection_percent 10` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Failures in a row that eject a server; 0 turns passive ejection off.
    pub after: u32,
    /// How long the first ejection lasts; the n-th lasts n times as long.
    pub base_time: Duration,
    /// The longest an ejection lasts.
    pub max_time: Duration,
    /// The largest share of the pool ejected at once, in percent.
    pub max_percent: u8,
}

impl Ejection {
    /// Passive ejection off.
    pub const OFF: Self = Self {
        after: 0,
        base_time: Duration::from_secs(30),
        max_time: Duration::from_secs(300),
        max_percent: 50,
    };

    /// The proxy binary's default: ejected after 5 failures in a row, for 30 s.
    pub const DEFAULT_ON: Self = Self {
        after: 5,
        ..Self::OFF
    };

    /// How long the `n`-th ejection (from 1) lasts.
    pub fn duration(&self, n: u32) -> Duration {
        self.base_time.saturating_mul(n.max(1)).min(self.max_time)
    }

    /// How many of `n` servers may be ejected at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        let share = n.saturating_mul(usize::from(self.max_percent.min(100))) / 100;
        share.max(1).min(n.saturating_sub(1))
    }
}

impl Default for Ejection {
    /// Off: the reference rebalancer never ejects.
    fn default() -> Self {
        Self::OFF
    }
}

/// Active health checks' verdicts: `fall` failed checks in a row mark a server down
/// (no picks), `rise` passed checks in a row bring it back (HAProxy's `rise 2 fall 3`).
/// The checks themselves (HTTP requests on a timer) are run by the adapter and reported
/// with [`Rebalancer::report_check`](crate::Rebalancer::report_check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Passed checks in a row that bring a down server back.
    pub rise: u32,
    /// Failed checks in a row that mark a server down.
    pub fall: u32,
}

impl Default for Checks {
    fn default() -> Self {
        Self { rise: 2, fall: 3 }
    }
}

/// Slow start (HAProxy's `slowstart`, Envoy's `slow_start_config`): a server that is
/// added or comes back (from an ejection or a failed health check) ramps its weight
/// linearly from `floor` of it to all of it over `window`. Off (window 0) by default,
/// as in HAProxy and nginx.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// How long the ramp lasts; zero turns slow start off.
    pub window: Duration,
    /// The share of its weight a server starts with (default 0.1).
    pub floor: f64,
}

impl SlowStart {
    /// Slow start off.
    pub const OFF: Self = Self {
        window: Duration::ZERO,
        floor: 0.1,
    };

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        !self.window.is_zero()
    }

    /// `weight` after `elapsed` of the ramp: at least 1 while `weight > 0`.
    pub fn ramp(&self, weight: u32, elapsed: Duration) -> u32 {
        if weight == 0 || !self.is_on() || elapsed >= self.window {
            return weight;
        }
        let floor = if self.floor.is_finite() {
            self.floor.clamp(0.0, 1.0)
        } else {
            0.1
        };
        let progress = elapsed.as_secs_f64() / self.window.as_secs_f64();
        let share = floor + (1.0 - floor) * progress;
        // `share` < 1 here, so the product fits in u32.
        let ramped = (f64::from(weight) * share).ceil() as u32;
        ramped.clamp(1, weight)
    }

    /// How often the ramp's weights are pushed to the balancer while it lasts.
    pub(crate) fn tick(&self) -> Duration {
        (self.window / 10).max(Duration::from_millis(100))
    }
}

impl Default for SlowStart {
    fn default() -> Self {
        Self::OFF
    }
}

/// A server's health as the rebalancer and the admin API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Picked at its weight.
    Up,
    /// Back from an ejection or a failed check, or new: ramping up its weight.
    SlowStart,
    /// Ejected after failures in a row: no picks until the ejection ends.
    Ejected,
    /// Failed its active health checks: no picks until they pass again.
    Down,
}

impl Health {
    /// `up`, `slow-start`, `ejected` or `down`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::SlowStart => "slow-start",
            Self::Ejected => "ejected",
            Self::Down => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_durations_grow_and_are_capped() {
        let e = Ejection::DEFAULT_ON;
        assert_eq!(e.duration(1), Duration::from_secs(30));
        assert_eq!(e.duration(3), Duration::from_secs(90));
        assert_eq!(e.duration(100), Duration::from_secs(300));
    }

    #[test]
    fn at_least_one_may_be_ejected_and_one_always_stays() {
        let e = Ejection::DEFAULT_ON;
        assert_eq!(e.max_ejected(1), 0);
        assert_eq!(e.max_ejected(2), 1);
        assert_eq!(e.max_ejected(3), 1);
        assert_eq!(e.max_ejected(10), 5);
        let all = Ejection {
            max_percent: 100,
            ..e
        };
        assert_eq!(all.max_ejected(4), 3);
        let none = Ejection {
            max_percent: 0,
            ..e
        };
        assert_eq!(none.max_ejected(4), 1);
    }

    proptest::proptest! {
        #[test]
        fn the_ramp_goes_from_the_floor_to_the_weight(
            weight in 0u32..=u32::MAX,
            window_ms in 1u64..100_000,
            at in 0.0f64..=1.5,
        ) {
            let s = SlowStart { window: Duration::from_millis(window_ms), floor: 0.1 };
            let elapsed = Duration::from_secs_f64(window_ms as f64 / 1000.0 * at);
            let w = s.ramp(weight, elapsed);
            proptest::prop_assert!(w <= weight);
            if weight > 0 {
                proptest::prop_assert!(w >= 1);
                proptest::prop_assert!(f64::from(w) >= (f64::from(weight) * 0.1).floor());
            }
            if at >= 1.0 {
                proptest::prop_assert_eq!(w, weight);
            }
            // monotonic in time
            let later = s.ramp(weight, elapsed + Duration::from_millis(1));
            proptest::prop_assert!(later >= w);
        }
    }
}
