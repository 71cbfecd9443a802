//! `roundrobin-proxy`: a load-balancing reverse proxy on the `roundrobin` crates.
//!
//! ```text
//! cargo install --path crates/proxy
//! roundrobin-proxy --listen 127.0.0.1:8080 \
//!     --backend http://127.0.0.1:9001 --backend http://127.0.0.1:9002=3 \
//!     --admin 127.0.0.1:8081
//! ```
//!
//! Prints `listening on ADDR` (and `admin on ADDR`: the JSON admin API, and a live
//! dashboard at `/`) once the sockets are bound; `--admin-token-file FILE` makes the
//! admin API ask for `Authorization: Bearer <token>` (needed off loopback);
//! `--tls-cert FILE --tls-key FILE` serve clients over TLS (ALPN h2 and http/1.1,
//! `X-Forwarded-Proto: https`; SIGHUP or `POST /reload` reloads the pair); bad flags exit with status 2; Ctrl-C or SIGTERM stop accepting and let in-flight
//! requests finish. Logs go to stderr (`RUST_LOG` filters them; default `info`).

mod args;
mod config;
mod logs;
mod resilience;
mod upstream;
mod workers;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use http::HeaderValue;
use roundrobin_core::{Policy, RoundRobin, ServerUrl};
use roundrobin_hyper::{
    expands_by_dns, serve, serve_tls_with, serve_with, spawn_stepper, Admin, Balancer,
    DiscoveryDriver, DnsDiscovery, Forwarder, Metrics, ServerLimits,
};
use roundrobin_rebalancer::Rebalancer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_layer::Layer as _;

use crate::args::{admin_token, check_admin, sticky, tls, usage_error, Args, PolicyArg};

/// The pool: a rebalancer, whose state machine moves weights only with `--rebalance`;
/// ejection, health checks and slow start work either way.
fn pool(args: &Args) -> Arc<Rebalancer<ServerUrl>> {
    let policy = match args.policy {
        PolicyArg::Interleaved => Policy::Interleaved,
        PolicyArg::Smooth => Policy::Smooth,
    };
    let mut balancer = RoundRobin::<ServerUrl>::builder()
        .default_weight(args.default_weight)
        .policy(policy);
    if args.random_start {
        balancer = balancer.start_offset(random_seed());
    }
    let balancer = balancer.build();
    let r = &args.resilience;
    let rebalancer = Rebalancer::builder(balancer)
        .rebalance(args.rebalance)
        // steps and ejections run on the stepper task, never on a request's thread
        .step_on_record(false)
        .backoff(args.backoff)
        .ejection(r.ejection())
        .checks(r.checks())
        .slow_start(r.slow_start())
        .build();
    match rebalancer {
        Ok(rebalancer) => Arc::new(rebalancer),
        Err(e) => usage_error(&format!("--rebalance: {e}")),
    }
}

/// A seed that differs between processes and runs (the core takes no randomness of
/// its own).
fn random_seed() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = time ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64's finaliser: spreads the bits of time and pid over the whole word
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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

/// jemalloc, with its background thread purging freed pages (after `dirty_decay_ms`,
/// set to [`DIRTY_DECAY_MS`] here): the memory thousands of closed or resting
/// connections held goes back to the system, where glibc's malloc keeps most of it.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed pages before giving them back (its default: 10 s).
/// A keep-alive connection at rest hands back its buffers (about 16 KiB) after
/// `idle_release` (100 ms); this gives their pages back to the system a moment later,
/// as HAProxy and nginx, which free a resting connection's buffers at once.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
const DIRTY_DECAY_MS: isize = 250;

/// Starts jemalloc's purging thread and shortens its decay to [`DIRTY_DECAY_MS`],
/// unless `_RJEM_MALLOC_CONF` configures jemalloc.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
fn tune_jemalloc() {
    use tikv_jemalloc_ctl::{arenas, background_thread, Access, AsName};
    if let Err(error) = background_thread::write(true) {
        tracing::debug!(%error, "jemalloc background thread not started");
    }
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return;
    }
    // New arenas take the default; those already made (arena 0 at least) are set one
    // by one (an index not made yet is refused: nothing to set).
    if let Err(error) = b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS) {
        tracing::debug!(%error, "jemalloc decay not set");
        return;
    }
    for arena in 0..arenas::narenas::read().unwrap_or(0) {
        let key = format!("arena.{arena}.dirty_decay_ms\0");
        let _ = key.as_bytes().name().write(DIRTY_DECAY_MS);
    }
}

