//! Prints the selection sequence and each server's share, expected and observed, for
//! weights given as `name=weight` arguments (default `a=3 b=2 c=1`).
//!
//! ```text
//! cargo run -p roundrobin-core --example select -- [--smooth] [--picks N] [name=weight ..]
//! ```
//!
//! `name` alone means the default weight 1. Bad input prints a message and exits 2.
use std::process::ExitCode;

use roundrobin_core::{Error, Policy, RoundRobin};

/// How many picks of the sequence are printed.
const SHOWN: usize = 60;

struct Args {
    policy: Policy,
    picks: Option<u64>,
    servers: Vec<(String, Option<u32>)>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        policy: Policy::Interleaved,
        picks: None,
        servers: Vec::new(),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smooth" => out.policy = Policy::Smooth,
            "--picks" => {
                let n = args.next().ok_or("--picks needs a number")?;
                let n = n
                    .parse()
                    .map_err(|_| format!("--picks: `{n}` is not a whole number"))?;
                out.picks = Some(n);
            }
            "-h" | "--help" => {
                return Err("usage: select [--smooth] [--picks N] [name=weight ..]".into())
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            spec => {
                let (name, weight) = match spec.split_once('=') {
                    Some((name, w)) => {
                        let w = w.parse::<u32>().map_err(|_| {
                            format!("`{spec}`: the weight must be a whole number 0..=4294967295")
                        })?;
                        (name, Some(w))
                    }
                    None => (spec, None),
                };
                if name.is_empty() {
                    return Err(format!("`{spec}`: empty server name"));
                }
                out.servers.push((name.to_string(), weight));
            }
        }
    }
    if out.servers.is_empty() {
        out.servers = [("a", 3), ("b", 2), ("c", 1)]
            .map(|(n, w)| (n.to_string(), Some(w)))
            .to_vec();
    }
    Ok(out)
}

fn run(args: Args) -> Result<(), Error> {
    let rr = RoundRobin::<String>::builder().policy(args.policy).build();
    rr.upsert_servers(args.servers)?;
    let (servers, weights): (Vec<String>, Vec<u32>) = rr.weights().into_iter().unzip();
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    let period = if g == 0 { 0 } else { total / u64::from(g) };
    let picks = args.picks.unwrap_or(period.clamp(1, 1_000_000));

    let mut counts = vec![0u64; servers.len()];
    let mut shown = Vec::new();
    for k in 0..picks {
        let s = rr.next_server()?;
        let i = servers.iter().position(|x| *x == s).unwrap_or(0);
        counts[i] += 1;
        if k < SHOWN as u64 {
            shown.push(s);
        }
    }
    println!("policy:   {:?}", args.policy);
    println!("period:   {period} picks (sum of weights / gcd)");
    let more = if picks > SHOWN as u64 { " .." } else { "" };
    println!("sequence: {}{more}", shown.join(" "));
    println!();
    println!("shares over {picks} picks:");
    println!(
        "  {:<12} {:>8} {:>10} {:>10}",
        "server", "weight", "expected", "observed"
    );
    for ((s, &w), &c) in servers.iter().zip(&weights).zip(&counts) {
        let expected = 100.0 * f64::from(w) / total as f64;
        let observed = 100.0 * c as f64 / picks as f64;
        println!("  {s:<12} {w:>8} {expected:>9.2}% {observed:>9.2}%");
    }
    Ok(())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("select: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("select: {e}");
            ExitCode::from(2)
        }
    }
}
