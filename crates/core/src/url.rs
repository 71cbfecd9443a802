//! Server identity for HTTP backends: scheme + host (with port) + path.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use crate::Error;

/// The identity of an HTTP backend: scheme, host (with port) and path.
///
/// Query, user info and fragment are dropped when parsing, so two URLs that differ
/// only there are the same server (DESIGN.md §2). Scheme and host are lowercased;
/// the port and the path are kept exactly as written (an empty path stays empty).
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
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerUrl {
    /// `scheme://authority path`, normalised.
    text: String,
    /// Length of the scheme.
    scheme_len: usize,
    /// Byte offset where the path starts.
    path_start: usize,
}

impl ServerUrl {
    /// Parses and normalises a server URL such as `http://10.0.0.1:8080`.
    ///
    /// Errors when the scheme or the host is missing or holds invalid characters, or the
    /// path holds a space or a control character (surrounding whitespace included, as in
    /// Go's `url.Parse`).
    pub fn parse(input: &str) -> Result<Self, Error> {
        let (scheme, rest) = input
            .split_once("://")
            .ok_or(Error::InvalidUrl("missing scheme"))?;
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(Error::InvalidUrl("invalid scheme"));
        }
        // Drop the fragment, then the query.
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // Drop user info.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host_port.is_empty() {
            return Err(Error::InvalidUrl("missing host"));
        }
        if !host_port.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%')
        }) {
            return Err(Error::InvalidUrl("invalid host"));
        }
        if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(Error::InvalidUrl("invalid path"));
        }
        let mut text = String::with_capacity(scheme.len() + 3 + host_port.len() + path.len());
        text.extend(scheme.chars().map(|c| c.to_ascii_lowercase()));
        text.push_str("://");
        text.extend(host_port.chars().map(|c| c.to_ascii_lowercase()));
        let path_start = text.len();
        text.push_str(path);
        Ok(Self {
            text,
            scheme_len: scheme.len(),
            path_start,
        })
    }

    /// The normalised URL: `scheme://host[:port]path`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The scheme, lowercase (`http`, `https`).
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
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
