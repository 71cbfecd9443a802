//! Child processes that stop when dropped, and what `/proc` says about them.
//!
//! Every server the harness starts is a [`Proc`]: its output goes to a log file in the
//! run's temp dir, and dropping it stops the process and everything it forked
//! (SIGTERM, then SIGKILL after a grace period), so an error, a panic or Ctrl-C
//! ([`catch_signals`] turns those into an error) leaves nothing running.
//!
//! CPU time and RSS are read from `/proc/PID/stat` and `/proc/PID/status`, summed over
//! a process and its descendants ([`Proc::tree`]): for nginx that is the master and its
//! worker, for HAProxy and our proxy the single process (whose figures already cover
//! all its threads).

use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::fs::{self, File};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Set once SIGINT or SIGTERM arrived; long waits poll it through [`check_stop`].
static STOP: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT and SIGTERM into [`check_stop`] errors, so the harness unwinds and
/// its [`Proc`]s stop their processes. A second signal exits at once.
pub(crate) fn catch_signals() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    if STOP.swap(true, Ordering::SeqCst) {
                        std::process::exit(130);
                    }
                    eprintln!("bench_peers: interrupted; stopping the servers");
                }
            });
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// An error once a stop signal arrived.
pub(crate) fn check_stop() -> Result<(), String> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// The path of `program` found in `PATH`, if any.
pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Raises this process's open-file limit (inherited by every child) to at least
/// `want`, or as far as the hard limit allows; returns the new soft limit.
pub(crate) fn raise_nofile(want: u64) -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit(NOFILE): {e}"))?;
    if soft >= want {
        return Ok(soft);
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE (root); otherwise go up to it.
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    let soft = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)
        .map_err(|e| format!("setrlimit(NOFILE, {soft}): {e}"))?;
    Ok(soft)
}

/// `n` distinct free ports on 127.0.0.1 (bound together, then released).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<_>>()
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// A running child process, stopped with all its descendants when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` as `name`, stdin closed, stdout and stderr to `log`.
    pub(crate) fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and all its descendants (nginx: the master and its worker).
    pub(crate) fn tree(&self) -> Vec<u32> {
        let mut tree = vec![self.pid()];
        let mut i = 0;
        while i < tree.len() {
            tree.extend(children(tree[i]));
            i += 1;
        }
        tree
    }

    /// An error with the end of the process's log if it has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                log_tail(&self.log)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`, failing if
    /// the process exits first or nothing listens within 10 s.
    pub(crate) fn wait_for_port(&mut self, port: u16) -> Result<(), String> {
        self.wait_for_port_within(port, Duration::from_secs(10))
    }

    /// [`Proc::wait_for_port`] allowing `limit` (a process run by valgrind starts
    /// slower).
    pub(crate) fn wait_for_port_within(
        &mut self,
        port: u16,
        limit: Duration,
    ) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            self.check_alive()?;
            check_stop()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{} does not listen on {addr} after {} s; its output:\n{}",
                    self.name,
                    limit.as_secs(),
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // Collect the descendants first: once the parent is gone they are orphans.
        let tree = self.tree();
        let _ = kill(pid(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &p in &tree[1..] {
            if Path::new(&format!("/proc/{p}")).exists() {
                let _ = kill(pid(p), Signal::SIGKILL);
            }
        }
    }
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The fields after the command name in `/proc/PID/stat` (field 3, the state, first).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// The direct children of `parent`, by scanning `/proc/*/stat` for their parent id.
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        // Field 4, the parent id, is the second after the command name.
        .filter(|&p| stat_fields(p).and_then(|f| f.get(1).copied()) == Some(u64::from(parent)))
        .collect()
}

/// CPU time of processes in clock ticks, `(user, system)`: fields 14 and 15 of
/// `/proc/PID/stat`, which cover all of a process's threads.
pub(crate) fn cpu_ticks(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|&p| stat_fields(p))
        .fold((0, 0), |(user, system), f| {
            (
                user + f.get(11).copied().unwrap_or(0),
                system + f.get(12).copied().unwrap_or(0),
            )
        })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of [`cpu_ticks`].
pub(crate) fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Resident set size of processes in KiB: `VmRSS` of `/proc/PID/status`, summed.
pub(crate) fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Runs `cmd` (a load tool, named `name` in errors) to its end and returns its stdout;
/// an error with its stderr if it fails. It is polled rather than waited for, so Ctrl-C
/// stops the run; the tools' output is a few dozen lines and fits the pipe.
pub(crate) fn output_of(name: &str, cmd: &mut Command) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    loop {
        if let Err(e) = check_stop() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{name} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
