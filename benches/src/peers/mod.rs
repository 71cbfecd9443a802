//! Our proxy against nginx and HAProxy, each a separate process doing the same job.
//!
//! # Setup
//!
//! - **Backends**: one nginx process (`worker_processes 1`, `access_log off`) with
//!   three `listen` servers on free 127.0.0.1 ports, each answering `GET /` with 200
//!   and a 3-byte body. Out of process, so they cost every target the same. They
//!   speak plain HTTP/1.1 whatever protocol the clients of the balancers speak.
//! - **Targets**, each a weighted (3:2:1) round-robin balancer with one worker in
//!   front of those three ports, each on its own free ports, all running for the
//!   whole benchmark:
//!   1. HAProxy (`balance roundrobin`, `nbthread 1`, `http-reuse always`): the
//!      baseline of every ratio;
//!   2. nginx (`upstream` with weights and `keepalive`, `proxy_http_version 1.1`,
//!      `worker_processes 1`);
//!   3. our proxy binary (release build) with 1 runtime worker thread;
//!   4. the same with 2 worker threads, and (HTTP/1.1 only) HAProxy with `nbthread 2`:
//!      what a second thread does to the peer on the same two cores;
//!   5. (HTTP/1.1 only) our proxy with 1 worker and `--no-metrics`, with
//!      `--access-log json`, and with `--sticky _backend --rebalance` (the full
//!      balancer: wrk sends no cookie, so every response sets one, the dearest sticky
//!      path; every response is recorded in the rebalancer's meters), pricing
//!      metrics, the access log and the full balancer;
//!   6. with `--pgo-bin PATH` (`cargo xtask bench-proxy --peers --pgo` builds it with
//!      `cargo xtask dist`): that profile-guided build of our proxy with 1 and with 2
//!      workers, in every protocol group, beside the plain release build;
//!   7. a second HAProxy identical to the first: the noise control. Its distance
//!      from the first row is what the machine's noise alone does to a figure.
//!
//!   Our proxy gets `TOKIO_WORKER_THREADS=N`, plus `--workers N` if its `--help`
//!   mentions that flag. nginx and HAProxy run in the foreground as children
//!   (`daemon off;`, `-db`) with configs in a temp dir; readiness is a successful TCP
//!   connect on every port. Before loading, [`clients::weight_split`] checks each one
//!   splits 60 requests 30:20:10 over the backends on its HTTP/1.1 port.
//! - **Protocols** (`--protocols http,https,h2c`, all by default): each target is
//!   loaded once per protocol, each protocol a group of rows in the table with its own
//!   HAProxy baseline:
//!   - `http`: plain HTTP/1.1 on the port above.
//!   - `https`, TLS termination: a self-signed certificate and key made at run time
//!     in the temp dir (`openssl req -x509 -newkey ec -pkeyopt
//!     ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost`; none is checked
//!     in). HAProxy gets a second `bind 127.0.0.1:PORT ssl crt combined.pem alpn
//!     h2,http/1.1` (certificate and key in one file) in the same frontend; nginx a
//!     second `server` with `listen 127.0.0.1:PORT ssl http2;` (nginx before 1.25.1)
//!     or `listen 127.0.0.1:PORT ssl; http2 on;` (1.25.1 on, chosen from `nginx -v`),
//!     `ssl_certificate`, `ssl_certificate_key` and `ssl_protocols TLSv1.2 TLSv1.3`
//!     (nginx before 1.23.4 would otherwise not offer TLS 1.3, which HAProxy and our
//!     proxy do); our proxy a separate process with `--listen 127.0.0.1:PORT
//!     --tls-cert cert.pem --tls-key key.pem` and the same backends and workers (its
//!     log lines call it `… (TLS)`; its CPU is its own). Our proxy's rows run only if its `--help`
//!     mentions `--tls-cert`; otherwise the table says "not supported by this build".
//!     Not in this group: the `--no-metrics` and access-log rows. Before loading,
//!     60 requests over one connection (`h2load -n60 -c1 --h1`) must all succeed.
//!   - `h2c`, cleartext HTTP/2 with prior knowledge: HAProxy gets a third `bind
//!     127.0.0.1:PORT proto h2`; nginx a third `server` with `listen 127.0.0.1:PORT
//!     http2;` (or `listen 127.0.0.1:PORT; http2 on;` from 1.25.1); our proxy is
//!     loaded on its plain port, where it detects the HTTP/2 connection preface.
//!     h2load does not reconnect a connection the server closes, so nginx's
//!     `keepalive_requests 1000000` (which bounds HTTP/2 connections too) matters here.
//!     Before loading, 60 requests over one connection (`h2load -n60 -c1`) must all
//!     succeed.
//!
//! # Load
//!
//! - `http`: `wrk -t1 -cC --latency` with keep-alive connections for `--seconds`,
//!   for `C` in `--concurrency` (32 and 256).
//! - `https`: the same wrk command against `https://127.0.0.1:PORT/`. wrk speaks
//!   HTTP/1.1 over OpenSSL without ALPN (so every balancer serves HTTP/1.1 on these
//!   connections) and does not verify the certificate. Its connections are kept alive
//!   for the whole run, so the TLS handshakes (one per connection) are amortised over
//!   all its requests: the figures price TLS record encryption and decryption on top
//!   of the HTTP/1.1 work, not handshakes.
//! - `h2c`: `h2load -t1 -cC -mM -DS http://127.0.0.1:PORT/` (`M` from
//!   `--h2-streams`, 10): `C` connections with up to `M` concurrent streams each,
//!   HTTP/2 with prior knowledge (h2load's default for `http://`). h2load reports
//!   requests/s and the min, max, mean and deviation of the request time but no
//!   percentiles, so these rows have mean and max latency and no p50/p99/p99.9.
//!
//! `--rounds` rounds, interleaved: each round loads every row of every protocol at
//! every concurrency, so slow drifts of the machine hit all rows alike, and each round
//! starts one row later than the one before, so no row is always first after a
//! concurrency change. A short warm-up per row (`--warmup` seconds of the same load at
//! the first concurrency) comes first and is not counted.
//! Figures are the median over rounds, each on its own.
//!
//! # CPU per request
//!
//! The balancer's user and system time (`utime`, `stime` of `/proc/PID/stat`, in clock
//! ticks of `sysconf(_SC_CLK_TCK)`, usually 10 ms) summed over its process tree
//! (nginx: master + worker; HAProxy and our proxy: the one process, all threads), read
//! right before wrk (or h2load) starts and right after it exits, divided by the
//! requests it completed. The window is the whole run, so the 10 ms tick resolution is small
//! against it (e.g. 6 s at one busy core = 600 ticks). Only the balancer is counted:
//! not the load tool, not the backends.
//!
//! # Memory per idle connection
//!
//! HTTP/1.1 rows only. After the load, for each balancer in turn: its RSS (`VmRSS`, summed over its
//! processes) idle; then `--idle-conns` (10,000) keep-alive connections opened from
//! this process with plain sockets, one answered request each, so they are
//! established idle HTTP connections; RSS again; then they are closed.
//! KiB per connection = (RSS with − RSS idle) / connections opened. The open-file
//! limit is raised for this (the balancers inherit it); where it cannot be raised
//! far enough for HAProxy (two descriptors per connection), every target gets the
//! same smaller count, and the report says so; if fewer connections open, the count
//! reached is reported.
//!
//! What a connection costs up front is not in this figure: nginx allocates and
//! initialises its connection structures for all `worker_connections` at start, so
//! those are in its idle RSS; what it, HAProxy and our proxy allocate per accepted
//! connection is in the difference.
//!
//! # Report
//!
//! One markdown table, grouped by protocol (`http/1.1`, `https (TLS termination)`,
//! `h2c`), each group's ratios against its own first HAProxy row; the h2c rows' conns
//! column says `C×M`. The SVG chart has one band per protocol (req/s and CPU per
//! request; the HTTP/1.1 band also the idle-connection memory), rows not run left out.
//!
//! # Caveats
//!
//! The load tool, the balancer and the backend nginx share the machine: on a 2-core
//! machine a balancer with 2 threads competes with the load tool and the backends for
//! the cores, and the req/s of every target includes the client's and backends'
//! limits. CPU per request is the fairer cost figure. wrk and h2load are different
//! clients with different costs, so compare rows within a protocol group, not across
//! groups; the h2c rows also have `M` times more requests in flight per connection.

