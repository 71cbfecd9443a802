//! Who may use the admin API: the bearer token and the `Host` check.

use core::net::IpAddr;

use http::{header, HeaderMap, HeaderValue, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token, kept as its SHA-256 digest so that comparing two digests in constant time
/// reveals neither the token's bytes nor its length.
#[derive(Clone)]
pub(super) struct Token([u8; 32]);

impl Token {
    pub(super) fn new(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Whether `presented` is the token; an empty presented token never is (so an
    /// empty configured token locks the API rather than opening it).
    pub(super) fn matches(&self, presented: &[u8]) -> bool {
        if presented.is_empty() {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(super) fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value[7..].trim_ascii())
}

/// The `token` parameter of a query string, percent-decoded (`+` is a space).
pub(super) fn query_token(query: &str) -> Option<Vec<u8>> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = core::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Which `Host` values the API answers.
#[derive(Clone, Debug)]
pub(super) enum Hosts {
    /// The default without a token: loopback names only (`localhost`, `*.localhost`,
    /// 127.0.0.0/8, `[::1]`), any port.
    Loopback,
    /// The default with a token, or [`Admin::any_host`](super::Admin::any_host).
    Any,
    /// [`Admin::allowed_hosts`](super::Admin::allowed_hosts): these names (lowercase),
    /// with or without a port.
    List(Vec<String>),
}

/// Why a request's host is refused.
pub(super) enum HostError {
    /// Not a visible-ASCII header value.
    Malformed,
    /// A well-formed host the API does not answer.
    NotAllowed(String),
}

/// The host a request names: its `Host` header, else (HTTP/2) the URI's authority.
/// `None` when it names none (an in-process call; browsers always send one).
fn requested_host(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, HostError> {
    if let Some(value) = headers.get(header::HOST) {
        let host = value.to_str().map_err(|_| HostError::Malformed)?;
        if host.is_empty() || host.bytes().any(|b| b == b' ' || b == b'@' || b == b'/') {
            return Err(HostError::Malformed);
        }
        return Ok(Some(host.to_ascii_lowercase()));
    }
    Ok(uri.authority().map(|a| a.as_str().to_ascii_lowercase()))
}

/// The name part of `host[:port]` (brackets of an IPv6 address removed).
fn name_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl Hosts {
    /// Checks the host a request names against this policy.
    pub(super) fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), HostError> {
        if matches!(self, Self::Any) {
            return Ok(());
        }
        let Some(host) = requested_host(headers, uri)? else {
            return Ok(());
        };
        let name = name_of(&host);
        let allowed = match self {
            Self::Any => true,
            Self::Loopback => is_loopback_name(name),
            Self::List(list) => list
                .iter()
                .any(|allowed| *allowed == host || allowed == name),
        };
        if allowed {
            Ok(())
        } else {
            Err(HostError::NotAllowed(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(hosts: &Hosts, host: Option<&str>) -> Result<(), HostError> {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        hosts.check(&headers, &Uri::from_static("/servers"))
    }

    #[test]
    fn tokens_match_exactly() {
        let t = Token::new(b"s3cret");
        assert!(t.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3CRET", b"s3cret\0"] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(
            !Token::new(b"").matches(b""),
            "an empty token locks the API"
        );
    }

    #[test]
    fn bearer_header_and_query_parameter() {
        let h = |s: &'static str| bearer(&HeaderValue::from_static(s)).map(<[u8]>::to_vec);
        assert_eq!(h("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(h("bearer  abc "), Some(b"abc".to_vec()));
        assert_eq!(h("Basic abc"), None);
        assert_eq!(h("Bearer"), None);
        assert_eq!(query_token("a=1&token=x%2By+z"), Some(b"x+y z".to_vec()));
        assert_eq!(query_token("token=%zz"), None);
        assert_eq!(query_token("token=%4"), None);
        assert_eq!(query_token("tokens=1"), None);
    }

    #[test]
    fn loopback_policy_refuses_other_names() {
        let ok = |h: Option<&str>| check(&Hosts::Loopback, h).is_ok();
        for host in [
            None,
            Some("127.0.0.1:8081"),
            Some("127.1.2.3"),
            Some("LOCALHOST:1"),
            Some("admin.localhost"),
            Some("[::1]:80"),
            Some("[::ffff:127.0.0.1]:80"),
        ] {
            assert!(ok(host), "{host:?}");
        }
        for host in [
            "evil.example",
            "evil.example:8081",
            "10.0.0.1:8081",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(!ok(Some(host)), "{host}");
        }
        assert!(matches!(
            check(&Hosts::Loopback, Some("a b")),
            Err(HostError::Malformed)
        ));
    }

    #[test]
    fn list_policy_matches_names_with_or_without_port() {
        let list = Hosts::List(vec!["admin.internal".into(), "10.0.0.1:9000".into()]);
        assert!(check(&list, Some("Admin.Internal:8081")).is_ok());
        assert!(check(&list, Some("10.0.0.1:9000")).is_ok());
        assert!(check(&list, Some("10.0.0.1:9001")).is_err());
        assert!(check(&list, Some("localhost")).is_err());
        assert!(check(&Hosts::Any, Some("anything")).is_ok());
    }
}
