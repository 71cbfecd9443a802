//! Loading a target over cleartext HTTP/2 with h2load and reading its output.
//!
//! `h2load -t1 -cC -mM -DS http://127.0.0.1:PORT/`: one client thread, `C`
//! connections with up to `M` concurrent streams each, closed loop, for `S` seconds.
//! For an `http://` URL h2load speaks HTTP/2 with prior knowledge (its
//! `--no-tls-proto` defaults to `h2c`): the connection preface, no `Upgrade`.
//! h2load's own `--warm-up-time` is not used: the CPU window is h2load's whole run, so
//! requests of a warm-up phase would cost CPU without being counted; the harness warms
//! up with a separate run instead.
//!
//! From its output: requests/s (`finished in Xs, Y req/s`), the completed and failed
//! request counts (`requests: … succeeded, … failed`; failed covers error statuses,
//! resets and network errors) and the mean and largest request time (the `time for
//! request:` line: min, max, mean, sd). h2load gives no percentiles.
//!
//! [`check`] sends a few requests with `-n` and fails unless all succeed: the protocol
//! check of the HTTPS (with `--h1`) and h2c rows before they are loaded.

use std::process::Command;

use super::process::output_of;
use super::report::LoadResult;
use super::wrk::micros;

/// Runs h2load against `url` for `seconds` with `connections` × `streams`. Stops it
/// if a stop signal arrives.
pub(crate) fn run(
    url: &str,
    connections: u32,
    streams: u32,
    seconds: u64,
) -> Result<LoadResult, String> {
    let out = h2load(&[
        "-t1".into(),
        format!("-c{connections}"),
        format!("-m{streams}"),
        format!("-D{seconds}"),
        url.into(),
    ])?;
    parse(&out).ok_or_else(|| format!("cannot read h2load's output:\n{out}"))
}

/// Sends `requests` requests over one connection to `url` (`--h1`: HTTP/1.1, for
/// `https://` URLs, as wrk speaks) and fails unless every one succeeds. Returns the
/// `TLS Protocol:` h2load negotiated, if it printed one.
pub(crate) fn check(url: &str, requests: u32, h1: bool) -> Result<Option<String>, String> {
    let mut args = vec!["-t1".into(), "-c1".into(), format!("-n{requests}")];
    if h1 {
        args.push("--h1".into());
    }
    args.push(url.into());
    let out = h2load(&args)?;
    let succeeded = out
        .lines()
        .find_map(|l| l.strip_prefix("requests:"))
        .and_then(|l| count(l, "succeeded"));
    if succeeded != Some(u64::from(requests)) {
        return Err(format!(
            "{url}: {requests} requests did not all succeed:\n{out}"
        ));
    }
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix("TLS Protocol:"))
        .map(|p| p.trim().to_owned()))
}

/// Sends exactly `requests` HTTP/1.1 requests to `url` over `connections`
/// connections (`--h1`), as fast as they are answered; returns how many succeeded.
pub(crate) fn send_h1(url: &str, connections: u32, requests: u32) -> Result<u64, String> {
    let out = h2load(&[
        "--h1".into(),
        "-t1".into(),
        format!("-c{connections}"),
        format!("-n{requests}"),
        url.into(),
    ])?;
    out.lines()
        .find_map(|l| l.strip_prefix("requests:"))
        .and_then(|l| count(l, "succeeded"))
        .ok_or_else(|| format!("cannot read h2load's output:\n{out}"))
}

/// Runs h2load with `args` and returns its stdout; an error if it fails.
fn h2load(args: &[String]) -> Result<String, String> {
    output_of("h2load", Command::new("h2load").args(args))
        .map_err(|e| format!("h2load {}: {e}", args.join(" ")))
}

/// `N word` in a comma-separated list such as `27840 total, 0 failed`.
fn count(list: &str, word: &str) -> Option<u64> {
    list.split(',').find_map(|item| {
        let mut f = item.split_whitespace();
        let n = f.next()?;
        (f.next() == Some(word)).then(|| n.parse().ok())?
    })
}

/// Reads a [`LoadResult`] from h2load's output.
pub(crate) fn parse(out: &str) -> Option<LoadResult> {
    // `finished in 1.01s, 27840.00 req/s, 2.18MB/s`
    let finished = out.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let rps = finished
        .split(',')
        .find_map(|f| f.trim().strip_suffix(" req/s"))?
        .parse()
        .ok()?;
    let requests = out.lines().find_map(|l| l.strip_prefix("requests:"))?;
    let succeeded = count(requests, "succeeded")?;
    let failed = count(requests, "failed")?;
    // `time for request:      136us     32.47ms      1.40ms      2.09ms    91.17%`
    let mut times = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("time for request:"))?
        .split_whitespace();
    let _min = times.next()?;
    let max_us = micros(times.next()?)?;
    let mean_us = micros(times.next()?)?;
    Some(LoadResult {
        rps,
        requests: succeeded,
        p50_us: None,
        p99_us: None,
        p999_us: None,
        mean_us,
        max_us,
        errors: failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `h2load -t1 -c4 -m10 -D1` against HAProxy with `bind … proto h2`.
    const OUTPUT: &str = "starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Warm-up started for thread #0.
progress: 25% of clients started
progress: 50% of clients started
progress: 75% of clients started
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 1.01s, 27840.00 req/s, 2.18MB/s
requests: 27840 total, 27880 started, 27840 done, 27838 succeeded, 2 failed, 2 errored, 0 timeout
status codes: 27838 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.18MB (2283000) total, 1.62MB (1698240) headers (space savings 37.76%), 81.56KB (83520) data
                     min         max         mean         sd        +/- sd
time for request:      136us     32.47ms      1.40ms      2.09ms    91.17%
time for connect:      115us       179us       152us        27us    75.00%
time to 1st byte:     3.17ms      3.80ms      3.60ms       293us    75.00%
req/s           :    6943.83     6972.56     6958.76       13.18    50.00%
";

    #[test]
    fn parses_h2load_output() {
        let r = parse(OUTPUT).expect("parses");
        assert!((r.rps - 27_840.0).abs() < 1e-6);
        assert_eq!(r.requests, 27_838);
        assert_eq!(r.errors, 2);
        assert!((r.max_us - 32_470.0).abs() < 1e-6);
        assert!((r.mean_us - 1_400.0).abs() < 1e-6);
        assert_eq!(r.p50_us, None);
        assert_eq!(r.p99_us, None);
    }

    #[test]
    fn missing_request_times_is_an_error() {
        let without: String = OUTPUT
            .lines()
            .filter(|l| !l.starts_with("time for request"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse(&without), None);
    }

    #[test]
    fn counts_in_a_list() {
        let l = " 60 total, 60 started, 60 done, 59 succeeded, 1 failed";
        assert_eq!(count(l, "succeeded"), Some(59));
        assert_eq!(count(l, "failed"), Some(1));
        assert_eq!(count(l, "timeout"), None);
    }
}
