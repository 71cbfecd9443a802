//! One truth for weights: what the rebalancer reports is what the balancer applies,
//! after every step, and the timer-driven mode says when it is due.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{Clock, ManualClock, Rebalancer, FSM_MAX_WEIGHT};

use crate::common::{Meters, BACKOFF};

/// The rebalancer's view (`snapshot`, `server_weight`) and the balancer's own weights,
/// server by server.
fn assert_agree(rb: &Rebalancer<String>) {
    let snapshot = rb.snapshot();
    assert_eq!(snapshot.len(), rb.balancer().servers().len());
    for state in &snapshot {
        let applied = rb.balancer().server_weight(&state.server);
        assert_eq!(applied, Some(state.current_weight), "{}", state.server);
        assert_eq!(rb.server_weight(&state.server), applied, "{}", state.server);
    }
}

#[test]
fn a_large_smooth_pool_driven_past_the_cap_agrees_after_every_step() {
    let meters = Meters::default();
    let clock = ManualClock::new();
    let rb = Rebalancer::builder(RoundRobin::builder().smooth().build())
        .meter(meters.factory())
        .clock(Arc::new(clock.clone()))
        .backoff(BACKOFF)
        .build()
        .unwrap();
    let n = 1100;
    rb.upsert_servers_for_test(n);
    meters.get(0).set_rating(0.5); // one failing server: every other one grows
    assert_agree(&rb);
    let mut grown = 0;
    for _ in 0..12 {
        clock.advance(BACKOFF + Duration::from_millis(1));
        let _ = rb.step_if_due(clock.now());
        assert_agree(&rb);
        grown = grown.max(rb.server_weight(&"http://s1:80".to_owned()).unwrap());
    }
    assert_eq!(
        grown,
        FSM_MAX_WEIGHT,
        "the healthy servers reached the cap ({} refused steps)",
        rb.refused_steps()
    );
    assert_eq!(rb.server_weight(&"http://s0:80".to_owned()), Some(1));
    // healed: back down, still agreeing at every step
    meters.get(0).set_rating(0.0);
    for _ in 0..12 {
        clock.advance(BACKOFF + Duration::from_millis(1));
        let _ = rb.step_if_due(clock.now());
        assert_agree(&rb);
    }
    assert!(rb.snapshot().iter().all(|s| s.current_weight == 1));
    assert_eq!(rb.refused_steps(), 0);
}

trait Fill {
    fn upsert_servers_for_test(&self, n: usize);
}

impl Fill for Rebalancer<String> {
    fn upsert_servers_for_test(&self, n: usize) {
        for i in 0..n {
            let w = self
                .upsert_server_weight(format!("http://s{i}:80"), None)
                .unwrap();
            assert_eq!(w, 1, "the upsert returns the weight it applied");
        }
    }
}

#[test]
fn upsert_returns_the_weight_it_applied() {
    let rb = Rebalancer::new(RoundRobin::builder().default_weight(3).build());
    assert_eq!(rb.upsert_server_weight("a", None), Ok(3));
    assert_eq!(rb.upsert_server_weight("a", Some(5)), Ok(5));
    assert_eq!(
        rb.upsert_server_weight("a", None),
        Ok(5),
        "None keeps the original"
    );
    assert_eq!(rb.server_weight(&"a"), Some(5));
    assert_eq!(rb.balancer().server_weight(&"a"), Some(5));
    assert!(rb.remove_server(&"zz").is_err());
    assert_eq!(rb.servers(), ["a"]);
}

#[test]
fn timer_driven_steps_say_when_they_are_due() {
    let meters = Meters::default();
    let clock = ManualClock::new();
    let rb = Rebalancer::builder(RoundRobin::new())
        .meter(meters.factory())
        .clock(Arc::new(clock.clone()))
        .backoff(BACKOFF)
        .step_on_record(false)
        .build()
        .unwrap();
    rb.upsert_server("a", None).unwrap();
    rb.upsert_server("b", None).unwrap();
    meters.get(0).set_rating(0.4);
    assert_eq!(rb.next_step_due(), None, "due at once after a change");
    // recording does not step in this mode
    rb.record(&"a", 500, Duration::from_millis(1));
    assert_eq!(rb.server_weight(&"b"), Some(1));
    let t0 = clock.now();
    assert_eq!(rb.step_if_due(t0), Ok(true));
    assert_eq!(rb.server_weight(&"b"), Some(4));
    assert_eq!(rb.next_step_due(), Some(t0 + BACKOFF));
    assert_eq!(rb.step_if_due(t0 + BACKOFF), Ok(false));
    assert_eq!(
        rb.step_if_due(t0 + BACKOFF + Duration::from_nanos(1)),
        Ok(true)
    );
    assert_eq!(rb.server_weight(&"b"), Some(16));
    assert_eq!(rb.now(), clock.now(), "one clock");
}
