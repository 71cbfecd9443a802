//! The fault-injection suite: the proxy binary under backends that die, hang, cut
//! responses short or refuse, and clients that dribble, abort, sit idle or send large
//! bodies (scenarios in `examples/chaos/faults.rs`, shared with `cargo xtask chaos`).
//! Every request gets an answer, none is lost, the proxy's descriptors come back to
//! their baseline, and with the defaults a backend dying costs no request at all.

#[path = "../examples/chaos/faults.rs"]
mod faults;

use core::time::Duration;
use std::path::PathBuf;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roundrobin-proxy"))
}

fn run<F: core::future::Future<Output = faults::Report>>(f: F) -> faults::Report {
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), f).await })
        .expect("the scenario finished within 60 s");
    println!("{}", faults::table(core::slice::from_ref(&report)));
    report
}

/// Every request was answered and the descriptors came back.
fn assert_nothing_lost(r: &faults::Report) {
    assert!(r.sent > 0, "{r:?}");
    assert_eq!(r.failed.get("no answer"), None, "{r:?}");
    assert_eq!(r.failed.get("hung 10 s"), None, "{r:?}");
    assert_eq!(
        r.client_connections_after, 0,
        "client connections leaked: {r:?}"
    );
    // Upstream keep-alive connections may stay pooled: each worker has its own pool,
    // which keeps at most what its requests had in flight at once (the scenarios have
    // at most 128: 100 warm-up clients, connections opened 100 at a time), within
    // `MAX_IDLE_PER_SERVER`; with 2 workers (this machine's cores) the second pool may
    // hold what the first held after the warm-up.
    const IN_FLIGHT_AT_MOST: usize = 128;
    let pools = 2 * IN_FLIGHT_AT_MOST.min(roundrobin_hyper::MAX_IDLE_PER_SERVER);
    assert!(
        r.fds_after <= r.fds_before + pools,
        "descriptors leaked: {r:?}"
    );
}

const RUN: Duration = Duration::from_millis(1500);

#[test]
fn a_backend_killed_and_restarted_under_load_costs_no_request() {
    let r = run(faults::backend_killed(&bin(), RUN));
    assert_nothing_lost(&r);
    assert_eq!(r.failures(), 0, "{r:?}");
    assert_eq!(r.answered, r.sent);
}

#[test]
fn a_backend_that_refuses_costs_no_request() {
    let r = run(faults::backend_refuses(&bin(), RUN));
    assert_nothing_lost(&r);
    assert_eq!(r.failures(), 0, "{r:?}");
    assert!(
        r.retried > 0,
        "the refused server was tried and redispatched: {r:?}"
    );
}

#[test]
fn a_backend_that_never_answers_gets_504s_and_is_ejected() {
    let r = run(faults::backend_hangs(&bin(), RUN));
    assert_nothing_lost(&r);
    let timeouts = r.failed.get("504").copied().unwrap_or(0);
    assert_eq!(r.failures(), timeouts, "only 504s: {r:?}");
    // The warm-up's 100 clients pay for the requests in flight to it until five in a
    // row eject it; after that, at most what the 8 clients had in flight.
    assert!(r.late_failures <= 8, "{r:?}");
}

#[test]
fn a_backend_that_sends_half_a_response_is_ejected_and_nothing_hangs() {
    let r = run(faults::backend_half_response(&bin(), RUN));
    assert_nothing_lost(&r);
    assert!(
        r.late_failures <= 8,
        "ejected after failures in a row: {r:?}"
    );
}

#[test]
fn slow_and_aborting_clients_do_not_disturb_the_others() {
    let r = run(faults::slow_and_aborting_clients(&bin(), RUN));
    assert_nothing_lost(&r);
    assert_eq!(r.failures(), 0, "{r:?}");
}

#[test]
fn thousands_of_idle_connections_are_served_and_given_back() {
    let r = run(faults::idle_connections(&bin(), 2_000));
    assert_nothing_lost(&r);
    assert_eq!(r.failures(), 0, "{r:?}");
    // Resting connections hand back hyper's buffers (16 KiB each, what 2,000 would
    // take alone without a rest), so while the last ones opened still hold theirs,
    // the whole stays below that.
    assert!(r.peak_rss_kib < r.rss_before_kib + 2_000 * 16, "{r:?}");
    // The memory the connections took goes back (jemalloc returns freed pages).
    assert!(
        r.rss_after_kib <= r.rss_before_kib + faults::MEMORY_SLACK_KIB,
        "{r:?}"
    );
}

#[test]
fn large_bodies_stream_both_ways_in_bounded_memory() {
    let r = run(faults::large_bodies(&bin(), 32));
    assert_nothing_lost(&r);
    assert_eq!(r.failures(), 0, "{r:?}");
    assert!(r.peak_rss_kib < r.rss_before_kib + 64 * 1024, "{r:?}");
}
