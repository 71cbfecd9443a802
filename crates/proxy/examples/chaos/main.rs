//! `cargo xtask chaos --seconds N`: the fault scenarios of the test suite, run longer
//! against the release `roundrobin-proxy` binary, as one markdown table.
//!
//! ```text
//! cargo run --release -p roundrobin-proxy --example chaos -- --seconds 20 [--bin PATH] [--only NAME]
//! ```
//!
//! Everything runs on 127.0.0.1 and stops by itself.

mod faults;

use core::time::Duration;
use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut seconds = 20u64;
    let mut bin: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--seconds", Some(n)) => match n.parse() {
                Ok(n) if n > 0 => seconds = n,
                _ => return usage("--seconds takes a positive whole number"),
            },
            ("--bin", Some(path)) => bin = Some(PathBuf::from(path)),
            ("--only", Some(name)) => only = Some(name),
            _ => return usage(&format!("unknown argument `{a}`")),
        }
    }
    let bin = bin.unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        // target/<profile>/examples/chaos → target/<profile>/roundrobin-proxy
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("roundrobin-proxy"))
            .unwrap_or_default()
    });
    if !bin.exists() {
        return usage(&format!(
            "{} not found: build it with `cargo build --release -p roundrobin-proxy`",
            bin.display()
        ));
    }
    let run = Duration::from_secs(seconds);
    eprintln!(
        "chaos: {} s per load scenario against {}",
        seconds,
        bin.display()
    );
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut reports = Vec::new();
    if wanted("killed") {
        reports.push(faults::backend_killed(&bin, run).await);
    }
    if wanted("refuses") {
        reports.push(faults::backend_refuses(&bin, run).await);
    }
    if wanted("hangs") {
        reports.push(faults::backend_hangs(&bin, run).await);
    }
    if wanted("half") {
        reports.push(faults::backend_half_response(&bin, run).await);
    }
    if wanted("clients") {
        reports.push(faults::slow_and_aborting_clients(&bin, run).await);
    }
    if wanted("idle") {
        reports.push(faults::idle_connections(&bin, 5_000).await);
    }
    if wanted("bodies") {
        reports.push(faults::large_bodies(&bin, 256).await);
    }
    print!("{}", faults::table(&reports));
    ExitCode::SUCCESS
}

fn usage(message: &str) -> ExitCode {
    eprintln!(
        "chaos: {message}\nusage: chaos [--seconds N] [--bin PATH] \
         [--only killed|refuses|hangs|half|clients|idle|bodies]"
    );
    ExitCode::from(2)
}
