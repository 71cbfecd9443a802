//! Invariants of the state machine over random pools, ratings and time steps.

use core::time::Duration;

use proptest::prelude::*;
use roundrobin_rebalancer::{Clock, Rebalancer, FSM_MAX_WEIGHT};

use crate::common::{rebalancer, Meters, BACKOFF};

/// Ratings drawn from a few values, so that splits are frequent.
const RATINGS: [f64; 5] = [0.0, 0.05, 0.1, 0.3, 1.0];

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn current(rb: &Rebalancer<usize>) -> Vec<u32> {
    let weights: Vec<u32> = rb.snapshot().iter().map(|s| s.current_weight).collect();
    let in_balancer: Vec<u32> = rb
        .servers()
        .iter()
        .map(|s| rb.balancer().server_weight(s).unwrap())
        .collect();
    assert_eq!(weights, in_balancer, "rebalancer and balancer disagree");
    weights
}

fn check_bounds(originals: &[u32], weights: &[u32]) -> Result<(), TestCaseError> {
    for (o, w) in originals.iter().zip(weights) {
        if *o == 0 {
            prop_assert_eq!(*w, 0);
        } else {
            prop_assert!(
                (1..=(*o).max(FSM_MAX_WEIGHT)).contains(w),
                "weight {} of original {}",
                w,
                o
            );
        }
    }
    Ok(())
}

fn setup(
    originals: &[u32],
) -> (
    Rebalancer<usize>,
    Meters,
    roundrobin_rebalancer::ManualClock,
) {
    let (rb, meters, clock) = rebalancer();
    for (i, w) in originals.iter().enumerate() {
        rb.upsert_server(i, Some(*w)).unwrap();
    }
    (rb, meters, clock)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn weights_stay_in_bounds_normalised_and_converge_back_then_stop(
        originals in prop::collection::vec(0u32..=64, 2..=6),
        steps in prop::collection::vec(
            (prop::collection::vec(0usize..RATINGS.len(), 6), 0u64..=25_000),
            1..=40,
        ),
        even in 0usize..RATINGS.len(),
    ) {
        let (rb, meters, clock) = setup(&originals);
        let n = originals.len();

        for (ratings, step_ms) in &steps {
            for (i, r) in ratings.iter().take(n).enumerate() {
                meters.get(i).set_rating(RATINGS[*r]);
            }
            clock.advance(Duration::from_millis(*step_ms));
            let before = current(&rb);
            rb.record(&0, 200, Duration::ZERO);
            let after = current(&rb);
            check_bounds(&originals, &after)?;
            if after != before {
                prop_assert_eq!(after.iter().fold(0, |g, w| gcd(g, *w)), 1, "{:?}", after);
            }
        }

        // All ratings equal: back to the originals' proportions within 6 periods.
        for i in 0..n {
            meters.get(i).set_rating(RATINGS[even]);
        }
        for _ in 0..6 {
            clock.advance(BACKOFF + Duration::from_secs(1));
            rb.record(&0, 200, Duration::ZERO);
            check_bounds(&originals, &current(&rb))?;
        }
        let converged = current(&rb);
        let g_orig = originals.iter().fold(0, |g, w| gcd(g, *w));
        let g_cur = converged.iter().fold(0, |g, w| gcd(g, *w));
        for (o, c) in originals.iter().zip(&converged) {
            prop_assert_eq!(o / g_orig.max(1), c / g_cur.max(1), "{:?} vs {:?}", originals, converged);
        }

        // ... and then nothing changes: no weight, no push to the balancer.
        let generation = rb.balancer().generation();
        for _ in 0..3 {
            clock.advance(BACKOFF + Duration::from_secs(1));
            rb.record(&0, 200, Duration::ZERO);
        }
        prop_assert_eq!(current(&rb), converged);
        prop_assert_eq!(rb.balancer().generation(), generation);
        prop_assert!(rb.snapshot_at(clock.now()).iter().all(|s| s.ready));
    }
}
