//! Pointing a request at the chosen server: the URI rewrite and the user's hook.

use http::request;
use http::uri::{self, Authority, PathAndQuery, Scheme, Uri};
use roundrobin_core::ServerUrl;

use crate::cache::PerThread;

/// Sees each request after the balancer rewrote it for the chosen server.
///
/// `original` is the URI the client sent; `request` is what will be forwarded (its URI
/// already points at `server`). Any closure `Fn(&Uri, &ServerUrl, &mut request::Parts)`
/// is a hook.
pub trait RewriteHook: Send + Sync + 'static {
    /// Adjusts the rewritten request.
    fn rewrite(&self, original: &Uri, server: &ServerUrl, request: &mut request::Parts);
}

impl<F> RewriteHook for F
where
    F: Fn(&Uri, &ServerUrl, &mut request::Parts) + Send + Sync + 'static,
{
    fn rewrite(&self, original: &Uri, server: &ServerUrl, request: &mut request::Parts) {
        self(original, server, request);
    }
}

/// The URI of `original` rewritten to `server`: the server's scheme and authority,
/// the server's path (if any) as a prefix of the request's path, the query kept.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_hyper::rewrite_uri;
///
/// let server = ServerUrl::parse("http://10.0.0.1:8080/api")?;
/// let uri = rewrite_uri(&"/items?page=2".parse()?, &server)?;
/// assert_eq!(uri, "http://10.0.0.1:8080/api/items?page=2");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn rewrite_uri(original: &Uri, server: &ServerUrl) -> Result<Uri, http::Error> {
    let (scheme, authority) = target(server)?;
    with_target(original, server, scheme, authority)
}

/// The scheme and authority of `server`, parsed.
fn target(server: &ServerUrl) -> Result<(Scheme, Authority), http::Error> {
    let scheme = match server.scheme() {
        "http" => Scheme::HTTP,
        "https" => Scheme::HTTPS,
        other => Scheme::try_from(other)?,
    };
    Ok((scheme, Authority::try_from(server.authority())?))
}

/// [`rewrite_uri`] with the server's `scheme` and `authority` already parsed.
fn with_target(
    original: &Uri,
    server: &ServerUrl,
    scheme: Scheme,
    authority: Authority,
) -> Result<Uri, http::Error> {
    let pq = original.path_and_query();
    let path_and_query = match (server.path().trim_end_matches('/'), pq) {
        ("", Some(pq)) => pq.clone(),
        ("", None) => PathAndQuery::from_static("/"),
        (prefix, Some(pq)) => {
            let rest = pq.as_str();
            if rest.starts_with('/') {
                PathAndQuery::try_from(format!("{prefix}{rest}"))?
            } else {
                PathAndQuery::try_from(format!("{prefix}/{rest}"))?
            }
        }
        (prefix, None) => PathAndQuery::try_from(format!("{prefix}/"))?,
    };
    // The parts set at once, not through `Uri::builder` (which moves a `Result` of
    // them through every step: measured, most of this function's time).
    let mut parts = uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Ok(Uri::from_parts(parts)?)
}

/// The parsed scheme and authority of each server a balancer pointed requests at, kept
/// per thread: a request's URI then shares them (a reference count) instead of copying
/// and checking the server's authority again, an allocation and a parse per request.
#[derive(Default)]
pub(crate) struct Targets {
    parsed: PerThread<ServerUrl, (Scheme, Authority)>,
}

impl Targets {
    /// What [`rewrite_uri`] returns.
    pub(crate) fn rewrite(&self, original: &Uri, server: &ServerUrl) -> Result<Uri, http::Error> {
        let (scheme, authority) = self
            .parsed
            .get(server, ServerUrl::clone, || target(server))?;
        with_target(original, server, scheme, authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(uri: &str, server: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        rewrite_uri(&uri, &ServerUrl::parse(server).unwrap())
            .unwrap()
            .to_string()
    }

    proptest::proptest! {
        #[test]
        fn rewrite_targets_the_server_and_keeps_path_and_query(
            path in "(/[a-zA-Z0-9._~%-]{0,8}){1,4}",
            query in proptest::option::of("[a-zA-Z0-9=&%]{0,12}"),
            prefix in "(/[a-z0-9]{1,6}){0,2}/?",
            port in 1u16..,
        ) {
            let original = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let server = ServerUrl::parse(&format!("http://10.1.2.3:{port}{prefix}")).unwrap();
            let uri = rewrite_uri(&original.parse().unwrap(), &server).unwrap();
            proptest::prop_assert_eq!(uri.scheme_str(), Some("http"));
            proptest::prop_assert_eq!(uri.authority().unwrap().as_str(), server.authority());
            let trimmed = prefix.trim_end_matches('/');
            proptest::prop_assert_eq!(uri.path(), format!("{trimmed}{path}"));
            proptest::prop_assert_eq!(uri.query(), query.as_deref());
        }
    }

    #[test]
    fn uri_rewrite_keeps_path_and_query_and_honours_prefix() {
        assert_eq!(
            rw("/a/b?x=1", "http://10.0.0.1:81"),
            "http://10.0.0.1:81/a/b?x=1"
        );
        assert_eq!(rw("http://front/a?x", "https://b:1"), "https://b:1/a?x");
        assert_eq!(rw("/a?x=1", "http://b:1/api"), "http://b:1/api/a?x=1");
        assert_eq!(rw("/a", "http://b:1/api/"), "http://b:1/api/a");
        assert_eq!(rw("/", "http://b:1/api"), "http://b:1/api/");
    }

    /// The per-thread cache gives what `rewrite_uri` gives, for a server seen before
    /// and for one seen for the first time, and starts again from empty past its bound.
    #[test]
    fn targets_rewrite_as_rewrite_uri_does() {
        let targets = Targets::default();
        let servers = [
            "http://10.0.0.1:81",
            "https://b:1/api",
            "http://[::1]:8080/x/",
        ];
        for _ in 0..2 {
            for server in servers {
                let server = ServerUrl::parse(server).unwrap();
                for uri in ["/a/b?x=1", "http://front/a?x", "/", "*"] {
                    let uri: Uri = uri.parse().unwrap();
                    assert_eq!(
                        targets.rewrite(&uri, &server).unwrap(),
                        rewrite_uri(&uri, &server).unwrap(),
                        "{uri} to {server}"
                    );
                }
            }
        }
        let uri: Uri = "/".parse().unwrap();
        for port in 1..=u16::try_from(crate::cache::MAX_ENTRIES + 10).unwrap() {
            let server = ServerUrl::parse(&format!("http://10.0.0.2:{port}")).unwrap();
            let rewritten = targets.rewrite(&uri, &server).unwrap();
            assert_eq!(rewritten.port_u16(), Some(port));
        }
        let cached = targets.parsed.len();
        assert!(
            (1..=crate::cache::MAX_ENTRIES).contains(&cached),
            "{cached} cached"
        );
    }
}
