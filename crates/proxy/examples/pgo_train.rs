//! The training run of a profile-guided (PGO) build of the proxy: `cargo xtask dist`
//! builds an instrumented binary, runs this against it, and builds the release binary
//! again with the profile the runs wrote.
//!
//! ```text
//! cargo run --release -p roundrobin-proxy --example pgo_train -- PROXY_BINARY [SECONDS]
//! ```
//!
//! Everything runs on 127.0.0.1 (free ports): three hyper backends in this process
//! (weights 3:2:1, a 3-byte answer, request bodies read to the end), and the binary
//! under training started three times, each stopped with SIGTERM so that it writes
//! its profile on the way out (where to: the `LLVM_PROFILE_FILE` this process was
//! given, which the binary inherits):
//!
//! 1. one worker, defaults: HTTP/1.1 keep-alive `GET`s over 32 connections, uploads
//!    (`POST`, 16 KiB) over 4, and cleartext HTTP/2 (prior knowledge) over 4;
//! 2. two workers, `--sticky _backend --rebalance --access-log json`: the full
//!    balancer, half the clients sending back the cookie they were given;
//! 3. one worker with TLS (`--tls-cert`, `--tls-key`; a certificate made here):
//!    HTTP/1.1 and h2 by ALPN.
//!
//! Each phase loads for `SECONDS` (default 4) split over its clients. The run fails
//! if a request fails or the binary does not exit cleanly: a profile of errors would
//! teach the compiler the wrong paths.

use core::convert::Infallible;
use core::future::Future;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_hyper::{spawn_on, Serving};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

#[path = "../../hyper/tests/support/pki.rs"]
mod pki;

type Result<T = ()> = core::result::Result<T, String>;

/// Bytes of each upload.
const UPLOAD: usize = 16 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bin) = args.first().map(PathBuf::from) else {
        eprintln!("usage: pgo_train PROXY_BINARY [SECONDS]");
        return ExitCode::from(2);
    };
    let seconds = match args.get(1).map(|s| s.parse::<u64>()) {
        None => 4,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            eprintln!("pgo_train: SECONDS must be a whole number of seconds, at least 1");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgo_train: {e}");
            return ExitCode::FAILURE;
        }
    };
    let phase = Duration::from_secs(seconds);
    // Bounded: three phases, each with a start, its load and a drain.
    let limit = 3 * (phase + Duration::from_secs(40));
    match runtime.block_on(async { tokio::time::timeout(limit, train(&bin, phase)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("pgo_train: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("pgo_train: did not finish within {} s", limit.as_secs());
            ExitCode::FAILURE
        }
    }
}

/// The three phases of the module docs, `phase` of load each.
pub(crate) async fn train(bin: &Path, phase: Duration) -> Result {
    let mut backends = Vec::new();
    for name in ["b1\n", "b2\n", "b3\n"] {
        backends.push(backend(name).await?);
    }
    let mut backend_args: Vec<String> = Vec::new();
    for (b, w) in backends.iter().zip([3, 2, 1]) {
        backend_args.extend(["--backend".into(), format!("http://{}={w}", b.local_addr())]);
    }
    // `extra`, then the backends.
    let with = |extra: &[&str]| {
        let mut a: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        a.extend(backend_args.iter().cloned());
        a
    };

    let (plain, h2c) = (&plain_client(), &h2c_client());

    // 1. One worker, the defaults.
    let args = with(&["--workers", "1"]);
    run_phase(bin, &args, "http", "defaults, 1 worker", |url| async move {
        let (gets, uploads, h2) = tokio::try_join!(
            load(plain, &url, 32, phase, Shape::Get),
            load(plain, &url, 4, phase, Shape::Upload),
            load(h2c, &url, 4, phase, Shape::Get),
        )?;
        Ok(vec![("GETs", gets), ("uploads", uploads), ("h2c GETs", h2)])
    })
    .await?;

    // 2. The full balancer on two workers.
    let args = with(&[
        "--workers",
        "2",
        "--sticky",
        "_backend",
        "--rebalance",
        "--access-log",
        "json",
    ]);
    let what = "sticky + rebalance + access log, 2 workers";
    run_phase(bin, &args, "http", what, |url| async move {
        let (gets, sticky) = tokio::try_join!(
            load(plain, &url, 16, phase, Shape::Get),
            load(plain, &url, 16, phase, Shape::Sticky),
        )?;
        Ok(vec![("GETs", gets), ("with the cookie", sticky)])
    })
    .await?;

    // 3. TLS, with a certificate made here.
    let dir = std::env::temp_dir().join(format!("roundrobin-pgo-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = pki::Ca::new();
    let (cert, key, _) = ca.leaf("pgo-train");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let written = std::fs::write(&cert_path, cert).and_then(|()| std::fs::write(&key_path, key));
    let (cert_arg, key_arg) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let args = with(&[
        "--workers",
        "1",
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
    ]);
    let connector = || {
        HttpsConnectorBuilder::new()
            .with_tls_config(ca.client_config(&[]))
            .https_only()
    };
    let h1 = &Client::builder(TokioExecutor::new()).build(connector().enable_http1().build());
    let h2 = &Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector().enable_http2().build());
    let result = match written {
        Ok(()) => {
            run_phase(bin, &args, "https", "TLS, 1 worker", |url| async move {
                let (h1, h2) = tokio::try_join!(
                    load(h1, &url, 16, phase, Shape::Get),
                    load(h2, &url, 4, phase, Shape::Get),
                )?;
                Ok(vec![("HTTP/1.1 GETs", h1), ("h2 GETs", h2)])
            })
            .await
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    for b in backends {
        b.shutdown().await;
    }
    Ok(())
}

/// A plain HTTP/1.1 client.
fn plain_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A cleartext HTTP/2 client (prior knowledge).
fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// One phase: starts the binary with `args`, runs `loads` against its URL
/// (`SCHEME://ADDR/`), stops it (so it writes its profile) and prints `what` with the
/// requests each load had answered.
async fn run_phase<F, Fut>(
    bin: &Path,
    args: &[String],
    scheme: &str,
    what: &str,
    loads: F,
) -> Result
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Vec<(&'static str, u64)>>>,
{
    let proxy = Proxy::start(bin, args).await?;
    let answered = loads(format!("{scheme}://{}/", proxy.addr)).await?;
    proxy.stop().await?;
    let answered: Vec<String> = answered
        .iter()
        .map(|(load, n)| format!("{n} {load}"))
        .collect();
    eprintln!("pgo_train: {what}: {}", answered.join(", "));
    Ok(())
}

/// A backend answering `body` (3 bytes) after reading the request's body to the end.
async fn backend(body: &'static str) -> Result<Serving> {
    let answer = service_fn(move |req: Request<Incoming>| async move {
        let _ = req.into_body().collect().await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))))
    });
    spawn_on("127.0.0.1:0", answer)
        .await
        .map_err(|e| format!("backend: {e}"))
}

/// The binary under training, running.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    /// Starts `bin` with `args` on a free port and waits for its `listening on` line;
    /// the rest of its output (an access log) is read and dropped.
    async fn start(bin: &Path, args: &[String]) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await
            .map_err(|e| format!("reading the proxy's output: {e}"))?
            .ok_or("the proxy exited before listening")?;
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the proxy: {first}"))?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    /// SIGTERM, then waits for a clean exit (the profile is written on the way out).
    async fn stop(mut self) -> Result {
        let pid = self.child.id().ok_or("the proxy already exited")?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid}: {sent}"));
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| "the proxy did not exit within 30 s of SIGTERM".to_owned())?
            .map_err(|e| format!("waiting for the proxy: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the proxy exited with {status}"))
        }
    }
}

