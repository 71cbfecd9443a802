//! The rebalancer: a [`RoundRobin`] whose weights follow how well its servers do.

use alloc::vec::Vec;
use core::fmt;
use core::hash::Hash;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use arc_swap::ArcSwap;
use roundrobin_core::RoundRobin;

use crate::fsm::{self, Outcome};
use crate::health_state::{applied, HealthState, Saved};
use crate::{
    Checks, Clock, Ejection, Error, ErrorRatioMeter, Health, Meter, RollingCounter, SlowStart,
    SystemClock,
};

/// The default time between two steps of the state machine (`RebalancerBackoff`).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);

/// After a step of the state machine that changed nothing, the next one is due this
/// much later (or after the backoff, if that is shorter).
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);
const IDLE_RECHECK_NANOS: i64 = 1_000_000_000;

type MeterFactory = dyn Fn() -> Box<dyn Meter> + Send + Sync;

/// One server as the rebalancer sees it.
pub(crate) struct Record<S> {
    pub(crate) server: S,
    /// The configured weight.
    pub(crate) original: AtomicU32,
    /// The weight the state machine gives it (the original when it is not moving).
    pub(crate) current: AtomicU32,
    /// The weight the balancer applies: `current` after health (0 while ejected or
    /// down, ramped in slow start); [`NOT_APPLIED`] before the balancer has it.
    pub(crate) applied: AtomicU64,
    pub(crate) meter: Box<dyn Meter>,
    /// Requests over the last 10 s, kept only when `min_requests > 0`.
    requests: Option<RollingCounter>,
    pub(crate) health: HealthState,
}

/// `Record::applied` of a server the balancer does not have yet.
pub(crate) const NOT_APPLIED: u64 = u64::MAX;

/// Pools up to this size are searched by comparison, larger ones through a hash map.
const SCAN_MAX: usize = 8;

/// An immutable view of the pool, swapped whole on upsert and remove so that
/// recorders find their server without a lock.
pub(crate) struct Records<S> {
    pub(crate) records: Vec<Arc<Record<S>>>,
    /// Present when the pool has more than [`SCAN_MAX`] servers.
    index: Option<HashMap<S, usize, foldhash::fast::RandomState>>,
}

impl<S: Eq + Hash + Clone> Records<S> {
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

