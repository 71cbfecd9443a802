//! The rebalancer: a [`RoundRobin`] whose weights follow how well its servers do.

use alloc::vec::Vec;
use core::fmt;
use core::hash::Hash;
use core::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use arc_swap::ArcSwap;
use roundrobin_core::RoundRobin;

use crate::fsm::{self, Outcome};
use crate::{Clock, Error, ErrorRatioMeter, Meter, RollingCounter, SystemClock};

/// The default time between two steps of the state machine (`RebalancerBackoff`).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);

/// After a step of the state machine that changed nothing, the next one is due this
/// much later (or after the backoff, if that is shorter).
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);
const IDLE_RECHECK_NANOS: i64 = 1_000_000_000;

type MeterFactory = dyn Fn() -> Box<dyn Meter> + Send + Sync;

/// One server as the rebalancer sees it.
struct Record<S> {
    server: S,
    original: AtomicU32,
    current: AtomicU32,
    meter: Box<dyn Meter>,
    /// Requests over the last 10 s, kept only when `min_requests > 0`.
    requests: Option<RollingCounter>,
}

/// Pools up to this size are searched by comparison, larger ones through a hash map.
const SCAN_MAX: usize = 8;

/// An immutable view of the pool, swapped whole on upsert and remove so that
/// recorders find their server without a lock.
struct Pool<S> {
    records: Vec<Arc<Record<S>>>,
    /// Present when the pool has more than [`SCAN_MAX`] servers.
    index: Option<HashMap<S, usize, foldhash::fast::RandomState>>,
}

impl<S: Eq + Hash + Clone> Pool<S> {
    fn new(records: Vec<Arc<Record<S>>>) -> Self {
        let index = (records.len() > SCAN_MAX).then(|| {
            records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.server.clone(), i))
                .collect()
        });
        Self { records, index }
    }

    fn get(&self, server: &S) -> Option<&Record<S>> {
        match &self.index {
            Some(index) => index.get(server).map(|&i| &*self.records[i]),
            None => self
                .records
                .iter()
                .find(|r| r.server == *server)
                .map(|r| &**r),
        }
    }
}

/// A read-only view of one server, from [`Rebalancer::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState<S> {
    /// The server.
    pub server: S,
    /// The weight it was configured with.
    pub original_weight: u32,
    /// The weight the rebalancer gives it now.
    pub current_weight: u32,
    /// Its meter's rating (higher is worse).
    pub rating: f64,
    /// Whether its meter is ready (and, with [`RebalancerBuilder::min_requests`], it
    /// served enough requests in the window).
    pub ready: bool,
}

/// Increases the weights of the servers that do better than the others and brings
/// them back to the configured weights when the servers are even again (the
/// reference's `Rebalancer`).
///
/// It wraps a [`RoundRobin`] and offers the same server operations; picks go straight
/// to the balancer. Every response is [recorded](Self::record_at) in the server's
/// [`Meter`]; that is lock-free. After a record, when the state machine of
/// DESIGN.md §3 is due (see [`Self::poll_at`]), it runs on the recording thread unless
/// another thread is already running it (it never makes a recorder wait), and pushes
/// changed weights to the balancer with `upsert_server`. Weights change at most once
/// per backoff period.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use roundrobin_core::RoundRobin;
/// use roundrobin_rebalancer::{ManualClock, Rebalancer};
///
/// let clock = ManualClock::new();
/// let rebalancer = Rebalancer::builder(RoundRobin::new())
///     .clock(Arc::new(clock.clone()))
///     .backoff(Duration::from_secs(10))
///     .build()?;
/// rebalancer.upsert_server("a", None)?;
/// rebalancer.upsert_server("b", None)?;
/// // 12 s of traffic, 10 requests a second: "a" fails one of its requests in five,
/// // "b" never fails.
/// let mut to_a = 0;
/// for _ in 0..120 {
///     let server = rebalancer.next_server()?;
///     let mut status = 200;
///     if server == "a" {
///         to_a += 1;
///         if to_a % 5 == 0 {
///             status = 500;
///         }
///     }
///     rebalancer.record(&server, status, Duration::from_millis(5));
///     clock.advance(Duration::from_millis(100));
/// }
/// // once the meters had 10 s of data, "b" got 4 times the weight of "a"
/// assert_eq!(rebalancer.server_weight(&"a"), Some(1));
/// assert_eq!(rebalancer.server_weight(&"b"), Some(4));
/// # Ok::<(), roundrobin_rebalancer::Error>(())
/// ```
pub struct Rebalancer<S> {
    balancer: RoundRobin<S>,
    clock: Arc<dyn Clock>,
    new_meter: Arc<MeterFactory>,
    backoff_nanos: i64,
    min_requests: u64,
    threshold: f64,
    /// The time base of `deadline`.
    origin: Instant,
    /// The state machine may run when `now` is after this, in nanoseconds since `origin`.
    deadline: AtomicI64,
    pool: ArcSwap<Pool<S>>,
    /// Held by the state machine (try-lock) and by upsert/remove (lock).
    fsm: Mutex<()>,
}

