//! The scenarios the reference rebalancer pins, driven by a manual clock and fixed-rating meters:
//! two requests, then the clock advanced by backoff + 1 s, six times.

use core::time::Duration;

use crate::common::{rebalancer, Meters, BACKOFF};
use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{
    Clock, Error, ManualClock, Rebalancer, ServerState, FSM_GROW_FACTOR, FSM_MAX_WEIGHT,
    IDLE_RECHECK,
};

fn six_periods(rb: &Rebalancer<&'static str>, clock: &ManualClock) {
    for _ in 0..6 {
        for _ in 0..2 {
            let server = rb.next_server().unwrap();
            rb.record(&server, 200, Duration::from_millis(1));
        }
        clock.advance(BACKOFF + Duration::from_secs(1));
    }
}

fn weights(rb: &Rebalancer<&'static str>) -> Vec<u32> {
    let from_snapshot: Vec<u32> = rb.snapshot().iter().map(|s| s.current_weight).collect();
    let from_balancer: Vec<u32> = rb
        .servers()
        .iter()
        .map(|s| rb.balancer().server_weight(s).unwrap())
        .collect();
    assert_eq!(
        from_snapshot, from_balancer,
        "rebalancer and balancer disagree"
    );
    from_snapshot
}

fn pool(names: &[&'static str]) -> (Rebalancer<&'static str>, Meters, ManualClock) {
    let (rb, meters, clock) = rebalancer();
    for name in names {
        rb.upsert_server(*name, None).unwrap();
    }
    (rb, meters, clock)
}

#[test]
fn constants_match_the_reference() {
    assert_eq!(FSM_MAX_WEIGHT, 4096);
    assert_eq!(FSM_GROW_FACTOR, 4);
}

#[test]
fn recovery() {
    let (rb, meters, clock) = pool(&["a", "b"]);
    meters.get(0).set_rating(0.3);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, FSM_MAX_WEIGHT]);

    meters.get(0).set_rating(0.0);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 1]);
}

#[test]
fn cascading() {
    let (rb, meters, clock) = pool(&["a", "b", "d"]);
    meters.get(0).set_rating(0.3);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, FSM_MAX_WEIGHT, FSM_MAX_WEIGHT]);

    meters.get(1).set_rating(0.2);
    meters.get(2).set_rating(0.2);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 1, 1]);
}

#[test]
fn all_bad_is_left_alone() {
    let (rb, meters, clock) = pool(&["a", "b", "d"]);
    let generation = rb.balancer().generation();
    meters.get(0).set_rating(0.12);
    meters.get(1).set_rating(0.13);
    meters.get(2).set_rating(0.11);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 1, 1]);
    assert_eq!(rb.balancer().generation(), generation, "nothing pushed");
}

#[test]
fn removing_a_server_resets_the_weights() {
    let (rb, meters, clock) = pool(&["a", "b", "d"]);
    meters.get(0).set_rating(0.3);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 4096, 4096]);

    rb.remove_server(&"d").unwrap();
    assert_eq!(rb.servers(), ["a", "b"]);
    assert_eq!(weights(&rb), [1, 1]);
    // and the state machine starts over at the next record
    rb.record(&"a", 200, Duration::ZERO);
    assert_eq!(weights(&rb), [1, 4]);
}

#[test]
fn upserting_resets_the_weights_and_never_adds_a_second_record() {
    let (rb, meters, clock) = pool(&["a", "b"]);
    meters.get(0).set_rating(0.3);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 4096]);

    rb.upsert_server("b", None).unwrap();
    assert_eq!(weights(&rb), [1, 1]);
    assert_eq!(rb.snapshot().len(), 2);
    assert_eq!(meters.len(), 2, "the existing record and meter are kept");

    rb.upsert_server("a", Some(3)).unwrap();
    assert_eq!(weights(&rb), [3, 1]);
    let originals: Vec<u32> = rb.snapshot().iter().map(|s| s.original_weight).collect();
    assert_eq!(originals, [3, 1]);
    assert_eq!(rb.servers(), ["a", "b"]);
}

#[test]
fn originals_with_a_common_factor_converge_and_stop() {
    let (rb, meters, clock) = rebalancer();
    rb.upsert_server("a", Some(2)).unwrap();
    rb.upsert_server("b", Some(2)).unwrap();
    meters.get(0).set_rating(0.3);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 4096]);
    meters.get(0).set_rating(0.0);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 1]);
    let generation = rb.balancer().generation();
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 1]);
    assert_eq!(
        rb.balancer().generation(),
        generation,
        "no weight pushed again"
    );
}

