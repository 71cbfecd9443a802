//! Server identity for HTTP backends: scheme + host (with port) + path.

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt::{self, Write as _};
use core::hash::{Hash, Hasher};
use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use crate::Error;

/// The identity of an HTTP backend: scheme, host (with port) and path.
///
/// Query, user info and fragment are dropped when parsing, so two URLs that differ
/// only there are the same server. Scheme and host are lowercased, the
/// port is written without leading zeros, the path is kept exactly as written (an
/// empty path stays empty). See [`ServerUrl::parse`] for what is accepted.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// let a: ServerUrl = "HTTP://user:pw@Example.com:8080/api?x=1#top".parse()?;
/// let b: ServerUrl = "http://example.com:8080/api".parse()?;
/// assert_eq!(a, b);
/// assert_eq!(a.as_str(), "http://example.com:8080/api");
/// assert_eq!(a.scheme(), "http");
/// assert_eq!(a.authority(), "example.com:8080");
/// assert_eq!(a.path(), "/api");
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerUrl {
    /// `scheme://authority path`, normalised. Shared: a pick clones the server it
    /// returns, and that must not allocate.
    text: Arc<str>,
    /// Length of the scheme.
    scheme_len: usize,
    /// Byte offset where the path starts.
    path_start: usize,
    /// FNV-1a of `text`, computed once: what `Hash` feeds the hasher.
    digest: u64,
}

/// Hashes the URL's digest, one `u64` computed when it was parsed: maps keyed by
/// servers (metrics, meters, written cookies) are looked up on every request, and
/// hashing the text each time cost more than the rest of the lookup.
impl Hash for ServerUrl {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// FNV-1a (64-bit) of `bytes`.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The schemes a [`ServerUrl`] may have: `http` (HTTP/1.1), `https` (TLS; HTTP/2 or
/// HTTP/1.1 as ALPN decides) and `h2c` (cleartext HTTP/2 with prior knowledge, as
/// Traefik spells it). Matched case-insensitively; anything else is
/// [`Error::InvalidUrl`].
const SCHEMES: [&str; 3] = ["http", "https", "h2c"];

impl ServerUrl {
    /// Parses and normalises a server URL: `scheme://host[:port][/path]`.
    ///
    /// - The scheme is `http`, `https` or `h2c` (any case): how the server is spoken
    ///   to, HTTP/1.1, TLS, or cleartext HTTP/2.
    /// - The host is a DNS name (ASCII letters, digits, `-`, `_`, `.`), an IPv4 address
    ///   (four decimal octets: `999.1.1.1` is refused rather than looked up as a name)
    ///   or an IPv6 address in brackets (`[::1]`, no zone).
    /// - The port, when the URL has a `:`, is 1..=65535 in decimal and is written
    ///   without leading zeros (`:080` is `:80`); without one the scheme's default
    ///   applies when connecting.
    /// - The path holds no space or control character (surrounding whitespace
    ///   included, as in Go's `url.Parse`); percent-encode them. Non-ASCII characters
    ///   are kept as written (Go's `url.Parse` accepts them too).
    ///
    /// User info, query and fragment are dropped. Every error is
    /// [`Error::InvalidUrl`] with what was wrong; every accepted URL parses back to
    /// itself from [`as_str`](Self::as_str).
    pub fn parse(input: &str) -> Result<Self, Error> {
        let (scheme, rest) = input
            .split_once("://")
            .ok_or(Error::InvalidUrl("missing scheme: use http://host[:port]"))?;
        let scheme = SCHEMES
            .into_iter()
            .find(|s| s.eq_ignore_ascii_case(scheme))
            .ok_or(Error::InvalidUrl(
                "unsupported scheme: use http, https or h2c",
            ))?;
        // Drop the fragment, then the query.
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // Drop user info.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(host_port)?;
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidUrl(
                "invalid path: space or control character (percent-encode it)",
            ));
        }
        let mut text = String::with_capacity(scheme.len() + 3 + host_port.len() + path.len());
        text.push_str(scheme);
        text.push_str("://");
        text.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        if let Some(port) = port {
            // Infallible on a `String`.
            let _ = write!(text, ":{port}");
        }
        let path_start = text.len();
        text.push_str(path);
        Ok(Self {
            digest: digest(text.as_bytes()),
            text: Arc::from(text),
            scheme_len: scheme.len(),
            path_start,
        })
    }

    /// The normalised URL: `scheme://host[:port]path`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The scheme, lowercase (`http`, `https`, `h2c`).
    pub fn scheme(&self) -> &str {
        &self.text[..self.scheme_len]
    }

    /// Host and optional port, host lowercase (`10.0.0.1:8080`).
    pub fn authority(&self) -> &str {
        &self.text[self.scheme_len + 3..self.path_start]
    }

    /// The path exactly as configured; empty when the URL had none.
    pub fn path(&self) -> &str {
        &self.text[self.path_start..]
    }
}

