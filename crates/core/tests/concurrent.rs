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

#[test]
fn each_thread_sees_a_change_at_its_next_pick() {
    let rr = RoundRobin::<&str>::new();
    rr.upsert_servers([("a", Some(2)), ("b", Some(1))]).unwrap();
    let (to_main, from_thread) = std::sync::mpsc::channel();
    let (to_thread, from_main) = std::sync::mpsc::channel::<()>();
    thread::scope(|scope| {
        let rr = &rr;
        scope.spawn(move || {
            // The thread's cache holds the first snapshot ...
            to_main.send(rr.next_server().unwrap().to_string()).unwrap();
            from_main.recv().unwrap();
            // ... and restarts with the new one.
            to_main
                .send(
                    (0..3)
                        .map(|_| rr.next_server().unwrap())
                        .collect::<String>(),
                )
                .unwrap();
        });
        assert_eq!(from_thread.recv().unwrap(), "a");
        rr.upsert_server("b", Some(2)).unwrap();
        to_thread.send(()).unwrap();
        assert_eq!(from_thread.recv().unwrap(), "aba");
    });
}

/// A server whose clone picks from the balancer it is in, once (a caller's odd
/// `Clone`): the nested pick is served without the thread's cache, which is in use.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Nested(u32);

static NESTED: std::sync::OnceLock<RoundRobin<Nested>> = std::sync::OnceLock::new();
/// Set once the pool is filled (the upsert clones servers too).
static ARMED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

thread_local! {
    static DEPTH: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

impl Clone for Nested {
    fn clone(&self) -> Self {
        if let Some(rr) = NESTED.get() {
            if ARMED.load(core::sync::atomic::Ordering::Relaxed) && DEPTH.get() == 0 {
                DEPTH.set(1);
                let inner = rr.next_server();
                DEPTH.set(0);
                assert!(inner.is_ok());
            }
        }
        Self(self.0)
    }
}

#[test]
fn a_pick_inside_a_pick_on_one_thread_is_served() {
    let rr = NESTED.get_or_init(RoundRobin::new);
    rr.upsert_servers([(Nested(1), Some(1)), (Nested(2), Some(1))])
        .unwrap();
    ARMED.store(true, core::sync::atomic::Ordering::Relaxed);
    // The outer pick's clone takes the next position: 1, (2), 1, (2).
    assert_eq!(rr.next_server(), Ok(Nested(1)));
    assert_eq!(rr.next_server(), Ok(Nested(1)));
}

#[test]
fn threads_caches_are_freed_with_the_balancer() {
    let server = std::sync::Arc::new(7u32);
    let rr = RoundRobin::new();
    rr.upsert_server(std::sync::Arc::clone(&server), None)
        .unwrap();
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| rr.next_server().unwrap());
        }
    });
    // A change: the threads' caches still hold the old snapshot (its server list).
    rr.upsert_server(std::sync::Arc::new(8u32), None).unwrap();
    assert!(std::sync::Arc::strong_count(&server) > 2);
    drop(rr);
    assert_eq!(std::sync::Arc::strong_count(&server), 1);
}
