//! The sequences and errors the reference and the issues pin, through the public API.
#![cfg(feature = "std")]

use roundrobin_core::{Error, Policy, Pool, RoundRobin};

fn take(rr: &RoundRobin<&'static str>, n: usize) -> Vec<&'static str> {
    (0..n).map(|_| rr.next_server().unwrap()).collect()
}

#[test]
fn equal_weights_alternate() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    rr.upsert_server("a", None).unwrap();
    rr.upsert_server("b", None).unwrap();
    assert_eq!(take(&rr, 3), ["a", "b", "a"]);
}

#[test]
fn upsert_updates_weight_and_restarts() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    rr.upsert_server("a", None).unwrap();
    rr.upsert_server("b", None).unwrap();
    assert_eq!(take(&rr, 1), ["a"]);
    rr.upsert_server("b", Some(3)).unwrap();
    assert_eq!(rr.server_weight(&"b"), Some(3));
    assert_eq!(take(&rr, 4), ["b", "b", "a", "b"]);
    assert_eq!(rr.servers(), ["a", "b"]);
}

#[test]
fn drained_server_is_kept_never_picked() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    rr.upsert_server("a", Some(3)).unwrap();
    rr.upsert_server("b", Some(2)).unwrap();
    rr.upsert_server("z", Some(0)).unwrap();
    assert_eq!(take(&rr, 6), ["a", "a", "b", "a", "b", "a"]);
    assert_eq!(rr.servers(), ["a", "b", "z"]);
    assert_eq!(rr.server_weight(&"z"), Some(0));
}

#[test]
fn period_counts_are_exact() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    rr.upsert_servers([("a", Some(6)), ("b", Some(4)), ("c", Some(2))])
        .unwrap();
    // gcd 2: the period is 6 picks, a 3 times, b 2 times, c once.
    let picks = take(&rr, 6);
    let count = |s| picks.iter().filter(|&&p| p == s).count();
    assert_eq!((count("a"), count("b"), count("c")), (3, 2, 1));
    assert_eq!(take(&rr, 6), picks, "the sequence repeats every period");
}

/// nginx's example. nginx gives `a a b a c a a`; the smooth policy's apportionment
/// tree (not nginx's loop) gives `a b a a a c a`: same quotas, `b` one pick earlier and
/// `c` one later (updated when the period table was replaced by the weight tree).
#[test]
fn smooth_example() {
    let rr = RoundRobin::<&str>::builder().smooth().build();
    rr.upsert_servers([("a", Some(5)), ("b", Some(1)), ("c", Some(1))])
        .unwrap();
    assert_eq!(take(&rr, 7), ["a", "b", "a", "a", "a", "c", "a"]);
    assert_eq!(take(&rr, 7), ["a", "b", "a", "a", "a", "c", "a"]);
}

#[test]
fn smooth_spreads_eleven_to_three() {
    let rr = RoundRobin::<&str>::builder().smooth().build();
    rr.upsert_servers([("a", Some(11)), ("b", Some(3))])
        .unwrap();
    let picks = take(&rr, 14).concat();
    assert_eq!(picks, "aabaaaabaaabaa");
    assert!(!picks.contains("aaaaa"));
    let il: RoundRobin<&str> = RoundRobin::new();
    il.upsert_servers([("a", Some(11)), ("b", Some(3))])
        .unwrap();
    assert_eq!(take(&il, 14).concat(), "aaaaaaaaababab");
}

#[test]
fn errors() {
    for policy in [Policy::Interleaved, Policy::Smooth] {
        let rr = RoundRobin::<&str>::builder().policy(policy).build();
        assert_eq!(rr.next_server(), Err(Error::NoServers));
        assert_eq!(rr.remove_server(&"a"), Err(Error::ServerNotFound));
        rr.upsert_server("a", Some(0)).unwrap();
        rr.upsert_server("b", Some(0)).unwrap();
        assert_eq!(rr.next_server(), Err(Error::AllWeightsZero));
        rr.upsert_server("b", None).unwrap();
        assert_eq!(rr.next_server(), Ok("b"));
        rr.remove_server(&"b").unwrap();
        assert_eq!(rr.next_server(), Err(Error::AllWeightsZero));
        rr.remove_server(&"a").unwrap();
        assert_eq!(rr.next_server(), Err(Error::NoServers));
        assert!(rr.servers().is_empty());
    }
}