mod clients;
mod h2load;
mod instructions;
mod process;
mod report;
mod servers;
mod wrk;

use core::fmt::Write as _;
use core::str::FromStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use self::process::{check_stop, cpu_ticks, free_ports, rss_kib, ticks_per_second};
use self::report::{LoadResult, Memory, Results, Row, Sample};
use self::servers::{Balancer, Kind, Listen, Setup, Tls, WEIGHTS};

/// The protocol clients speak to the balancers (backends are always HTTP/1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Plain HTTP/1.1, loaded with wrk.
    Http,
    /// HTTP/1.1 over TLS terminated by the balancer, loaded with wrk.
    Https,
    /// Cleartext HTTP/2 with prior knowledge, loaded with h2load.
    H2c,
}

impl Protocol {
    /// Every protocol, in table order.
    pub(crate) const ALL: [Self; 3] = [Self::Http, Self::Https, Self::H2c];

    /// The name `--protocols` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::H2c => "h2c",
        }
    }

    /// The table's group heading.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Http => "http/1.1",
            Self::Https => "https (TLS termination)",
            Self::H2c => "h2c",
        }
    }

    /// The chart's band title.
    pub(crate) fn chart_label(self) -> &'static str {
        match self {
            Self::Http => "HTTP/1.1",
            Self::Https => "HTTPS",
            Self::H2c => "h2c",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown protocol `{s}`: http, https or h2c"))
    }
}

