//! The pure weight-adjusting step of the rebalancer: weights and ratings in, weights out.

use alloc::vec::Vec;

use crate::split::split_f64;

/// The most weight the rebalancer gives a server by growing it.
pub const FSM_MAX_WEIGHT: u32 = 4096;
/// The factor a good server's weight grows by per step, and a weight shrinks by when
/// converging back.
pub const FSM_GROW_FACTOR: u32 = 4;

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ratings split into good and bad; the good servers grew (`true`) or could not.
    Split(bool),
    /// No split; weights moved back toward the originals (`true`) or already were
    /// in the originals' proportions.
    Converge(bool),
}

impl Outcome {
    pub(crate) fn changed(self) -> bool {
        match self {
            Self::Split(changed) | Self::Converge(changed) => changed,
        }
    }
}

const fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn gcd_all(weights: &[u32]) -> u32 {
    weights.iter().fold(0, |g, w| gcd(g, *w))
}

/// Divides all weights by their gcd.
fn normalize(weights: &mut [u32]) {
    let g = gcd_all(weights);
    if g > 1 {
        for w in weights.iter_mut() {
            *w /= g;
        }
    }
}

/// Whether `current` is `original` scaled by a rational factor (zeros where it is 0).
fn proportional(original: &[u32], current: &[u32]) -> bool {
    let (go, gc) = (gcd_all(original), gcd_all(current));
    if go == 0 || gc == 0 {
        return go == gc;
    }
    original.iter().zip(current).all(|(o, c)| o / go == c / gc)
}

/// One step of the rebalancer state machine over the *active* servers (original weight > 0; a drained
/// server keeps weight 0 and takes no part). `ratings[i]` rates server `i`.
///
/// - Split into good and bad: every good server's weight grows by [`FSM_GROW_FACTOR`]
///   when that stays within [`FSM_MAX_WEIGHT`]; if any grew, normalise by the gcd.
/// - No split: unless the weights are already in the originals' proportions, every
///   weight not at its target (the original divided by the originals' gcd) becomes
///   `max(current / 4, target)`, then all are normalised by the gcd. Converging to the
///   originals' proportions rather than to the originals themselves is what makes the
///   step stop: the reference moves 2/2 to 1/1 and back forever.
pub(crate) fn step(
    original: &[u32],
    current: &mut [u32],
    ratings: &[f64],
    threshold: f64,
) -> Outcome {
    let active: Vec<usize> = (0..original.len()).filter(|&i| original[i] > 0).collect();
    let active_ratings: Vec<f64> = active.iter().map(|&i| ratings[i]).collect();
    let split = split_f64(threshold, 0.0, &active_ratings);
    if split.is_split() {
        let mut changed = false;
        for (k, &i) in active.iter().enumerate() {
            if !split.is_bad(k) {
                if let Some(grown) = current[i].checked_mul(FSM_GROW_FACTOR) {
                    if grown <= FSM_MAX_WEIGHT {
                        current[i] = grown;
                        changed = true;
                    }
                }
            }
        }
        if changed {
            normalize(current);
        }
        return Outcome::Split(changed);
    }
    if proportional(original, current) {
        return Outcome::Converge(false);
    }
    let g = gcd_all(original);
    for &i in &active {
        let target = original[i] / g;
        if current[i] != target {
            current[i] = (current[i] / FSM_GROW_FACTOR).max(target);
        }
    }
    normalize(current);
    Outcome::Converge(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(original: &[u32], current: &mut [u32], ratings: &[f64]) -> Outcome {
        step(original, current, ratings, 1.5)
    }

    #[test]
    fn good_servers_grow_by_four_up_to_the_maximum() {
        let original = [1, 1];
        let mut current = [1, 1];
        for expected in [4, 16, 64, 256, 1024, 4096] {
            assert_eq!(
                run(&original, &mut current, &[0.3, 0.0]),
                Outcome::Split(true)
            );
            assert_eq!(current, [1, expected]);
        }
        assert_eq!(
            run(&original, &mut current, &[0.3, 0.0]),
            Outcome::Split(false)
        );
        assert_eq!(current, [1, 4096]);
    }

    #[test]
    fn growth_is_normalised_by_the_gcd() {
        let original = [2, 2, 2];
        let mut current = [2, 2, 2];
        assert_eq!(
            run(&original, &mut current, &[0.3, 0.0, 0.0]),
            Outcome::Split(true)
        );
        assert_eq!(current, [1, 4, 4]);
    }

    #[test]
    fn converges_back_by_quarters_and_then_stops() {
        let original = [1, 1];
        let mut current = [1, 4096];
        for expected in [1024, 256, 64, 16, 4, 1] {
            assert_eq!(
                run(&original, &mut current, &[0.0, 0.0]),
                Outcome::Converge(true)
            );
            assert_eq!(current, [1, expected]);
        }
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.0]),
            Outcome::Converge(false)
        );
    }

    #[test]
    fn originals_with_a_common_factor_converge_to_their_proportions_and_stop() {
        let original = [2, 2];
        let mut current = [1, 4];
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.0]),
            Outcome::Converge(true)
        );
        assert_eq!(current, [1, 1]);
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.0]),
            Outcome::Converge(false)
        );
        // untouched originals are already in proportion: nothing to push
        let mut current = [2, 2];
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.0]),
            Outcome::Converge(false)
        );
    }

    #[test]
    fn a_weight_below_its_target_jumps_to_it() {
        let original = [4, 1];
        let mut current = [1, 1];
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.0]),
            Outcome::Converge(true)
        );
        assert_eq!(current, [4, 1]);
    }

    #[test]
    fn drained_servers_stay_at_zero_and_are_not_rated() {
        let original = [0, 1, 1];
        let mut current = [0, 1, 1];
        // the drained server's bad rating does not count
        assert_eq!(
            run(&original, &mut current, &[9.0, 0.0, 0.0]),
            Outcome::Converge(false)
        );
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.3, 0.0]),
            Outcome::Split(true)
        );
        assert_eq!(current, [0, 1, 4]);
    }

    #[test]
    fn weights_above_the_maximum_never_grow() {
        let original = [5000, 1];
        let mut current = [5000, 1];
        assert_eq!(
            run(&original, &mut current, &[0.0, 0.3]),
            Outcome::Split(false)
        );
        assert_eq!(current, [5000, 1]);
    }
}
