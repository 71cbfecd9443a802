//! Our proxy against nginx and HAProxy, each a separate process doing the same job.
//!
//! # Setup
//!
//! - **Backends**: one nginx process (`worker_processes 1`, `access_log off`) with
//!   three `listen` servers on free 127.0.0.1 ports, each answering `GET /` with 200
//!   and a 3-byte body. Out of process, so they cost every target the same.
//! - **Targets**, each a weighted (3:2:1) round-robin balancer with one worker in
//!   front of those three ports, each on its own free port, all running for the
//!   whole benchmark:
//!   1. HAProxy (`balance roundrobin`, `nbthread 1`, `http-reuse always`): the
//!      baseline of every ratio;
//!   2. nginx (`upstream` with weights and `keepalive`, `proxy_http_version 1.1`,
//!      `worker_processes 1`);
//!   3. our proxy binary (release build) with 1 runtime worker thread;
//!   4. the same with 2 worker threads;
//!   5. a second HAProxy identical to the first: the noise control. Its distance
//!      from the first row is what the machine's noise alone does to a figure.
//!
//!   Our proxy gets `TOKIO_WORKER_THREADS=N`, plus `--workers N` if its `--help`
//!   mentions that flag. nginx and HAProxy run in the foreground as children
//!   (`daemon off;`, `-db`) with configs in a temp dir; readiness is a successful TCP
//!   connect. Before loading, [`clients::weight_split`] checks each one splits 60
//!   requests 30:20:10 over the backends.
//!
//! # Load
//!
//! `wrk -t1 -cC --latency` with keep-alive connections for `--seconds`, for
//! `C` in `--concurrency` (32 and 256). `--rounds` rounds, interleaved: each round
//! loads every target at every concurrency, so slow drifts of the machine hit all
//! targets alike, and each round starts one target later than the one before, so no
//! target is always first after a concurrency change. A short warm-up per target
//! comes first and is not counted.
//! Figures are the median over rounds, each on its own.
//!
//! # CPU per request
//!
//! The balancer's user and system time (`utime`, `stime` of `/proc/PID/stat`, in clock
//! ticks of `sysconf(_SC_CLK_TCK)`, usually 10 ms) summed over its process tree
//! (nginx: master + worker; HAProxy and our proxy: the one process, all threads), read
//! right before wrk starts and right after it exits, divided by the requests wrk
//! completed. The window is the whole run, so the 10 ms tick resolution is small
//! against it (e.g. 6 s at one busy core = 600 ticks). Only the balancer is counted:
//! not wrk, not the backends.
//!
//! # Memory per idle connection
//!
//! After the load, for each balancer in turn: its RSS (`VmRSS`, summed over its
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
//! # Caveats
//!
//! wrk, the balancer and the backend nginx share the machine: on a 2-core machine a
//! balancer with 2 threads competes with wrk and the backends for the cores, and the
//! req/s of every target includes the client's and backends' limits. CPU per request
//! is the fairer cost figure.

mod clients;
mod process;
mod report;
mod servers;
mod wrk;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use self::process::{check_stop, cpu_ticks, free_ports, rss_kib, ticks_per_second};
use self::report::{Memory, Results, Sample};
use self::servers::{Balancer, Kind, WEIGHTS};

/// The tools taken from `PATH`.
const TOOLS: [&str; 3] = ["nginx", "haproxy", "wrk"];

/// What to run; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Seconds of load per target, concurrency and round.
    pub(crate) seconds: u64,
    /// Rounds over all targets.
    pub(crate) rounds: u32,
    /// wrk connection counts.
    pub(crate) concurrency: Vec<u32>,
    /// Seconds of uncounted warm-up per target (0: none).
    pub(crate) warmup: u64,
    /// Idle keep-alive connections for the memory figure (0: skip it).
    pub(crate) idle_conns: usize,
    /// Our proxy's binary.
    pub(crate) proxy_bin: PathBuf,
    /// Where `peers.md` and `peers.svg` go.
    pub(crate) out_dir: PathBuf,
    /// Run `apt-get install -y nginx haproxy wrk` first.
    pub(crate) install: bool,
}

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