/// What to run; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Seconds of load per target, concurrency and round.
    pub(crate) seconds: u64,
    /// Rounds over all targets.
    pub(crate) rounds: u32,
    /// Connection counts (wrk and h2load).
    pub(crate) concurrency: Vec<u32>,
    /// Concurrent streams per h2c connection (h2load `-m`).
    pub(crate) streams: u32,
    /// The protocol groups to run.
    pub(crate) protocols: Vec<Protocol>,
    /// Seconds of uncounted warm-up per row (0: none).
    pub(crate) warmup: u64,
    /// Idle keep-alive connections for the memory figure (0: skip it).
    pub(crate) idle_conns: usize,
    /// Our proxy's binary.
    pub(crate) proxy_bin: PathBuf,
    /// A profile-guided build of it, whose 1- and 2-worker rows join every group.
    pub(crate) pgo_bin: Option<PathBuf>,
    /// Where `peers.md` and `peers.svg` go.
    pub(crate) out_dir: PathBuf,
    /// Run `apt-get install -y` with [`PACKAGES`] first.
    pub(crate) install: bool,
    /// Requests of the callgrind count of instructions per request (0: skip it; see
    /// the `instructions` module).
    pub(crate) instructions: u32,
}

/// The Debian packages of the tools `--install` installs.
pub(crate) const PACKAGES: &str = "nginx haproxy wrk nghttp2-client openssl valgrind";

/// A temp dir removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("bench-peers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One balancer configuration: its rows' name, what it is, and whether it is in the
/// HTTPS and h2c groups too (otherwise HTTP/1.1 only).
struct Target {
    name: &'static str,
    kind: Kind,
    every_protocol: bool,
}

/// A row to load: which balancer, on which port, over which protocol.
#[derive(Debug, Clone, Copy)]
struct Load {
    balancer: usize,
    port: u16,
    protocol: Protocol,
}

