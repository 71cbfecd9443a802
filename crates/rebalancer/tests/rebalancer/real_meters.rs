//! The rebalancer with the meters this crate ships, fed simulated traffic on a manual
//! clock.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{
    LatencyMeter, ManualClock, Rebalancer, RebalancerBuilder, LATENCY_SPLIT_THRESHOLD,
};

/// Sends `requests` requests, 100 ms apart; `respond` gives status and latency.
fn traffic(
    rb: &Rebalancer<&'static str>,
    clock: &ManualClock,
    requests: usize,
    respond: impl Fn(&str, usize) -> (u16, Duration),
) {
    for i in 0..requests {
        let server = rb.next_server().unwrap();
        let (status, latency) = respond(server, i);
        rb.record(&server, status, latency);
        clock.advance(Duration::from_millis(100));
    }
}

fn builder() -> (RebalancerBuilder<&'static str>, ManualClock) {
    let clock = ManualClock::new();
    let builder = Rebalancer::builder(RoundRobin::new()).clock(Arc::new(clock.clone()));
    (builder, clock)
}

fn weights(rb: &Rebalancer<&'static str>) -> Vec<u32> {
    rb.snapshot().iter().map(|s| s.current_weight).collect()
}

#[test]
fn error_ratio_meters_wait_for_ten_seconds_of_data_then_shift_weight() {
    let (builder, clock) = builder();
    let rb = builder.build().unwrap();
    for s in ["a", "b", "drained"] {
        rb.upsert_server(s, None).unwrap();
    }
    rb.upsert_server("drained", Some(0)).unwrap();
    let a_fails = |server: &str, i: usize| {
        let status = if server == "a" && i % 4 == 0 {
            503
        } else {
            200
        };
        (status, Duration::from_millis(2))
    };
    // 9 s: no meter has data in 10 distinct seconds yet
    traffic(&rb, &clock, 90, a_fails);
    assert_eq!(weights(&rb), [1, 1, 0]);
    assert!(rb.snapshot().iter().all(|s| !s.ready));
    // the drained server never gets traffic and does not hold the others back
    traffic(&rb, &clock, 20, a_fails);
    assert_eq!(weights(&rb), [1, 4, 0]);
    let a = &rb.snapshot()[0];
    assert!(a.ready && a.rating > 0.0);
    // a heals: after the window has forgotten its errors, weights come back
    traffic(&rb, &clock, 2000, |_, _| (200, Duration::from_millis(2)));
    assert_eq!(weights(&rb), [1, 1, 0]);
}

#[test]
fn min_requests_holds_the_state_machine_until_every_server_is_busy_enough() {
    let (builder, clock) = builder();
    let rb = builder.min_requests(60).build().unwrap();
    rb.upsert_server("a", None).unwrap();
    rb.upsert_server("b", None).unwrap();
    let a_fails = |server: &str, _| (if server == "a" { 500 } else { 200 }, Duration::ZERO);
    // 10 requests per second, 5 per server: 50 per server in the 10 s window
    traffic(&rb, &clock, 110, a_fails);
    assert_eq!(weights(&rb), [1, 1]);
    assert!(rb.snapshot().iter().all(|s| !s.ready));
    // twice the traffic: 100 per server per window
    for _ in 0..220 {
        let server = rb.next_server().unwrap();
        let (status, latency) = a_fails(server, 0);
        rb.record(&server, status, latency);
        clock.advance(Duration::from_millis(50));
    }
    assert_eq!(weights(&rb), [1, 4]);
}

#[test]
fn latency_meters_shift_weight_away_from_a_slow_server() {
    let (builder, clock) = builder();
    let rb = builder
        .meter(|| Box::new(LatencyMeter::default()))
        .split_threshold(LATENCY_SPLIT_THRESHOLD)
        .build()
        .unwrap();
    for s in ["a", "b", "c"] {
        rb.upsert_server(s, None).unwrap();
    }
    // "c" takes 15 ms against 10 ms: under twice the median, not an anomaly
    traffic(&rb, &clock, 120, |s, _| {
        (200, Duration::from_millis(if s == "c" { 15 } else { 10 }))
    });
    assert_eq!(weights(&rb), [1, 1, 1]);
    // "c" takes 50 ms: its weight stays, the others grow
    traffic(&rb, &clock, 120, |s, _| {
        (200, Duration::from_millis(if s == "c" { 50 } else { 10 }))
    });
    assert_eq!(weights(&rb), [4, 4, 1]);
}
