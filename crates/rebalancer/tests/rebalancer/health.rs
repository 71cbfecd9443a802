//! Passive ejection, health-check verdicts and slow start, on a manual clock.

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{Checks, Clock, Ejection, Health, ManualClock, Rebalancer, SlowStart};

fn pool(
    names: &[&'static str],
    ejection: Ejection,
    slow_start: SlowStart,
) -> (Rebalancer<&'static str>, ManualClock) {
    let clock = ManualClock::new();
    let rb = Rebalancer::builder(RoundRobin::new())
        .clock(Arc::new(clock.clone()))
        .rebalance(false)
        .ejection(ejection)
        .slow_start(slow_start)
        .checks(Checks { rise: 2, fall: 3 })
        .build()
        .unwrap();
    for name in names {
        rb.upsert_server(*name, Some(10)).unwrap();
    }
    (rb, clock)
}

fn fail(rb: &Rebalancer<&'static str>, server: &'static str, n: usize) {
    for _ in 0..n {
        rb.record(&server, 502, Duration::from_millis(1));
    }
}

fn picks(rb: &Rebalancer<&'static str>, n: usize) -> Vec<&'static str> {
    (0..n).map(|_| rb.next_server().unwrap()).collect()
}

#[test]
fn five_failures_in_a_row_eject_a_server_for_the_base_time_then_it_comes_back() {
    let (rb, clock) = pool(&["a", "b"], Ejection::DEFAULT_ON, SlowStart::OFF);
    fail(&rb, "a", 4);
    rb.record(&"a", 200, Duration::from_millis(1)); // a success resets the count
    fail(&rb, "a", 4);
    assert_eq!(rb.health(&"a"), Some(Health::Up));
    fail(&rb, "a", 1);
    assert_eq!(rb.health(&"a"), Some(Health::Ejected));
    assert_eq!(rb.server_weight(&"a"), Some(0));
    assert_eq!(rb.balancer().server_weight(&"a"), Some(0), "one truth");
    assert!(picks(&rb, 20).iter().all(|&s| s == "b"));
    assert_eq!(
        rb.available_servers(),
        ["b"],
        "no sticky session to it either"
    );
    let t0 = clock.now();
    assert_eq!(rb.next_step_due(), Some(t0 + Duration::from_secs(30)));
    clock.advance(Duration::from_secs(30));
    rb.record(&"b", 200, Duration::from_millis(1)); // any record notices the time
    assert_eq!(rb.health(&"a"), Some(Health::Up));
    assert_eq!(rb.server_weight(&"a"), Some(10));
    // ejected again soon after: twice as long
    fail(&rb, "a", 5);
    assert_eq!(rb.health(&"a"), Some(Health::Ejected));
    assert_eq!(
        rb.next_step_due(),
        Some(clock.now() + Duration::from_secs(60))
    );
}

#[test]
fn never_more_than_the_cap_is_ejected_and_one_server_always_stays() {
    let (rb, _clock) = pool(&["a", "b", "c", "d"], Ejection::DEFAULT_ON, SlowStart::OFF);
    for s in ["a", "b", "c", "d"] {
        fail(&rb, s, 5);
    }
    let ejected = ["a", "b", "c", "d"]
        .iter()
        .filter(|s| rb.health(s) == Some(Health::Ejected))
        .count();
    assert_eq!(ejected, 2, "50 % of 4");
    let (rb, _clock) = pool(
        &["a", "b"],
        Ejection {
            max_percent: 100,
            ..Ejection::DEFAULT_ON
        },
        SlowStart::OFF,
    );
    fail(&rb, "a", 5);
    fail(&rb, "b", 5);
    assert_eq!(
        rb.snapshot()
            .iter()
            .filter(|s| s.current_weight == 0)
            .count(),
        1
    );
    assert!(rb.next_server().is_ok(), "one server always stays");
}

#[test]
fn a_server_back_from_ejection_ramps_up_in_slow_start() {
    let slow = SlowStart {
        window: Duration::from_secs(10),
        floor: 0.1,
    };
    let (rb, clock) = pool(&["a", "b"], Ejection::DEFAULT_ON, slow);
    fail(&rb, "a", 5);
    clock.advance(Duration::from_secs(30));
    assert_eq!(rb.step_if_due(clock.now()), Ok(true));
    assert_eq!(rb.health(&"a"), Some(Health::SlowStart));
    assert_eq!(rb.server_weight(&"a"), Some(1), "10 % of 10");
    let mut seen = vec![1];
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        rb.step_if_due(clock.now()).unwrap();
        seen.push(rb.server_weight(&"a").unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(*seen.last().unwrap(), 10);
    assert_eq!(rb.health(&"a"), Some(Health::Up));
    assert_eq!(rb.balancer().server_weight(&"a"), Some(10));
}

#[test]
fn a_server_added_later_ramps_up_but_the_first_ones_do_not() {
    let slow = SlowStart {
        window: Duration::from_secs(10),
        floor: 0.1,
    };
    let (rb, clock) = pool(&["a"], Ejection::OFF, slow);
    assert_eq!(rb.health(&"a"), Some(Health::Up));
    rb.upsert_server("b", Some(20)).unwrap();
    assert_eq!(rb.health(&"b"), Some(Health::SlowStart));
    assert_eq!(rb.server_weight(&"b"), Some(2));
    clock.advance(Duration::from_secs(5));
    rb.step_if_due(clock.now()).unwrap();
    assert_eq!(
        rb.server_weight(&"b"),
        Some(11),
        "10 % + 45 % of 20, rounded up"
    );
}

#[test]
fn health_checks_mark_down_after_fall_and_up_after_rise() {
    let (rb, clock) = pool(&["a", "b"], Ejection::OFF, SlowStart::OFF);
    let now = clock.now();
    assert_eq!(rb.report_check(&"a", false, now), Some(Health::Up));
    assert_eq!(rb.report_check(&"a", false, now), Some(Health::Up));
    assert_eq!(
        rb.report_check(&"a", true, now),
        Some(Health::Up),
        "streak broken"
    );
    for _ in 0..2 {
        rb.report_check(&"a", false, now);
    }
    assert_eq!(rb.report_check(&"a", false, now), Some(Health::Down));
    assert_eq!(rb.server_weight(&"a"), Some(0));
    assert!(picks(&rb, 10).iter().all(|&s| s == "b"));
    assert_eq!(rb.report_check(&"a", true, now), Some(Health::Down));
    assert_eq!(rb.report_check(&"a", true, now), Some(Health::Up));
    assert_eq!(rb.server_weight(&"a"), Some(10));
    assert_eq!(rb.report_check(&"zz", true, now), None);
}

#[test]
fn without_ejection_failures_change_nothing() {
    let (rb, _clock) = pool(&["a", "b"], Ejection::OFF, SlowStart::OFF);
    fail(&rb, "a", 100);
    assert_eq!(rb.health(&"a"), Some(Health::Up));
    assert_eq!(rb.server_weight(&"a"), Some(10));
    let _ = Clock::now(&ManualClock::new());
}
