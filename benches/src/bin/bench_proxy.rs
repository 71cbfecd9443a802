//! Proxy load benchmark: requests/s and latency through the `roundrobin-hyper`
//! balancer vs straight to the same backend, in one process, one run.
//!
//! ```text
//! cargo xtask bench-proxy [--seconds N] [--concurrency C] [--target NAME=URL]..
//! ```
//!
//! Starts a hyper backend and the balancer (forwarding to it) on 127.0.0.1, loads
//! `direct` (the backend), then `roundrobin-hyper` (the balancer), then every
//! `--target` (e.g. an nginx in front of the same kind of backend), each for
//! `--seconds` with `--concurrency` keep-alive clients, and prints a markdown table
//! with the overhead vs `direct`. Client, balancer and backend share the machine's
//! cores, so the balancer's CPU cost shows up in its throughput too.
//!
//! A counting global allocator reports heap allocations per request for each
//! in-process target; the difference between the two rows is what the balancer adds.

use core::time::Duration;
use std::alloc::System;
use std::process::ExitCode;

use clap::Parser;
use http::Uri;
use roundrobin_benches::{
    load, markdown_table, start_backend, start_balancer, url_of, LoadConfig, Target,
};
use stats_alloc::StatsAlloc;

#[global_allocator]
static ALLOC: StatsAlloc<System> = StatsAlloc::system();

/// Loads the direct backend and the balancer in front of it, and prints a table.
#[derive(Debug, Parser)]
#[command(name = "bench_proxy")]
struct Args {
    /// Seconds of load per target.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Another target to load, `NAME=URL`; repeat for more.
    #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_target)]
    targets: Vec<Target>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=URL"))?;
    let url: Uri = url.parse().map_err(|e| format!("bad url `{url}`: {e}"))?;
    if url.scheme_str() != Some("http") {
        return Err(format!("`{url}`: only http:// targets are supported"));
    }
    Ok(Target::new(name, url))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.seconds == 0 || args.concurrency == 0 {
        eprintln!("bench_proxy: --seconds and --concurrency must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let config = LoadConfig {
        duration: Duration::from_secs(args.seconds),
        concurrency: args.concurrency,
        ..LoadConfig::default()
    };
    let backend = start_backend().await?;
    let balancer = start_balancer(&[&backend]).await?;
    let in_process = [
        Target::new("direct", url_of(&backend)),
        Target::new("roundrobin-hyper", url_of(&balancer)),
    ];
    eprintln!(
        "loading each target for {} s with {} clients",
        args.seconds, args.concurrency
    );
    let mut reports = Vec::new();
    let mut allocs = Vec::new();
    for target in in_process.iter().chain(&args.targets) {
        eprintln!("  {} at {}", target.name, target.url);
        let before = ALLOC.stats();
        let report = load(target, &config).await;
        let after = ALLOC.stats();
        allocs.push((
            target.name.clone(),
            (after.allocations + after.reallocations)
                .saturating_sub(before.allocations + before.reallocations),
            report.requests(),
        ));
        reports.push(report);
    }
    println!("{}", markdown_table(&reports, 0));
    println!("heap allocations per request (whole process: client, proxy and backend):\n");
    for (name, count, requests) in allocs.iter().take(in_process.len()) {
        if *requests > 0 {
            println!("- {name}: {:.1}", *count as f64 / *requests as f64);
        }
    }
    Ok(())
}
