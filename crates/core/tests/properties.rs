//! Property tests over random pools (0..=200 servers, weights 0..=4096; 0..=2000
//! servers, weights 0..=u16::MAX and u32 extremes for smooth) and random upsert/remove
//! interleavings (through `RoundRobin` and `Pool` alike): the interleaved sequence
//! against a straightforward implementation of the reference (oxy) loop kept here, the
//! smooth one against its properties (exact quotas, lag within 1.5 picks, drained
//! servers never picked).
#![cfg(feature = "std")]

use proptest::prelude::*;
use roundrobin_core::{Cursor, Error, Policy, Pool, RoundRobin, Schedule};

/// The smooth policy's lag bound, in picks (see the crate docs).
const LAG: f64 = 1.5;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The reference (oxy) loop verbatim: `index = -1`, `cw = 0`; step the index, lower `cw` by the gcd
/// when it wraps to 0 (back to the max when it reaches 0), pick when `w >= cw`.
struct Reference {
    weights: Vec<u32>,
    index: i64,
    cw: i64,
    /// Largest weight and gcd (the Go code recomputes them every pick).
    m: i64,
    g: i64,
}

impl Reference {
    fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
            index: -1,
            cw: 0,
            m: i64::from(weights.iter().copied().max().unwrap_or(0)),
            g: i64::from(weights.iter().fold(0, |g, &w| gcd(g, w))),
        }
    }

    fn next(&mut self) -> Result<usize, Error> {
        let n = self.weights.len() as i64;
        if n == 0 {
            return Err(Error::NoServers);
        }
        let (m, g) = (self.m, self.g);
        if m == 0 {
            return Err(Error::AllWeightsZero);
        }
        loop {
            self.index = (self.index + 1) % n;
            if self.index == 0 {
                self.cw -= g;
                if self.cw <= 0 {
                    self.cw = m;
                }
            }
            if i64::from(self.weights[self.index as usize]) >= self.cw {
                return Ok(self.index as usize);
            }
        }
    }
}

fn pool() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(
        prop_oneof![1 => Just(0u32), 1 => 1..=8u32, 3 => 0..=4096u32],
        0..=200,
    )
}

fn full_period(schedule: &Schedule) -> Vec<usize> {
    let mut c = schedule.start();
    (0..schedule.period())
        .map(|_| schedule.next(&mut c))
        .collect()
}

