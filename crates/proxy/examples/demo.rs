//! The project demo: a balancer with the rebalancer and sticky sessions in front of
//! three local backends, one of which fails for a while and then heals.
//!
//! ```text
//! cargo xtask demo                 # about 30 s
//! cargo xtask demo --seconds 10    # shorter
//! cargo xtask demo --web           # with the live dashboard (120 s unless --seconds)
//! ```
//!
//! Everything runs in this process on 127.0.0.1 (free ports): three hyper backends
//! `a`, `b` and `c`; the balancer (weighted round robin, rebalancer with a 1 s backoff
//! and a short error-ratio window, sticky cookie); and four clients sending about
//! 50 requests/s each. Backend `b` answers 30 % of its requests with 500 during the
//! first half of the run (a seeded PRNG decides which), then heals. One client keeps
//! the sticky cookie, the other three do not.
//!
//! Once per second it shows each backend's weight, rating (its error ratio over the
//! window) and share of the traffic in the last second, redrawn in place on a
//! terminal and as successive blocks otherwise. Watch `b`'s share drop while it fails
//! and come back after it heals. At the end: `b`'s share while failing vs after
//! healing, total requests, errors, and p50/p99 latency seen by the clients.
//!
//! With `--web` it also serves the admin API and its dashboard (`roundrobin_hyper::Admin`)
//! on a free loopback port and prints `dashboard on http://127.0.0.1:PORT/`: open it to
//! watch the weights, shares and ratings move as charts.
//!
//! Every request is bounded by a 2 s timeout and everything stops at the end.

use core::convert::Infallible;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{spawn_on, Admin, Balancer, Forwarder, Serving};
use roundrobin_rebalancer::{ErrorRatioMeter, Rebalancer};
use roundrobin_sticky::StickySession;
use tokio::task::JoinSet;

/// The backends, in pool order.
const NAMES: [&str; 3] = ["a", "b", "c"];
/// The backend that fails during the first half of the run.
const FAILING: usize = 1;
/// Out of 10 requests to the failing backend, how many get a 500 (on average).
const FAILURES_PER_10: u64 = 3;
/// Seed of the PRNG that picks the failing requests.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// Clients; the first [`STICKY_CLIENTS`] keep the sticky cookie.
const CLIENTS: usize = 4;
const STICKY_CLIENTS: usize = 1;
/// Requests per second per client.
const RATE: u32 = 50;
/// The longest any request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between two rebalancer steps.
const BACKOFF: Duration = Duration::from_secs(1);
/// The sticky cookie.
const COOKIE_NAME: &str = "demo_backend";
/// Default length of the run.
const DEFAULT_SECONDS: u64 = 30;
/// Default length of a run with the dashboard: time to open it and watch a minute.
const DEFAULT_WEB_SECONDS: u64 = 120;
/// Shortest run that has a failing and a healed half.
const MIN_SECONDS: u64 = 2;

/// A tiny xorshift64 PRNG: deterministic for a seed, good enough to spread failures.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// What a backend shares with the demo.
#[derive(Debug)]
struct BackendState {
    name: &'static str,
    /// Requests received.
    hits: AtomicU64,
    /// Whether it fails some requests now (only the failing backend ever does).
    failing: AtomicBool,
    rng: Mutex<XorShift>,
}

impl BackendState {
    fn answer(&self) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, Ordering::Relaxed);
        let fail = self.failing.load(Ordering::Relaxed)
            && self
                .rng
                .lock()
                .is_ok_and(|mut rng| rng.next() % 10 < FAILURES_PER_10);
        let mut response = Response::new(Full::new(Bytes::from_static(self.name.as_bytes())));
        if fail {
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        response
    }
}

async fn start_backend(state: Arc<BackendState>) -> std::io::Result<Serving> {
    spawn_on(
        "127.0.0.1:0",
        service_fn(move |_req: Request<Incoming>| {
            let response = state.answer();
            async move { Ok::<_, Infallible>(response) }
        }),
    )
    .await
}

/// What the clients saw.
#[derive(Debug, Default)]
struct ClientStats {
    /// Whether this client keeps the sticky cookie.
    sticky: bool,
    requests: u64,
    latencies: Vec<Duration>,
    errors: u64,
    /// For sticky clients: requests answered by each backend.
    answered_by: [u64; NAMES.len()],
}