/// Runs the whole benchmark: prints the table and writes `peers.md` and `peers.svg`.
pub(crate) fn run(opts: &Options) -> Result<(), String> {
    let selected = |p: Protocol| opts.protocols.contains(&p);
    check_tools(opts.install, &opts.protocols, opts.instructions > 0)?;
    if !opts.proxy_bin.is_file() {
        return Err(format!(
            "no proxy binary at {}: build it (`cargo xtask bench-proxy --peers` does) \
             or pass --proxy-bin",
            opts.proxy_bin.display()
        ));
    }
    // HAProxy needs two descriptors per client connection (see `haproxy_maxconn`).
    let nofile = process::raise_nofile((2 * opts.idle_conns as u64 + 1_000).max(65_536))?;
    let fit = usize::try_from(servers::haproxy_maxconn(nofile).saturating_sub(400)).unwrap_or(0);
    let idle_conns = if selected(Protocol::Http) {
        opts.idle_conns.min(fit)
    } else {
        0
    };
    let limit_note = if idle_conns < opts.idle_conns && selected(Protocol::Http) {
        format!(
            "The open-file limit is {nofile} and cannot be raised here, and HAProxy needs two \
             descriptors per client connection, so every target got {idle_conns} idle \
             connections instead of {}.\n\n",
            opts.idle_conns
        )
    } else {
        String::new()
    };
    eprint!("{limit_note}");
    process::catch_signals()?;
    // Declared first, dropped last: after every process below has stopped.
    let temp = TempDir::new()?;
    let dir = temp.0.as_path();

    let workers_flag = help_mentions(&opts.proxy_bin, "--workers");
    let tls_flag = help_mentions(&opts.proxy_bin, "--tls-cert");
    let nginx_version = version("nginx", "-v");
    let tls = if selected(Protocol::Https) {
        Some(Tls::generate(dir)?)
    } else {
        None
    };
    let roundrobin_in = |bin: &PathBuf, workers, extra| Kind::Roundrobin {
        bin: bin.clone(),
        workers_flag,
        workers,
        extra,
    };
    let roundrobin = |workers, extra| roundrobin_in(&opts.proxy_bin, workers, extra);
    let target = |name, kind, every_protocol| Target {
        name,
        kind,
        every_protocol,
    };
    // The default proxy counts metrics; the two extra rows price metrics and the access
    // log (`--no-metrics`, `--access-log json` written to the log file).
    let mut targets = vec![
        target("haproxy", Kind::Haproxy { threads: 1 }, true),
        target("nginx", Kind::Nginx, true),
        target("roundrobin, 1 worker", roundrobin(1, &[]), true),
        target("roundrobin, 2 workers", roundrobin(2, &[]), true),
        // What two threads do to HAProxy on the same cores: the reference for the
        // two-worker rows (HTTP/1.1 only, to keep the run's length).
        target("haproxy, 2 threads", Kind::Haproxy { threads: 2 }, false),
        target(
            "roundrobin, 1 worker, no metrics",
            roundrobin(1, &["--no-metrics"]),
            false,
        ),
        target(
            "roundrobin, 1 worker, access log",
            roundrobin(1, &["--access-log", "json"]),
            false,
        ),
        target(
            "roundrobin, 1 worker, sticky + rebalance",
            roundrobin(1, &["--sticky", "_backend", "--rebalance"]),
            false,
        ),
    ];
    if let Some(pgo) = &opts.pgo_bin {
        if !pgo.is_file() {
            return Err(format!("no binary at --pgo-bin {}", pgo.display()));
        }
        targets.push(target(
            "roundrobin PGO, 1 worker",
            roundrobin_in(pgo, 1, &[]),
            true,
        ));
        targets.push(target(
            "roundrobin PGO, 2 workers",
            roundrobin_in(pgo, 2, &[]),
            true,
        ));
    }
    targets.push(target(
        "haproxy (noise control)",
        Kind::Haproxy { threads: 1 },
        true,
    ));
    // At most three listeners per target, one more for its callgrind count, plus the
    // three backends.
    let mut ports = free_ports(3 + 4 * targets.len())?.into_iter();
    let backend_ports: Vec<u16> = ports.by_ref().take(3).collect();

    eprintln!("starting the backends (one nginx, ports {backend_ports:?})");
    let backends = servers::start_backends(dir, &backend_ports, nofile)?;
    let setup = Setup {
        dir,
        backends: &backend_ports,
        nofile,
        tls: tls.as_ref(),
        nginx_http2_on: servers::nginx_http2_on(&nginx_version),
    };
    let mut balancers: Vec<Balancer> = Vec::new();
    // Per target and protocol: the balancer and port that serve it, or why none does.
    let mut serving: Vec<[Result<Load, String>; 3]> = Vec::new();
    let mut checks = String::new();
    for t in &targets {
        let joins = |p: Protocol| selected(p) && (p == Protocol::Http || t.every_protocol);
        // Every balancer keeps its HTTP/1.1 listener: the weight check and the idle
        // connections use it.
        let http = ports.next().ok_or("out of ports")?;
        let mut listen = Listen {
            http: Some(http),
            ..Listen::default()
        };
        let mut tls_process = false;
        match t.kind {
            Kind::Haproxy { .. } | Kind::Nginx => {
                if joins(Protocol::Https) {
                    listen.https = Some(ports.next().ok_or("out of ports")?);
                }
                if joins(Protocol::H2c) {
                    listen.h2c = Some(ports.next().ok_or("out of ports")?);
                }
            }
            Kind::Roundrobin { .. } => {
                // HTTP/2 with prior knowledge on the plain listener; TLS in a process
                // of its own.
                if joins(Protocol::H2c) {
                    listen.h2c = Some(http);
                }
                tls_process = joins(Protocol::Https) && tls_flag;
            }
        }
        let b = start(t.name, &t.kind, listen, &setup, &mut checks)?;
        let index = balancers.len();
        balancers.push(b);
        let mut rows = [Err(String::new()), Err(String::new()), Err(String::new())];
        for (slot, p) in rows.iter_mut().zip(Protocol::ALL) {
            if !joins(p) {
                continue;
            }
            *slot = match listen.port(p) {
                Some(port) => Ok(Load {
                    balancer: index,
                    port,
                    protocol: p,
                }),
                None if tls_process => {
                    let name = format!("{} (TLS)", t.name);
                    let https = Listen {
                        https: Some(ports.next().ok_or("out of ports")?),
                        ..Listen::default()
                    };
                    let b = start(&name, &t.kind, https, &setup, &mut checks)?;
                    balancers.push(b);
                    Ok(Load {
                        balancer: balancers.len() - 1,
                        port: https.https.unwrap_or_default(),
                        protocol: p,
                    })
                }
                None => {
                    Err("not supported by this build (its `--help` has no `--tls-cert`)".into())
                }
            };
        }
        serving.push(rows);
    }

    // The rows, grouped by protocol, each group in target order.
    let mut rows = Vec::new();
    let mut loads = Vec::new();
    for (p, protocol) in Protocol::ALL.into_iter().enumerate() {
        if !selected(protocol) {
            continue;
        }
        for (t, target) in targets.iter().enumerate() {
            let (load, unsupported) = match &serving[t][p] {
                Ok(load) => (Some(*load), None),
                Err(why) if why.is_empty() => continue,
                Err(why) => (None, Some(why.clone())),
            };
            if let Some(l) = load {
                if protocol != Protocol::Http {
                    let b = &balancers[l.balancer];
                    let tls =
                        h2load::check(&url(protocol, l.port), 60, protocol == Protocol::Https)
                            .map_err(|e| format!("{} over {}: {e}", b.name, protocol.label()))?;
                    let tls = tls.map(|v| format!(" ({v})")).unwrap_or_default();
                    eprintln!(
                        "{} over {}: 60 of 60 requests answered{tls}",
                        b.name,
                        protocol.label()
                    );
                    checks.push_str(&format!(
                        "- {} over {}: 60 of 60 requests answered{tls}\n",
                        target.name,
                        protocol.label()
                    ));
                }
            }
            rows.push(Row {
                name: target.name.to_owned(),
                protocol,
                unsupported,
            });
            loads.push(load);
        }
    }

    let script = dir.join("done.lua");
    fs::write(&script, wrk::DONE_SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    if opts.warmup > 0 {
        eprintln!("warming up every row for {} s", opts.warmup);
        for l in loads.iter().flatten() {
            check_stop()?;
            run_load(l, opts.concurrency[0], opts.streams, opts.warmup, &script)?;
        }
    }

    let mut results = Results::new(rows, opts.concurrency.clone(), opts.streams);
    let active: Vec<usize> = (0..loads.len()).filter(|&i| loads[i].is_some()).collect();
    let ticks = ticks_per_second() as f64;
    for round in 1..=opts.rounds {
        for (c, &conns) in opts.concurrency.iter().enumerate() {
            let n = active.len();
            let first = (round as usize - 1) % n.max(1);
            for i in (0..n).map(|k| active[(first + k) % n]) {
                let Some(l) = loads[i] else { continue };
                let b = &mut balancers[l.balancer];
                let sample = load(b, &l, conns, opts, &script, ticks)?;
                let latency = match sample.load.p99_us {
                    Some(p99) => format!("p99 {p99:>8.0} µs"),
                    None => format!("mean {:>7.0} µs", sample.load.mean_us),
                };
                eprintln!(
                    "round {round}/{}  {conns:>4} conns  {:<5} {:<34} {:>8.0} req/s  {latency}  \
                     CPU {:.1} + {:.1} µs/req{}",
                    opts.rounds,
                    l.protocol.name(),
                    b.name,
                    sample.load.rps,
                    sample.user_us,
                    sample.system_us,
                    if sample.load.errors > 0 {
                        format!("  {} errors", sample.load.errors)
                    } else {
                        String::new()
                    }
                );
                results.samples[i][c].push(sample);
            }
        }
    }

    if idle_conns > 0 {
        for (i, l) in loads.iter().enumerate() {
            let Some(l) = l.filter(|l| l.protocol == Protocol::Http) else {
                continue;
            };
            let b = &mut balancers[l.balancer];
            let m = idle_memory(b, l.port, idle_conns)?;
            eprintln!(
                "{:<24} RSS {} KiB idle, {} KiB with {} idle connections{}",
                b.name,
                m.idle_kib,
                m.loaded_kib,
                m.connections,
                m.error
                    .as_ref()
                    .map(|e| format!(" (stopped: {e})"))
                    .unwrap_or_default()
            );
            results.memory[i] = Some(m);
        }
    }

    let mut counted = String::new();
    if opts.instructions > 0 {
        counted = count_instructions(&targets, &setup, &mut ports, opts.instructions)?;
    }

    let about = About {
        checks: &checks,
        workers_flag,
        tls_flag,
        nginx_version: &nginx_version,
        nofile,
    };
    let markdown = markdown(opts, &results, &about) + "\n" + &limit_note + &counted;
    println!("{markdown}");
    fs::create_dir_all(&opts.out_dir).map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
    let md = opts.out_dir.join("peers.md");
    let svg = opts.out_dir.join("peers.svg");
    fs::write(&md, &markdown).map_err(|e| format!("{}: {e}", md.display()))?;
    fs::write(&svg, results.svg()).map_err(|e| format!("{}: {e}", svg.display()))?;
    eprintln!("wrote {} and {}", md.display(), svg.display());
    drop(balancers);
    drop(backends);
    Ok(())
}

/// The callgrind count (see the `instructions` module) of every one-thread target but
/// the noise control, as a markdown section: instructions per request and the ratio to
/// HAProxy's.
fn count_instructions(
    targets: &[Target],
    setup: &Setup<'_>,
    ports: &mut impl Iterator<Item = u16>,
    requests: u32,
) -> Result<String, String> {
    let mut counts: Vec<(&str, f64)> = Vec::new();
    for t in targets {
        let one_thread = match &t.kind {
            Kind::Haproxy { threads } => *threads == 1,
            Kind::Nginx => true,
            Kind::Roundrobin { workers, .. } => *workers == 1,
        };
        if !one_thread || t.name.contains("noise control") {
            continue;
        }
        let port = ports.next().ok_or("out of ports")?;
        let n = instructions::per_request(t.name, &t.kind, port, setup, requests)?;
        eprintln!(
            "{:<40} {n:>9.0} instructions per request (callgrind)",
            t.name
        );
        counts.push((t.name, n));
    }
    Ok(instructions_table(&counts, requests))
}

/// The markdown section of [`count_instructions`]: ratios to the `haproxy` row.
fn instructions_table(counts: &[(&str, f64)], requests: u32) -> String {
    let haproxy = counts
        .iter()
        .find(|(name, _)| *name == "haproxy")
        .map(|c| c.1);
    let mut out = format!(
        "\nUser-space instructions per request, counted by callgrind (`--instructions \
         {requests}`): each target alone under `valgrind --tool=callgrind`, {warmup} requests \
         of warm-up, then exactly {requests} HTTP/1.1 requests over 32 connections \
         (`h2load --h1 -c32`); every process of the target, its counters zeroed before and \
         dumped after. No kernel work, and not time: the part of the work the balancer's \
         own code decides, free of the machine's noise.\n\n\
         | target | instructions / request | vs haproxy |\n|---|---:|---:|\n",
        warmup = instructions::WARMUP
    );
    for (name, n) in counts {
        let ratio = haproxy.map_or_else(|| "—".to_owned(), |h| format!("{:.2}×", n / h));
        let _ = writeln!(out, "| {name} | {n:.0} | {ratio} |");
    }
    out
}

/// Starts one balancer process and, if it has an HTTP/1.1 listener, checks its weight
/// split there (into `checks`).
fn start(
    name: &str,
    kind: &Kind,
    listen: Listen,
    setup: &Setup<'_>,
    checks: &mut String,
) -> Result<Balancer, String> {
    let b = servers::start_balancer(name, kind, listen, setup)?;
    let ports: Vec<String> = Protocol::ALL
        .into_iter()
        .filter_map(|p| Some(format!("{} {}", p.name(), listen.port(p)?)))
        .collect();
    eprintln!(
        "started {name} on 127.0.0.1 ({}), pid {}",
        ports.join(", "),
        b.proc.pid()
    );
    if let Some(port) = listen.http {
        let split = clients::weight_split(port, 60)?;
        eprintln!(
            "  60 requests went {}:{}:{} to backends weighted {}:{}:{}",
            split[0], split[1], split[2], WEIGHTS[0], WEIGHTS[1], WEIGHTS[2]
        );
        checks.push_str(&format!(
            "- {name}: {}:{}:{}\n",
            split[0], split[1], split[2]
        ));
    }
    Ok(b)
}

/// The URL a row is loaded at.
fn url(protocol: Protocol, port: u16) -> String {
    match protocol {
        Protocol::Http | Protocol::H2c => format!("http://127.0.0.1:{port}/"),
        Protocol::Https => format!("https://127.0.0.1:{port}/"),
    }
}

/// The tools `protocols` need: program and Debian package.
fn tools(protocols: &[Protocol], instructions: bool) -> Vec<(&'static str, &'static str)> {
    let has = |p| protocols.contains(&p);
    let mut tools = vec![("nginx", "nginx"), ("haproxy", "haproxy")];
    if has(Protocol::Http) || has(Protocol::Https) {
        tools.push(("wrk", "wrk"));
    }
    if has(Protocol::Https) {
        tools.push(("openssl", "openssl"));
    }
    // h2load loads the h2c rows and checks the HTTPS ones.
    if has(Protocol::Https) || has(Protocol::H2c) || instructions {
        tools.push(("h2load", "nghttp2-client"));
    }
    if instructions {
        tools.push(("valgrind", "valgrind"));
        tools.push(("callgrind_control", "valgrind"));
    }
    tools
}

/// Fails with the install command if a tool `protocols` need is missing; installs
/// them all first with `install`.
fn check_tools(install: bool, protocols: &[Protocol], instructions: bool) -> Result<(), String> {
    if install {
        eprintln!("==> apt-get install -y {PACKAGES}");
        let status = Command::new("apt-get")
            .args(["install", "-y"])
            .args(PACKAGES.split(' '))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get install -y {PACKAGES} failed ({status})"));
        }
    }
    let missing: Vec<(&str, &str)> = tools(protocols, instructions)
        .into_iter()
        .filter(|(t, _)| process::find_in_path(t).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        let programs: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
        let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        Err(format!(
            "{} not found in PATH; install with `apt-get install {}` \
             (or rerun with --install)",
            programs.join(", "),
            packages.join(" ")
        ))
    }
}

