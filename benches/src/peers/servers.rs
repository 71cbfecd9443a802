//! The servers under test: the shared backends and the balancers in front of them.
//!
//! The backends are ONE nginx process (`worker_processes 1`, `access_log off`) with
//! three `listen` servers, each answering `GET /` with 200 and a 3-byte body naming
//! it (`b1\n`, `b2\n`, `b3\n`). Every balancer forwards to the same three ports with
//! weights 3:2:1 and runs one worker (process or thread); each keeps its upstream
//! connections alive, so a request costs the backend the same whichever balancer sent
//! it.

use core::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::Proc;

/// The backend weights, in port order.
pub(crate) const WEIGHTS: [u32; 3] = [3, 2, 1];

/// Which balancer a target is.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// nginx: `upstream` with weights and `keepalive`, `worker_processes 1`.
    Nginx,
    /// HAProxy: `balance roundrobin`, weights, `nbthread 1`, `http-reuse always`.
    Haproxy,
    /// Our proxy binary with `workers` runtime threads.
    Roundrobin {
        /// The binary (`roundrobin-proxy` or the `proxy` example).
        bin: PathBuf,
        /// Whether it takes `--workers N` (otherwise only `TOKIO_WORKER_THREADS`).
        workers_flag: bool,
        /// Runtime worker threads.
        workers: u32,
        /// More flags (`--no-metrics`, `--access-log json`).
        extra: &'static [&'static str],
    },
}

/// A running balancer: the row name, its port and its process.
#[derive(Debug)]
pub(crate) struct Balancer {
    /// The table row's name.
    pub(crate) name: String,
    /// The port it listens on, 127.0.0.1.
    pub(crate) port: u16,
    /// The process (for nginx the master; [`Proc::tree`] adds the worker).
    pub(crate) proc: Proc,
}

/// Starts the backend nginx on `ports` (one `server` each) and waits until all
/// three accept connections. `nofile` is the open-file limit it inherits.
pub(crate) fn start_backends(dir: &Path, ports: &[u16], nofile: u64) -> Result<Proc, String> {
    let mut servers = String::new();
    for (i, port) in ports.iter().enumerate() {
        let _ = writeln!(
            servers,
            "    server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"b{}\\n\"; }} }}",
            i + 1
        );
    }
    let conf = format!(
        "worker_processes 1;
daemon off;
pid {dir}/backends.pid;
error_log {dir}/backends.error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
{temp}
{servers}}}
",
        dir = dir.display(),
        temp = nginx_temp_paths(dir, "backends"),
        conns = nofile.saturating_sub(100).min(16_384),
    );
    let mut proc = start_nginx("backends", dir, &conf)?;
    for &port in ports {
        proc.wait_for_port(port)?;
    }
    Ok(proc)
}

/// Starts balancer `kind` named `name` on `port` in front of `backends` and waits
/// until it accepts connections. `nofile` is the open-file limit it inherits; nginx
/// and HAProxy are configured to use all of it.
pub(crate) fn start_balancer(
    name: &str,
    kind: &Kind,
    dir: &Path,
    port: u16,
    backends: &[u16],
    nofile: u64,
) -> Result<Balancer, String> {
    let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let mut proc = match kind {
        Kind::Nginx => start_nginx(&file, dir, &nginx_conf(&file, dir, port, backends, nofile))?,
        Kind::Haproxy => {
            let conf = dir.join(format!("{file}.cfg"));
            write(&conf, &haproxy_conf(port, backends, nofile))?;
            Proc::spawn(
                name,
                Command::new("haproxy").arg("-db").arg("-f").arg(&conf),
                &dir.join(format!("{file}.log")),
            )?
        }
        Kind::Roundrobin {
            bin,
            workers_flag,
            workers,
            extra,
        } => {
            let mut cmd = Command::new(bin);
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
            for (p, w) in backends.iter().zip(WEIGHTS) {
                cmd.arg("--backend")
                    .arg(format!("http://127.0.0.1:{p}={w}"));
            }
            if *workers_flag {
                cmd.arg("--workers").arg(workers.to_string());
            }
            cmd.env("TOKIO_WORKER_THREADS", workers.to_string());
            cmd.args(extra.iter());
            Proc::spawn(name, &mut cmd, &dir.join(format!("{file}.log")))?
        }
    };
    proc.wait_for_port(port)?;
    Ok(Balancer {
        name: name.to_owned(),
        port,
        proc,
    })
}

/// Writes `conf` and starts nginx on it in the foreground (`daemon off;` in `conf`).
fn start_nginx(file: &str, dir: &Path, conf: &str) -> Result<Proc, String> {
    let path = dir.join(format!("{file}.conf"));
    write(&path, conf)?;
    Proc::spawn(
        file,
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            // The startup error log, before the config's `error_log` applies.
            .arg("-e")
            .arg(dir.join(format!("{file}.error.log"))),
        &dir.join(format!("{file}.log")),
    )
}

/// nginx's temp paths inside the run's dir (it would use the system's otherwise).
fn nginx_temp_paths(dir: &Path, file: &str) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("    {t}_temp_path {}/{file}-{t}-temp;\n", dir.display()))
        .collect()
}

/// One worker; `worker_connections` counts client and upstream connections alike.
fn nginx_conf(file: &str, dir: &Path, port: u16, backends: &[u16], nofile: u64) -> String {
    let mut upstream = String::new();
    for (p, w) in backends.iter().zip(WEIGHTS) {
        let _ = writeln!(upstream, "        server 127.0.0.1:{p} weight={w};");
    }
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/{file}.pid;
error_log {dir}/{file}.error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
{temp}
    upstream backends {{
{upstream}        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
        dir = dir.display(),
        temp = nginx_temp_paths(dir, file),
        conns = nofile.saturating_sub(100),
    )
}

/// HAProxy refuses to start unless the open-file limit covers two sockets per
/// `maxconn` (client and server side) plus a few, so `maxconn` is half the limit.
fn haproxy_conf(port: u16, backends: &[u16], nofile: u64) -> String {
    let maxconn = haproxy_maxconn(nofile);
    let mut servers = String::new();
    for (i, (p, w)) in backends.iter().zip(WEIGHTS).enumerate() {
        let _ = writeln!(servers, "    server b{} 127.0.0.1:{p} weight {w}", i + 1);
    }
    format!(
        "global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    maxconn {maxconn}
    default_backend be

backend be
    balance roundrobin
{servers}"
    )
}

/// The most client connections HAProxy accepts with open-file limit `nofile`.
pub(crate) fn haproxy_maxconn(nofile: u64) -> u64 {
    nofile.saturating_sub(100) / 2
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
