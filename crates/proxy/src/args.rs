//! The command line: flags, their parsing and validation.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};
use roundrobin_core::ServerUrl;
use roundrobin_hyper::TlsAcceptor;
use roundrobin_sticky::codec::{Aes, Hash, Hmac, Raw};
use roundrobin_sticky::StickySession;

use crate::logs::AccessLog;
use crate::resilience::Resilience;
use crate::upstream::UpstreamArgs;

/// A weighted round-robin reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "roundrobin-proxy", version)]
pub(crate) struct Args {
    /// A TOML file with the same settings as keys (`servers`, `listen`, `retries`, ...);
    /// flags given beside it win. SIGHUP or `POST /reload` re-read its servers.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// A backend, `URL` or `URL=WEIGHT`; repeat for more. `http://` speaks HTTP/1.1,
    /// `https://` TLS (HTTP/2 or HTTP/1.1 by ALPN), `h2c://` cleartext HTTP/2.
    #[arg(long = "backend", value_name = "URL[=WEIGHT]", value_parser = parse_backend)]
    pub(crate) backends: Vec<(ServerUrl, Option<u32>)>,
    /// How often a backend given by DNS name is resolved again, each address being a
    /// backend (sooner when the record's TTL is shorter).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) dns_refresh: Duration,
    /// The DNS server that resolves backends given by name, instead of the system's.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) resolver: Option<SocketAddr>,
    /// The selection sequence.
    #[arg(long, value_enum, default_value_t = PolicyArg::Interleaved)]
    pub(crate) policy: PolicyArg,
    /// Start the sequence at a random position after every change, so that a fleet of
    /// proxies given the same servers does not send its next requests to the same one
    /// (default: the reference's restart at the first server).
    #[arg(long)]
    pub(crate) random_start: bool,
    /// Weight of backends given without one.
    #[arg(long, default_value_t = 1)]
    pub(crate) default_weight: u32,
    /// How long a backend may take to send its response head, counted from the end of
    /// the request's upload (e.g. `500ms`, `30s`).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) timeout: Duration,
    /// Move traffic away from failing backends.
    #[arg(long)]
    pub(crate) rebalance: bool,
    /// Time between two rebalancer steps.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) backoff: Duration,
    /// Pin clients to a backend with a cookie of this name.
    #[arg(long, value_name = "NAME")]
    pub(crate) sticky: Option<String>,
    /// How the sticky cookie names the backend.
    #[arg(long, value_enum, default_value_t = CodecArg::Hmac)]
    pub(crate) sticky_codec: CodecArg,
    /// Key of the hmac and aes codecs, hex.
    #[arg(long, value_name = "HEX")]
    pub(crate) sticky_key: Option<String>,
    /// Salt of the hash codec.
    #[arg(long, value_name = "STR")]
    pub(crate) sticky_salt: Option<String>,
    /// Lifetime of aes cookies.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) sticky_ttl: Option<Duration>,
    /// Address of the JSON admin API and dashboard (never the proxy's; off loopback
    /// only with --admin-token-file).
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: Option<SocketAddr>,
    /// File holding the admin token (its content, trimmed): admin requests then need
    /// `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE", requires = "admin")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// Worker threads serving connections, each with its own runtime, listening socket
    /// (`SO_REUSEPORT`) and upstream pool (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) workers: Option<u16>,
    /// Count nothing for `GET /metrics` (to measure what the counting costs).
    #[arg(long)]
    pub(crate) no_metrics: bool,
    /// One line per request on stdout: client, method, path, server, status, latency,
    /// retries (off when absent).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) access_log: Option<AccessLog>,
    /// Serve clients over TLS with this certificate chain (PEM, the server's certificate
    /// first, then intermediates); needs --tls-key. ALPN offers h2 and http/1.1. SIGHUP
    /// reads both files again.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) resilience: Resilience,
    #[command(flatten)]
    pub(crate) upstream: UpstreamArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PolicyArg {
    Interleaved,
    Smooth,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CodecArg {
    Raw,
    Hash,
    Hmac,
    Aes,
}

fn parse_backend(s: &str) -> Result<(ServerUrl, Option<u32>), String> {
    let (url, weight) = match s.rsplit_once('=') {
        Some((url, w)) if !w.contains('/') => {
            let w = w.parse().map_err(|e| format!("bad weight `{w}`: {e}"))?;
            (url, Some(w))
        }
        _ => (s, None),
    };
    let url = ServerUrl::parse(url).map_err(|e| format!("bad url `{url}`: {e}"))?;
    Ok((url, weight))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit: use ms, s, m or h"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("bad number in `{s}`"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Exits with status 2 and clap's usage.
pub(crate) fn usage_error(message: &str) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("--sticky-key must be an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// The sticky session the flags describe; every sticky flag that does not apply is an
/// error rather than silently ignored.
pub(crate) fn sticky(args: &Args) -> Result<Option<StickySession>, String> {
    let Some(name) = &args.sticky else {
        if args.sticky_key.is_some() || args.sticky_salt.is_some() || args.sticky_ttl.is_some() {
            return Err("--sticky-key, --sticky-salt and --sticky-ttl need --sticky NAME".into());
        }
        return Ok(None);
    };
    let codec = args.sticky_codec;
    if args.sticky_key.is_some() && !matches!(codec, CodecArg::Hmac | CodecArg::Aes) {
        return Err("--sticky-key applies to --sticky-codec hmac or aes".into());
    }
    if args.sticky_salt.is_some() && !matches!(codec, CodecArg::Hash) {
        return Err("--sticky-salt applies to --sticky-codec hash".into());
    }
    if args.sticky_ttl.is_some() && !matches!(codec, CodecArg::Aes) {
        return Err("--sticky-ttl applies to --sticky-codec aes".into());
    }
    let key = args.sticky_key.as_deref().map(parse_hex).transpose()?;
    let session = match (codec, key) {
        (CodecArg::Raw, _) => StickySession::with_codec(name.as_str(), Raw),
        (CodecArg::Hash, _) => StickySession::with_codec(
            name.as_str(),
            Hash::new(args.sticky_salt.clone().unwrap_or_default()),
        ),
        (CodecArg::Hmac, Some(key)) => StickySession::with_codec(name.as_str(), Hmac::new(key)),
        (CodecArg::Hmac, None) => {
            StickySession::try_new(name.as_str()).map_err(|e| e.to_string())?
        }
        (CodecArg::Aes, Some(key)) => {
            let aes = Aes::new(key).map_err(|e| format!("--sticky-key: {e}"))?;
            let aes = match args.sticky_ttl {
                Some(ttl) => aes.ttl(ttl),
                None => aes,
            };
            StickySession::with_codec(name.as_str(), aes)
        }
        (CodecArg::Aes, None) => return Err("--sticky-codec aes needs --sticky-key HEX".into()),
    };
    session
        .validate()
        .map_err(|e| format!("--sticky {name}: {e}"))?;
    Ok(Some(session))
}

/// The admin token: the content of `--admin-token-file`, trimmed; an unreadable or empty
/// file, or one holding more than one word, is an error.
pub(crate) fn admin_token(args: &Args) -> Result<Option<String>, String> {
    let Some(path) = &args.admin_token_file else {
        return Ok(None);
    };
    let flag = format!("--admin-token-file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{flag}: cannot read it: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{flag}: the file is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{flag}: the token must be one word of visible ASCII characters"
        ));
    }
    Ok(Some(token.to_owned()))
}

/// The TLS side of the listener when `--tls-cert` and `--tls-key` are given: the files
/// read and checked (an unreadable file, no certificate, no key or a key that does not
/// match is an error naming the file).
pub(crate) fn tls(args: &Args) -> Result<Option<TlsAcceptor>, String> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsAcceptor::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}")),
        (None, None) => Ok(None),
        (Some(_), None) => Err("--tls-cert needs --tls-key FILE".into()),
        (None, Some(_)) => Err("--tls-key needs --tls-cert FILE".into()),
    }
}