fn check_counts(weights: &[u32], picks: &[usize]) -> Result<(), TestCaseError> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    let mut counts = vec![0u64; weights.len()];
    for &i in picks {
        counts[i] += 1;
    }
    for (i, (&w, &c)) in weights.iter().zip(&counts).enumerate() {
        prop_assert_eq!(c, u64::from(w / g), "server {} (weight {})", i, w);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_equals_reference(weights in pool()) {
        let mut reference = Reference::new(&weights);
        match Schedule::new(&weights, Policy::Interleaved) {
            Err(e) => prop_assert_eq!(reference.next(), Err(e)),
            Ok(schedule) => {
                let picks = full_period(&schedule);
                // The whole period, then into the next one.
                for (k, &p) in picks.iter().chain(&picks[..picks.len().min(300)]).enumerate() {
                    prop_assert_eq!(p, reference.next().unwrap(), "position {}", k);
                }
                check_counts(&weights, &picks)?;
            }
        }
    }

    /// Exact quotas over the period, every prefix within [`LAG`] (and within the
    /// schedule's own `lag_bound`) of the exact share, checked at every pick (where a
    /// server's lag peaks), drained servers never picked, the sequence periodic.
    #[test]
    fn smooth_quotas_and_lag(weights in pool()) {
        let Ok(schedule) = Schedule::new(&weights, Policy::Smooth) else {
            prop_assert!(weights.iter().all(|&w| w == 0));
            return Ok(());
        };
        let bound = schedule.lag_bound().unwrap();
        prop_assert!(bound <= LAG, "bound {}", bound);
        let picks = full_period(&schedule);
        check_counts(&weights, &picks)?;
        let worst = max_lag(&weights, &picks);
        prop_assert!(worst <= bound + 1e-9, "lag {} above the bound {}", worst, bound);
        let mut c = schedule.start_at(schedule.period());
        for (k, &p) in picks.iter().take(300).enumerate() {
            prop_assert_eq!(schedule.next(&mut c), p, "second period, position {}", k);
        }
    }

    /// Large pools: the proven bound stays within [`LAG`]; windows anywhere in the
    /// (huge) period never pick a drained server and stay within twice the bound of
    /// their exact share.
    #[test]
    fn smooth_large_pools(
        weights in prop::collection::vec(
            prop_oneof![
                1 => Just(0u32),
                4 => 0..=u32::from(u16::MAX),
                1 => prop_oneof![Just(1u32), Just(u32::MAX)],
            ],
            0..=2000,
        ),
        start in any::<u64>(),
    ) {
        let Ok(schedule) = Schedule::new(&weights, Policy::Smooth) else {
            prop_assert!(weights.iter().all(|&w| w == 0));
            return Ok(());
        };
        let bound = schedule.lag_bound().unwrap();
        prop_assert!(bound <= LAG, "bound {}", bound);
        let len = schedule.period().min(4000);
        let mut c = schedule.start_at(start);
        let mut counts = vec![0u64; weights.len()];
        for _ in 0..len {
            counts[schedule.next(&mut c)] += 1;
        }
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        let period = schedule.period() as f64;
        for (i, (&w, &n)) in weights.iter().zip(&counts).enumerate() {
            prop_assert!(w > 0 || n == 0, "drained server {} picked", i);
            let share = len as f64 * f64::from(w / g) / period;
            prop_assert!((n as f64 - share).abs() <= 2.0 * bound + 1e-6, "server {}: {} picks, share {}", i, n, share);
        }
    }

    /// Servers of equal weight take turns in pool order.
    #[test]
    fn smooth_equal_weights_in_pool_order(n in 1..=300usize, w in 1..=u32::MAX) {
        let schedule = Schedule::new(&vec![w; n], Policy::Smooth).unwrap();
        let picks = full_period(&schedule);
        prop_assert_eq!(picks, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn balancer_follows_changes(
        policy in prop_oneof![Just(Policy::Interleaved), Just(Policy::Smooth)],
        seed in prop_oneof![Just(0u64), any::<u64>()],
        ops in prop::collection::vec(
            (0..12u8, prop::option::of(0..=64u32), any::<bool>(), 0..40usize),
            1..40,
        ),
    ) {
        let rr = RoundRobin::<u8>::builder()
            .policy(policy)
            .default_weight(3)
            .start_offset(seed)
            .build();
        let mut pool = Pool::new(policy, 3).with_start_offset(seed);
        let mut model: Vec<(u8, u32)> = Vec::new();
        let mut generation = 0;
        // The expected schedule and cursor, restarted on every accepted change.
        let mut expected: Option<(Schedule, Cursor)> = None;
        for (server, weight, remove, picks) in ops {
            let changed = if remove {
                match model.iter().position(|e| e.0 == server) {
                    Some(i) => {
                        model.remove(i);
                        rr.remove_server(&server).unwrap();
                        pool.remove_server(&server).unwrap();
                        true
                    }
                    None => {
                        prop_assert_eq!(rr.remove_server(&server), Err(Error::ServerNotFound));
                        prop_assert_eq!(pool.remove_server(&server), Err(Error::ServerNotFound));
                        false
                    }
                }
            } else {
                let w = weight.unwrap_or(3);
                match model.iter_mut().find(|e| e.0 == server) {
                    Some(e) => e.1 = w,
                    None => model.push((server, w)),
                }
                rr.upsert_server(server, weight).unwrap();
                pool.upsert_server(server, weight).unwrap();
                true
            };
            let servers: Vec<u8> = model.iter().map(|e| e.0).collect();
            let weights: Vec<u32> = model.iter().map(|e| e.1).collect();
            if changed {
                generation += 1;
                expected = Schedule::new(&weights, policy).ok().map(|s| {
                    let c = s.start_at(seed);
                    (s, c)
                });
            }
            prop_assert_eq!(rr.generation(), generation);
            prop_assert_eq!(rr.servers(), servers.clone());
            prop_assert_eq!(pool.servers(), &servers[..]);
            prop_assert_eq!(pool.weights(), &weights[..]);
            for &(s, w) in &model {
                prop_assert_eq!(rr.server_weight(&s), Some(w));
            }
            prop_assert_eq!(rr.weights(), model.clone());
            for absent in (0..12u8).filter(|s| !servers.contains(s)) {
                prop_assert_eq!(rr.server_weight(&absent), None);
            }
            match &mut expected {
                None => {
                    let e = if model.is_empty() { Error::NoServers } else { Error::AllWeightsZero };
                    prop_assert_eq!(rr.next_server(), Err(e.clone()));
                    prop_assert_eq!(pool.next_server(), Err(e));
                }
                Some((schedule, c)) => {
                    for _ in 0..picks {
                        let s = rr.next_server().unwrap();
                        let i = schedule.next(c);
                        prop_assert_eq!(s, servers[i]);
                        prop_assert_eq!(pool.next_server(), Ok(&servers[i]));
                        prop_assert!(weights[i] > 0, "a drained server was picked");
                    }
                }
            }
        }
    }
}

/// One heavy server among thousands of light ones: most rounds skip almost the whole
/// pool, so picks go through the max-tree descent, not the neighbour probe.
#[test]
fn interleaved_long_skips_match_reference() {
    let mut weights = vec![1u32; 5000];
    weights.insert(2500, 4096);
    weights.push(4096);
    weights.extend([7, 0, 3]);
    let schedule = Schedule::new(&weights, Policy::Interleaved).unwrap();
    let mut reference = Reference::new(&weights);
    let picks = full_period(&schedule);
    for (k, &p) in picks.iter().enumerate() {
        assert_eq!(p, reference.next().unwrap(), "position {k}");
    }
    check_counts(&weights, &picks).unwrap();
}

/// The largest `|count_i(k) - k·w_i/W|` over every prefix `k` of one period.
fn max_lag(weights: &[u32], picks: &[usize]) -> f64 {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    let total = picks.len() as f64;
    let mut counts = vec![0u64; weights.len()];
    let mut worst = 0.0f64;
    for (k, &i) in picks.iter().enumerate() {
        let q = f64::from(weights[i] / g);
        // Just before and just after the pick: where the lag peaks.
        worst = worst.max((counts[i] as f64 - k as f64 * q / total).abs());
        counts[i] += 1;
        worst = worst.max((counts[i] as f64 - (k + 1) as f64 * q / total).abs());
    }
    worst
}

/// u32 extremes: 1 and u32::MAX mixed, all u32::MAX, near-maximal coprime weights.
#[test]
fn smooth_u32_extremes() {
    let mixed: Vec<u32> = (0..64)
        .map(|i| if i % 2 == 0 { 1 } else { u32::MAX })
        .collect();
    for weights in [
        vec![u32::MAX, 1],
        mixed,
        vec![u32::MAX; 1000],
        vec![u32::MAX, u32::MAX - 1, u32::MAX - 2, 0, 1],
    ] {
        let schedule = Schedule::new(&weights, Policy::Smooth).unwrap();
        assert!(schedule.lag_bound().unwrap() <= LAG, "{weights:?}");
        let mut c = schedule.start();
        let mut seen = vec![0u64; weights.len()];
        for _ in 0..10_000 {
            seen[schedule.next(&mut c)] += 1;
        }
        // Within 10,000 picks every u32::MAX server gets its share, within the bound.
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        for (i, (&w, &n)) in weights.iter().zip(&seen).enumerate() {
            let share = 10_000.0 * f64::from(w) / total;
            assert!((n as f64 - share).abs() <= LAG, "{weights:?}: server {i}");
        }
    }
    let all_max = Schedule::new(&[u32::MAX; 1000], Policy::Smooth).unwrap();
    assert_eq!(all_max.period(), 1000);
}
