//! Several threads record while another one drives the state machine and changes
//! the pool: no record is lost, nothing deadlocks.

use core::time::Duration;
use std::sync::Barrier;
use std::thread;

use roundrobin_rebalancer::Clock;

use crate::common::{rebalancer, BACKOFF};

const RECORDERS: usize = 4;
const RECORDS: u64 = 20_000;

#[test]
fn concurrent_records_all_count_while_the_state_machine_runs() {
    let (rb, meters, clock) = rebalancer::<usize>();
    for server in 0..RECORDERS {
        rb.upsert_server(server, Some(1)).unwrap();
    }
    let start = Barrier::new(RECORDERS + 1);
    let mut driver_steps = 0;
    thread::scope(|scope| {
        for server in 0..RECORDERS {
            let (rb, start) = (&rb, &start);
            scope.spawn(move || {
                start.wait();
                for i in 0..RECORDS {
                    rb.record(&server, if i % 7 == 0 { 500 } else { 200 }, Duration::ZERO);
                    // and a server that comes and goes: its records may be ignored
                    if i % 64 == 0 {
                        rb.record(&RECORDERS, 200, Duration::ZERO);
                    }
                }
            });
        }
        start.wait();
        for step in 0..200usize {
            // the first server is bad every other period, so the weights keep moving
            meters
                .get(0)
                .set_rating(if step % 4 < 2 { 0.5 } else { 0.0 });
            clock.advance(BACKOFF + Duration::from_secs(1));
            if rb.poll_at(clock.now()) {
                driver_steps += 1;
            }
            if step % 10 == 0 {
                rb.upsert_server(RECORDERS, Some(2)).unwrap();
            } else if step % 10 == 5 {
                rb.remove_server(&RECORDERS).unwrap();
            }
            let snapshot = rb.snapshot();
            assert!(snapshot.len() == RECORDERS || snapshot.len() == RECORDERS + 1);
        }
    });
    for server in 0..RECORDERS {
        assert_eq!(meters.get(server).records(), RECORDS, "server {server}");
    }
    assert!(driver_steps > 0);
    // whatever happened, every weight is within bounds and the pool is intact
    for state in rb.snapshot() {
        assert!((1..=4096).contains(&state.current_weight), "{state:?}");
    }
    assert_eq!(rb.servers().len(), rb.snapshot().len());
}
