//! Test meters whose rating the test sets, and a rebalancer wired to a manual clock.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{ManualClock, Meter, Rebalancer};

/// The handle a test keeps on a [`FixedMeter`].
#[derive(Debug, Default)]
pub(crate) struct MeterHandle {
    rating: AtomicU64,
    records: AtomicU64,
}

impl MeterHandle {
    pub(crate) fn set_rating(&self, rating: f64) {
        self.rating.store(rating.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

/// A meter that is always ready, rates as the test says and counts its records.
#[derive(Debug)]
pub(crate) struct FixedMeter(Arc<MeterHandle>);

impl Meter for FixedMeter {
    fn rating(&self, _now: Instant) -> f64 {
        f64::from_bits(self.0.rating.load(Ordering::Relaxed))
    }
    fn record(&self, _status: u16, _latency: Duration, _now: Instant) {
        self.0.records.fetch_add(1, Ordering::Relaxed);
    }
    fn is_ready(&self, _now: Instant) -> bool {
        true
    }
}

/// The meters made so far, in the order the rebalancer asked for them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meters(Arc<Mutex<Vec<Arc<MeterHandle>>>>);

impl Meters {
    pub(crate) fn factory(&self) -> impl Fn() -> Box<dyn Meter> + Send + Sync + 'static {
        let made = Arc::clone(&self.0);
        move || {
            let handle = Arc::new(MeterHandle::default());
            made.lock().unwrap().push(Arc::clone(&handle));
            Box::new(FixedMeter(handle))
        }
    }

    pub(crate) fn get(&self, i: usize) -> Arc<MeterHandle> {
        Arc::clone(&self.0.lock().unwrap()[i])
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

pub(crate) const BACKOFF: Duration = Duration::from_secs(10);

/// A rebalancer with fixed meters, the default 10 s backoff and a manual clock.
pub(crate) fn rebalancer<S>() -> (Rebalancer<S>, Meters, ManualClock)
where
    S: Clone + Eq + core::hash::Hash + core::fmt::Debug + Send + Sync + 'static,
{
    let meters = Meters::default();
    let clock = ManualClock::new();
    let rb = Rebalancer::builder(RoundRobin::new())
        .meter(meters.factory())
        .clock(Arc::new(clock.clone()))
        .backoff(BACKOFF)
        .build()
        .unwrap();
    (rb, meters, clock)
}