async fn client(
    client: Client<HttpConnector, Empty<Bytes>>,
    url: Uri,
    sticky: bool,
    deadline: Instant,
) -> ClientStats {
    let mut stats = ClientStats {
        sticky,
        ..ClientStats::default()
    };
    let mut cookie: Option<HeaderValue> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            return stats;
        }
        let mut request = Request::get(url.clone());
        if let Some(cookie) = &cookie {
            request = request.header(COOKIE, cookie.clone());
        }
        let Ok(request) = request.body(Empty::new()) else {
            stats.errors += 1;
            continue;
        };
        stats.requests += 1;
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = client.request(request).await.ok()?;
            let status = response.status();
            let set_cookie = response.headers().get(SET_COOKIE).cloned();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, set_cookie, body))
        })
        .await;
        let Ok(Some((status, set_cookie, body))) = answer else {
            stats.errors += 1;
            continue;
        };
        stats.latencies.push(sent.elapsed());
        if !status.is_success() {
            stats.errors += 1;
        }
        if sticky {
            if let Some(pair) = set_cookie
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .and_then(|pair| HeaderValue::from_str(pair.trim()).ok())
            {
                cookie = Some(pair);
            }
            if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == body) {
                stats.answered_by[i] += 1;
            }
        }
    }
}

/// What the run measured.
#[derive(Debug)]
struct Summary {
    requests: u64,
    errors: u64,
    /// The failing backend's share of all backend requests while it failed, and after.
    share_failing: f64,
    share_healed: f64,
    /// The failing backend's share had all weights stayed equal.
    equal_share: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    /// Requests of the sticky clients answered by each backend.
    sticky_answered_by: [u64; NAMES.len()],
    /// The highest weight any healthy backend reached.
    max_healthy_weight: u32,
}

/// The demo's failure modes before it runs.
#[derive(Debug)]
enum DemoError {
    Io(std::io::Error),
    Setup(String),
}

impl core::fmt::Display for DemoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Setup(e) => write!(f, "setup: {e}"),
        }
    }
}

