//! Our proxy against nginx and HAProxy: requests/s, latency, CPU per request and
//! memory per idle connection, each balancer a separate process with one worker in
//! front of the same out-of-process backends.
//!
//! ```text
//! cargo xtask bench-proxy --peers [--seconds 6] [--rounds 3] [--install]
//!     [--protocols http,https,h2c] [--concurrency 32 --concurrency 256]
//!     [--h2-streams 10] [--warmup 1] [--idle-conns 10000]
//!     [--proxy-bin PATH] [--pgo-bin PATH] [--out-dir DIR] [--instructions REQUESTS]
//! ```
//!
//! Needs `nginx` and `haproxy` in `PATH`, `wrk` for the `http` and `https` rows,
//! `openssl` (the certificate) for the `https` rows and `h2load` (Debian package
//! `nghttp2-client`) for the `h2c` rows and the `https` check; `--install` runs
//! `apt-get install -y nginx haproxy wrk nghttp2-client openssl valgrind`; `--instructions`
//! needs `valgrind` and `h2load`. Prints a markdown
//! table and writes it to `target/bench-proxy/peers.md`, with a chart in `peers.svg`.
//! What is measured and how: see the `peers` module.

#[path = "../peers/mod.rs"]
mod peers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Our proxy vs nginx and HAProxy, measured with wrk and h2load.
#[derive(Debug, Parser)]
#[command(name = "bench_peers")]
struct Args {
    /// Seconds of load per target, concurrency and round.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Interleaved rounds over all targets; figures are medians over them.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Connections (wrk and h2load); repeat for more.
    #[arg(long, default_values_t = [32, 256])]
    concurrency: Vec<u32>,
    /// Protocol groups to run, comma-separated: http (HTTP/1.1), https (TLS
    /// terminated by the balancer), h2c (cleartext HTTP/2, prior knowledge).
    #[arg(long, value_delimiter = ',', default_value = "http,https,h2c")]
    protocols: Vec<peers::Protocol>,
    /// Concurrent streams per h2c connection (h2load -m).
    #[arg(long, default_value_t = 10)]
    h2_streams: u32,
    /// Seconds of uncounted warm-up per row (0: none).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Idle keep-alive connections for the memory column, HTTP/1.1 rows (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// Our proxy binary [default: target/release/roundrobin-proxy if it exists, else
    /// target/release/examples/proxy].
    #[arg(long, value_name = "PATH")]
    proxy_bin: Option<PathBuf>,
    /// A second build of our proxy, profile-guided (`cargo xtask dist`): adds its rows
    /// with 1 and 2 workers to every protocol group (`cargo xtask bench-proxy --peers
    /// --pgo` builds it and passes it here).
    #[arg(long, value_name = "PATH")]
    pgo_bin: Option<PathBuf>,
    /// Where peers.md and peers.svg go [default: target/bench-proxy].
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Run `apt-get install -y nginx haproxy wrk nghttp2-client openssl valgrind` first.
    #[arg(long)]
    install: bool,
    /// Also count user-space instructions per request with callgrind: each one-thread
    /// target alone, this many HTTP/1.1 requests (0: skip; needs valgrind and h2load).
    #[arg(long, default_value_t = 0, value_name = "REQUESTS")]
    instructions: u32,
}

/// The cargo target dir: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.seconds == 0
        || args.rounds == 0
        || args.h2_streams == 0
        || args.concurrency.contains(&0)
    {
        eprintln!(
            "bench_peers: --seconds, --rounds, --h2-streams and --concurrency must be at \
             least 1"
        );
        return ExitCode::from(2);
    }
    let target = target_dir();
    let proxy_bin = args.proxy_bin.unwrap_or_else(|| {
        let bin = target.join("release/roundrobin-proxy");
        if bin.is_file() {
            bin
        } else {
            target.join("release/examples/proxy")
        }
    });
    let opts = peers::Options {
        seconds: args.seconds,
        rounds: args.rounds,
        concurrency: args.concurrency,
        streams: args.h2_streams,
        protocols: args.protocols,
        warmup: args.warmup,
        idle_conns: args.idle_conns,
        proxy_bin,
        pgo_bin: args.pgo_bin,
        out_dir: args.out_dir.unwrap_or_else(|| target.join("bench-proxy")),
        install: args.install,
        instructions: args.instructions,
    };
    match peers::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_peers: {e}");
            ExitCode::FAILURE
        }
    }
}
