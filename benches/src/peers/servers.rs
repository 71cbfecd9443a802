//! The servers under test: the shared backends and the balancers in front of them.
//!
//! The backends are ONE nginx process (`worker_processes 1`, `access_log off`) with
//! three `listen` servers, each answering `GET /` with 200 and a 3-byte body naming
//! it (`b1\n`, `b2\n`, `b3\n`). Every balancer forwards to the same three ports with
//! weights 3:2:1 and runs one worker (process or thread); each keeps its upstream
//! connections alive, so a request costs the backend the same whichever balancer sent
//! it. Backends and upstream connections are plain HTTP/1.1 whatever protocol the
//! client side speaks.
//!
//! A balancer listens on up to three ports ([`Listen`]): plain HTTP/1.1, HTTPS (TLS
//! terminated by the balancer, with the certificate [`Tls::generate`] made for the run)
//! and cleartext HTTP/2 with prior knowledge (h2c). nginx and HAProxy take all three
//! in one process; our proxy takes one listener per process and detects the HTTP/2
//! preface on its plain one, so its h2c port is its HTTP/1.1 port and its HTTPS
//! listener is a process of its own.

use core::fmt::Write as _;
use core::time::Duration;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::Proc;
use super::Protocol;

/// The backend weights, in port order.
pub(crate) const WEIGHTS: [u32; 3] = [3, 2, 1];

/// Which balancer a target is.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// nginx: `upstream` with weights and `keepalive`, `worker_processes 1`.
    Nginx,
    /// HAProxy: `balance roundrobin`, weights, `nbthread` `threads`, `http-reuse always`.
    Haproxy {
        /// `nbthread`: 1 for the baseline, 2 for the reference of our two workers.
        threads: u32,
    },
    /// Our proxy binary with `workers` runtime threads; with [`Listen::https`] it
    /// gets `--tls-cert` and `--tls-key`.
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

/// The 127.0.0.1 ports a balancer listens on, per protocol.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Listen {
    /// Plain HTTP/1.1.
    pub(crate) http: Option<u16>,
    /// HTTPS: TLS terminated by the balancer (ALPN `h2`, `http/1.1`).
    pub(crate) https: Option<u16>,
    /// Cleartext HTTP/2 with prior knowledge (for our proxy: its plain port).
    pub(crate) h2c: Option<u16>,
}

impl Listen {
    /// The port for `protocol`, if it listens for it.
    pub(crate) fn port(&self, protocol: Protocol) -> Option<u16> {
        match protocol {
            Protocol::Http => self.http,
            Protocol::Https => self.https,
            Protocol::H2c => self.h2c,
        }
    }
}

/// The run's self-signed certificate (EC P-256, `CN=localhost`, one day), made with
/// `openssl req` in the run's temp dir.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    /// The certificate, PEM.
    pub(crate) cert: PathBuf,
    /// Its private key, PEM (PKCS#8).
    pub(crate) key: PathBuf,
    /// Certificate and key in one file, as HAProxy's `crt` wants them.
    pub(crate) combined: PathBuf,
}

impl Tls {
    /// Generates the certificate and key into `dir`.
    pub(crate) fn generate(dir: &Path) -> Result<Self, String> {
        let tls = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            combined: dir.join("combined.pem"),
        };
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&tls.key)
            .arg("-out")
            .arg(&tls.cert)
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl req failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        write(
            &tls.combined,
            &format!("{}{}", read(&tls.cert)?, read(&tls.key)?),
        )?;
        Ok(tls)
    }
}

/// What every balancer of the run shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup<'a> {
    /// The run's temp dir: configs, logs, pid files.
    pub(crate) dir: &'a Path,
    /// The backend ports, in [`WEIGHTS`] order.
    pub(crate) backends: &'a [u16],
    /// The open-file limit the balancers inherit.
    pub(crate) nofile: u64,
    /// The certificate, if any balancer listens for HTTPS.
    pub(crate) tls: Option<&'a Tls>,
    /// Whether nginx has the `http2 on;` directive (1.25.1 and later); older ones
    /// take `http2` as a `listen` parameter.
    pub(crate) nginx_http2_on: bool,
}