#[test]
fn default_weight_is_per_balancer() {
    let two = RoundRobin::<String>::builder().default_weight(2).build();
    let one = RoundRobin::<String>::new();
    two.upsert_server("a".into(), None).unwrap();
    one.upsert_server("a".into(), None).unwrap();
    assert_eq!(two.server_weight(&"a".into()), Some(2));
    assert_eq!(one.server_weight(&"a".into()), Some(1));
    assert_eq!(one.server_weight(&"b".into()), None);
}

#[test]
fn generation_counts_accepted_changes() {
    let rr = RoundRobin::<&str>::builder().smooth().build();
    assert_eq!(rr.generation(), 0);
    rr.upsert_server("a", Some(1)).unwrap();
    rr.upsert_server("a", Some(2)).unwrap();
    assert_eq!(rr.generation(), 2);
    assert!(rr.remove_server(&"x").is_err());
    assert_eq!(rr.generation(), 2);
    // Accepted whatever the period (here u32::MAX + 2 picks): no table to fill.
    rr.upsert_server("b", Some(u32::MAX)).unwrap();
    assert_eq!(rr.generation(), 3);
    assert_eq!(rr.servers(), ["a", "b"]);
    rr.remove_server(&"a").unwrap();
    assert_eq!(rr.generation(), 4);
}

/// Pools the smooth policy used to reject (`PeriodTooLong` above 2^22 picks) are
/// accepted, with exact quotas and the same pool semantics.
#[test]
fn smooth_accepts_any_weights() {
    const BIG: u32 = 1 << 25;
    let rr = RoundRobin::<&str>::builder().smooth().build();
    rr.upsert_servers([("a", Some(BIG)), ("b", Some(BIG)), ("c", Some(BIG))])
        .unwrap();
    assert_eq!(take(&rr, 3), ["a", "b", "c"]);
    // gcd 1: a period of 2^26 + 3 picks, c picked 3 times in it.
    rr.upsert_server("c", Some(3)).unwrap();
    assert_eq!(rr.server_weight(&"c"), Some(3));
    assert_eq!(take(&rr, 4), ["a", "b", "a", "b"]);
    rr.upsert_servers([("d", Some(u32::MAX)), ("e", Some(1))])
        .unwrap();
    assert_eq!(rr.servers(), ["a", "b", "c", "d", "e"]);
    assert_eq!(rr.generation(), 3);
    assert_eq!(rr.next_server(), Ok("d"));

    let mut pool = Pool::new(Policy::Smooth, 1);
    for s in ["a", "b", "c"] {
        pool.upsert_server(s, Some(BIG)).unwrap();
    }
    pool.upsert_server("c", Some(3)).unwrap();
    pool.upsert_server("d", Some(u32::MAX)).unwrap();
    assert_eq!(pool.servers(), ["a", "b", "c", "d"]);
    assert_eq!(pool.weights(), [BIG, BIG, 3, u32::MAX]);
    assert_eq!(pool.next_server(), Ok(&"d"));
    let period = pool.schedule().unwrap().period();
    assert_eq!(period, 2 * u64::from(BIG) + 3 + u64::from(u32::MAX));
}

#[test]
fn interleaved_handles_weights_up_to_u32_max() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    rr.upsert_servers([
        ("a", Some(u32::MAX)),
        ("b", Some(u32::MAX - 1)),
        ("c", Some(1)),
    ])
    .unwrap();
    assert_eq!(take(&rr, 5), ["a", "a", "b", "a", "b"]);
}

#[test]
fn pool_matches_balancer() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    let mut pool = Pool::new(Policy::Interleaved, 1);
    for (s, w) in [("a", Some(4)), ("b", None), ("c", Some(2)), ("a", Some(3))] {
        rr.upsert_server(s, w).unwrap();
        pool.upsert_server(s, w).unwrap();
    }
    rr.remove_server(&"b").unwrap();
    pool.remove_server(&"b").unwrap();
    assert_eq!(pool.remove_server(&"b"), Err(Error::ServerNotFound));
    assert_eq!(pool.server_weight(&"a"), Some(3));
    for _ in 0..20 {
        assert_eq!(*pool.next_server().unwrap(), rr.next_server().unwrap());
    }
}