impl<S> fmt::Debug for Rebalancer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rebalancer")
            .field("clock", &self.clock)
            .field(
                "backoff",
                &Duration::from_nanos(self.backoff_nanos.unsigned_abs()),
            )
            .field("min_requests", &self.min_requests)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Rebalancer`] (the reference's `RebalancerOption`s).
pub struct RebalancerBuilder<S> {
    balancer: RoundRobin<S>,
    backoff: Duration,
    clock: Arc<dyn Clock>,
    new_meter: Arc<MeterFactory>,
    min_requests: u64,
    threshold: f64,
}

impl<S> fmt::Debug for RebalancerBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebalancerBuilder")
            .field("backoff", &self.backoff)
            .field("clock", &self.clock)
            .field("min_requests", &self.min_requests)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl<S> RebalancerBuilder<S> {
    /// The time between two steps of the state machine (default 10 s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The clock read by [`Rebalancer::record`] and [`Rebalancer::snapshot`]
    /// (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Makes the meter of each new server (default [`ErrorRatioMeter::default`]); the
    /// reference's `RebalancerMeter(NewMeterFn)`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use roundrobin_core::RoundRobin;
    /// use roundrobin_rebalancer::{Meter, RatioCounter, Rebalancer};
    ///
    /// /// Rates a server by its share of 429 and 5xx answers over the last minute.
    /// #[derive(Debug)]
    /// struct Overload(RatioCounter);
    ///
    /// impl Meter for Overload {
    ///     fn rating(&self, now: Instant) -> f64 {
    ///         self.0.ratio(now)
    ///     }
    ///     fn record(&self, status: u16, _latency: Duration, now: Instant) {
    ///         if status == 429 || status >= 500 {
    ///             self.0.inc_a(1, now);
    ///         } else {
    ///             self.0.inc_b(1, now);
    ///         }
    ///     }
    ///     fn is_ready(&self, _now: Instant) -> bool {
    ///         self.0.is_ready()
    ///     }
    /// }
    ///
    /// let rebalancer = Rebalancer::builder(RoundRobin::<&str>::new())
    ///     .meter(|| {
    ///         let window = RatioCounter::new(6, Duration::from_secs(10))
    ///             .expect("6 buckets of 10 s is a valid window");
    ///         Box::new(Overload(window))
    ///     })
    ///     .build()?;
    /// rebalancer.upsert_server("a", None)?;
    /// rebalancer.record(&"a", 429, Duration::from_millis(3));
    /// assert_eq!(rebalancer.snapshot()[0].rating, 1.0);
    /// # Ok::<(), roundrobin_rebalancer::Error>(())
    /// ```
    pub fn meter(mut self, new_meter: impl Fn() -> Box<dyn Meter> + Send + Sync + 'static) -> Self {
        self.new_meter = Arc::new(new_meter);
        self
    }

    /// The state machine acts only when every server has answered at least `n`
    /// requests in the last 10 s (ten 1 s buckets); until then it waits as if a meter
    /// were not ready. Default 0: the reference's behaviour.
    ///
    /// With the error-ratio meter, a server's rating is then made of at least `n`
    /// responses, so a single error moves it by at most `1/n` instead of deciding it
    /// alone after a handful of requests. It does not change the split itself: when the
    /// other servers have no errors at all, their median and deviation are 0 and any
    /// error still marks a server bad.
    pub fn min_requests(mut self, n: u64) -> Self {
        self.min_requests = n;
        self
    }

    /// The threshold of the split of ratings (default
    /// [`RATING_SPLIT_THRESHOLD`](crate::RATING_SPLIT_THRESHOLD), 1.5). Use
    /// [`LATENCY_SPLIT_THRESHOLD`](crate::LATENCY_SPLIT_THRESHOLD) with a
    /// [`LatencyMeter`](crate::LatencyMeter).
    pub fn split_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }
}