#[test]
fn the_state_machine_runs_at_most_once_per_backoff_period() {
    let (rb, meters, clock) = pool(&["a", "b"]);
    meters.get(0).set_rating(0.3);
    let t0 = clock.now();
    assert!(rb.step_if_due(t0).unwrap());
    assert_eq!(weights(&rb), [1, 4]);
    assert!(!rb.step_if_due(t0).unwrap());
    assert!(!rb.step_if_due(t0 + BACKOFF).unwrap());
    assert_eq!(weights(&rb), [1, 4]);
    assert!(rb
        .step_if_due(t0 + BACKOFF + Duration::from_nanos(1))
        .unwrap());
    assert_eq!(weights(&rb), [1, 16]);
}

#[test]
fn a_step_that_changes_nothing_is_retried_after_a_second() {
    let (rb, meters, clock) = pool(&["a", "b"]);
    let t0 = clock.now();
    assert!(rb.step_if_due(t0).unwrap(), "due at once after the upserts");
    assert_eq!(weights(&rb), [1, 1]);
    meters.get(0).set_rating(0.3);
    assert!(!rb.step_if_due(t0 + IDLE_RECHECK).unwrap());
    assert!(rb
        .step_if_due(t0 + IDLE_RECHECK + Duration::from_nanos(1))
        .unwrap());
    assert_eq!(weights(&rb), [1, 4]);
    // a change: the next step waits for the backoff
    let t1 = t0 + IDLE_RECHECK + Duration::from_nanos(1);
    assert!(!rb.step_if_due(t1 + IDLE_RECHECK * 2).unwrap());
    assert!(!rb.step_if_due(t1 + BACKOFF).unwrap());
    assert!(rb
        .step_if_due(t1 + BACKOFF + Duration::from_nanos(1))
        .unwrap());
    assert_eq!(weights(&rb), [1, 16]);
}

#[test]
fn a_record_for_a_removed_server_is_ignored() {
    let (rb, meters, _clock) = pool(&["a", "b"]);
    rb.remove_server(&"b").unwrap();
    rb.record(&"b", 500, Duration::ZERO);
    rb.record(&"zz", 500, Duration::ZERO);
    assert_eq!(meters.get(1).records(), 0);
    rb.record(&"a", 500, Duration::ZERO);
    assert_eq!(meters.get(0).records(), 1);
}

#[test]
fn fewer_than_two_servers_never_change() {
    let (rb, meters, clock) = pool(&["a"]);
    meters.get(0).set_rating(0.9);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1]);
}

#[test]
fn drained_servers_keep_weight_zero_and_do_not_block_the_others() {
    let (rb, meters, clock) = rebalancer();
    rb.upsert_server("a", None).unwrap();
    rb.upsert_server("b", None).unwrap();
    rb.upsert_server("z", Some(0)).unwrap();
    meters.get(0).set_rating(0.3);
    meters.get(2).set_rating(5.0);
    six_periods(&rb, &clock);
    assert_eq!(weights(&rb), [1, 4096, 0]);
}

#[test]
fn server_operations_go_to_the_balancer() {
    let (rb, _meters, _clock) = rebalancer::<&'static str>();
    assert_eq!(
        rb.next_server(),
        Err(Error::Balancer(roundrobin_core::Error::NoServers))
    );
    assert_eq!(
        rb.remove_server(&"x"),
        Err(Error::Balancer(roundrobin_core::Error::ServerNotFound))
    );
    rb.upsert_server("a", Some(1)).unwrap();
    rb.upsert_server("b", Some(3)).unwrap();
    let picks: Vec<_> = (0..4).map(|_| rb.next_server().unwrap()).collect();
    assert_eq!(picks, ["b", "b", "a", "b"]);
    assert_eq!(rb.server_weight(&"b"), Some(3));
    assert_eq!(rb.server_weight(&"x"), None);
}

#[test]
fn the_builder_takes_over_the_servers_already_in_the_balancer() {
    let balancer = RoundRobin::new();
    balancer.upsert_server("a", Some(2)).unwrap();
    balancer.upsert_server("b", Some(5)).unwrap();
    let clock = ManualClock::new();
    let rb = Rebalancer::builder(balancer)
        .clock(std::sync::Arc::new(clock.clone()))
        .build()
        .unwrap();
    let now = clock.now();
    assert_eq!(
        rb.snapshot_at(now),
        [
            ServerState {
                server: "a",
                original_weight: 2,
                current_weight: 2,
                rating: 0.0,
                ready: false
            },
            ServerState {
                server: "b",
                original_weight: 5,
                current_weight: 5,
                rating: 0.0,
                ready: false
            },
        ]
    );
}

#[test]
fn an_invalid_split_threshold_is_an_error() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = Rebalancer::<&str>::builder(RoundRobin::new())
            .split_threshold(bad)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidThreshold(_)), "{bad}");
    }
}

#[test]
fn the_rebalancer_is_shared_by_reference_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Rebalancer<roundrobin_core::ServerUrl>>();
    shareable::<Rebalancer<&'static str>>();
}
