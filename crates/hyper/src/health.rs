//! Active health checks: a task that asks every server of a pool for a path on a timer
//! and reports the verdicts to the pool, never on the request path.

use core::hash::Hasher as _;
use core::ops::RangeInclusive;
use core::time::Duration;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use roundrobin_core::ServerUrl;
use roundrobin_rebalancer::Rebalancer;
use tokio::task::{JoinHandle, JoinSet};

use crate::fnv::Fnv;
use crate::upstream::{h2c_client, pooled_client_with, Clients, Connector};

/// HTTP health checks (HAProxy's `option httpchk` + `check`, nginx Plus'
/// `health_check`, Envoy's `health_checks`): every `interval` (± 10 % jitter, so a
/// fleet does not check in step), `GET path` on every server of the pool, concurrently;
/// a check passes when a status in `statuses` arrives within `timeout`. Checks speak
/// each server's protocol (`https://`, `h2c://`) through a [`Connector`]: by default
/// one with the check timeout as connect timeout and the webpki roots; pass the
/// forwarder's with [`connector`](Self::connector) to share its TLS settings. Verdicts go to
/// [`Rebalancer::report_check`], whose rise/fall counts mark servers down and back up.
///
/// | | default | HAProxy | nginx Plus |
/// |---|---|---|---|
/// | interval | 5 s | `inter 2s` | `interval=5` |
/// | timeout | 2 s | `timeout check` (= inter) | `proxy_timeout` |
/// | passing statuses | 200–399 | 200–399 | 200–399 |
/// | rise / fall | 2 / 3 (on the rebalancer) | `rise 2 fall 3` | `passes=1 fails=1` |
///
/// ```no_run
/// # async fn run(pool: std::sync::Arc<roundrobin_rebalancer::Rebalancer<roundrobin_core::ServerUrl>>) {
/// use std::time::Duration;
/// use roundrobin_hyper::HealthCheck;
///
/// let checks = HealthCheck::new("/healthz")
///     .interval(Duration::from_secs(5))
///     .timeout(Duration::from_secs(2))
///     .spawn(pool); // stops when the handle is aborted or the runtime ends
/// # checks.abort();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HealthCheck {
    path: String,
    interval: Duration,
    timeout: Duration,
    statuses: RangeInclusive<u16>,
    connector: Option<Connector>,
}

impl HealthCheck {
    /// Checks of `GET path` (a path with a leading `/`; the server's own path prefix
    /// is put before it) with the defaults above.
    pub fn new(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Self {
            path,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            statuses: 200..=399,
            connector: None,
        }
    }

    /// Time between two rounds of checks (at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long one check may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one check may take.
    pub fn timeout_duration(&self) -> Duration {
        self.timeout
    }

    /// The statuses that pass (default 200–399).
    pub fn statuses(mut self, statuses: RangeInclusive<u16>) -> Self {
        self.statuses = statuses;
        self
    }

    /// Connects to servers with `connector` (its TLS settings: private CAs, client
    /// certificates) instead of a default one.
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Runs the checks on the current tokio runtime until the handle is aborted.
    pub fn spawn(self, pool: Arc<Rebalancer<ServerUrl>>) -> JoinHandle<()> {
        tokio::spawn(self.run(pool))
    }

    async fn run(self, pool: Arc<Rebalancer<ServerUrl>>) {
        let connector = self
            .connector
            .clone()
            .unwrap_or_else(|| Connector::new(self.timeout));
        let client: Arc<Clients<Connector, Empty<Bytes>>> = Arc::new(Clients {
            h2c: h2c_client(connector.plain()),
            main: pooled_client_with(connector),
            http1: None,
        });
        let mut jitter = Jitter::seeded(&self.path);
        loop {
            let mut round = JoinSet::new();
            for server in pool.servers() {
                let (client, check) = (Arc::clone(&client), self.clone());
                round.spawn(async move {
                    let ok = check.once(&client, &server).await;
                    (server, ok)
                });
            }
            while let Some(done) = round.join_next().await {
                if let Ok((server, ok)) = done {
                    if !ok {
                        tracing::debug!(%server, path = %self.path, "health check failed");
                    }
                    pool.report_check(&server, ok, pool.now());
                }
            }
            tokio::time::sleep(jitter.around(self.interval)).await;
        }
    }

    /// One check of `server`: whether it answered a passing status in time.
    async fn once(&self, client: &Clients<Connector, Empty<Bytes>>, server: &ServerUrl) -> bool {
        let uri = format!(
            "{}://{}{}{}",
            server.scheme(),
            server.authority(),
            server.path().trim_end_matches('/'),
            self.path
        );
        let Ok(request) = Request::get(uri)
            .header(http::header::HOST, server.authority())
            .header(http::header::USER_AGENT, "roundrobin-health-check")
            .body(Empty::new())
        else {
            return false;
        };
        match tokio::time::timeout(self.timeout, client.send(request, false)).await {
            Ok(Ok((response, _))) => self.statuses.contains(&response.status().as_u16()),
            _ => false,
        }
    }
}

/// ± 10 % around an interval, from a small xorshift generator (no randomness crate:
/// the jitter only has to differ between processes and rounds).
struct Jitter(u64);

impl Jitter {
    fn seeded(salt: &str) -> Self {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut hasher = Fnv::default();
        hasher.write(salt.as_bytes());
        let salt = hasher.finish();
        Self((time ^ salt ^ u64::from(std::process::id())) | 1)
    }

    fn around(&mut self, interval: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // a factor in [0.9, 1.1)
        let factor = 0.9 + (self.0 % 1000) as f64 / 5000.0;
        interval.mul_f64(factor)
    }
}

/// How often [`spawn_stepper`] looks for due work at the least, so an ejection a
/// recorder asked for waits at most this long.
pub const STEPPER_TICK: Duration = Duration::from_millis(10);

/// Drives `pool`'s steps from a task instead of the request threads: sleeps until
/// [`Rebalancer::next_step_due`] (at most [`STEPPER_TICK`]) and runs
/// [`Rebalancer::step_if_due`]. Use it with
/// [`RebalancerBuilder::step_on_record(false)`](roundrobin_rebalancer::RebalancerBuilder::step_on_record),
/// so that schedule rebuilds (O(n log n), most of a millisecond at 10,000 servers with
/// the smooth policy) never run on a request's thread. Runs until the handle is
/// aborted.
pub fn spawn_stepper(pool: Arc<Rebalancer<ServerUrl>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = pool.now();
            // Refused steps are counted and logged by the rebalancer.
            let _ = pool.step_if_due(now);
            let tick = tokio::time::Instant::now() + STEPPER_TICK;
            let wake = match pool.next_step_due() {
                Some(due) => {
                    let wait = due.saturating_duration_since(pool.now());
                    (tokio::time::Instant::now() + wait).min(tick)
                }
                None => tokio::time::Instant::now(),
            };
            tokio::time::sleep_until(
                wake.max(tokio::time::Instant::now() + Duration::from_millis(1)),
            )
            .await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let mut j = Jitter::seeded("/x");
        for _ in 0..1000 {
            let d = j.around(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d < Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