impl<S: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static> RebalancerBuilder<S> {
    /// Builds the rebalancer. Servers already in the balancer are taken over with
    /// their current weights as original weights.
    ///
    /// Errors when the split threshold is not finite and positive.
    pub fn build(self) -> Result<Rebalancer<S>, Error> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(Error::InvalidThreshold(self.threshold));
        }
        Ok(self.assemble())
    }

    /// Builds a rebalancer from a validated configuration.
    fn assemble(self) -> Rebalancer<S> {
        let origin = self.clock.now();
        let rebalancer = Rebalancer {
            backoff_nanos: i64::try_from(self.backoff.as_nanos()).unwrap_or(i64::MAX),
            min_requests: self.min_requests,
            threshold: self.threshold,
            origin,
            deadline: AtomicI64::new(i64::MIN),
            pool: ArcSwap::from_pointee(Pool::new(Vec::new())),
            fsm: Mutex::new(()),
            clock: self.clock,
            new_meter: self.new_meter,
            balancer: self.balancer,
        };
        let records = rebalancer
            .balancer
            .servers()
            .into_iter()
            .map(|server| {
                let weight = rebalancer.balancer.server_weight(&server).unwrap_or(0);
                Arc::new(rebalancer.new_record(server, weight))
            })
            .collect();
        rebalancer.pool.store(Arc::new(Pool::new(records)));
        rebalancer
    }
}

impl<S: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static> Rebalancer<S> {
    /// A rebalancer with the defaults: [`ErrorRatioMeter`], 10 s backoff,
    /// [`SystemClock`], split threshold 1.5, no minimum of requests.
    pub fn new(balancer: RoundRobin<S>) -> Self {
        // The default configuration is valid: nothing to check.
        Self::builder(balancer).assemble()
    }

    /// A builder for a rebalancer over `balancer`.
    pub fn builder(balancer: RoundRobin<S>) -> RebalancerBuilder<S> {
        RebalancerBuilder {
            balancer,
            backoff: DEFAULT_BACKOFF,
            clock: Arc::new(SystemClock),
            new_meter: Arc::new(|| Box::new(ErrorRatioMeter::default())),
            min_requests: 0,
            threshold: crate::RATING_SPLIT_THRESHOLD,
        }
    }

    /// The balancer. Pick from it freely, but change the pool through the rebalancer:
    /// changes made directly on the balancer are not seen by the rebalancer.
    pub fn balancer(&self) -> &RoundRobin<S> {
        &self.balancer
    }

    fn new_record(&self, server: S, weight: u32) -> Record<S> {
        Record {
            server,
            original: AtomicU32::new(weight),
            current: AtomicU32::new(weight),
            meter: (self.new_meter)(),
            requests: (self.min_requests > 0).then(|| {
                RollingCounter::new(10, Duration::from_secs(1))
                    .expect("10 buckets of 1 s is a valid window")
            }),
        }
    }