/// A running balancer: its name and its process.
#[derive(Debug)]
pub(crate) struct Balancer {
    /// Its name (its rows' name, ` (TLS)` added for our proxy's HTTPS process).
    pub(crate) name: String,
    /// The process (for nginx the master; [`Proc::tree`] adds the worker).
    pub(crate) proc: Proc,
}

/// Whether the nginx of `nginx -v` (`nginx version: nginx/1.22.1`) has the
/// `http2 on;` directive, new in 1.25.1.
pub(crate) fn nginx_http2_on(version: &str) -> bool {
    let Some(v) = version.split("nginx/").nth(1) else {
        return false;
    };
    let parts: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    parts >= vec![1, 25, 1]
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
    let mut proc = Proc::spawn(
        "backends",
        &mut nginx_command("backends", dir, &conf)?,
        &dir.join("backends.log"),
    )?;
    for &port in ports {
        proc.wait_for_port(port)?;
    }
    Ok(proc)
}

/// Starts balancer `kind` named `name` on the ports of `listen` in front of the
/// backends and waits until it accepts connections on each. nginx and HAProxy are
/// configured to use all of the open-file limit.
pub(crate) fn start_balancer(
    name: &str,
    kind: &Kind,
    listen: Listen,
    setup: &Setup<'_>,
) -> Result<Balancer, String> {
    start_balancer_in(name, kind, listen, setup, &[], Duration::from_secs(10))
}

/// [`start_balancer`] run by `wrap` (a program and its arguments, before the
/// balancer's own command line; none: run it directly), allowed `startup` to listen.
pub(crate) fn start_balancer_in(
    name: &str,
    kind: &Kind,
    listen: Listen,
    setup: &Setup<'_>,
    wrap: &[String],
    startup: Duration,
) -> Result<Balancer, String> {
    let dir = setup.dir;
    let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let log = dir.join(format!("{file}.log"));
    let mut cmd = match kind {
        Kind::Nginx => {
            let mut cmd = nginx_command(&file, dir, &nginx_conf(&file, listen, setup)?)?;
            if !wrap.is_empty() {
                // One process: the tool that runs it (valgrind) does not reach a
                // forked worker. With one worker, the master does the worker's work.
                cmd.arg("-g").arg("master_process off;");
            }
            cmd
        }
        Kind::Haproxy { threads } => {
            let conf = dir.join(format!("{file}.cfg"));
            write(&conf, &haproxy_conf(listen, setup, *threads)?)?;
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&conf);
            cmd
        }
        Kind::Roundrobin {
            bin,
            workers_flag,
            workers,
            extra,
        } => {
            let mut cmd = Command::new(bin);
            match listen {
                Listen {
                    http: Some(port),
                    https: None,
                    h2c,
                } if h2c.is_none_or(|p| p == port) => {
                    cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
                }
                Listen {
                    http: None,
                    https: Some(port),
                    h2c: None,
                } => {
                    let tls = setup.tls.ok_or("an HTTPS listener needs the certificate")?;
                    cmd.arg("--listen")
                        .arg(format!("127.0.0.1:{port}"))
                        .arg("--tls-cert")
                        .arg(&tls.cert)
                        .arg("--tls-key")
                        .arg(&tls.key);
                }
                other => {
                    return Err(format!(
                        "{name}: our proxy has one listener, plain (HTTP/1.1 and h2c) or \
                         TLS, not {other:?}"
                    ))
                }
            }
            for (p, w) in setup.backends.iter().zip(WEIGHTS) {
                cmd.arg("--backend")
                    .arg(format!("http://127.0.0.1:{p}={w}"));
            }
            if *workers_flag {
                cmd.arg("--workers").arg(workers.to_string());
            }
            cmd.env("TOKIO_WORKER_THREADS", workers.to_string());
            cmd.args(extra.iter());
            cmd
        }
    };
    let mut proc = match wrapped(&cmd, wrap) {
        None => Proc::spawn(name, &mut cmd, &log)?,
        Some(mut wrapped) => Proc::spawn(name, &mut wrapped, &log)?,
    };
    for port in [listen.http, listen.https, listen.h2c]
        .into_iter()
        .flatten()
    {
        proc.wait_for_port_within(port, startup)?;
    }
    Ok(Balancer {
        name: name.to_owned(),
        proc,
    })
}

