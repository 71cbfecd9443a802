//! Threads picking concurrently share one sequence: every position is handed out once.
#![cfg(feature = "std")]

use std::collections::HashMap;
use std::sync::Barrier;
use std::thread;

use roundrobin_core::{AtomicCursor, Policy, RoundRobin, Schedule};

const THREADS: usize = 4;

/// Weights with distinct counts per period, so a position handed out twice (or lost)
/// shows up as a wrong count.
const WEIGHTS: [u32; 6] = [7, 1, 4, 0, 9, 2];
const PERIOD: usize = 23;
const PERIODS: usize = 400;

#[test]
fn threads_claim_each_position_exactly_once() {
    for policy in [Policy::Interleaved, Policy::Smooth] {
        let schedule = Schedule::new(&WEIGHTS, policy).unwrap();
        assert_eq!(schedule.period(), PERIOD as u64);
        let mut sequential = schedule.start();
        let expected: Vec<usize> = (0..PERIOD)
            .map(|_| schedule.next(&mut sequential))
            .collect();

        // The threads together take exactly PERIODS periods: if a position were handed
        // out twice, another would be lost and two servers' counts would be off.
        let cursor = AtomicCursor::new(&schedule);
        let barrier = Barrier::new(THREADS);
        let per_thread = PERIODS * PERIOD / THREADS;
        let counts: Vec<HashMap<usize, usize>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let mut counts = HashMap::new();
                        for _ in 0..per_thread {
                            *counts.entry(schedule.next_atomic(&cursor)).or_insert(0) += 1;
                        }
                        counts
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut total = HashMap::new();
        for c in counts {
            for (i, n) in c {
                *total.entry(i).or_insert(0) += n;
            }
        }
        for (i, &w) in WEIGHTS.iter().enumerate() {
            let want = PERIODS * expected.iter().filter(|&&e| e == i).count();
            assert_eq!(want, PERIODS * w as usize);
            assert_eq!(
                total.get(&i).copied().unwrap_or(0),
                want,
                "{policy:?} server {i}"
            );
        }
        // All positions were consumed: the shared cursor is back at the start.
        assert_eq!(schedule.next_atomic(&cursor), expected[0]);
    }
}

#[test]
fn balancer_shared_by_threads_keeps_exact_shares() {
    let rr = RoundRobin::<&str>::new();
    let names = ["a", "b", "c", "d", "e", "f"];
    rr.upsert_servers(names.iter().zip(WEIGHTS).map(|(&n, w)| (n, Some(w))))
        .unwrap();
    let barrier = Barrier::new(THREADS);
    let per_thread = PERIODS * PERIOD / THREADS;
    let picks: Vec<Vec<&str>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    (0..per_thread)
                        .map(|_| rr.next_server().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, w) in names.iter().zip(WEIGHTS) {
        let got = picks.iter().flatten().filter(|p| *p == name).count();
        assert_eq!(got, PERIODS * w as usize, "{name}");
    }
    // Every position consumed: the next pick is the first of the sequence.
    assert_eq!(rr.next_server(), Ok("e"));
}

#[test]
fn pickers_and_next_server_share_one_sequence() {
    for policy in [Policy::Interleaved, Policy::Smooth] {
        let rr = RoundRobin::<usize>::builder().policy(policy).build();
        rr.upsert_servers((0..).zip(WEIGHTS).map(|(i, w)| (i, Some(w))))
            .unwrap();
        let barrier = Barrier::new(THREADS);
        let per_thread = PERIODS * PERIOD / THREADS;
        let picks: Vec<Vec<usize>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (rr, barrier) = (&rr, &barrier);
                    scope.spawn(move || {
                        let mut picker = rr.picker();
                        barrier.wait();
                        (0..per_thread)
                            .map(|k| {
                                // Half the threads mix both ways of picking.
                                if t % 2 == 1 && k % 2 == 1 {
                                    rr.next_server().unwrap()
                                } else {
                                    picker.next_server().unwrap()
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, w) in WEIGHTS.iter().enumerate() {
            let got = picks.iter().flatten().filter(|&&p| p == i).count();
            assert_eq!(got, PERIODS * *w as usize, "{policy:?} server {i}");
        }
    }
}