fn main() -> ExitCode {
    let (args, config) = config::parse();
    logs::init(args.access_log);
    #[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
    tune_jemalloc();
    // The control plane (admin, health checks, rebalancer steps, signals) runs here;
    // requests run on the workers' own runtimes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(args, config)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, config: Option<config::Source>) -> ExitCode {
    let admin_token = admin_token(&args).unwrap_or_else(|e| usage_error(&e));
    check_admin(&args, admin_token.is_some()).unwrap_or_else(|e| usage_error(&e));
    let sticky = sticky(&args).unwrap_or_else(|e| usage_error(&e));
    let upstream_tls = args.upstream.tls().unwrap_or_else(|e| usage_error(&e));
    let tls = tls(&args).unwrap_or_else(|e| usage_error(&e));
    let pool = pool(&args);
    for (url, weight) in &args.backends {
        if expands_by_dns(url) {
            continue; // resolved by `discover`
        }
        if let Err(e) = pool.upsert_server(url.clone(), *weight) {
            usage_error(&format!("--backend {url}: {e}"));
        }
    }
    let reloader = config.map(|c| Arc::new(config::Reloader::new(c, Arc::clone(&pool), &args)));
    config::reload_on_sighup(reloader.clone(), tls.clone());
    let discoveries = discover(&args, &pool).await;
    let workers = workers::count(args.workers);
    let mut listeners = Vec::with_capacity(workers);
    let first = match workers::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let listen = first.local_addr().unwrap_or(args.listen);
    listeners.push(first);
    for _ in 1..workers {
        match workers::bind(listen) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("cannot listen on {listen} again for another worker: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (stop, stopped) = watch::channel(false);
    let metrics = (!args.no_metrics).then(Metrics::new);
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {listen}");
    if let Some(addr) = args.admin {
        let admin = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = admin.local_addr().unwrap_or(addr);
        let _ = writeln!(out, "admin on {addr}");
        let api = match &admin_token {
            Some(token) => Admin::new(Arc::clone(&pool)).token(token),
            None => {
                eprintln!(
                    "warning: the admin API on {addr} has no token: any local process can \
                     change the pool (pass --admin-token-file FILE)"
                );
                Admin::new(Arc::clone(&pool))
            }
        };
        // `POST /reload`: the config file's servers and the TLS certificate, as SIGHUP.
        let api = if reloader.is_some() || tls.is_some() {
            let (reloader, tls) = (reloader.clone(), tls.clone());
            api.on_reload(move || config::reload_all(reloader.as_deref(), tls.as_ref()))
        } else {
            api
        };
        let api = match &metrics {
            Some(metrics) => api.metrics(Arc::clone(metrics)),
            None => api,
        };
        tasks.spawn(serve(admin, api, shutdown_signal(stopped.clone())));
    }
    let _ = out.flush();
    drop(out);
    let mut builder = Balancer::builder(Arc::clone(&pool));
    if let Some(session) = sticky {
        builder = builder.sticky(session);
    }
    let r = &args.resilience;
    if let Some(metrics) = &metrics {
        builder = builder.metrics(Arc::clone(metrics));
    }
    if r.replay_bodies > 0 {
        builder = builder.replay_bodies(r.replay_bodies);
    }
    let layer = builder
        .retry(r.retry())
        .access_log(args.access_log.is_some())
        .layer();
    let connector = upstream::connector(&upstream_tls, r.connect_timeout);
    let checks = r.health_check().map(|check| {
        let connector = upstream::connector(&upstream_tls, check.timeout_duration());
        check.connector(connector).spawn(Arc::clone(&pool))
    });
    let stepper = spawn_stepper(Arc::clone(&pool));
    let limits = ServerLimits {
        metrics,
        ..r.limits()
    };
    let mut threads = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let listener = match listener.into_std() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot hand the listener to worker {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Each worker: its own upstream connection pool, the shared balancer.
        let forwarder = Forwarder::with_connector(connector.clone())
            .timeout(args.timeout)
            .body_timeout(r.body_timeout)
            .forwarded_proto(HeaderValue::from_static(match tls {
                Some(_) => "https",
                None => "http",
            }));
        let tunnels = forwarder.tunnels().clone();
        let balancer = layer.layer(forwarder);
        let (limits, stopped, tls) = (limits.clone(), stopped.clone(), tls.clone());
        // Upgraded connections (WebSocket) are no longer the server's: they drain beside
        // it, within the same timeout, then the rest is closed.
        let work = move |listener| async move {
            let drain = limits.shutdown_timeout;
            let tunnels = async {
                shutdown_signal(stopped.clone()).await;
                tunnels.shutdown(drain).await;
            };
            let stop = shutdown_signal(stopped.clone());
            let served = async move {
                match tls {
                    Some(tls) => serve_tls_with(listener, tls, balancer, stop, limits).await,
                    None => serve_with(listener, balancer, stop, limits).await,
                }
            };
            tokio::join!(served, tunnels);
        };
        match workers::spawn(i, listener, work) {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                eprintln!("cannot start worker {i}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    tokio::spawn(signals(stop));
    let mut code = ExitCode::SUCCESS;
    for thread in threads {
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_or(true, |r| r.is_err())
        {
            eprintln!("a worker thread failed");
            code = ExitCode::FAILURE;
        }
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            eprintln!("server task failed: {e}");
            code = ExitCode::FAILURE;
        }
    }
    if let Some(checks) = checks {
        checks.abort();
    }
    stepper.abort();
    discoveries.iter().for_each(tokio::task::JoinHandle::abort);
    code
}

/// Backends given by DNS name: each address becomes a backend. Resolved once before
/// serving (for at most 5 s; failing that, logged and tried again in the background),
/// then every `--dns-refresh` on a task of its own.
async fn discover(
    args: &Args,
    pool: &Arc<Rebalancer<ServerUrl>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut first = tokio::task::JoinSet::new();
    for (url, weight) in args.backends.iter().filter(|(url, _)| expands_by_dns(url)) {
        let mut dns = DnsDiscovery::from_server(url, weight.unwrap_or(args.default_weight));
        if let Some(server) = args.resolver {
            dns = dns.resolver(server);
        }
        let mut driver = DiscoveryDriver::new(dns, Arc::clone(pool), args.dns_refresh);
        let url = url.clone();
        first.spawn(async move {
            let wait = core::time::Duration::from_secs(5);
            match tokio::time::timeout(wait, driver.refresh()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(backend = %url, error = %e, "cannot resolve; trying again")
                }
                Err(_) => {
                    tracing::warn!(backend = %url, "no DNS answer within {wait:?}; trying again")
                }
            }
            driver
        });
    }
    let drivers = first.join_all().await;
    drivers.into_iter().map(DiscoveryDriver::spawn).collect()
}