#[test]
fn balancer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RoundRobin<String>>();
}

#[test]
fn picker_follows_changes_and_reports_errors() {
    let rr: RoundRobin<&str> = RoundRobin::new();
    let mut picker = rr.picker();
    assert_eq!(picker.next_server(), Err(Error::NoServers));
    rr.upsert_server("a", None).unwrap();
    rr.upsert_server("b", None).unwrap();
    assert_eq!(picker.next_server(), Ok("a"));
    rr.upsert_server("b", Some(3)).unwrap();
    let picks: Vec<&str> = (0..4).map(|_| picker.next_server().unwrap()).collect();
    assert_eq!(picks, ["b", "b", "a", "b"]);
    rr.upsert_servers([("a", Some(0)), ("b", Some(0))]).unwrap();
    assert_eq!(picker.next_server(), Err(Error::AllWeightsZero));
}

/// Two proxies given the same pool but different seeds start on different servers,
/// and each still gives every server its exact quota per period, also after a change.
#[test]
fn start_offsets_spread_a_fleet() {
    let pool = [
        ("a", Some(3)),
        ("b", Some(1)),
        ("c", Some(2)),
        ("d", Some(2)),
    ];
    for policy in [Policy::Interleaved, Policy::Smooth] {
        let build = |seed| {
            let rr = RoundRobin::<&str>::builder()
                .policy(policy)
                .start_offset(seed)
                .build();
            rr.upsert_servers(pool).unwrap();
            rr
        };
        let reference = take(&build(0), 8);
        // Seed 0 is the default: the reference's restart at the first pick.
        let default = RoundRobin::<&str>::builder().policy(policy).build();
        default.upsert_servers(pool).unwrap();
        assert_eq!(reference, take(&default, 8));
        let (one, two) = (build(1), build(2));
        assert_eq!(one.start_offset(), 1);
        let (first_one, first_two) = (take(&one, 8), take(&two, 8));
        assert_ne!(first_one[0], first_two[0], "{policy:?}");
        for (seed, picks) in [(1, &first_one), (2, &first_two)] {
            // The same sequence, shifted by the seed.
            let shifted: Vec<&str> = (0..8).map(|k| reference[(k + seed) % 8]).collect();
            assert_eq!(*picks, shifted, "{policy:?} seed {seed}");
            for (s, w) in pool {
                let n = picks.iter().filter(|&&p| p == s).count();
                assert_eq!(Some(n as u32), w, "{policy:?} seed {seed} server {s}");
            }
        }
        // A change restarts at seed % the new period (now 9: a has 4).
        for (seed, rr) in [(1, &one), (2, &two)] {
            rr.upsert_server("a", Some(4)).unwrap();
            let fresh = RoundRobin::<&str>::builder().policy(policy).build();
            fresh.upsert_servers(pool).unwrap();
            fresh.upsert_server("a", Some(4)).unwrap();
            let reference = take(&fresh, 9);
            assert_eq!(take(rr, 1)[0], reference[seed], "{policy:?} seed {seed}");
        }
        let huge = build(u64::MAX);
        assert_eq!(take(&huge, 1)[0], reference[(u64::MAX % 8) as usize]);
    }
}

#[test]
fn weights_lists_every_server_in_order() {
    let rr = RoundRobin::<String>::builder().default_weight(2).build();
    assert!(rr.weights().is_empty());
    rr.upsert_servers([("x".to_string(), None), ("y".to_string(), Some(0))])
        .unwrap();
    rr.upsert_server("z".to_string(), Some(7)).unwrap();
    rr.upsert_server("x".to_string(), Some(1)).unwrap();
    rr.remove_server(&"y".to_string()).unwrap();
    assert_eq!(rr.weights(), [("x".to_string(), 1), ("z".to_string(), 7)]);
    assert_eq!(rr.server_weight(&"z".to_string()), Some(7));
    assert_eq!(rr.server_weight(&"y".to_string()), None);
}