/// Whether `bin --help` prints `flag`.
fn help_mentions(bin: &Path, flag: &str) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// One uncounted run of the row's load tool.
fn run_load(
    l: &Load,
    conns: u32,
    streams: u32,
    seconds: u64,
    script: &Path,
) -> Result<LoadResult, String> {
    let url = url(l.protocol, l.port);
    match l.protocol {
        Protocol::Http | Protocol::Https => wrk::run(&url, conns, seconds, script),
        Protocol::H2c => h2load::run(&url, conns, streams, seconds),
    }
}

/// One load run of row `l` of balancer `b` and the balancer's CPU time during it.
fn load(
    b: &mut Balancer,
    l: &Load,
    conns: u32,
    opts: &Options,
    script: &Path,
    ticks_per_second: f64,
) -> Result<Sample, String> {
    check_stop()?;
    b.proc.check_alive()?;
    let tree = b.proc.tree();
    let (user0, system0) = cpu_ticks(&tree);
    let load = run_load(l, conns, opts.streams, opts.seconds, script)?;
    let (user1, system1) = cpu_ticks(&tree);
    b.proc.check_alive()?;
    let per_request = |ticks: u64| {
        if load.requests == 0 {
            0.0
        } else {
            ticks as f64 * 1e6 / ticks_per_second / load.requests as f64
        }
    };
    Ok(Sample {
        load,
        user_us: per_request(user1.saturating_sub(user0)),
        system_us: per_request(system1.saturating_sub(system0)),
    })
}