    fn lock_fsm(&self) -> MutexGuard<'_, ()> {
        self.fsm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a server, or updates the weight of one already there (without a second
    /// record: its meter keeps its data). `None` means the balancer's default weight
    /// for a new server and the unchanged original weight for an existing one.
    /// Every server then goes back to its original weight and the state machine may
    /// run at the next record.
    pub fn upsert_server(&self, server: S, weight: Option<u32>) -> Result<(), Error> {
        let _fsm = self.lock_fsm();
        let pool = self.pool.load_full();
        if let Some(record) = pool.get(&server) {
            let original = weight.unwrap_or_else(|| record.original.load(Ordering::Relaxed));
            self.balancer.upsert_server(server, Some(original))?;
            record.original.store(original, Ordering::Relaxed);
        } else {
            self.balancer.upsert_server(server.clone(), weight)?;
            let weight = self.balancer.server_weight(&server).unwrap_or(0);
            let mut records = pool.records.clone();
            records.push(Arc::new(self.new_record(server, weight)));
            self.pool.store(Arc::new(Pool::new(records)));
        }
        self.reset()
    }

    /// Removes a server; errors when it is not in the pool. Every remaining server
    /// goes back to its original weight and the state machine may run at the next
    /// record. A response recorded later for the removed server is ignored.
    pub fn remove_server(&self, server: &S) -> Result<(), Error> {
        let _fsm = self.lock_fsm();
        self.balancer.remove_server(server)?;
        let pool = self.pool.load_full();
        let records = pool
            .records
            .iter()
            .filter(|r| r.server != *server)
            .cloned()
            .collect();
        self.pool.store(Arc::new(Pool::new(records)));
        self.reset()
    }

    /// Current weights back to the original ones, pushed to the balancer; the next
    /// record may run the state machine. Called with the `fsm` lock held.
    fn reset(&self) -> Result<(), Error> {
        let mut changes = Vec::new();
        for record in &self.pool.load().records {
            let original = record.original.load(Ordering::Relaxed);
            record.current.store(original, Ordering::Relaxed);
            if self.balancer.server_weight(&record.server) != Some(original) {
                changes.push((record.server.clone(), Some(original)));
            }
        }
        // One change of the balancer: one schedule rebuild, one iteration restart.
        if !changes.is_empty() {
            self.balancer.upsert_servers(changes)?;
        }
        self.deadline.store(i64::MIN, Ordering::Release);
        Ok(())
    }

    /// The servers, in insertion order.
    pub fn servers(&self) -> Vec<S> {
        self.balancer.servers()
    }

    /// The current weight of a server, `None` when it is not in the pool.
    pub fn server_weight(&self, server: &S) -> Option<u32> {
        self.balancer.server_weight(server)
    }

    /// The next server to send a request to.
    pub fn next_server(&self) -> Result<S, Error> {
        Ok(self.balancer.next_server()?)
    }

    /// Records a response of `server` at the clock's time; see [`Self::record_at`].
    pub fn record(&self, server: &S, status: u16, latency: Duration) {
        self.record_at(server, status, latency, self.clock.now());
    }

    /// Records a response of `server` (its status and latency) at `now`, then runs the
    /// state machine if its backoff period is over and no other thread is running it.
    /// A server that is not in the pool (any more) is ignored.
    pub fn record_at(&self, server: &S, status: u16, latency: Duration, now: Instant) {
        {
            let pool = self.pool.load();
            if let Some(record) = pool.get(server) {
                record.meter.record(status, latency, now);
                if let Some(requests) = &record.requests {
                    requests.inc(1, now);
                }
            }
        }
        self.poll_at(now);
    }

    /// Runs the state machine if it is due at `now` and no other thread is running
    /// it; returns whether it ran. [`Self::record_at`] calls this; call it directly to
    /// drive the rebalancer from a timer instead.
    ///
    /// It is due once the backoff period after its last change has passed (at once
    /// after an upsert or remove). A step that changes nothing (meters not ready, or
    /// no reason to move) makes the next one due [`IDLE_RECHECK`] later (or after the
    /// backoff, if that is shorter), where the reference re-evaluates on every request.
    pub fn poll_at(&self, now: Instant) -> bool {
        let at = self.nanos(now);
        if at <= self.deadline.load(Ordering::Acquire) {
            return false;
        }
        let _fsm = match self.fsm.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return false,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if at <= self.deadline.load(Ordering::Acquire) {
            return false;
        }
        // Keep the other recorders on the fast path while this one steps.
        self.deadline
            .store(at.saturating_add(self.backoff_nanos), Ordering::Release);
        if !self.step(now) {
            let idle = self.backoff_nanos.min(IDLE_RECHECK_NANOS);
            self.deadline
                .store(at.saturating_add(idle), Ordering::Release);
        }
        true
    }

    /// Nanoseconds from the origin to `t`, negative before it, saturating.
    fn nanos(&self, t: Instant) -> i64 {
        // 64-bit arithmetic only: this runs on every record.
        fn saturating_nanos(d: Duration) -> i64 {
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            secs.saturating_mul(1_000_000_000)
                .saturating_add(i64::from(d.subsec_nanos()))
        }
        match t.checked_duration_since(self.origin) {
            Some(d) => saturating_nanos(d),
            None => -saturating_nanos(self.origin - t),
        }
    }

    fn is_ready(&self, record: &Record<S>, now: Instant) -> bool {
        record.meter.is_ready(now)
            && record
                .requests
                .as_ref()
                .is_none_or(|r| r.count(now) >= self.min_requests)
    }

    /// One step of the state machine; returns whether weights changed. Called with
    /// the `fsm` lock held.
    fn step(&self, now: Instant) -> bool {
        let pool = self.pool.load();
        let active = || {
            pool.records
                .iter()
                .filter(|r| r.original.load(Ordering::Relaxed) > 0)
        };
        if active().count() < 2 || !active().all(|r| self.is_ready(r, now)) {
            return false;
        }
        let ratings: Vec<f64> = pool.records.iter().map(|r| r.meter.rating(now)).collect();
        if ratings.iter().any(|r| r.is_nan()) {
            tracing::warn!(
                ?ratings,
                "a meter rated a server NaN; weights left as they are"
            );
            return false;
        }
        let original: Vec<u32> = pool
            .records
            .iter()
            .map(|r| r.original.load(Ordering::Relaxed))
            .collect();
        let before: Vec<u32> = pool
            .records
            .iter()
            .map(|r| r.current.load(Ordering::Relaxed))
            .collect();
        let mut current = before.clone();
        let outcome = fsm::step(&original, &mut current, &ratings, self.threshold);
        if !outcome.changed() {
            return false;
        }
        match outcome {
            Outcome::Split(_) => {
                tracing::debug!(?ratings, ?before, ?current, "rebalancer: weights grown")
            }
            Outcome::Converge(_) => tracing::debug!(
                ?ratings,
                ?before,
                ?current,
                "rebalancer: weights converging"
            ),
        }
        let changes: Vec<(S, Option<u32>)> = pool
            .records
            .iter()
            .zip(before)
            .zip(current)
            .filter(|((_, old), new)| old != new)
            .map(|((record, _), new)| {
                record.current.store(new, Ordering::Relaxed);
                (record.server.clone(), Some(new))
            })
            .collect();
        // All new weights reach the balancer as one change (one schedule rebuild), so
        // no request ever sees half of a step.
        if let Err(e) = self.balancer.upsert_servers(changes) {
            tracing::warn!(error = %e, "rebalancer: cannot set weights");
        }
        true
    }

    /// Every server's original and current weight, rating and readiness at the
    /// clock's time, in pool order.
    pub fn snapshot(&self) -> Vec<ServerState<S>> {
        self.snapshot_at(self.clock.now())
    }

    /// Every server's original and current weight, rating and readiness at `now`, in
    /// pool order.
    pub fn snapshot_at(&self, now: Instant) -> Vec<ServerState<S>> {
        self.pool
            .load()
            .records
            .iter()
            .map(|r| ServerState {
                server: r.server.clone(),
                original_weight: r.original.load(Ordering::Relaxed),
                current_weight: r.current.load(Ordering::Relaxed),
                rating: r.meter.rating(now),
                ready: self.is_ready(r, now),
            })
            .collect()
    }
}
