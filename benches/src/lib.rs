//! A small HTTP load harness for comparing proxies: a *target* is a URL to load.
//!
//! [`load`] drives one [`Target`] with a fixed number of concurrent keep-alive clients
//! (closed loop: each client sends its next request when the previous one is answered)
//! for a fixed time, and returns a [`LoadReport`] with the request count, errors and
//! latency percentiles. [`markdown_table`] compares several reports against a baseline
//! (the direct backend), so any proxy reachable by URL (the in-process balancer here;
//! nginx or HAProxy later) is one more row.
//!
//! [`start_backend`] and [`start_balancer`] run the two in-process targets on
//! 127.0.0.1: a hyper backend answering a small fixed body, and the
//! `roundrobin-hyper` balancer forwarding to it. Both stop when their [`Running`]
//! handle is dropped.
//!
//! Every request is bounded by [`LoadConfig::request_timeout`]; a load run ends after
//! [`LoadConfig::duration`] plus at most one request timeout.

use core::convert::Infallible;
use core::fmt::Write as _;
use core::time::Duration;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_core::RoundRobin;
use roundrobin_hyper::{spawn_on, Balancer, Forwarder, Serving};

/// The body every in-process backend answers with.
pub const BACKEND_BODY: &[u8] = b"hello from the backend\n";

/// Something to load: a name for the table and the URL every request goes to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The row's name, e.g. `direct` or `roundrobin-hyper`.
    pub name: String,
    /// The URL requested (`http://` only).
    pub url: Uri,
}

impl Target {
    /// A target named `name` at `url`.
    ///
    /// ```
    /// let t = roundrobin_benches::Target::new("nginx", "http://127.0.0.1:8080/".parse()?);
    /// assert_eq!(t.name, "nginx");
    /// # Ok::<(), http::uri::InvalidUri>(())
    /// ```
    pub fn new(name: impl Into<String>, url: Uri) -> Self {
        Self {
            name: name.into(),
            url,
        }
    }
}

/// How hard and how long to load a target.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// How long the clients send requests.
    pub duration: Duration,
    /// How many clients send requests at the same time.
    pub concurrency: usize,
    /// The longest a single request may take; a slower one counts as an error.
    pub request_timeout: Duration,
}

impl Default for LoadConfig {
    /// 5 s, 4 clients, 2 s per request.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            concurrency: 4,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// What one [`load`] run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The target's name.
    pub target: String,
    /// Requests answered with a 2xx status and a complete body.
    pub ok: u64,
    /// Requests that failed: connection error, timeout, or a status other than 2xx.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies of the successful requests, sorted ascending.
    latencies: Vec<Duration>,
}

impl LoadReport {
    /// Builds a report from raw latencies (in any order).
    pub fn new(
        target: impl Into<String>,
        mut latencies: Vec<Duration>,
        errors: u64,
        elapsed: Duration,
    ) -> Self {
        latencies.sort_unstable();
        Self {
            target: target.into(),
            ok: latencies.len() as u64,
            errors,
            elapsed,
            latencies,
        }
    }

    /// All requests sent: successes and errors.
    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }

    /// Successful requests per second of wall time (0 for an empty run).
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` (0.5 is the median), nearest rank; `None` when no
    /// request succeeded or `q` is outside `0.0..=1.0`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use roundrobin_benches::LoadReport;
    ///
    /// let ms = Duration::from_millis;
    /// let r = LoadReport::new("t", vec![ms(3), ms(1), ms(2), ms(4)], 0, ms(10));
    /// assert_eq!(r.percentile(0.5), Some(ms(2)));
    /// assert_eq!(r.percentile(0.99), Some(ms(4)));
    /// assert_eq!(r.percentile(1.5), None);
    /// ```
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        percentile(&self.latencies, q)
    }
}

