//! Anomaly detection: split values into good and bad by median and median absolute
//! deviation (the reference's `SplitFloat64` and `SplitLatencies`).

use alloc::vec::Vec;
use core::time::Duration;

/// The threshold the rebalancer uses to split meter ratings.
pub const RATING_SPLIT_THRESHOLD: f64 = 1.5;

/// The threshold [`split_latencies`] uses; less sensitive than ratings to avoid noise.
/// Use it as the rebalancer's split threshold together with a [`LatencyMeter`].
///
/// [`LatencyMeter`]: crate::LatencyMeter
pub const LATENCY_SPLIT_THRESHOLD: f64 = 2.0;

/// The result of a split: for each input value, in input order, whether it is bad.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    bad: Vec<bool>,
}

impl Split {
    /// Whether the value at `index` is bad (`false` when out of range).
    pub fn is_bad(&self, index: usize) -> bool {
        self.bad.get(index).copied().unwrap_or(false)
    }

    /// One flag per input value, `true` for bad.
    pub fn bad(&self) -> &[bool] {
        &self.bad
    }

    /// Whether at least one value is good.
    pub fn has_good(&self) -> bool {
        self.bad.iter().any(|b| !b)
    }

    /// Whether at least one value is bad.
    pub fn has_bad(&self) -> bool {
        self.bad.iter().any(|b| *b)
    }

