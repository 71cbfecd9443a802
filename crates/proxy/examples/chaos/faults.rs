//! Fault scenarios against the `roundrobin-proxy` binary over 127.0.0.1: backends that
//! die, hang, cut responses short or refuse; clients that dribble, abort or sit idle;
//! large bodies. Each scenario runs the proxy as a process, loads it, and reports what
//! every request got, how many were retried, and the proxy's memory and descriptors
//! before and after. Shared by `tests/faults.rs` (short, with assertions) and the
//! `chaos` example (`cargo xtask chaos --seconds N`, longer, a table).

#![allow(dead_code, unreachable_pub)] // each user takes a part; pub for the example and the test alike

use core::convert::Infallible;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How a backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers 200 with its name.
    Ok,
    /// Reads the request and never answers.
    Hang,
    /// Sends a head announcing 100 bytes, 10 of them, and closes.
    Half,
}

/// A backend on 127.0.0.1 that can be killed (every connection dropped at once) and
/// restarted on the same port.
pub struct Backend {
    pub addr: SocketAddr,
    name: &'static str,
    mode: Mode,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start(name: &'static str, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = Some(tokio::spawn(accept(listener, name, mode)));
        Self {
            addr,
            name,
            mode,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops the listener and every connection at once, as a crashed process would.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.task = Some(tokio::spawn(accept(listener, self.name, self.mode)));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cannot listen on {} again", self.addr);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept(listener: TcpListener, name: &'static str, mode: Mode) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if mode == Mode::Half {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                return;
            }
            let svc = service_fn(move |_req: Request<Incoming>| async move {
                if mode == Mode::Hang {
                    core::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A port nothing listens on.
pub async fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// The proxy as a process, with its stderr counted for retries.
pub struct Proxy {
    pub addr: SocketAddr,
    child: Child,
    retries: Arc<Mutex<u64>>,
}

impl Proxy {
    /// Starts `bin` with `args` (plus `--listen 127.0.0.1:0`) and waits for its
    /// `listening on` line.
    pub async fn start(bin: &Path, args: &[String]) -> Self {
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "roundrobin_hyper=debug,warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next_line().await.expect("a line").expect("a line");
        let addr = first
            .strip_prefix("listening on ")
            .expect("listening on ADDR")
            .parse()
            .expect("an address");
        let retries = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&retries);
        let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                if line.contains("retrying on another server") {
                    *counted.lock().expect("lock") += 1;
                }
            }
        });
        Self {
            addr,
            child,
            retries,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident memory in KiB and open descriptors.
    pub fn usage(&self) -> (u64, usize) {
        let pid = self.pid();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        (rss, fds)
    }

    /// Client connections the proxy still holds: sockets on its listening port that
    /// are not listening and not in `TIME_WAIT` (the kernel's, not the proxy's).
    pub fn client_connections(&self) -> usize {
        let port = format!(":{:04X}", self.addr.port());
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
            .filter(|line| {
                let mut cols = line.split_whitespace();
                let local = cols.nth(1).unwrap_or_default();
                let state = cols.nth(1).unwrap_or_default();
                local.ends_with(&port) && state != "0A" && state != "06"
            })
            .count()
    }

    pub fn retries(&self) -> u64 {
        *self.retries.lock().expect("lock")
    }

    /// Waits (at most `within`) until the proxy holds no client connection and its
    /// descriptors are back to `fds`; returns its descriptors then.
    /// Waits until the RSS is at most `kib`, or `within` passed; returns the RSS.
    pub async fn settle_memory(&self, kib: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let now = self.usage().0;
            if now <= kib || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn settle(&self, fds: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let now = self.usage().1;
            let settled = now <= fds && self.client_connections() == 0;
            if settled || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How far above its baseline the proxy's RSS may stay once a scenario's connections
/// are gone: what the allocator, the runtime's I/O slab and the upstream pool keep.
pub const MEMORY_SLACK_KIB: u64 = 16 * 1024;

/// What one scenario saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub name: &'static str,
    pub sent: u64,
    /// Requests that got a response head (any status).
    pub answered: u64,
    pub retried: u64,
    /// Requests that did not end in a complete 2xx, by kind (`502`, `504`,
    /// `truncated`, `no answer`, ...).
    pub failed: BTreeMap<String, u64>,
    pub rss_before_kib: u64,
    /// The most seen while the scenario ran, where it was sampled.
    pub peak_rss_kib: u64,
    pub rss_after_kib: u64,
    pub fds_before: usize,
    pub fds_after: usize,
    /// Client connections still open in the proxy after the clients left.
    pub client_connections_after: usize,
    /// Failures after the warm-up (100 clients for 300 ms), where a faulty backend
    /// usually costs its failures before it is ejected.
    pub late_failures: u64,
}

impl Report {
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Tallies of a load run.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    answered: u64,
    failed: BTreeMap<String, u64>,
    /// Failures of the tallies added after the first one.
    late: u64,
}

/// `clients` keep-alive clients send `GET /` to `addr`, each at most one request every
/// `pace`, until `until`. Every request is bounded by 10 s.
async fn load(addr: SocketAddr, clients: usize, pace: Duration, until: Instant) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let tally = Arc::clone(&tally);
        tasks.spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            while Instant::now() < until {
                let next = Instant::now() + pace;
                let req = Request::get(format!("http://{addr}/"))
                    .body(Empty::new())
                    .expect("a request");
                let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                    let res = client
                        .request(req)
                        .await
                        .map_err(|_| "no answer".to_owned())?;
                    let status = res.status();
                    let body = res.into_body().collect().await;
                    match (status, body) {
                        (StatusCode::OK, Ok(_)) => Ok(true),
                        (StatusCode::OK, Err(_)) => Err("truncated".to_owned()),
                        (s, _) => Err(s.as_u16().to_string()),
                    }
                })
                .await
                .unwrap_or_else(|_| Err("hung 10 s".to_owned()));
                {
                    let mut t = tally.lock().expect("lock");
                    t.sent += 1;
                    match outcome {
                        Ok(_) => t.answered += 1,
                        Err(kind) => {
                            if kind != "no answer" && kind != "hung 10 s" {
                                t.answered += 1;
                            }
                            *t.failed.entry(kind).or_default() += 1;
                        }
                    }
                }
                tokio::time::sleep_until(next).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(tally)
        .map(|m| m.into_inner().expect("lock"))
        .unwrap_or_default()
}

fn args(backends: &[String], extra: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = backends
        .iter()
        .flat_map(|b| ["--backend".to_owned(), b.clone()])
        .collect();
    out.extend(extra.iter().map(|s| (*s).to_owned()));
    out
}

fn report(
    name: &'static str,
    tally: Tally,
    proxy: &Proxy,
    before: (u64, usize),
    after: (u64, usize),
) -> Report {
    Report {
        name,
        sent: tally.sent,
        answered: tally.answered,
        retried: proxy.retries(),
        failed: tally.failed,
        rss_before_kib: before.0,
        peak_rss_kib: before.0.max(after.0),
        rss_after_kib: after.0,
        fds_before: before.1,
        fds_after: after.1,
        client_connections_after: proxy.client_connections(),
        late_failures: tally.late,
    }
}

/// Warms the proxy up (its upstream pool grows to what 100 concurrent clients need)
/// and returns its usage at rest, with what the warm-up requests got (they count: a
/// faulty backend costs its failures then just as later).
async fn baseline(proxy: &Proxy) -> ((u64, usize), Tally) {
    let warm = Instant::now() + Duration::from_millis(300);
    let tally = load(proxy.addr, 100, Duration::from_millis(5), warm).await;
    let _ = proxy.settle(0, Duration::from_millis(300)).await;
    (proxy.usage(), tally)
}

impl Tally {
    fn add(mut self, other: Self) -> Self {
        self.late += other.failed.values().sum::<u64>();
        self.sent += other.sent;
        self.answered += other.answered;
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self
    }
}

/// One of two backends is killed a third into the run and restarted at two thirds,
/// under steady GET load, with the proxy's defaults only.
pub async fn backend_killed(bin: &Path, run: Duration) -> Report {
    let a = Backend::start("a", Mode::Ok).await;
    let mut b = Backend::start("b", Mode::Ok).await;
    let proxy = Proxy::start(bin, &args(&[a.url(), b.url()], &[])).await;
    let (before, warm) = baseline(&proxy).await;
    let start = Instant::now();
    let load = tokio::spawn(load(proxy.addr, 8, Duration::from_millis(5), start + run));
    tokio::time::sleep(run / 3).await;
    b.kill();
    tokio::time::sleep(run / 3).await;
    b.restart().await;
    let tally = warm.add(load.await.unwrap_or_default());
    let fds = proxy.settle(before.1, Duration::from_secs(5)).await;
    let after = (proxy.usage().0, fds);
    report("backend killed and restarted", tally, &proxy, before, after)
}

/// A good backend and `faulty` (a URL), under steady load with `extra` flags.
async fn beside_a_good_one(
    bin: &Path,
    name: &'static str,
    faulty: String,
    extra: &[&str],
    run: Duration,
) -> Report {
    let a = Backend::start("a", Mode::Ok).await;
    let proxy = Proxy::start(bin, &args(&[a.url(), faulty], extra)).await;
    let (before, warm) = baseline(&proxy).await;
    let until = Instant::now() + run;
    let tally = warm.add(load(proxy.addr, 8, Duration::from_millis(5), until).await);
    let fds = proxy.settle(before.1, Duration::from_secs(5)).await;
    report(name, tally, &proxy, before, (proxy.usage().0, fds))
}

/// A backend that accepts and never answers, beside a good one (`--timeout 300ms`).
pub async fn backend_hangs(bin: &Path, run: Duration) -> Report {
    let h = Backend::start("h", Mode::Hang).await;
    let name = "backend never answers";
    beside_a_good_one(bin, name, h.url(), &["--timeout", "300ms"], run).await
}

/// A backend that sends half a response and closes, beside a good one.
pub async fn backend_half_response(bin: &Path, run: Duration) -> Report {
    let h = Backend::start("h", Mode::Half).await;
    beside_a_good_one(bin, "backend sends half a response", h.url(), &[], run).await
}

/// A backend whose port refuses connections, beside a good one.
pub async fn backend_refuses(bin: &Path, run: Duration) -> Report {
    let refused = refused_url().await;
    beside_a_good_one(bin, "backend refuses connections", refused, &[], run).await
}

/// 200 clients dribbling request heads (`--header-timeout 500ms`) and 100 that hang up
/// in the middle of an upload, while others load the proxy.
pub async fn slow_and_aborting_clients(bin: &Path, run: Duration) -> Report {
    let a = Backend::start("a", Mode::Ok).await;
    let proxy = Proxy::start(bin, &args(&[a.url()], &["--header-timeout", "500ms"])).await;
    let (before, warm) = baseline(&proxy).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        if let Ok(mut c) = TcpStream::connect(proxy.addr).await {
            let _ = c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
            slow.push(c);
        }
    }
    for _ in 0..100 {
        if let Ok(mut c) = TcpStream::connect(proxy.addr).await {
            let _ = c
                .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
            drop(c);
        }
    }
    let tally = load(
        proxy.addr,
        8,
        Duration::from_millis(5),
        Instant::now() + run,
    )
    .await;
    let tally = warm.add(tally);
    drop(slow);
    let fds = proxy.settle(before.1, Duration::from_secs(5)).await;
    report(
        "slow and aborting clients",
        tally,
        &proxy,
        before,
        (proxy.usage().0, fds),
    )
}

/// `n` idle keep-alive client connections (one request each, then silent), then
/// closed; the proxy must serve through it and give everything back.
pub async fn idle_connections(bin: &Path, n: usize) -> Report {
    let a = Backend::start("a", Mode::Ok).await;
    let proxy = Proxy::start(bin, &args(&[a.url()], &[])).await;
    let (before, warm) = baseline(&proxy).await;
    let mut idle = Vec::with_capacity(n);
    let mut tally = warm;
    for chunk in 0..n.div_ceil(100) {
        let mut opening = JoinSet::new();
        for _ in 0..100.min(n - chunk * 100) {
            let addr = proxy.addr;
            opening.spawn(async move {
                let mut c = TcpStream::connect(addr).await.ok()?;
                c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = [0u8; 256];
                let n = c.read(&mut buf).await.ok()?;
                buf[..n].starts_with(b"HTTP/1.1 200").then_some(c)
            });
        }
        while let Some(done) = opening.join_next().await {
            tally.sent += 1;
            match done.ok().flatten() {
                Some(c) => {
                    tally.answered += 1;
                    idle.push(c);
                }
                None => *tally.failed.entry("no answer".into()).or_default() += 1,
            }
        }
    }
    let peak = proxy.usage().0;
    let more = load(
        proxy.addr,
        4,
        Duration::from_millis(5),
        Instant::now() + Duration::from_millis(500),
    )
    .await;
    tally.sent += more.sent;
    tally.answered += more.answered;
    for (k, v) in more.failed {
        *tally.failed.entry(k).or_default() += v;
    }
    drop(idle);
    let fds = proxy.settle(before.1, Duration::from_secs(10)).await;
    // The allocator gives freed pages back within a second (jemalloc's decay, 250 ms).
    proxy
        .settle_memory(before.0 + MEMORY_SLACK_KIB, Duration::from_secs(30))
        .await;
    let mut r = report(
        "idle keep-alive connections",
        tally,
        &proxy,
        before,
        (proxy.usage().0, fds),
    );
    r.peak_rss_kib = peak;
    r
}

/// One request uploading `mib` MiB and one downloading it back (the backend echoes).
pub async fn large_bodies(bin: &Path, mib: u64) -> Report {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = echo.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(req.into_body()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(bin, &args(&[format!("http://{echo_addr}")], &[])).await;
    let (before, warm) = baseline(&proxy).await;
    let mut tally = warm;
    let total = mib * 1024 * 1024;
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = http_body_util::StreamBody::new(Rx(rx));
    let feeder = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            if tx.send(chunk.clone()).await.is_err() {
                return;
            }
            sent += chunk.len() as u64;
        }
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/", proxy.addr))
        .body(body)
        .expect("a request");
    tally.sent += 1;
    let mut peak = before.0;
    match client.request(req).await {
        Ok(res) => {
            tally.answered += 1;
            let mut body = res.into_body();
            let mut got = 0u64;
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        got += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if got % (16 * 1024 * 1024) < 65536 {
                            peak = peak.max(proxy.usage().0);
                        }
                    }
                    Some(Err(_)) => break,
                    None => break,
                }
            }
            if got != total {
                *tally
                    .failed
                    .entry(format!("echoed {got} of {total} bytes"))
                    .or_default() += 1;
            }
        }
        Err(_) => *tally.failed.entry("no answer".into()).or_default() += 1,
    }
    let _ = feeder.await;
    drop(client);
    server.abort();
    let fds = proxy.settle(before.1, Duration::from_secs(5)).await;
    let mut r = report(
        "large bodies both ways",
        tally,
        &proxy,
        before,
        (proxy.usage().0, fds),
    );
    r.peak_rss_kib = peak;
    r
}

/// A stream of frames from a channel.
struct Rx(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for Rx {
    type Item = Result<hyper::body::Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// The reports as one markdown table.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | sent | answered | retried | failed (by kind) | RSS before / peak / after (KiB) | fds before → after |\n|---|---:|---:|---:|---|---|---|\n",
    );
    for r in reports {
        let failed = if r.failed.is_empty() {
            "0".to_owned()
        } else {
            r.failed
                .iter()
                .map(|(k, v)| format!("{v} × {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} / {} | {} → {} |\n",
            r.name,
            r.sent,
            r.answered,
            r.retried,
            failed,
            r.rss_before_kib,
            r.peak_rss_kib,
            r.rss_after_kib,
            r.fds_before,
            r.fds_after
        ));
    }
    out
}
