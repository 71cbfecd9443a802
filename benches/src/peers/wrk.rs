//! Loading a target with wrk and reading its output.
//!
//! `wrk -t1 -cC -dS --latency --timeout 5s -s done.lua URL`: one client thread, `C`
//! keep-alive connections, closed loop; `URL` is `http://` or `https://` (wrk speaks
//! HTTP/1.1 over OpenSSL, without ALPN, and does not verify the certificate).
//! Requests/s, the mean and largest latency and the 50% and 99% latencies come
//! from wrk's own output (`Requests/sec:`, the `Latency` line and the `--latency`
//! distribution); the
//! 99.9% latency, the completed request count and the error counts come from the
//! [`DONE_SCRIPT`] line, since wrk prints no 99.9% without a script.

use std::path::Path;
use std::process::Command;

use super::process::output_of;
use super::report::LoadResult;

/// The wrk Lua script: at the end, one line with what wrk's text leaves out.
pub(crate) const DONE_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "bench-peers: requests=%d socket_errors=%d status_errors=%d p999_us=%.1f\n",
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(99.9)))
end
"#;

/// Runs wrk against `url` for `seconds` with `connections`, using the
/// [`DONE_SCRIPT`] at `script`. Stops wrk if a stop signal arrives.
pub(crate) fn run(
    url: &str,
    connections: u32,
    seconds: u64,
    script: &Path,
) -> Result<LoadResult, String> {
    let stdout = output_of(
        "wrk",
        Command::new("wrk")
            .args(["-t1", "--latency", "--timeout", "5s"])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .arg("-s")
            .arg(script)
            .arg(url),
    )?;
    parse(&stdout).ok_or_else(|| format!("cannot read wrk's output:\n{stdout}"))
}

/// Reads a [`LoadResult`] from wrk's output (with `--latency` and the
/// [`DONE_SCRIPT`]).
pub(crate) fn parse(out: &str) -> Option<LoadResult> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let percentile = |name: &str| {
        let mut fields = out
            .lines()
            .skip_while(|l| !l.contains("Latency Distribution"))
            .map(str::split_whitespace)
            .find_map(|mut f| (f.next() == Some(name)).then_some(f))?;
        micros(fields.next()?)
    };
    // `Latency   710.52us  200.11us   9.87ms   90.12%`: mean, deviation, max.
    let mut latency = out
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut f| (f.next() == Some("Latency")).then_some(f))?;
    let mean_us = micros(latency.next()?)?;
    let max_us = micros(latency.nth(1)?)?;
    let p50_us = percentile("50%")?;
    let p99_us = percentile("99%")?;
    let done = out.lines().find_map(|l| l.strip_prefix("bench-peers: "))?;
    let field = |key: &str| {
        done.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let requests = field("requests")?.parse().ok()?;
    let socket_errors: u64 = field("socket_errors")?.parse().ok()?;
    let status_errors: u64 = field("status_errors")?.parse().ok()?;
    let p999_us = field("p999_us")?.parse().ok()?;
    Some(LoadResult {
        rps,
        requests,
        p50_us: Some(p50_us),
        p99_us: Some(p99_us),
        p999_us: Some(p999_us),
        mean_us,
        max_us,
        errors: socket_errors + status_errors,
    })
}

/// A wrk or h2load duration (`512.00us`, `54us`, `1.23ms`, `2.00s`, `1.00m`) in µs.
pub(crate) fn micros(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 6s test @ http://127.0.0.1:40000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   710.52us  200.11us   9.87ms   90.12%
    Req/Sec    45.12k     1.20k   47.00k    80.00%
  Latency Distribution
     50%  680.00us
     75%  750.00us
     90%  820.00us
     99%    1.52ms
  269412 requests in 6.00s, 40.09MB read
Requests/sec:  44901.87
Transfer/sec:      6.68MB
bench-peers: requests=269412 socket_errors=0 status_errors=2 p999_us=3210.0
";

    #[test]
    fn parses_wrk_output() {
        let r = parse(OUTPUT).expect("parses");
        assert_eq!(r.requests, 269_412);
        assert!((r.rps - 44_901.87).abs() < 1e-6);
        assert_eq!(r.p50_us, Some(680.0));
        assert_eq!(r.p99_us, Some(1520.0));
        assert_eq!(r.p999_us, Some(3210.0));
        assert!((r.mean_us - 710.52).abs() < 1e-6);
        assert!((r.max_us - 9870.0).abs() < 1e-6);
        assert_eq!(r.errors, 2);
    }

    #[test]
    fn missing_script_line_is_an_error() {
        let without: String = OUTPUT
            .lines()
            .filter(|l| !l.starts_with("bench-peers"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse(&without), None);
    }
}
