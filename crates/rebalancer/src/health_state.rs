//! Each server's health state, and how the rebalancer turns it into the weights the
//! balancer applies. Everything here runs with the rebalancer's `fsm` lock held, except
//! the atomic counters the recorders touch.

use alloc::vec::Vec;
use core::fmt;
use core::hash::Hash;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, Ordering};
use core::time::Duration;
use std::time::Instant;

use crate::rebalancer::{Record, Records};
use crate::{Error, Health, Rebalancer, SlowStart};

/// `i64` nanoseconds meaning "never" / "not set".
pub(crate) const NEVER: i64 = i64::MIN;

/// One server's health, in nanoseconds since the rebalancer's origin.
#[derive(Debug)]
pub(crate) struct HealthState {
    /// Failed requests in a row (status 500 or above).
    pub(crate) failures: AtomicU32,
    /// Ejected until then; [`NEVER`] when not ejected.
    pub(crate) ejected_until: AtomicI64,
    /// How many times in a row it was ejected (the next ejection lasts this + 1 times
    /// the base time).
    pub(crate) ejections: AtomicU32,
    /// When it (re)joined: the start of its slow start; [`NEVER`] when not ramping.
    pub(crate) back_at: AtomicI64,
    /// When its last ejection ended.
    pub(crate) last_back: AtomicI64,
    /// Failed its active health checks.
    pub(crate) down: AtomicBool,
    /// Health-check verdicts in a row: > 0 passes, < 0 failures.
    pub(crate) streak: AtomicI32,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            failures: AtomicU32::new(0),
            ejected_until: AtomicI64::new(NEVER),
            ejections: AtomicU32::new(0),
            back_at: AtomicI64::new(NEVER),
            last_back: AtomicI64::new(NEVER),
            down: AtomicBool::new(false),
            streak: AtomicI32::new(0),
        }
    }
}

impl HealthState {
    fn is_ejected(&self, at: i64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > at
    }

    fn ramp_elapsed(&self, at: i64, slow: &SlowStart) -> Option<Duration> {
        let back = self.back_at.load(Ordering::Relaxed);
        if !slow.is_on() || back == NEVER {
            return None;
        }
        let elapsed = Duration::from_nanos(u64::try_from(at.saturating_sub(back)).unwrap_or(0));
        (elapsed < slow.window).then_some(elapsed)
    }

    pub(crate) fn health(&self, at: i64, slow: &SlowStart) -> Health {
        if self.down.load(Ordering::Relaxed) {
            Health::Down
        } else if self.is_ejected(at) {
            Health::Ejected
        } else if self.ramp_elapsed(at, slow).is_some() {
            Health::SlowStart
        } else {
            Health::Up
        }
    }
}

