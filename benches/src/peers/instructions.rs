//! User-space instructions per request, counted by callgrind (`--instructions N`).
//!
//! CPU time per request moves with everything else the machine does (the harness's
//! own rounds of one target differ by 10 % and more); the instructions a balancer runs
//! per request do not. Each target is started again under
//! `valgrind --tool=callgrind` (nginx with `master_process off`: valgrind's control
//! does not reach a forked worker, and with one worker the master does its work), warmed
//! up with [`WARMUP`] requests, its counters zeroed (`callgrind_control -z`), then
//! sent exactly `N` HTTP/1.1 requests by `h2load --h1 -c32 -nN`, and its counters
//! dumped (`callgrind_control --dump`): the instructions of every process of the
//! target between the two, divided by the requests that succeeded. Only user space is
//! counted (callgrind sees no kernel work); instructions are not time (a cache miss
//! costs more than an addition), so this is the share of the work a balancer's code
//! decides, next to the CPU columns, not instead of them. Under valgrind a process
//! runs one thread at a time, so only one-worker targets are counted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use core::time::Duration;

use super::h2load;
use super::process::{check_stop, output_of};
use super::servers::{self, Kind, Listen, Setup};

/// Requests sent before the counters are zeroed: connections opened, pools filled,
/// lazily built state built.
pub(crate) const WARMUP: u32 = 2_000;

/// Connections of the counted load.
const CONNECTIONS: u32 = 32;

/// How long a target run by valgrind may take to listen.
const STARTUP: Duration = Duration::from_secs(60);

/// Instructions per request of balancer `kind` (see the module docs), named `name`,
/// listening on `port` (HTTP/1.1) for the counted load of `requests` requests.
pub(crate) fn per_request(
    name: &str,
    kind: &Kind,
    port: u16,
    setup: &Setup<'_>,
    requests: u32,
) -> Result<f64, String> {
    check_stop()?;
    let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let out = setup.dir.join(format!("callgrind.{file}"));
    let wrap = [
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}.%p", out.display()),
    ];
    let listen = Listen {
        http: Some(port),
        ..Listen::default()
    };
    let label = format!("{name} (callgrind)");
    let mut b = servers::start_balancer_in(&label, kind, listen, setup, &wrap, STARTUP)?;
    let url = format!("http://127.0.0.1:{port}/");
    h2load::send_h1(&url, CONNECTIONS, WARMUP)?;
    let pids = b.proc.tree();
    for pid in &pids {
        callgrind_control("-z", *pid)?;
    }
    let answered = h2load::send_h1(&url, CONNECTIONS, requests)?;
    for pid in &pids {
        callgrind_control("--dump", *pid)?;
    }
    b.proc.check_alive()?;
    drop(b);
    if answered < u64::from(requests) {
        return Err(format!(
            "{name} under callgrind answered {answered} of {requests} requests"
        ));
    }
    let mut total = 0;
    for pid in &pids {
        // The first dump of the process (`.1`); its end, on exit, is the file without
        // the suffix.
        let dump = PathBuf::from(format!("{}.{pid}.1", out.display()));
        total += read_dump(&dump)?;
    }
    if total == 0 {
        return Err(format!(
            "{name}: callgrind wrote no counts under {}",
            out.display()
        ));
    }
    Ok(total as f64 / answered as f64)
}

/// The count in `dump`, once callgrind has written it whole (its `totals:` line comes
/// last); 0 if no dump appears within a few seconds (a process that ran no request,
/// nginx's master).
fn read_dump(dump: &Path) -> Result<u64, String> {
    for _ in 0..100 {
        check_stop()?;
        if let Some(n) = fs::read_to_string(dump).ok().as_deref().and_then(totals) {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(0)
}

/// Runs `callgrind_control ACTION PID`.
fn callgrind_control(action: &str, pid: u32) -> Result<(), String> {
    output_of(
        "callgrind_control",
        Command::new("callgrind_control")
            .arg(action)
            .arg(pid.to_string()),
    )
    .map(drop)
}

/// The event count of a whole callgrind output file: its last line, `totals: N` (one
/// event, `Ir`). `None` while the file is still being written.
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::totals;

    #[test]
    fn reads_the_totals_of_a_dump() {
        let dump =
            "version: 1\nevents: Ir\nsummary: 664954433\n\nfn=(1) main\n0 3\ntotals: 664956898\n";
        assert_eq!(totals(dump), Some(664_956_898));
        // Still being written: the summary alone is not taken for the end.
        assert_eq!(totals("events: Ir\nsummary: 12\nfn=(1) main\n"), None);
    }
}