/// `cmd` run by `wrap` (a program and its arguments), with `cmd`'s environment; `None`
/// when `wrap` is empty.
fn wrapped(cmd: &Command, wrap: &[String]) -> Option<Command> {
    let (program, args) = wrap.split_first()?;
    let mut wrapped = Command::new(program);
    wrapped
        .args(args)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    Some(wrapped)
}

/// Writes `conf` and returns the command that runs nginx on it in the foreground
/// (`daemon off;` in `conf`).
fn nginx_command(file: &str, dir: &Path, conf: &str) -> Result<Command, String> {
    let path = dir.join(format!("{file}.conf"));
    write(&path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        // The startup error log, before the config's `error_log` applies.
        .arg("-e")
        .arg(dir.join(format!("{file}.error.log")));
    Ok(cmd)
}

/// nginx's temp paths inside the run's dir (it would use the system's otherwise).
fn nginx_temp_paths(dir: &Path, file: &str) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("    {t}_temp_path {}/{file}-{t}-temp;\n", dir.display()))
        .collect()
}

/// One worker; `worker_connections` counts client and upstream connections alike.
/// One `server` per listener, all with the same `location`.
fn nginx_conf(file: &str, listen: Listen, setup: &Setup<'_>) -> Result<String, String> {
    let mut upstream = String::new();
    for (p, w) in setup.backends.iter().zip(WEIGHTS) {
        let _ = writeln!(upstream, "        server 127.0.0.1:{p} weight={w};");
    }
    let location = "        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
";
    let mut servers = String::new();
    if let Some(port) = listen.http {
        let _ = write!(
            servers,
            "    server {{\n        listen 127.0.0.1:{port};\n{location}    }}\n"
        );
    }
    let (http2_param, http2_on) = if setup.nginx_http2_on {
        ("", "        http2 on;\n")
    } else {
        (" http2", "")
    };
    if let Some(port) = listen.https {
        let tls = setup.tls.ok_or("an HTTPS listener needs the certificate")?;
        let _ = write!(
            servers,
            "    server {{
        listen 127.0.0.1:{port} ssl{http2_param};
{http2_on}        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
{location}    }}
",
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
    }
    if let Some(port) = listen.h2c {
        let _ = write!(
            servers,
            "    server {{
        listen 127.0.0.1:{port}{http2_param};
{http2_on}{location}    }}
"
        );
    }
    Ok(format!(
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
{servers}}}
",
        dir = setup.dir.display(),
        temp = nginx_temp_paths(setup.dir, file),
        nofile = setup.nofile,
        conns = setup.nofile.saturating_sub(100),
    ))
}

/// HAProxy refuses to start unless the open-file limit covers two sockets per
/// `maxconn` (client and server side) plus a few, so `maxconn` is half the limit.
/// One frontend with a `bind` per listener: plain, `ssl crt … alpn h2,http/1.1`,
/// `proto h2`.
fn haproxy_conf(listen: Listen, setup: &Setup<'_>, threads: u32) -> Result<String, String> {
    let maxconn = haproxy_maxconn(setup.nofile);
    let mut servers = String::new();
    for (i, (p, w)) in setup.backends.iter().zip(WEIGHTS).enumerate() {
        let _ = writeln!(servers, "    server b{} 127.0.0.1:{p} weight {w}", i + 1);
    }
    let mut binds = String::new();
    if let Some(port) = listen.http {
        let _ = writeln!(binds, "    bind 127.0.0.1:{port}");
    }
    if let Some(port) = listen.https {
        let tls = setup.tls.ok_or("an HTTPS listener needs the certificate")?;
        let _ = writeln!(
            binds,
            "    bind 127.0.0.1:{port} ssl crt {} alpn h2,http/1.1",
            tls.combined.display()
        );
    }
    if let Some(port) = listen.h2c {
        let _ = writeln!(binds, "    bind 127.0.0.1:{port} proto h2");
    }
    Ok(format!(
        "global
    nbthread {threads}
    maxconn {maxconn}

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s
    http-reuse always

frontend fe
{binds}    maxconn {maxconn}
    default_backend be

backend be
    balance roundrobin
{servers}"
    ))
}