/// RSS of `b` idle and with `n` idle keep-alive connections open on `port`.
fn idle_memory(b: &mut Balancer, port: u16, n: usize) -> Result<Memory, String> {
    check_stop()?;
    b.proc.check_alive()?;
    let settle = core::time::Duration::from_millis(500);
    std::thread::sleep(settle);
    let tree = b.proc.tree();
    let idle_kib = rss_kib(&tree);
    let started = std::time::Instant::now();
    let conns = clients::open_idle(port, n)?;
    eprintln!(
        "  opened {} connections in {:.1?}",
        conns.streams.len(),
        started.elapsed()
    );
    std::thread::sleep(settle);
    let loaded_kib = rss_kib(&tree);
    let memory = Memory {
        idle_kib,
        loaded_kib,
        connections: conns.streams.len(),
        error: conns.error,
    };
    drop(conns.streams);
    // Let the balancer see the closes before the next one is measured.
    std::thread::sleep(settle);
    b.proc.check_alive()?;
    Ok(memory)
}

/// The first line a tool prints for `arg` (its version), stdout or stderr.
fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let line = text.lines().find(|l| !l.trim().is_empty())?;
            // wrk's line goes on with its copyright.
            Some(line.split(" Copyright").next().unwrap_or(line).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What the report says about the run besides the figures.
struct About<'a> {
    /// The weight and protocol checks, a markdown list.
    checks: &'a str,
    /// Whether our proxy takes `--workers`.
    workers_flag: bool,
    /// Whether our proxy takes `--tls-cert`.
    tls_flag: bool,
    /// `nginx -v`.
    nginx_version: &'a str,
    /// The open-file limit.
    nofile: u64,
}

