//! Property tests over random pools (0..=200 servers, weights 0..=4096) and random
//! upsert/remove interleavings (through `RoundRobin` and `Pool` alike), against
//! straightforward reference implementations of
//! DESIGN.md §2 (interleaved) and nginx (smooth) kept here, not in the library.
#![cfg(feature = "std")]

use proptest::prelude::*;
use roundrobin_core::{Cursor, Error, Policy, Pool, RoundRobin, Schedule};

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// DESIGN.md §2 verbatim: `index = -1`, `cw = 0`; step the index, lower `cw` by the gcd
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

/// nginx's smooth weighted round robin, the textbook O(n) loop.
struct Nginx {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl Nginx {
    fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.iter().map(|&w| i64::from(w)).collect(),
            current: vec![0; weights.len()],
            total: weights.iter().map(|&w| i64::from(w)).sum(),
        }
    }

    fn next(&mut self) -> usize {
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        best
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

    #[test]
    fn smooth_counts_and_prefix_shares(weights in pool()) {
        let Ok(schedule) = Schedule::new(&weights, Policy::Smooth) else {
            prop_assert!(weights.iter().all(|&w| w == 0));
            return Ok(());
        };
        let picks = full_period(&schedule);
        check_counts(&weights, &picks)?;
        // Never a whole pick ahead: count_i(L) < L * w_i / W + 1 for every prefix L.
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        let total = schedule.period();
        let mut counts = vec![0u64; weights.len()];
        for (l, &i) in picks.iter().enumerate() {
            counts[i] += 1;
            let share = (l as u64 + 1) * u64::from(weights[i] / g);
            prop_assert!(counts[i] * total < share + total, "server {} at prefix {}", i, l + 1);
        }
        // nginx itself, position for position (its loop is O(n) a pick: a prefix).
        let mut nginx = Nginx::new(&weights);
        for (k, &p) in picks.iter().take(2_000).enumerate() {
            prop_assert_eq!(p, nginx.next(), "position {}", k);
        }
    }

    #[test]
    fn smooth_equals_nginx_over_small_periods(
        weights in prop::collection::vec(0..=12u32, 1..=12)
    ) {
        let Ok(schedule) = Schedule::new(&weights, Policy::Smooth) else {
            prop_assert!(weights.iter().all(|&w| w == 0));
            return Ok(());
        };
        let mut nginx = Nginx::new(&weights);
        let mut c = schedule.start();
        // Unscaled nginx repeats every sum(w) picks: a multiple of the scaled period.
        for k in 0..2 * weights.iter().sum::<u32>() {
            prop_assert_eq!(schedule.next(&mut c), nginx.next(), "position {}", k);
        }
    }

    #[test]
    fn balancer_follows_changes(
        policy in prop_oneof![Just(Policy::Interleaved), Just(Policy::Smooth)],
        ops in prop::collection::vec(
            (0..12u8, prop::option::of(0..=64u32), any::<bool>(), 0..40usize),
            1..40,
        ),
    ) {
        let rr = RoundRobin::<u8>::builder().policy(policy).default_weight(3).build();
        let mut pool = Pool::new(policy, 3);
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
                    let c = s.start();
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