/// The value at quantile `q` of `sorted` (ascending), nearest rank; `None` when
/// `sorted` is empty or `q` is outside `0.0..=1.0`.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if !(0.0..=1.0).contains(&q) || sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Loads `target` as `config` says and reports what it measured.
///
/// The clients share one keep-alive connection pool, so each holds its own
/// connection after the first request. Connection errors and timeouts are counted,
/// never retried.
pub async fn load(target: &Target, config: &LoadConfig) -> LoadReport {
    let client = client();
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let client = client.clone();
        let url = target.url.clone();
        let timeout = config.request_timeout;
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match tokio::time::timeout(timeout, get(&client, url.clone())).await {
                    Ok(Ok(())) => latencies.push(sent.elapsed()),
                    Ok(Err(_)) | Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = workers.join_next().await {
        match done {
            Ok((l, e)) => {
                latencies.extend(l);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    LoadReport::new(target.name.clone(), latencies, errors, start.elapsed())
}

/// The HTTP/1.1 keep-alive client [`load`] uses.
pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Why a single request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be sent or its response not read.
    #[error("request failed: {0}")]
    Http(#[source] hyper_util::client::legacy::Error),
    /// The body failed mid-way.
    #[error("response body failed: {0}")]
    Body(#[source] hyper::Error),
    /// The status was not 2xx.
    #[error("status {0}")]
    Status(http::StatusCode),
}

/// Sends one GET to `url` and reads the whole response body.
pub async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: Uri,
) -> Result<(), RequestError> {
    let response = client.get(url).await.map_err(RequestError::Http)?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(RequestError::Body)?;
    if status.is_success() {
        Ok(())
    } else {
        Err(RequestError::Status(status))
    }
}

/// A markdown table of `reports` (target, requests, req/s, p50, p99, overhead vs
/// `reports[baseline]`). Overhead is the p50 difference per request and the relative
/// throughput change; the baseline row says `baseline`.
///
/// ```
/// use core::time::Duration;
/// use roundrobin_benches::{markdown_table, LoadReport};
///
/// let us = Duration::from_micros;
/// let direct = LoadReport::new("direct", vec![us(100); 10], 0, Duration::from_millis(1));
/// let proxy = LoadReport::new("proxy", vec![us(150); 8], 0, Duration::from_millis(1));
/// let table = markdown_table(&[direct, proxy], 0);
/// assert!(table.contains("| direct | 10 | 10000 | 100 µs | 100 µs | baseline |"));
/// assert!(table.contains("| proxy | 8 | 8000 | 150 µs | 150 µs | +50 µs p50, -20.0% req/s |"));
/// ```
pub fn markdown_table(reports: &[LoadReport], baseline: usize) -> String {
    let mut out = String::from(
        "| target | requests | req/s | p50 | p99 | overhead vs direct |\n\
         |---|---:|---:|---:|---:|---|\n",
    );
    let base = reports.get(baseline);
    for (i, r) in reports.iter().enumerate() {
        let overhead = match base {
            _ if i == baseline => "baseline".to_owned(),
            Some(b) => overhead(r, b),
            None => "-".to_owned(),
        };
        let _ = write!(
            out,
            "| {} | {} | {:.0} | {} | {} | {overhead}",
            r.target,
            r.requests(),
            r.requests_per_sec(),
            micros(r.percentile(0.5)),
            micros(r.percentile(0.99)),
        );
        if r.errors > 0 {
            let _ = write!(out, " ({} errors)", r.errors);
        }
        out.push_str(" |\n");
    }
    out
}

fn overhead(r: &LoadReport, base: &LoadReport) -> String {
    let p50 = match (r.percentile(0.5), base.percentile(0.5)) {
        (Some(a), Some(b)) => {
            let delta = a.as_micros() as i128 - b.as_micros() as i128;
            format!("{delta:+} µs p50")
        }
        _ => "- p50".to_owned(),
    };
    let base_rps = base.requests_per_sec();
    if base_rps > 0.0 {
        let change = (r.requests_per_sec() / base_rps - 1.0) * 100.0;
        format!("{p50}, {change:+.1}% req/s")
    } else {
        p50
    }
}

fn micros(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{} µs", d.as_micros()))
}

/// A server on 127.0.0.1 that stops when dropped: `roundrobin-hyper`'s [`Serving`].
pub type Running = Serving;

/// `http://ADDR/` of a running server.
pub fn url_of(server: &Serving) -> Uri {
    Uri::from_maybe_shared(format!("http://{}/", server.local_addr()))
        .expect("a socket address makes a valid authority")
}

/// Starts a hyper backend on 127.0.0.1 (free port) answering every request with 200
/// and [`BACKEND_BODY`].
pub async fn start_backend() -> io::Result<Running> {
    spawn_on(
        "127.0.0.1:0",
        service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BACKEND_BODY))))
        }),
    )
    .await
}

/// Starts the `roundrobin-hyper` balancer on 127.0.0.1 (free port) over `backends`
/// (weight 1 each), forwarding with the default [`Forwarder`].
pub async fn start_balancer(backends: &[&Running]) -> io::Result<Running> {
    let balancer = Balancer::builder(RoundRobin::new()).service(Forwarder::new());
    for backend in backends {
        let url = backend.url();
        balancer
            .pool()
            .upsert_server(url, None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    }
    spawn_on("127.0.0.1:0", balancer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> LoadConfig {
        LoadConfig {
            duration: Duration::from_millis(200),
            concurrency: 2,
            request_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_the_backend_directly_and_through_the_balancer() {
        let backend = start_backend().await.unwrap();
        let balancer = start_balancer(&[&backend]).await.unwrap();
        for url in [url_of(&backend), url_of(&balancer)] {
            let report = load(&Target::new("t", url), &short()).await;
            assert!(report.ok > 0, "{report:?}");
            assert_eq!(report.errors, 0, "{report:?}");
            assert!(report.percentile(0.5) <= report.percentile(0.99));
        }
    }

    #[tokio::test]
    async fn counts_failures_as_errors() {
        // A balancer with no servers answers 503 to everything.
        let empty = start_balancer(&[]).await.unwrap();
        let report = load(&Target::new("empty", url_of(&empty)), &short()).await;
        assert_eq!(report.ok, 0);
        assert!(report.errors > 0);
        assert!(matches!(
            get(&client(), url_of(&empty)).await,
            Err(RequestError::Status(s)) if s == http::StatusCode::SERVICE_UNAVAILABLE
        ));
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let ms = Duration::from_millis;
        let sorted: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(ms(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(ms(99)));
        assert_eq!(percentile(&sorted, 0.0), Some(ms(1)));
        assert_eq!(percentile(&sorted, 1.0), Some(ms(100)));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&sorted, -0.1), None);
    }

    #[test]
    fn table_marks_errors_and_missing_baseline() {
        let us = Duration::from_micros;
        let r = LoadReport::new("x", vec![us(10)], 3, Duration::from_secs(1));
        let t = markdown_table(&[r], 5);
        assert!(
            t.contains("| x | 4 | 1 | 10 µs | 10 µs | - (3 errors) |"),
            "{t}"
        );
    }
}