/// The weight the balancer applies to `record` (0 before it has it).
pub(crate) fn applied<S>(record: &Record<S>) -> u32 {
    u32::try_from(record.applied.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Original and current weights of every record, to roll a refused change back.
pub(crate) struct Saved(Vec<(u32, u32)>);

impl Saved {
    pub(crate) fn of<S>(records: &Records<S>) -> Self {
        Self(
            records
                .records
                .iter()
                .map(|r| {
                    (
                        r.original.load(Ordering::Relaxed),
                        r.current.load(Ordering::Relaxed),
                    )
                })
                .collect(),
        )
    }

    pub(crate) fn restore<S>(&self, records: &Records<S>) {
        for (r, &(original, current)) in records.records.iter().zip(&self.0) {
            r.original.store(original, Ordering::Relaxed);
            r.current.store(current, Ordering::Relaxed);
        }
    }
}

impl<S: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static> Rebalancer<S> {
    /// The weight `record` should have at `at`: its current weight, 0 while ejected or
    /// down, ramped in slow start.
    fn effective(&self, record: &Record<S>, at: i64) -> u32 {
        let current = record.current.load(Ordering::Relaxed);
        let health = &record.health;
        if health.down.load(Ordering::Relaxed) || health.is_ejected(at) {
            return 0;
        }
        match health.ramp_elapsed(at, &self.slow_start) {
            Some(elapsed) => self.slow_start.ramp(current, elapsed),
            None => current,
        }
    }

    /// Pushes every record's effective weight the balancer does not have yet, as one
    /// change; on success the records note them, and the next health change is
    /// scheduled. With the `fsm` lock held.
    pub(crate) fn apply(&self, at: i64) -> Result<(), Error> {
        let records = self.records.load();
        let weights: Vec<u32> = records
            .records
            .iter()
            .map(|r| self.effective(r, at))
            .collect();
        let changes: Vec<(S, Option<u32>)> = records
            .records
            .iter()
            .zip(&weights)
            .filter(|(r, &w)| r.applied.load(Ordering::Relaxed) != u64::from(w))
            .map(|(r, &w)| (r.server.clone(), Some(w)))
            .collect();
        if !changes.is_empty() {
            self.balancer.upsert_servers(changes)?;
            for (r, &w) in records.records.iter().zip(&weights) {
                r.applied.store(u64::from(w), Ordering::Relaxed);
            }
        }
        let mut due = i64::MAX;
        let tick = i64::try_from(self.slow_start.tick().as_nanos()).unwrap_or(i64::MAX);
        for r in &records.records {
            let until = r.health.ejected_until.load(Ordering::Relaxed);
            if until > at {
                due = due.min(until);
            }
            if r.health.ramp_elapsed(at, &self.slow_start).is_some() {
                due = due.min(at.saturating_add(tick));
            } else if r.health.back_at.load(Ordering::Relaxed) != NEVER && !r.health.is_ejected(at)
            {
                // the ramp is over
                r.health.back_at.store(NEVER, Ordering::Relaxed);
            }
        }
        self.health_due.store(due, Ordering::Release);
        // A recorder may have reached the ejection threshold meanwhile.
        if self.ejection.after > 0
            && records.records.iter().any(|r| {
                !r.health.is_ejected(at)
                    && r.health.failures.load(Ordering::Relaxed) >= self.ejection.after
            })
        {
            self.health_due.fetch_min(at, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Ends the ejections that are over, ejects the servers that failed too often in a
    /// row (within the cap), and applies the weights. With the `fsm` lock held.
    pub(crate) fn refresh(&self, at: i64) -> Result<(), Error> {
        let records = self.records.load();
        let slow = self.slow_start.is_on();
        for r in &records.records {
            let until = r.health.ejected_until.load(Ordering::Relaxed);
            if until != NEVER && until <= at {
                r.health.ejected_until.store(NEVER, Ordering::Relaxed);
                r.health.last_back.store(at, Ordering::Relaxed);
                r.health.failures.store(0, Ordering::Relaxed);
                if slow {
                    r.health.back_at.store(at, Ordering::Relaxed);
                }
                tracing::info!(server = ?r.server, "ejection over: back in the pool");
            }
        }
        let e = self.ejection;
        if e.after > 0 {
            let max = e.max_ejected(records.records.len());
            let mut ejected = records
                .records
                .iter()
                .filter(|r| r.health.is_ejected(at))
                .count();
            let forgive = i64::try_from(e.max_time.as_nanos()).unwrap_or(i64::MAX);
            for r in &records.records {
                let h = &r.health;
                if ejected >= max {
                    break;
                }
                if h.is_ejected(at) || h.failures.load(Ordering::Relaxed) < e.after {
                    continue;
                }
                // A server that stayed well since its last ejection starts over.
                let last = h.last_back.load(Ordering::Relaxed);
                let before = if last != NEVER && at.saturating_sub(last) > forgive {
                    0
                } else {
                    h.ejections.load(Ordering::Relaxed)
                };
                let n = before.saturating_add(1);
                let length = e.duration(n);
                let until = at.saturating_add(i64::try_from(length.as_nanos()).unwrap_or(i64::MAX));
                h.ejected_until.store(until, Ordering::Relaxed);
                h.ejections.store(n, Ordering::Relaxed);
                h.failures.store(0, Ordering::Relaxed);
                h.back_at.store(NEVER, Ordering::Relaxed);
                ejected += 1;
                tracing::warn!(server = ?r.server, ?length, times = n, "server ejected after failures in a row");
            }
        }
        self.apply(at)
    }

    /// Counts a response of `record` toward passive ejection; schedules a refresh when
    /// it reached the threshold. Lock-free.
    pub(crate) fn count_failure(&self, record: &Record<S>, status: u16, at: i64) {
        let after = self.ejection.after;
        if after == 0 {
            return;
        }
        if status >= 500 {
            let n = record.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= after && !record.health.is_ejected(at) {
                self.health_due.fetch_min(at, Ordering::AcqRel);
            }
        } else {
            record.health.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Reports an active health check of `server` at `now`: `fall` failures in a row
    /// mark it down (no picks), `rise` passes in a row bring it back (through slow
    /// start when that is on). Returns its health afterwards, `None` when it is not in
    /// the pool. The checks run elsewhere (the hyper adapter's health checker); this
    /// only counts verdicts.
    pub fn report_check(&self, server: &S, ok: bool, now: Instant) -> Option<Health> {
        let at = self.nanos(now);
        let records = self.records.load();
        let record = records.get(server)?;
        let h = &record.health;
        let streak = if ok {
            h.streak.load(Ordering::Relaxed).max(0).saturating_add(1)
        } else {
            h.streak.load(Ordering::Relaxed).min(0).saturating_sub(1)
        };
        h.streak.store(streak, Ordering::Relaxed);
        let down = h.down.load(Ordering::Relaxed);
        let rise = i32::try_from(self.checks.rise.max(1)).unwrap_or(i32::MAX);
        let fall = i32::try_from(self.checks.fall.max(1)).unwrap_or(i32::MAX);
        let flip = if down && streak >= rise {
            tracing::info!(server = ?record.server, "health checks pass again: back in the pool");
            if self.slow_start.is_on() {
                h.back_at.store(at, Ordering::Relaxed);
            }
            Some(false)
        } else if !down && streak <= -fall {
            tracing::warn!(server = ?record.server, "health checks failing: server marked down");
            Some(true)
        } else {
            None
        };
        if let Some(down) = flip {
            let _fsm = self
                .fsm
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            h.down.store(down, Ordering::Relaxed);
            if let Err(error) = self.apply(at) {
                h.down.store(!down, Ordering::Relaxed);
                tracing::warn!(%error, "the balancer refused a health change");
            }
        }
        Some(h.health(at, &self.slow_start))
    }
}
