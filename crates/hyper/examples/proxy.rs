//! A load-balancing reverse proxy on `roundrobin-hyper`.
//!
//! ```text
//! cargo run --release -p roundrobin-hyper --example proxy -- \
//!     --listen 127.0.0.1:8080 --backend http://127.0.0.1:9001 --backend http://127.0.0.1:9002=3 \
//!     --admin 127.0.0.1:8081
//! ```
//!
//! Prints `listening on ADDR` (and `admin on ADDR`) once the sockets are bound; bad
//! flags exit with status 2; Ctrl-C or SIGTERM stop accepting and let in-flight
//! requests finish.

use core::net::SocketAddr;
use core::time::Duration;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, ValueEnum};
use roundrobin_core::{Policy, RoundRobin, ServerUrl};
use roundrobin_hyper::{serve, Admin, Balancer, Forwarder, Pool};
use roundrobin_rebalancer::Rebalancer;
use roundrobin_sticky::codec::{Aes, Hash, Hmac, Raw};
use roundrobin_sticky::StickySession;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A weighted round-robin reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "proxy", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A backend, `URL` or `URL=WEIGHT`; repeat for more.
    #[arg(long = "backend", value_name = "URL[=WEIGHT]", value_parser = parse_backend)]
    backends: Vec<(ServerUrl, Option<u32>)>,
    /// The selection sequence.
    #[arg(long, value_enum, default_value_t = PolicyArg::Interleaved)]
    policy: PolicyArg,
    /// Weight of backends given without one.
    #[arg(long, default_value_t = 1)]
    default_weight: u32,
    /// How long a backend may take to answer (e.g. `500ms`, `30s`).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Move traffic away from failing backends.
    #[arg(long)]
    rebalance: bool,
    /// Time between two rebalancer steps.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    backoff: Duration,
    /// Pin clients to a backend with a cookie of this name.
    #[arg(long, value_name = "NAME")]
    sticky: Option<String>,
    /// How the sticky cookie names the backend.
    #[arg(long, value_enum, default_value_t = CodecArg::Hmac)]
    sticky_codec: CodecArg,
    /// Key of the hmac and aes codecs, hex.
    #[arg(long, value_name = "HEX")]
    sticky_key: Option<String>,
    /// Salt of the hash codec.
    #[arg(long, value_name = "STR")]
    sticky_salt: Option<String>,
    /// Lifetime of aes cookies.
    #[arg(long, value_parser = parse_duration)]
    sticky_ttl: Option<Duration>,
    /// Address of the JSON admin API (never the proxy's).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PolicyArg {
    Interleaved,
    Smooth,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    Raw,
    Hash,
    Hmac,
    Aes,
}

fn parse_backend(s: &str) -> Result<(ServerUrl, Option<u32>), String> {
    let (url, weight) = match s.rsplit_once('=') {
        Some((url, w)) if !w.contains('/') => {
            let w = w.parse().map_err(|e| format!("bad weight `{w}`: {e}"))?;
            (url, Some(w))
        }
        _ => (s, None),
    };
    let url = ServerUrl::parse(url).map_err(|e| format!("bad url `{url}`: {e}"))?;
    Ok((url, weight))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit: use ms, s, m or h"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("bad number in `{s}`"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Exits with status 2 and clap's usage.
fn usage_error(message: &str) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn pool(args: &Args) -> Arc<dyn Pool> {
    let policy = match args.policy {
        PolicyArg::Interleaved => Policy::Interleaved,
        PolicyArg::Smooth => Policy::Smooth,
    };
    let balancer = RoundRobin::<ServerUrl>::builder()
        .default_weight(args.default_weight)
        .policy(policy)
        .build();
    if !args.rebalance {
        return Arc::new(balancer);
    }
    match Rebalancer::builder(balancer).backoff(args.backoff).build() {
        Ok(rebalancer) => Arc::new(rebalancer),
        Err(e) => usage_error(&format!("--rebalance: {e}")),
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("--sticky-key must be an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// The sticky session the flags describe; every sticky flag that does not apply is an
/// error rather than silently ignored.
fn sticky(args: &Args) -> Result<Option<StickySession>, String> {
    let Some(name) = &args.sticky else {
        if args.sticky_key.is_some() || args.sticky_salt.is_some() || args.sticky_ttl.is_some() {
            return Err("--sticky-key, --sticky-salt and --sticky-ttl need --sticky NAME".into());
        }
        return Ok(None);
    };
    let codec = args.sticky_codec;
    if args.sticky_key.is_some() && !matches!(codec, CodecArg::Hmac | CodecArg::Aes) {
        return Err("--sticky-key applies to --sticky-codec hmac or aes".into());
    }
    if args.sticky_salt.is_some() && !matches!(codec, CodecArg::Hash) {
        return Err("--sticky-salt applies to --sticky-codec hash".into());
    }
    if args.sticky_ttl.is_some() && !matches!(codec, CodecArg::Aes) {
        return Err("--sticky-ttl applies to --sticky-codec aes".into());
    }
    let key = args.sticky_key.as_deref().map(parse_hex).transpose()?;
    let session = match (codec, key) {
        (CodecArg::Raw, _) => StickySession::with_codec(name.as_str(), Raw),
        (CodecArg::Hash, _) => StickySession::with_codec(
            name.as_str(),
            Hash::new(args.sticky_salt.clone().unwrap_or_default()),
        ),
        (CodecArg::Hmac, Some(key)) => StickySession::with_codec(name.as_str(), Hmac::new(key)),
        (CodecArg::Hmac, None) => {
            StickySession::try_new(name.as_str()).map_err(|e| e.to_string())?
        }
        (CodecArg::Aes, Some(key)) => {
            let aes = Aes::new(key).map_err(|e| format!("--sticky-key: {e}"))?;
            let aes = match args.sticky_ttl {
                Some(ttl) => aes.ttl(ttl),
                None => aes,
            };
            StickySession::with_codec(name.as_str(), aes)
        }
        (CodecArg::Aes, None) => return Err("--sticky-codec aes needs --sticky-key HEX".into()),
    };
    session
        .validate()
        .map_err(|e| format!("--sticky {name}: {e}"))?;
    Ok(Some(session))
}

async fn shutdown_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn signals(stop: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    eprintln!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    let _ = stop.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    let _ = stop.send(true);
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args
        .admin
        .is_some_and(|a| a == args.listen && a.port() != 0)
    {
        usage_error("--admin must not be the --listen address");
    }
    let sticky = sticky(&args).unwrap_or_else(|e| usage_error(&e));
    let pool = pool(&args);
    for (url, weight) in &args.backends {
        if let Err(e) = pool.upsert_server(url.clone(), *weight) {
            usage_error(&format!("--backend {url}: {e}"));
        }
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "listening on {}",
        listener.local_addr().unwrap_or(args.listen)
    );
    if let Some(addr) = args.admin {
        let admin = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let _ = writeln!(out, "admin on {}", admin.local_addr().unwrap_or(addr));
        tasks.spawn(serve(
            admin,
            Admin::new(Arc::clone(&pool)),
            shutdown_signal(stopped.clone()),
        ));
    }
    let _ = out.flush();
    drop(out);
    let mut builder = Balancer::builder(pool);
    if let Some(session) = sticky {
        builder = builder.sticky(session);
    }
    let balancer = builder.service(Forwarder::new().timeout(args.timeout));
    tasks.spawn(serve(listener, balancer, shutdown_signal(stopped)));
    tokio::spawn(signals(stop));
    let mut code = ExitCode::SUCCESS;
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            eprintln!("server task failed: {e}");
            code = ExitCode::FAILURE;
        }
    }
    code
}