    pub(crate) fn get(&self, server: &S) -> Option<&Record<S>> {
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
    /// The weight the balancer applies now: the rebalancer's weight, 0 while the
    /// server is ejected or down, ramped during slow start.
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
/// [`Meter`]; that is lock-free. After a record, when a step of the state machine is
/// due (see [`Self::step_if_due`]), it runs on the recording thread unless another
/// thread is already running it (it never makes a recorder wait), and pushes changed
/// weights to the balancer as one change. Weights change at most once per backoff
/// period. The weights live here: the balancer is always given explicit weights and
/// has exactly those that [`Self::server_weight`] and [`Self::snapshot`] report.
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
    pub(crate) balancer: RoundRobin<S>,
    clock: Arc<dyn Clock>,
    new_meter: Arc<MeterFactory>,
    backoff_nanos: i64,
    min_requests: u64,
    threshold: f64,
    /// Whether the state machine moves weights.
    rebalance: bool,
    pub(crate) ejection: Ejection,
    pub(crate) checks: Checks,
    pub(crate) slow_start: SlowStart,
    /// The time base of `deadline`.
    origin: Instant,
    /// The state machine may run when `now` is after this, in nanoseconds since `origin`.
    deadline: AtomicI64,
    /// A health change (an ejection, its end, a slow-start tick) is due at this time,
    /// in nanoseconds since `origin`; `i64::MAX` when none is.
    pub(crate) health_due: AtomicI64,
    pub(crate) records: ArcSwap<Records<S>>,
    /// Held by the state machine (try-lock) and by upsert/remove (lock).
    pub(crate) fsm: Mutex<()>,
    /// Whether `record_at` runs a due step.
    step_on_record: bool,
    /// Steps whose weights the balancer refused.
    refused: AtomicU64,
    /// Steps of the state machine that changed weights.
    steps: AtomicU64,
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
    step_on_record: bool,
    rebalance: bool,
    ejection: Ejection,
    checks: Checks,
    slow_start: SlowStart,
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
    ///             self.0.inc_hits(1, now);
    ///         } else {
    ///             self.0.inc_misses(1, now);
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

    /// Whether [`Rebalancer::record_at`] runs a due step of the state machine on the
    /// recording thread (default `true`, as the reference does). Turn it off to drive
    /// the steps from a timer instead: sleep until [`Rebalancer::next_step_due`], then
    /// call [`Rebalancer::step_if_due`]. With large pools (a step rebuilds the
    /// balancer's schedule, O(n log n)) this keeps the rebuild off request threads.
    pub fn step_on_record(mut self, on: bool) -> Self {
        self.step_on_record = on;
        self
    }

    /// Whether the state machine moves weights toward the servers that do better
    /// (default `true`). With `false` the weights only change by upserts, passive
    /// ejection, health checks and slow start: a plain weighted round robin with the
    /// resilience of this type.
    pub fn rebalance(mut self, on: bool) -> Self {
        self.rebalance = on;
        self
    }

    /// Passive ejection of servers that fail requests in a row (default
    /// [`Ejection::OFF`], as the reference; see [`Ejection`] for the proxy's defaults
    /// and HAProxy's, nginx's and Envoy's).
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// How many health-check verdicts in a row mark a server down or bring it back
    /// (default `rise 2, fall 3`); see [`Rebalancer::report_check`].
    pub fn checks(mut self, checks: Checks) -> Self {
        self.checks = checks;
        self
    }

    /// Slow start of servers that are added or come back (default [`SlowStart::OFF`]).
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.slow_start = slow_start;
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
            records: ArcSwap::from_pointee(Records::new(Vec::new())),
            fsm: Mutex::new(()),
            step_on_record: self.step_on_record,
            refused: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            rebalance: self.rebalance,
            ejection: self.ejection,
            checks: self.checks,
            slow_start: self.slow_start,
            health_due: AtomicI64::new(i64::MAX),
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
                let record = rebalancer.new_record(server, weight);
                record.applied.store(u64::from(weight), Ordering::Relaxed);
                Arc::new(record)
            })
            .collect();
        rebalancer.records.store(Arc::new(Records::new(records)));
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
            step_on_record: true,
            rebalance: true,
            ejection: Ejection::OFF,
            checks: Checks::default(),
            slow_start: SlowStart::OFF,
        }
    }

    /// The balancer. Pick from it freely, but change the pool through the rebalancer:
    /// changes made directly on the balancer are not seen by the rebalancer (and break
    /// the agreement of their weights until the next upsert or remove).
    pub fn balancer(&self) -> &RoundRobin<S> {
        &self.balancer
    }

    fn new_record(&self, server: S, weight: u32) -> Record<S> {
        Record {
            server,
            original: AtomicU32::new(weight),
            current: AtomicU32::new(weight),
            applied: AtomicU64::new(NOT_APPLIED),
            health: HealthState::default(),
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

    /// The rebalancer's clock: the time source of [`Self::record`], [`Self::snapshot`]
    /// and [`Self::now`]. Layers above measure latency with it, so a test that drives a
    /// [`ManualClock`](crate::ManualClock) controls every time the rebalancer sees.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The clock's current time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Adds a server, or updates the weight of one already there (without a second
    /// record: its meter keeps its data), and returns the weight it now has. `None`
    /// means the balancer's default weight for a new server and the unchanged original
    /// weight for an existing one. Every server then goes back to its original weight
    /// (in the same change of the balancer) and the state machine is due at once.
    ///
    /// When the balancer refuses the change, the error is returned and nothing
    /// changes, here or in the balancer.
    pub fn upsert_server(&self, server: S, weight: Option<u32>) -> Result<(), Error> {
        self.upsert_server_weight(server, weight).map(drop)
    }

    /// [`Self::upsert_server`], returning the weight the server now has.
    pub fn upsert_server_weight(&self, server: S, weight: Option<u32>) -> Result<u32, Error> {
        let _fsm = self.lock_fsm();
        let at = self.nanos(self.clock.now());
        let records = self.records.load_full();
        let existing = records.get(&server);
        let original = match (weight, existing) {
            (Some(w), _) => w,
            (None, Some(record)) => record.original.load(Ordering::Relaxed),
            (None, None) => self.balancer.default_weight(),
        };
        let saved = Saved::of(&records);
        let list = match existing {
            Some(record) => {
                record.original.store(original, Ordering::Relaxed);
                // pushed again even when unchanged: an upsert restarts the sequence
                record.applied.store(NOT_APPLIED, Ordering::Relaxed);
                None
            }
            None => {
                let record = self.new_record(server, original);
                if self.slow_start.is_on() && !records.records.is_empty() {
                    record.health.back_at.store(at, Ordering::Relaxed);
                }
                let mut list = records.records.clone();
                list.push(Arc::new(record));
                let list = Arc::new(Records::new(list));
                self.records.store(Arc::clone(&list));
                Some(list)
            }
        };
        self.back_to_original(list.as_deref().unwrap_or(&records));
        if let Err(e) = self.apply(at) {
            saved.restore(&records);
            self.records.store(records);
            return Err(e);
        }
        Ok(original)
    }

    /// Removes a server; errors when it is not in the pool. Every remaining server
    /// goes back to its original weight and the state machine is due at once. A
    /// response recorded later for the removed server is ignored.
    pub fn remove_server(&self, server: &S) -> Result<(), Error> {
        let _fsm = self.lock_fsm();
        let at = self.nanos(self.clock.now());
        let records = self.records.load_full();
        if records.get(server).is_none() {
            return Err(roundrobin_core::Error::ServerNotFound.into());
        }
        let saved = Saved::of(&records);
        let list: Vec<_> = records
            .records
            .iter()
            .filter(|r| r.server != *server)
            .cloned()
            .collect();
        let list = Records::new(list);
        self.back_to_original(&list);
        // The others' weights first: if the balancer refuses, nothing was removed.
        self.records.store(Arc::new(list));
        if let Err(e) = self.apply(at) {
            saved.restore(&records);
            self.records.store(records);
            return Err(e);
        }
        self.balancer.remove_server(server)?;
        Ok(())
    }

    /// Current weights back to the original ones; the state machine is due at once.
    /// Called with the `fsm` lock held.
    fn back_to_original(&self, records: &Records<S>) {
        for record in &records.records {
            let original = record.original.load(Ordering::Relaxed);
            record.current.store(original, Ordering::Relaxed);
        }
        self.deadline.store(i64::MIN, Ordering::Release);
    }

    /// The servers, in insertion order.
    pub fn servers(&self) -> Vec<S> {
        self.records
            .load()
            .records
            .iter()
            .map(|r| r.server.clone())
            .collect()
    }

    /// The servers that may take requests now, in insertion order: all but the ejected
    /// and the down ones (drained servers included, so that their sticky sessions
    /// stay).
    pub fn available_servers(&self) -> Vec<S> {
        let at = self.nanos(self.clock.now());
        self.records
            .load()
            .records
            .iter()
            .filter(|r| {
                !matches!(
                    r.health.health(at, &self.slow_start),
                    Health::Ejected | Health::Down
                )
            })
            .map(|r| r.server.clone())
            .collect()
    }

    /// A server's health now (up, slow start, ejected, down), `None` when it is not in
    /// the pool.
    pub fn health(&self, server: &S) -> Option<Health> {
        let at = self.nanos(self.clock.now());
        self.records
            .load()
            .get(server)
            .map(|r| r.health.health(at, &self.slow_start))
    }

    /// The weight the balancer applies to a server now, `None` when it is not in the
    /// pool. O(1) expected: the rebalancer's records are the one home of the weights,
    /// and the balancer always has exactly these (a change it refuses changes neither).
    pub fn server_weight(&self, server: &S) -> Option<u32> {
        self.records.load().get(server).map(|r| applied(r))
    }

    /// The next server to send a request to.
    pub fn next_server(&self) -> Result<S, Error> {
        Ok(self.balancer.next_server()?)
    }

    /// Records a response of `server` at the clock's time; see [`Self::record_at`].
    pub fn record(&self, server: &S, status: u16, latency: Duration) {
        self.record_at(server, status, latency, self.clock.now());
    }

    /// Records a response of `server` (its status and latency) at `now`. A server that
    /// is not in the pool (any more) is ignored.
    ///
    /// Unless [`RebalancerBuilder::step_on_record`] turned it off, it then runs a step
    /// of the state machine if one is due and no other thread is running it (see
    /// [`Self::step_if_due`]); a step whose weights the balancer refuses is counted in
    /// [`Self::refused_steps`] and logged.
    pub fn record_at(&self, server: &S, status: u16, latency: Duration, now: Instant) {
        {
            let records = self.records.load();
            if let Some(record) = records.get(server) {
                record.meter.record(status, latency, now);
                if let Some(requests) = &record.requests {
                    requests.inc(1, now);
                }
                self.count_failure(record, status, self.nanos(now));
            }
        }
        if self.step_on_record {
            // Counted and logged in `step_if_due`.
            let _ = self.step_if_due(now);
        }
    }

    /// When the next step is due (as quinn's `poll_timeout`): a step of the state
    /// machine, or a health change (the end of an ejection, a slow-start tick). The
    /// caller that drives the rebalancer from a timer sleeps until then and calls
    /// [`Self::step_if_due`]. `None` when a step is due at once (after a change).
    pub fn next_step_due(&self) -> Option<Instant> {
        let fsm = if self.rebalance {
            self.deadline.load(Ordering::Acquire)
        } else {
            i64::MAX
        };
        if fsm == i64::MIN {
            return None;
        }
        let at = fsm.min(self.health_due.load(Ordering::Acquire));
        let nanos = u64::try_from(at.max(0)).unwrap_or(0);
        self.origin.checked_add(Duration::from_nanos(nanos))
    }

    /// Runs what is due at `now`, unless another thread is running it: the health
    /// changes (ejections, their end, slow-start ticks), then a step of the state
    /// machine. `Ok(true)` when something ran, `Ok(false)` when nothing was due (or
    /// another thread was stepping); `Err` when the balancer refused the new weights:
    /// then nothing changed and the step is counted in [`Self::refused_steps`].
    ///
    /// The state machine is due once the backoff period after its last change has
    /// passed (at once after an upsert or remove). A step that changes nothing (meters
    /// not ready, or no reason to move) makes the next one due [`IDLE_RECHECK`] later
    /// (or after the backoff, if that is shorter), where the reference re-evaluates on
    /// every request.
    pub fn step_if_due(&self, now: Instant) -> Result<bool, Error> {
        let at = self.nanos(now);
        let fsm_due = || self.rebalance && at > self.deadline.load(Ordering::Acquire);
        let health_due = || at >= self.health_due.load(Ordering::Acquire);
        if !fsm_due() && !health_due() {
            return Ok(false);
        }
        let _fsm = match self.fsm.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        let mut ran = false;
        if health_due() {
            self.refresh(at).map_err(|e| self.refused(e))?;
            ran = true;
        }
        if !fsm_due() {
            return Ok(ran);
        }
        // Keep the other recorders on the fast path while this one steps.
        self.deadline
            .store(at.saturating_add(self.backoff_nanos), Ordering::Release);
        let changed = self.step(now, at).map_err(|e| self.refused(e))?;
        if changed {
            self.steps.fetch_add(1, Ordering::Relaxed);
        } else {
            let idle = self.backoff_nanos.min(IDLE_RECHECK_NANOS);
            self.deadline
                .store(at.saturating_add(idle), Ordering::Release);
        }
        Ok(true)
    }

    /// Counts and logs a change the balancer refused.
    fn refused(&self, error: Error) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "rebalancer: the balancer refused new weights; unchanged");
        error
    }

    /// The old name of [`Self::step_if_due`], returning whether a step ran.
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `step_if_due`, which returns refused steps"
    )]
    pub fn poll_at(&self, now: Instant) -> bool {
        self.step_if_due(now).is_ok_and(|ran| ran)
    }

    /// How many steps of the state machine changed weights.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    /// How many steps the balancer refused (their weights were not applied).
    pub fn refused_steps(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Nanoseconds from the origin to `t`, negative before it, saturating.
    pub(crate) fn nanos(&self, t: Instant) -> i64 {
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
    /// the `fsm` lock held. The new weights reach the balancer first, as one change;
    /// the records take them only once the balancer accepted them.
    fn step(&self, now: Instant, at: i64) -> Result<bool, Error> {
        let records = self.records.load();
        let active = || {
            records
                .records
                .iter()
                .filter(|r| r.original.load(Ordering::Relaxed) > 0)
        };
        if active().count() < 2 || !active().all(|r| self.is_ready(r, now)) {
            return Ok(false);
        }
        let ratings: Vec<f64> = records
            .records
            .iter()
            .map(|r| r.meter.rating(now))
            .collect();
        if ratings.iter().any(|r| r.is_nan()) {
            tracing::warn!(
                ?ratings,
                "a meter rated a server NaN; weights left as they are"
            );
            return Ok(false);
        }
        let original: Vec<u32> = records
            .records
            .iter()
            .map(|r| r.original.load(Ordering::Relaxed))
            .collect();
        let before: Vec<u32> = records
            .records
            .iter()
            .map(|r| r.current.load(Ordering::Relaxed))
            .collect();
        let mut current = before.clone();
        let outcome = fsm::step(&original, &mut current, &ratings, self.threshold);
        if !outcome.changed() {
            return Ok(false);
        }
        // All new weights reach the balancer as one change (one schedule rebuild), so
        // no request ever sees half of a step; if it refuses, nothing changes.
        for (record, &new) in records.records.iter().zip(&current) {
            record.current.store(new, Ordering::Relaxed);
        }
        if let Err(e) = self.apply(at) {
            for (record, &old) in records.records.iter().zip(&before) {
                record.current.store(old, Ordering::Relaxed);
            }
            return Err(e);
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
        Ok(true)
    }

    /// Every server's original and current weight, rating and readiness at the
    /// clock's time, in pool order.
    pub fn snapshot(&self) -> Vec<ServerState<S>> {
        self.snapshot_at(self.clock.now())
    }

    /// Every server's original and current weight, rating and readiness at `now`, in
    /// pool order.
    pub fn snapshot_at(&self, now: Instant) -> Vec<ServerState<S>> {
        self.records
            .load()
            .records
            .iter()
            .map(|r| ServerState {
                server: r.server.clone(),
                original_weight: r.original.load(Ordering::Relaxed),
                current_weight: applied(r),
                rating: r.meter.rating(now),
                ready: self.is_ready(r, now),
            })
            .collect()
    }
}