    /// Whether the values split into a non-empty good and a non-empty bad group.
    pub fn is_split(&self) -> bool {
        self.has_good() && self.has_bad()
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Splits `values` into good and bad: with `m` the median and `mad` the median absolute
/// deviation, a value is bad when `v > (m + mad) * threshold`. When the number of
/// values is even, `sentinel` is added to them before computing `m` and `mad`, so two
/// values can still be told apart. NaN is never bad.
///
/// ```
/// use roundrobin_rebalancer::split_f64;
///
/// assert_eq!(split_f64(1.5, 0.0, &[0.0, 0.0, 0.3]).bad(), [false, false, true]);
/// assert!(!split_f64(1.5, 0.0, &[0.12, 0.13, 0.11]).is_split());
/// ```
pub fn split_f64(threshold: f64, sentinel: f64, values: &[f64]) -> Split {
    let mut all: Vec<f64> = Vec::with_capacity(values.len() + 1);
    all.extend_from_slice(values);
    if values.len() % 2 == 0 {
        all.push(sentinel);
    }
    let m = median(&mut all);
    for v in &mut all {
        *v = (*v - m).abs();
    }
    let mad = median(&mut all);
    let limit = (m + mad) * threshold;
    Split {
        bad: values.iter().map(|v| *v > limit).collect(),
    }
}

/// Splits latencies with threshold [`LATENCY_SPLIT_THRESHOLD`]: each latency `L` is
/// mapped to `(L/p + 1) / (max/p + 1)` (integer divisions by the precision `p`, so
/// differences under `p` are ignored) and the ratios are split by [`split_f64`] with
/// sentinel 0. A zero precision counts as one nanosecond.
///
/// ```
/// use std::time::Duration;
/// use roundrobin_rebalancer::split_latencies;
///
/// let ms = Duration::from_millis;
/// let split = split_latencies(&[ms(10), ms(11), ms(10), ms(100)], ms(1));
/// assert_eq!(split.bad(), [false, false, false, true]);
/// ```
pub fn split_latencies(values: &[Duration], precision: Duration) -> Split {
    let p = precision.as_nanos().max(1);
    let units = |d: &Duration| (d.as_nanos() / p + 1) as f64;
    let max = values.iter().map(units).fold(1.0, f64::max);
    let ratios: Vec<f64> = values.iter().map(|d| units(d) / max).collect();
    split_f64(LATENCY_SPLIT_THRESHOLD, 0.0, &ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(values: &[f64]) -> Vec<bool> {
        split_f64(RATING_SPLIT_THRESHOLD, 0.0, values)
            .bad()
            .to_vec()
    }

    #[test]
    fn reference_cases() {
        assert_eq!(bad(&[0.0, 0.0, 0.3]), [false, false, true]);
        assert_eq!(bad(&[0.12, 0.13, 0.11]), [false, false, false]);
        assert_eq!(bad(&[0.3, 0.2, 0.2]), [false, false, false]);
        assert_eq!(bad(&[0.1, 0.1, 0.1, 0.1]), [false; 4]);
        assert_eq!(
            bad(&[0.0, 0.0, 0.0, 0.0, 0.1]),
            [false, false, false, false, true]
        );
    }

    #[test]
    fn two_values_use_the_sentinel() {
        // [0.3, 0, sentinel 0]: m = 0, mad = 0, so 0.3 is bad.
        assert_eq!(bad(&[0.3, 0.0]), [true, false]);
        // [0.1, 0.12, sentinel 0]: m = 0.1, mad = 0.02, limit 0.18: none bad.
        assert_eq!(bad(&[0.1, 0.12]), [false, false]);
        // A sentinel above both values marks nothing bad.
        assert_eq!(split_f64(1.5, 10.0, &[0.3, 0.0]).bad(), [false, false]);
    }

    #[test]
    fn degenerate_inputs() {
        assert!(bad(&[]).is_empty());
        assert_eq!(bad(&[5.0]), [false]);
        assert_eq!(bad(&[f64::NAN, 0.0, 0.0]), [false, false, false]);
        assert_eq!(bad(&[f64::INFINITY, 0.0, 0.0]), [true, false, false]);
        let s = split_f64(1.5, 0.0, &[0.0, 0.0, 0.3]);
        assert!(s.is_split() && s.has_bad() && s.has_good());
        assert!(s.is_bad(2) && !s.is_bad(0) && !s.is_bad(3));
    }

    #[test]
    fn latencies() {
        let ms = Duration::from_millis;
        // differences under the precision are ignored
        let s = split_latencies(&[ms(1), ms(1), Duration::from_micros(1900)], ms(1));
        assert_eq!(s.bad(), [false, false, false]);
        let s = split_latencies(&[ms(1), ms(1), ms(10)], ms(1));
        assert_eq!(s.bad(), [false, false, true]);
        // threshold 2 is less sensitive than ratings' 1.5
        let s = split_latencies(&[ms(10), ms(10), ms(20)], ms(1));
        assert_eq!(s.bad(), [false, false, false]);
        assert_eq!(bad(&[11.0 / 21.0, 11.0 / 21.0, 1.0]), [false, false, true]);
        let s = split_latencies(&[ms(10), ms(10), ms(35)], ms(1));
        assert_eq!(s.bad(), [false, false, true]);
        assert!(split_latencies(&[], Duration::ZERO).bad().is_empty());
        let s = split_latencies(&[Duration::ZERO, Duration::from_nanos(9)], Duration::ZERO);
        assert_eq!(s.bad(), [false, true]);
    }

    proptest::proptest! {
        /// Equal values are never bad; scaling all values by a power of two (exactly
        /// representable) changes nothing; the largest value is bad if any is.
        #[test]
        fn split_invariants(
            values in proptest::collection::vec(0.0f64..=1.0, 0..12),
            equal in 0.0f64..=1.0,
            n in 1usize..12,
            k in -8i32..=8,
        ) {
            proptest::prop_assert!(!split_f64(1.5, 0.0, &vec![equal; n]).has_bad());
            let split = split_f64(1.5, 0.0, &values);
            let scaled: Vec<f64> = values.iter().map(|v| v * 2f64.powi(k)).collect();
            proptest::prop_assert_eq!(split_f64(1.5, 0.0, &scaled), split.clone());
            if split.has_bad() {
                let max = values.iter().copied().fold(f64::MIN, f64::max);
                let i = values.iter().position(|v| *v == max).unwrap();
                proptest::prop_assert!(split.is_bad(i));
            }
        }
    }
}
