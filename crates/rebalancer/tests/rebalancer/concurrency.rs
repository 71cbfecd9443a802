//! Several threads record while another one drives the state machine and changes
//! the pool: no record is lost, nothing deadlocks.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::Instant;

use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{Clock, ManualClock, Meter, Rebalancer};

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
            if rb.step_if_due(clock.now()).unwrap() {
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

/// The channels of a gate: "entered" to the test, "release" from it.
type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// A meter whose `rating` (called by the state machine, under its lock) can wait
/// until the test lets it go.
#[derive(Debug)]
struct GateMeter {
    gate: Option<Mutex<Gate>>,
    records: Arc<AtomicU64>,
}

impl Meter for GateMeter {
    fn rating(&self, _now: Instant) -> f64 {
        if let Some(gate) = &self.gate {
            let gate = gate.lock().unwrap();
            gate.0.send(()).unwrap();
            gate.1.recv().unwrap();
        }
        0.0
    }
    fn record(&self, _status: u16, _latency: Duration, _now: Instant) {
        self.records.fetch_add(1, Ordering::Relaxed);
    }
    fn is_ready(&self, _now: Instant) -> bool {
        true
    }
}

#[test]
fn a_recorder_never_waits_for_a_running_state_machine() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    // the first server's meter gets the gate, the others rate 0 at once
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let records = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&records);
    let clock = ManualClock::new();
    let rb = Rebalancer::builder(RoundRobin::new())
        .clock(Arc::new(clock.clone()))
        .meter(move || {
            Box::new(GateMeter {
                gate: gate.lock().unwrap().take().map(Mutex::new),
                records: Arc::clone(&counted),
            })
        })
        .build()
        .unwrap();
    rb.upsert_server("a", None).unwrap();
    rb.upsert_server("b", None).unwrap();
    let now = clock.now();
    thread::scope(|scope| {
        let stepping = scope.spawn(|| rb.step_if_due(now).unwrap());
        entered_rx.recv().unwrap();
        // the state machine is inside `rating`, holding its lock: records go through
        for _ in 0..100 {
            rb.record_at(&"a", 200, Duration::ZERO, now + BACKOFF * 2);
        }
        assert!(
            !rb.step_if_due(now + BACKOFF * 2).unwrap(),
            "busy: skipped, not waited for"
        );
        release_tx.send(()).unwrap();
        assert!(stepping.join().unwrap());
    });
    assert_eq!(records.load(Ordering::Relaxed), 100);
}