/// Runs the whole benchmark: prints the table and writes `peers.md` and `peers.svg`.
pub(crate) fn run(opts: &Options) -> Result<(), String> {
    check_tools(opts.install)?;
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
    let idle_conns = opts.idle_conns.min(fit);
    let limit_note = if idle_conns < opts.idle_conns {
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
    let roundrobin = |workers, extra| Kind::Roundrobin {
        bin: opts.proxy_bin.clone(),
        workers_flag,
        workers,
        extra,
    };
    // The default proxy counts metrics; the two extra rows price metrics and the access
    // log (`--no-metrics`, `--access-log json` written to the log file).
    let targets = [
        ("haproxy", Kind::Haproxy),
        ("nginx", Kind::Nginx),
        ("roundrobin, 1 worker", roundrobin(1, &[])),
        ("roundrobin, 2 workers", roundrobin(2, &[])),
        (
            "roundrobin, 1 worker, no metrics",
            roundrobin(1, &["--no-metrics"]),
        ),
        (
            "roundrobin, 1 worker, access log",
            roundrobin(1, &["--access-log", "json"]),
        ),
        ("haproxy (noise control)", Kind::Haproxy),
    ];
    let ports = free_ports(3 + targets.len())?;
    let (backend_ports, lb_ports) = ports.split_at(3);

    eprintln!("starting the backends (one nginx, ports {backend_ports:?})");
    let backends = servers::start_backends(dir, backend_ports, nofile)?;
    let mut balancers = Vec::new();
    let mut checks = String::new();
    for ((name, kind), &port) in targets.iter().zip(lb_ports) {
        let b = servers::start_balancer(name, kind, dir, port, backend_ports, nofile)?;
        let split = clients::weight_split(port, 60)?;
        eprintln!(
            "started {name} on 127.0.0.1:{port} (pid {}); 60 requests went {}:{}:{} to \
             backends weighted {}:{}:{}",
            b.proc.pid(),
            split[0],
            split[1],
            split[2],
            WEIGHTS[0],
            WEIGHTS[1],
            WEIGHTS[2]
        );
        checks.push_str(&format!(
            "- {name}: {}:{}:{}\n",
            split[0], split[1], split[2]
        ));
        balancers.push(b);
    }

    let script = dir.join("done.lua");
    fs::write(&script, wrk::DONE_SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    if opts.warmup > 0 {
        eprintln!("warming up every target for {} s", opts.warmup);
        for b in &balancers {
            wrk::run(b.port, opts.concurrency[0], opts.warmup, &script)?;
        }
    }

    let mut results = Results::new(
        targets.iter().map(|(n, _)| (*n).to_owned()).collect(),
        opts.concurrency.clone(),
    );
    let ticks = ticks_per_second() as f64;
    for round in 1..=opts.rounds {
        for (c, &conns) in opts.concurrency.iter().enumerate() {
            let n = balancers.len();
            let first = (round as usize - 1) % n;
            for i in (0..n).map(|k| (first + k) % n) {
                let b = &mut balancers[i];
                let sample = load(b, conns, opts.seconds, &script, ticks)?;
                eprintln!(
                    "round {round}/{}  {conns:>4} conns  {:<24} {:>8.0} req/s  p99 {:>8.0} µs  \
                     CPU {:.1} + {:.1} µs/req{}",
                    opts.rounds,
                    b.name,
                    sample.wrk.rps,
                    sample.wrk.p99_us,
                    sample.user_us,
                    sample.system_us,
                    if sample.wrk.errors > 0 {
                        format!("  {} errors", sample.wrk.errors)
                    } else {
                        String::new()
                    }
                );
                results.samples[i][c].push(sample);
            }
        }
    }

    if idle_conns > 0 {
        for (i, b) in balancers.iter_mut().enumerate() {
            let m = idle_memory(b, idle_conns)?;
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

    let markdown = markdown(opts, &results, &checks, workers_flag, nofile) + "\n" + &limit_note;
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

/// Fails with the install command if a tool is missing; installs them first with
/// `install`.
fn check_tools(install: bool) -> Result<(), String> {
    if install {
        eprintln!("==> apt-get install -y nginx haproxy wrk");
        let status = Command::new("apt-get")
            .args(["install", "-y"])
            .args(TOOLS)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!(
                "apt-get install -y nginx haproxy wrk failed ({status})"
            ));
        }
    }
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|t| process::find_in_path(t).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not found in PATH; install with `apt-get install nginx haproxy wrk` \
             (or rerun with --install)",
            missing.join(", ")
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

/// One wrk run against `b` and the balancer's CPU time during it.
fn load(
    b: &mut Balancer,
    conns: u32,
    seconds: u64,
    script: &Path,
    ticks_per_second: f64,
) -> Result<Sample, String> {
    check_stop()?;
    b.proc.check_alive()?;
    let tree = b.proc.tree();
    let (user0, system0) = cpu_ticks(&tree);
    let wrk = wrk::run(b.port, conns, seconds, script)?;
    let (user1, system1) = cpu_ticks(&tree);
    b.proc.check_alive()?;
    let per_request = |ticks: u64| {
        if wrk.requests == 0 {
            0.0
        } else {
            ticks as f64 * 1e6 / ticks_per_second / wrk.requests as f64
        }
    };
    Ok(Sample {
        wrk,
        user_us: per_request(user1.saturating_sub(user0)),
        system_us: per_request(system1.saturating_sub(system0)),
    })
}

/// RSS of `b` idle and with `n` idle keep-alive connections open.
fn idle_memory(b: &mut Balancer, n: usize) -> Result<Memory, String> {
    check_stop()?;
    b.proc.check_alive()?;
    let settle = core::time::Duration::from_millis(500);
    std::thread::sleep(settle);
    let tree = b.proc.tree();
    let idle_kib = rss_kib(&tree);
    let started = std::time::Instant::now();
    let conns = clients::open_idle(b.port, n)?;
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

/// The whole report: how it was run, the table, and the figures behind it.
fn markdown(
    opts: &Options,
    results: &Results,
    checks: &str,
    workers_flag: bool,
    nofile: u64,
) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let concurrency: Vec<String> = opts.concurrency.iter().map(u32::to_string).collect();
    format!(
        "## Proxy vs nginx and HAProxy\n\n\
         `cargo xtask bench-proxy --peers --seconds {seconds} --rounds {rounds}`: \
         wrk -t1, keep-alive, {conns} connections, {seconds} s per run, {rounds} \
         interleaved rounds, medians; ratios are to `haproxy` at the same connection count \
         (req/s: higher is better; the rest: lower is better). CPU is the balancer's \
         process tree only, per completed request. Backends: one nginx, 3 servers \
         weighted 3:2:1. Every balancer has one worker unless the row says otherwise. \
         wrk, the backends and the balancer share the machine's {cores} cores, so req/s and \
         latency include their contention; CPU per request is the balancer's own cost.\n\n\
         {table}\n\
         Machine: {cores} cores, Linux {kernel}; {nginx}; {haproxy}; {wrk}; proxy `{bin}` \
         ({workers}); open-file limit {nofile}.\n\n\
         Weight check, answers per backend of 60 requests on one connection (3:2:1 \
         expected):\n\n{checks}\n\
         req/s of each round:\n\n{rounds_list}\n\
         RSS with idle keep-alive connections:\n\n{memory}",
        seconds = opts.seconds,
        rounds = opts.rounds,
        conns = concurrency.join(" and "),
        table = results.table(),
        kernel = kernel.trim(),
        nginx = version("nginx", "-v"),
        haproxy = version("haproxy", "-v"),
        wrk = version("wrk", "-v"),
        bin = opts.proxy_bin.display(),
        workers = if workers_flag {
            "`--workers N` and TOKIO_WORKER_THREADS=N"
        } else {
            "no `--workers` flag: TOKIO_WORKER_THREADS=N only"
        },
        rounds_list = results.rounds(),
        memory = results.memory_notes(),
    )
}