/// What each client of [`load`] sends.
#[derive(Clone, Copy)]
enum Shape {
    /// `GET /`.
    Get,
    /// `POST /` with [`UPLOAD`] bytes.
    Upload,
    /// `GET /` sending back the sticky cookie of the last answer.
    Sticky,
}

/// `clients` clients, each sending one request after another to `url` for `time`;
/// the number of requests answered. Fails at the first request that fails.
async fn load<C>(
    client: &Client<C, Full<Bytes>>,
    url: &str,
    clients: usize,
    time: Duration,
    shape: Shape,
) -> Result<u64>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + time;
    let upload = Bytes::from(vec![b'x'; UPLOAD]);
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (client, url, done, upload) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(&done),
            upload.clone(),
        );
        tasks.spawn(async move {
            let mut cookie: Option<http::HeaderValue> = None;
            while Instant::now() < end {
                let mut req = Request::builder().uri(&url);
                let body = match shape {
                    Shape::Get | Shape::Sticky => Full::new(Bytes::new()),
                    Shape::Upload => {
                        req = req.method(Method::POST);
                        Full::new(upload.clone())
                    }
                };
                if let Some(c) = &cookie {
                    req = req.header(COOKIE, c.clone());
                }
                let req = req.body(body).map_err(|e| e.to_string())?;
                let res = client
                    .request(req)
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if !res.status().is_success() {
                    return Err(format!("{url}: status {}", res.status()));
                }
                if matches!(shape, Shape::Sticky) {
                    if let Some(set) = res.headers().get(SET_COOKIE) {
                        let pair = set.to_str().unwrap_or("").split(';').next().unwrap_or("");
                        cookie = http::HeaderValue::from_str(pair).ok();
                    }
                }
                res.into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| e.to_string())??;
    }
    Ok(done.load(Ordering::Relaxed))
}