/// Whether a server listening on `a` and one on `b` would want the same socket: same
/// port (not 0) and the same address, or one of them on every address of the other's
/// family (`[::]` may cover IPv4 too).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |wild: IpAddr, other: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

/// Checks `--admin` against `--listen` and the token: never the proxy's socket, and
/// off loopback only with a token.
pub(crate) fn check_admin(args: &Args, has_token: bool) -> Result<(), String> {
    let Some(admin) = args.admin else {
        return Ok(());
    };
    if overlap(admin, args.listen) {
        return Err(format!(
            "--admin {admin} must not be the --listen address ({})",
            args.listen
        ));
    }
    if !has_token && !admin.ip().to_canonical().is_loopback() {
        return Err(format!(
            "--admin {admin} is not a loopback address: anyone who can reach it could change \
             the pool; pass --admin-token-file FILE (or use 127.0.0.1)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_and_listen_must_not_overlap() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (x, y) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
        ] {
            assert!(overlap(a(x), a(y)), "{x} {y}");
        }
        for (x, y) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("0.0.0.0:0", "127.0.0.1:0"),
            ("127.0.0.1:8080", "127.0.0.1:8081"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("0.0.0.0:8080", "[::1]:8080"),
        ] {
            assert!(!overlap(a(x), a(y)), "{x} {y}");
        }
    }
}