/// The most client connections HAProxy accepts with open-file limit `nofile`.
pub(crate) fn haproxy_maxconn(nofile: u64) -> u64 {
    nofile.saturating_sub(100) / 2
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_versions_with_http2_on() {
        assert!(!nginx_http2_on("nginx version: nginx/1.22.1"));
        assert!(!nginx_http2_on("nginx version: nginx/1.25.0"));
        assert!(nginx_http2_on("nginx version: nginx/1.25.1"));
        assert!(nginx_http2_on("nginx version: nginx/1.26.3 (Ubuntu)"));
        assert!(!nginx_http2_on("unknown"));
    }

    #[test]
    fn configs_have_a_listener_per_protocol() {
        let dir = Path::new("/tmp/x");
        let tls = Tls {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            combined: dir.join("combined.pem"),
        };
        let mut setup = Setup {
            dir,
            backends: &[1, 2, 3],
            nofile: 65_536,
            tls: Some(&tls),
            nginx_http2_on: false,
        };
        let listen = Listen {
            http: Some(10),
            https: Some(11),
            h2c: Some(12),
        };
        let h = haproxy_conf(listen, &setup, 1).unwrap();
        assert!(h.contains("nbthread 1\n"));
        assert!(haproxy_conf(listen, &setup, 2)
            .unwrap()
            .contains("nbthread 2\n"));
        assert!(h.contains("bind 127.0.0.1:10\n"));
        assert!(h.contains("bind 127.0.0.1:11 ssl crt /tmp/x/combined.pem alpn h2,http/1.1\n"));
        assert!(h.contains("bind 127.0.0.1:12 proto h2\n"));
        let n = nginx_conf("n", listen, &setup).unwrap();
        assert!(n.contains("listen 127.0.0.1:10;"));
        assert!(n.contains("listen 127.0.0.1:11 ssl http2;"));
        assert!(n.contains("listen 127.0.0.1:12 http2;"));
        assert!(!n.contains("http2 on;"));
        setup.nginx_http2_on = true;
        let n = nginx_conf("n", listen, &setup).unwrap();
        assert!(n.contains("listen 127.0.0.1:11 ssl;"));
        assert!(n.contains("listen 127.0.0.1:12;"));
        assert_eq!(n.matches("http2 on;").count(), 2);
    }

    #[test]
    fn a_wrapped_command_runs_the_original_with_its_environment() {
        let mut cmd = Command::new("proxy");
        cmd.arg("--workers")
            .arg("1")
            .env("TOKIO_WORKER_THREADS", "1");
        assert!(wrapped(&cmd, &[]).is_none());
        let wrap = ["valgrind".to_owned(), "--tool=callgrind".to_owned()];
        let w = wrapped(&cmd, &wrap).unwrap();
        assert_eq!(w.get_program(), "valgrind");
        let args: Vec<_> = w.get_args().collect();
        assert_eq!(args, ["--tool=callgrind", "proxy", "--workers", "1"]);
        let envs: Vec<_> = w.get_envs().collect();
        assert_eq!(
            envs,
            [(
                std::ffi::OsStr::new("TOKIO_WORKER_THREADS"),
                Some(std::ffi::OsStr::new("1"))
            )]
        );
    }
}