/// The whole report: how it was run, the table, and the figures behind it.
fn markdown(opts: &Options, results: &Results, about: &About<'_>) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let concurrency: Vec<String> = opts.concurrency.iter().map(u32::to_string).collect();
    let protocols: Vec<&str> = Protocol::ALL
        .into_iter()
        .filter(|p| opts.protocols.contains(p))
        .map(Protocol::name)
        .collect();
    let selected = |p| opts.protocols.contains(&p);
    let mut groups = String::new();
    if selected(Protocol::Http) {
        groups.push_str("- **http/1.1**: `wrk -t1` over plain HTTP/1.1 keep-alive connections.\n");
    }
    if selected(Protocol::Https) {
        groups.push_str(
            "- **https (TLS termination)**: the same wrk load over `https://`: the balancer \
             terminates TLS (a self-signed P-256 certificate made for the run) and forwards \
             plain HTTP/1.1. Connections are kept alive, so the handshakes are amortised over \
             the run: this prices TLS record encryption, not handshakes.\n",
        );
    }
    if selected(Protocol::H2c) {
        let _ = writeln!(
            groups,
            "- **h2c**: `h2load -t1 -cC -m{streams}`: cleartext HTTP/2 with prior knowledge, \
             C connections with up to {streams} concurrent streams each (the conns column \
             says C×{streams}); h2load reports no percentiles, only mean and max.",
            streams = opts.streams
        );
    }
    format!(
        "## Proxy vs nginx and HAProxy\n\n\
         `cargo xtask bench-proxy --peers --seconds {seconds} --rounds {rounds} --protocols \
         {protocol_list}`: {conns} connections, {seconds} s per run, {rounds} interleaved \
         rounds, medians; ratios are to `haproxy` over the same protocol at the same \
         connection count (req/s: higher is better; the rest: lower is better). CPU is the \
         balancer's process tree only, per completed request. Backends: one nginx, 3 servers \
         weighted 3:2:1, plain HTTP/1.1 whatever the client speaks. Every balancer has one \
         worker unless the row says otherwise. The load tool, the backends and the balancer \
         share the machine's {cores} cores, so req/s and latency include their contention; \
         CPU per request is the balancer's own cost.\n\n\
         {groups}\n\
         {table}\n\
         Machine: {cores} cores, Linux {kernel}; {nginx}; {haproxy}; {wrk}; {h2load}; \
         {openssl}; proxy `{bin}` ({workers}; {tls}); open-file limit {nofile}.\n\n\
         Checks: answers per backend of 60 HTTP/1.1 requests on one connection (3:2:1 \
         expected), and 60 requests over each other protocol:\n\n{checks}\n\
         req/s of each round:\n\n{rounds_list}\n\
         RSS with idle keep-alive connections:\n\n{memory}",
        seconds = opts.seconds,
        rounds = opts.rounds,
        protocol_list = protocols.join(","),
        conns = concurrency.join(" and "),
        table = results.table(),
        kernel = kernel.trim(),
        nginx = about.nginx_version,
        haproxy = version("haproxy", "-v"),
        wrk = version("wrk", "-v"),
        h2load = version("h2load", "--version"),
        openssl = version("openssl", "version"),
        bin = opts.proxy_bin.display(),
        workers = if about.workers_flag {
            "`--workers N` and TOKIO_WORKER_THREADS=N"
        } else {
            "no `--workers` flag: TOKIO_WORKER_THREADS=N only"
        },
        tls = if about.tls_flag {
            "TLS with `--tls-cert` and `--tls-key`"
        } else {
            "no `--tls-cert` flag: no TLS rows"
        },
        checks = about.checks,
        nofile = about.nofile,
        rounds_list = results.rounds(),
        memory = results.memory_notes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_name() {
        for p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>(), Ok(p));
        }
        assert!("http2".parse::<Protocol>().is_err());
    }

    #[test]
    fn tools_follow_the_protocols() {
        let programs =
            |p: &[Protocol]| -> Vec<&str> { tools(p, false).into_iter().map(|t| t.0).collect() };
        assert_eq!(programs(&[Protocol::Http]), ["nginx", "haproxy", "wrk"]);
        assert_eq!(programs(&[Protocol::H2c]), ["nginx", "haproxy", "h2load"]);
        assert_eq!(
            programs(&Protocol::ALL),
            ["nginx", "haproxy", "wrk", "openssl", "h2load"]
        );
        assert!(tools(&[Protocol::H2c], false).contains(&("h2load", "nghttp2-client")));
        // The callgrind count loads with h2load and needs valgrind's tools.
        let counted: Vec<&str> = tools(&[Protocol::Http], true)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(
            counted,
            [
                "nginx",
                "haproxy",
                "wrk",
                "h2load",
                "valgrind",
                "callgrind_control"
            ]
        );
        for (_, package) in tools(&Protocol::ALL, true) {
            assert!(PACKAGES.split(' ').any(|p| p == package));
        }
    }

    #[test]
    fn instructions_table_has_ratios_to_haproxy() {
        let table = instructions_table(
            &[("haproxy", 28_000.0), ("roundrobin, 1 worker", 33_600.0)],
            20_000,
        );
        assert!(table.contains("| haproxy | 28000 | 1.00× |"), "{table}");
        assert!(
            table.contains("| roundrobin, 1 worker | 33600 | 1.20× |"),
            "{table}"
        );
        assert!(table.contains("`--instructions 20000`"), "{table}");
        let alone = instructions_table(&[("nginx", 30_000.0)], 10);
        assert!(alone.contains("| nginx | 30000 | — |"), "{alone}");
    }
}