/// Splits and checks `host[:port]`; the port is parsed.
fn split_host_port(host_port: &str) -> Result<(&str, Option<u16>), Error> {
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or(Error::InvalidUrl("invalid host: `[` without `]`"))?;
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(Error::InvalidUrl("invalid host: not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(Error::InvalidUrl("invalid host: text after `]`"))?,
            ),
        };
        (&host_port[..inner.len() + 2], port)
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if host.is_empty() {
            return Err(Error::InvalidUrl("missing host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(Error::InvalidUrl(
                "invalid host: use letters, digits, `-`, `_`, `.`, or an [IPv6] address",
            ));
        }
        // All digits and dots: an IPv4 address, never a name to look up.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && host.parse::<Ipv4Addr>().is_err()
        {
            return Err(Error::InvalidUrl("invalid host: not an IPv4 address"));
        }
        (host, port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

/// A port: 1..=65535 in decimal digits.
fn parse_port(port: &str) -> Result<u16, Error> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidUrl("invalid port: use 1..=65535"));
    }
    match port.trim_start_matches('0').parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::InvalidUrl("invalid port: use 1..=65535")),
        Ok(port) => Ok(port),
    }
}

impl FromStr for ServerUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({})", self.text)
    }
}

impl AsRef<str> for ServerUrl {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one hasher makes of a value.
    fn hashed(url: &ServerUrl) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        url.hash(&mut h);
        h.finish()
    }

    #[test]
    fn equal_urls_hash_alike_and_the_digest_is_fnv_1a() {
        let a = ServerUrl::parse("HTTP://u@Example.com:8080/api?x=1").unwrap();
        let b = ServerUrl::parse("http://example.com:8080/api").unwrap();
        let c = ServerUrl::parse("http://example.com:8081/api").unwrap();
        assert_eq!(a, b);
        assert_eq!(hashed(&a), hashed(&b));
        assert_ne!(hashed(&a), hashed(&c));
        // The published FNV-1a test vector (Landon Curt Noll's suite).
        assert_eq!(digest(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn identity_ignores_query_userinfo_fragment() {
        let a = ServerUrl::parse("http://u@a:80/p?q=1#f").unwrap();
        let b = ServerUrl::parse("http://a:80/p").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn scheme_port_and_path_distinguish() {
        let base = ServerUrl::parse("http://a:80/p").unwrap();
        for other in [
            "https://a:80/p",
            "http://a:81/p",
            "http://a:80/q",
            "http://a:80",
        ] {
            assert_ne!(base, ServerUrl::parse(other).unwrap(), "{other}");
        }
    }

    #[test]
    fn empty_path_stays_empty() {
        let u = ServerUrl::parse("http://10.0.0.1:8080").unwrap();
        assert_eq!(u.as_str(), "http://10.0.0.1:8080");
        assert_eq!(u.path(), "");
    }

    #[test]
    fn accepts_http_https_h2c_ipv6_and_valid_ports() {
        for (input, normalised) in [
            ("HTTPS://A:443", "https://a:443"),
            ("H2C://grpc.local:50051/", "h2c://grpc.local:50051/"),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
            ("http://[::FFFF:127.0.0.1]", "http://[::ffff:127.0.0.1]"),
            ("http://a:080", "http://a:80"),
            ("http://a:65535", "http://a:65535"),
            ("http://127.0.0.1:1", "http://127.0.0.1:1"),
            ("http://my_host.example-1", "http://my_host.example-1"),
        ] {
            let url = ServerUrl::parse(input).unwrap();
            assert_eq!(url.as_str(), normalised, "{input}");
            assert_eq!(ServerUrl::parse(url.as_str()), Ok(url), "{input}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |s| match ServerUrl::parse(s) {
            Err(Error::InvalidUrl(m)) => m,
            other => panic!("{s}: {other:?}"),
        };
        assert!(err("ftp://x").contains("scheme"));
        assert!(err("http://a:99999").contains("port"));
        assert!(err("http://[::1").contains("host"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "a",
            "://x",
            "http://",
            "1http://a",
            "http://a b",
            "http://a/\n",
            "http://a/x\ny",
            " http://a",
            "http://a/b c",
            "http://[::1",
            "http://[::1]x",
            "http://[nope]:80",
            "http://[fe80::1%25eth0]",
            "http://a:99999",
            "http://a:65536",
            "http://a:0",
            "http://a:-1",
            "http://a:abc",
            "http://a:",
            "http://a:+80",
            "http://a:80:80",
            "http://:80",
            "http://999.1.1.1",
            "http://1.2.3",
            "http://a%20b",
            "http://a\\b",
            "ftp://x",
            "gopher://x",
            "h2://x",
            "file:///etc/passwd",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