impl From<std::io::Error> for DemoError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn setup(e: impl core::fmt::Display) -> DemoError {
    DemoError::Setup(e.to_string())
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

/// Runs the demo for `seconds`, drawing to `out` (in place when `redraw`), with the
/// admin dashboard when `web`.
async fn run(
    seconds: u64,
    out: &mut impl Write,
    redraw: bool,
    web: bool,
) -> Result<Summary, DemoError> {
    let states: Vec<Arc<BackendState>> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Arc::new(BackendState {
                name,
                hits: AtomicU64::new(0),
                failing: AtomicBool::new(i == FAILING),
                rng: Mutex::new(XorShift(SEED)),
            })
        })
        .collect();
    let mut backends = Vec::new();
    for state in &states {
        backends.push(start_backend(Arc::clone(state)).await?);
    }

    // A window of about a sixth of the run (at least 2 s, so a rating never rests on
    // a just-started second alone): the meters are ready early and `b`'s errors leave
    // the window soon after it heals.
    let window = usize::try_from((seconds / 6).max(2)).map_err(setup)?;
    ErrorRatioMeter::new(window, Duration::from_secs(1)).map_err(setup)?;
    let rebalancer = Rebalancer::builder(RoundRobin::<ServerUrl>::new())
        .backoff(BACKOFF)
        .meter(move || {
            Box::new(ErrorRatioMeter::new(window, Duration::from_secs(1)).unwrap_or_default())
        })
        .build()
        .map_err(setup)?;
    let pool = Arc::new(rebalancer);
    let mut urls = Vec::new();
    for backend in &backends {
        let url = backend.url();
        pool.upsert_server(url.clone(), None).map_err(setup)?;
        urls.push(url);
    }
    let session = StickySession::try_new(COOKIE_NAME).map_err(setup)?;
    let balancer = Balancer::builder(Arc::clone(&pool))
        .sticky(session)
        .service(Forwarder::new().timeout(REQUEST_TIMEOUT));
    let proxy = spawn_on("127.0.0.1:0", balancer).await?;
    let proxy_url: Uri = format!("{}/", proxy.url()).parse().map_err(setup)?;
    let dashboard = if web {
        let admin = spawn_on("127.0.0.1:0", Admin::new(Arc::clone(&pool))).await?;
        writeln!(out, "dashboard on http://{}/\n", admin.local_addr())?;
        out.flush()?;
        Some(admin)
    } else {
        None
    };

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let http = Client::builder(TokioExecutor::new()).build_http();
    let mut clients = JoinSet::new();
    for i in 0..CLIENTS {
        clients.spawn(client(
            http.clone(),
            proxy_url.clone(),
            i < STICKY_CLIENTS,
            deadline,
        ));
    }

    let half = seconds / 2;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last = [0u64; NAMES.len()];
    let mut at_half = [0u64; NAMES.len()];
    let mut max_healthy_weight = 0;
    let mut drawn = 0;
    for second in 1..=seconds {
        tick.tick().await;
        let hits: Vec<u64> = states
            .iter()
            .map(|s| s.hits.load(Ordering::Relaxed))
            .collect();
        if second == half {
            at_half.copy_from_slice(&hits);
            states[FAILING].failing.store(false, Ordering::Relaxed);
        }
        let snapshot = pool.snapshot();
        for (i, url) in urls.iter().enumerate() {
            if i != FAILING {
                if let Some(s) = snapshot.iter().find(|s| &s.server == url) {
                    max_healthy_weight = max_healthy_weight.max(s.current_weight);
                }
            }
        }
        // The block shows the last second: `b` failed in it up to the half.
        let state = if second <= half {
            "failing: 30 % of its requests answer 500".to_owned()
        } else {
            format!("healed at t = {half} s")
        };
        let mut block = format!("t = {second:>3} s   backend {} {state}\n", NAMES[FAILING]);
        block.push_str("backend  address                 weight  rating  share (last 1 s)\n");
        let total: u64 = hits.iter().zip(&last).map(|(h, l)| h - l).sum();
        for (i, url) in urls.iter().enumerate() {
            let status = snapshot.iter().find(|s| &s.server == url);
            let _ = writeln!(
                block,
                "{:<8} {:<23} {:>6}  {:>6.3}  {:>6.1} %",
                NAMES[i],
                backends[i].local_addr().to_string(),
                status.map_or(0, |s| s.current_weight),
                status.map_or(0.0, |s| s.rating),
                share(hits[i] - last[i], total) * 100.0,
            );
        }
        last.copy_from_slice(&hits);
        if redraw && drawn > 0 {
            write!(out, "\x1b[{drawn}A")?;
        }
        drawn = 0;
        for line in block.lines() {
            if redraw {
                write!(out, "\x1b[2K")?;
            }
            writeln!(out, "{line}")?;
            drawn += 1;
        }
        if !redraw {
            writeln!(out)?;
        }
        out.flush()?;
    }

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut requests = 0;
    let mut sticky_answered_by = [0; NAMES.len()];
    let mut sticky_requests = 0;
    // The clients stop at the deadline; a request in flight ends within its timeout.
    let drained = tokio::time::timeout(REQUEST_TIMEOUT * 2, async {
        while let Some(done) = clients.join_next().await {
            if let Ok(stats) = done {
                latencies.extend(stats.latencies);
                errors += stats.errors;
                requests += stats.requests;
                if stats.sticky {
                    sticky_requests += stats.requests;
                }
                for (sum, n) in sticky_answered_by.iter_mut().zip(stats.answered_by) {
                    *sum += n;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        clients.abort_all();
    }
    drop(proxy);
    drop(dashboard);
    drop(backends);

    let end: Vec<u64> = states
        .iter()
        .map(|s| s.hits.load(Ordering::Relaxed))
        .collect();
    let failing_total: u64 = at_half.iter().sum();
    let healed_total: u64 = end.iter().sum::<u64>() - failing_total;
    latencies.sort_unstable();
    Ok(Summary {
        requests,
        errors,
        share_failing: share(at_half[FAILING], failing_total),
        share_healed: share(end[FAILING] - at_half[FAILING], healed_total),
        equal_share: share(
            (requests - sticky_requests) / NAMES.len() as u64 + sticky_answered_by[FAILING],
            requests,
        ),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        sticky_answered_by,
        max_healthy_weight,
    })
}

fn print_summary(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0),
        )
    };
    writeln!(out, "\nsummary")?;
    writeln!(
        out,
        "  backend {} share of traffic: {:.1} % while failing, {:.1} % after healing \
         ({:.1} % at equal weights, the sticky client included)",
        NAMES[FAILING],
        s.share_failing * 100.0,
        s.share_healed * 100.0,
        s.equal_share * 100.0,
    )?;
    writeln!(
        out,
        "  highest weight of a healthy backend: {}",
        s.max_healthy_weight
    )?;
    writeln!(out, "  requests: {}, errors: {}", s.requests, s.errors)?;
    writeln!(out, "  latency: p50 {}, p99 {}", ms(s.p50), ms(s.p99))?;
    let sticky: Vec<String> = NAMES
        .iter()
        .zip(s.sticky_answered_by)
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    writeln!(
        out,
        "  the client keeping the sticky cookie was answered by {}",
        sticky.join(", ")
    )?;
    out.flush()
}

const USAGE: &str =
    "usage: demo [--seconds N] [--web]   (N >= 2, default 30; 120 with --web, which serves the dashboard)";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    seconds: u64,
    /// Serve the admin dashboard.
    web: bool,
}

/// The run's length and whether to serve the dashboard, from the command line.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut seconds = None;
    let mut web = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n >= MIN_SECONDS)
                        .ok_or_else(|| {
                            format!("--seconds takes a whole number >= {MIN_SECONDS}")
                        })?,
                );
            }
            "--web" => web = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let default = if web {
        DEFAULT_WEB_SECONDS
    } else {
        DEFAULT_SECONDS
    };
    Ok(Options {
        seconds: seconds.unwrap_or(default),
        web,
    })
}

fn main() -> ExitCode {
    let Options { seconds, web } = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("demo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let redraw = stdout.is_terminal();
    let mut out = stdout.lock();
    let _ = writeln!(
        out,
        "roundrobin demo: {} backends, rebalancer (backoff {} s), sticky cookie `{COOKIE_NAME}`, \
         {CLIENTS} clients x {RATE} req/s ({STICKY_CLIENTS} keeps the cookie), {seconds} s\n",
        NAMES.len(),
        BACKOFF.as_secs(),
    );
    let result = runtime.block_on(run(seconds, &mut out, redraw, web));
    // Tasks still running (connections closing) are dropped, never waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result.map(|summary| print_summary(&mut out, &summary)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<u64, String> {
        parse_args(s.split_whitespace().map(String::from)).map(|o| o.seconds)
    }

    #[test]
    fn parses_seconds_and_web() {
        assert_eq!(args(""), Ok(DEFAULT_SECONDS));
        assert_eq!(args("--seconds 7"), Ok(7));
        assert_eq!(args("--web"), Ok(DEFAULT_WEB_SECONDS));
        let web = |s: &str| parse_args(s.split_whitespace().map(String::from));
        assert_eq!(
            web("--web --seconds 5"),
            Ok(Options {
                seconds: 5,
                web: true
            })
        );
        assert_eq!(
            web("--seconds 5"),
            Ok(Options {
                seconds: 5,
                web: false
            })
        );
        assert!(args("--seconds 1").is_err());
        assert!(args("--seconds").is_err());
        assert!(args("--seconds x").is_err());
        assert!(args("--fast").is_err());
    }

    #[test]
    fn xorshift_is_deterministic_and_fails_about_30_percent() {
        let mut a = XorShift(SEED);
        let mut b = XorShift(SEED);
        let mut failures = 0;
        for _ in 0..10_000 {
            let x = a.next();
            assert_eq!(x, b.next());
            failures += u64::from(x % 10 < FAILURES_PER_10);
        }
        assert!((2_700..3_300).contains(&failures), "{failures}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_rebalances_sticks_and_stops() {
        let mut out = Vec::new();
        let summary = run(6, &mut out, false, false).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out.lines().filter(|l| l.starts_with("t = ")).count(),
            6,
            "{out}"
        );
        assert!(!out.contains('\x1b'), "plain output has no escapes");
        assert!(out.contains("backend b failing") && out.contains("backend b healed at t = 3 s"));
        assert!(summary.requests > 0);
        assert!(summary.errors > 0, "b failed some requests: {summary:?}");
        assert!(summary.errors < summary.requests, "{summary:?}");
        assert!(
            summary.max_healthy_weight > 1,
            "the rebalancer moved traffic: {summary:?}"
        );
        let pinned = summary
            .sticky_answered_by
            .iter()
            .filter(|n| **n > 0)
            .count();
        assert_eq!(
            pinned, 1,
            "the sticky client stays on one backend: {summary:?}"
        );
        assert!(summary.p50 <= summary.p99);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn web_serves_the_dashboard_on_loopback() {
        let mut out = Vec::new();
        run(MIN_SECONDS, &mut out, false, true).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let line = out.lines().next().unwrap();
        let addr = line
            .strip_prefix("dashboard on http://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(addr.parse::<u16>().is_ok_and(|port| port != 0), "{line}");
    }
}
