//! The headers a forwarded request and its response carry: hop-by-hop headers
//! removed, `X-Forwarded-*` set.

use core::cell::RefCell;
use core::fmt::Write as _;
use core::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};
use thread_local::ThreadLocal;

use crate::cache::PerThread;

/// The address of the client that sent a request, as a request extension.
///
/// [`serve`](crate::serve) inserts it; the [`Forwarder`](crate::Forwarder) appends its IP to
/// `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Headers that apply to one connection only (RFC 9110 §7.6.1), never forwarded.
// A `const`: comparisons against it compile to checks of the standard headers' tags
// (a `static` measured 60 % more instructions per request under callgrind).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers, including those the `Connection` header names.
///
/// Runs on every request and response: one pass over the names finds which of the
/// fixed hop-by-hop headers are there (most messages carry one or none), and the names
/// a `Connection` header lists are looked up without being copied.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_present(headers, scan(headers));
}

/// Bit 8 of [`scan`]: an `X-Forwarded-For` header.
const XFF_BIT: u16 = 1 << 8;
/// Bit 4 of [`scan`]: `TE` (the fifth of `HOP_BY_HOP`).
const TE_BIT: u16 = 1 << 4;
/// Bit 7 of [`scan`]: `Upgrade` (the last of `HOP_BY_HOP`).
const UPGRADE_BIT: u16 = 1 << 7;

/// One pass over the names (no hashing): bit `i` says `HOP_BY_HOP[i]` is there, and
/// [`XFF_BIT`] an `X-Forwarded-For`. Most messages carry none of them, and a lookup
/// of an absent name costs as much as this whole pass.
fn scan(headers: &HeaderMap) -> u16 {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if name == X_FORWARDED_FOR {
            present |= XFF_BIT;
        }
    }
    present
}

/// Removes the hop-by-hop headers [`scan`] found (`present`).
fn remove_present(headers: &mut HeaderMap, present: u16) {
    if present & 0xff == 0 {
        return;
    }
    // Bit 0: `Connection` (the first of `HOP_BY_HOP`), whose listed names go too.
    if present & 1 != 0 {
        let mut values = headers.get_all(header::CONNECTION).iter();
        match (values.next().cloned(), values.next().is_some()) {
            (Some(one), false) => remove_named(headers, &one),
            (Some(_), true) => {
                let all: Vec<HeaderValue> = headers
                    .get_all(header::CONNECTION)
                    .iter()
                    .cloned()
                    .collect();
                for value in &all {
                    remove_named(headers, value);
                }
            }
            (None, _) => {}
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the headers a `Connection` value names (the fixed hop-by-hop ones are
/// removed apart).
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    // What keep-alive servers send on every response (nginx, say): it names a header
    // that is removed apart anyway.
    if connection.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
        return;
    }
    let Ok(connection) = connection.to_str() else {
        return;
    };
    for token in connection.split(',').map(str::trim) {
        let fixed = HOP_BY_HOP
            .iter()
            .any(|h| h.as_str().eq_ignore_ascii_case(token));
        if !token.is_empty() && !fixed {
            // A `&str` key is lowercased and looked up in place; one that is not a
            // valid header name matches nothing.
            headers.remove(token);
        }
    }
}

/// Whether a `TE` header lists `trailers`.
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// The protocols of the `Upgrade` header(s) a proxy can tunnel: all but `h2c`, an
/// upgrade of the connection itself to HTTP/2 (its `HTTP2-Settings` are hop-by-hop, and a
/// tunnel would take the connection's later requests past the balancer).
fn tunnel_protocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect()
}

/// Whether `headers` ask to switch protocols: a `Connection` header with the
/// `upgrade` token (case-insensitive, among others or not) and an `Upgrade` header
/// naming a protocol other than `h2c` (RFC 9110 §7.8).
pub(crate) fn asks_upgrade(headers: &HeaderMap) -> bool {
    // Both headers, found by one pass over the names: most requests have neither.
    let present = scan(headers);
    present & 1 != 0
        && present & UPGRADE_BIT != 0
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        && !tunnel_protocols(headers).is_empty()
}

/// Removes the hop-by-hop headers but, when `headers` ask to switch protocols (see
/// [`asks_upgrade`]), keeps `Connection: upgrade` and an `Upgrade` header with the
/// protocols asked for (but `h2c`): what a protocol upgrade needs on the next hop.
/// Returns whether it kept them.
pub(crate) fn remove_hop_by_hop_but_upgrade(headers: &mut HeaderMap) -> bool {
    let protocols = asks_upgrade(headers)
        .then(|| HeaderValue::from_str(&tunnel_protocols(headers).join(", ")).ok())
        .flatten();
    remove_present(headers, scan(headers));
    let Some(protocols) = protocols else {
        return false;
    };
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols);
    true
}

/// Prepares a request for the upstream: HTTP/1.1 (the client picks HTTP/2 per
/// server), no hop-by-hop headers but `TE: trailers` (and those of a protocol upgrade
/// when `upgrade`), `X-Forwarded-For/Proto/Host`, and `Host` = the server's authority.
pub(crate) fn prepare<B>(
    req: &mut Request<B>,
    proto: &HeaderValue,
    upgrade: bool,
    written: &Written,
) {
    // The client speaks HTTP/1.1 upstream whatever the downstream version was.
    *req.version_mut() = Version::HTTP_11;
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let authority = req.uri().authority().and_then(|a| written.host(a.as_str()));
    let headers = req.headers_mut();
    let present = scan(headers);
    let trailers = present & TE_BIT != 0 && accepts_trailers(headers);
    // A `Connection` header may name `Host`: the client's is kept for
    // `X-Forwarded-Host` before the hop-by-hop headers go.
    let named_host = if present & 1 != 0 {
        headers.get(header::HOST).cloned()
    } else {
        None
    };
    if upgrade {
        remove_hop_by_hop_but_upgrade(headers);
    } else {
        remove_present(headers, present);
    }
    if trailers {
        // The one `TE` value that crosses a proxy: gRPC servers require it.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(ip) = client {
        let value = if present & XFF_BIT != 0 {
            forwarded_for(headers, ip)
        } else {
            // The usual case, no earlier hop: the client's address alone.
            written.client(ip)
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    headers.insert(X_FORWARDED_PROTO, proto.clone());
    // `Host` becomes the server's authority; the client's goes to `X-Forwarded-Host`.
    let host = match authority {
        Some(authority) => headers.insert(header::HOST, authority),
        None => headers.get(header::HOST).cloned(),
    };
    if let Some(host) = named_host.or(host) {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// `X-Forwarded-For` with `ip` after the earlier hops the request lists, in order,
/// across repeated headers (RFC 7239's list rule).
fn forwarded_for(headers: &HeaderMap, ip: IpAddr) -> Option<HeaderValue> {
    chain(&headers.get_all(&X_FORWARDED_FOR), ip)
}

/// `priors` (earlier hops, each trimmed) then `ip`, comma-separated, as a header value.
fn chain<'a>(
    priors: impl IntoIterator<Item = &'a HeaderValue> + Copy,
    ip: IpAddr,
) -> Option<HeaderValue> {
    // Sized once: the earlier hops, their separators, and the longest IPv6 text.
    let prior_len: usize = priors.into_iter().map(|v| v.len() + 2).sum();
    let mut chain = String::with_capacity(prior_len + 39);
    for prior in priors {
        if let Ok(prior) = prior.to_str() {
            chain.push_str(prior.trim());
            chain.push_str(", ");
        }
    }
    push_ip(&mut chain, ip);
    HeaderValue::try_from(chain).ok()
}

/// Header values a forwarder writes on request after request, kept per thread and
/// shared from there (a reference count, not a copy): `Host` for each server, and the
/// `X-Forwarded-For` of the last client address seen (a keep-alive connection's
/// requests follow one another on its thread). Each would otherwise be an allocation
/// and a copy, or a formatting, per request.
#[derive(Default)]
pub(crate) struct Written {
    hosts: PerThread<Box<str>, HeaderValue>,
    client: ThreadLocal<RefCell<Option<(IpAddr, HeaderValue)>>>,
}

impl core::fmt::Debug for Written {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Written").finish_non_exhaustive()
    }
}

impl Written {
    /// `X-Forwarded-For` for a request from `ip` that lists no earlier hop.
    fn client(&self, ip: IpAddr) -> Option<HeaderValue> {
        let Ok(mut last) = self.client.get_or_default().try_borrow_mut() else {
            return client_value(ip);
        };
        match &*last {
            Some((cached, value)) if *cached == ip => Some(value.clone()),
            _ => {
                let value = client_value(ip)?;
                *last = Some((ip, value.clone()));
                Some(value)
            }
        }
    }

    /// `Host` for `authority`.
    fn host(&self, authority: &str) -> Option<HeaderValue> {
        self.hosts
            .get(
                authority,
                |key: &str| Box::from(key),
                || HeaderValue::from_str(authority),
            )
            .ok()
    }
}

/// The text of `ip` as a header value.
fn client_value(ip: IpAddr) -> Option<HeaderValue> {
    chain(&[], ip)
}

/// Appends `ip` as text: IPv4 digit by digit (the common case, without `fmt`).
fn push_ip(out: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn ips_are_written_as_their_display(ip: IpAddr) {
            let mut out = String::from("x, ");
            push_ip(&mut out, ip);
            proptest::prop_assert_eq!(out, format!("x, {ip}"));
        }
    }

    #[test]
    fn connection_is_the_first_hop_by_hop_header() {
        // `remove_hop_by_hop` reads bit 0 as `Connection`.
        assert_eq!(HOP_BY_HOP[0], header::CONNECTION);
        // ... and its bits `TE` and `Upgrade`, past which `X-Forwarded-For` is noted.
        assert_eq!(HOP_BY_HOP[TE_BIT.trailing_zeros() as usize], header::TE);
        assert_eq!(
            HOP_BY_HOP[UPGRADE_BIT.trailing_zeros() as usize],
            header::UPGRADE
        );
        assert_eq!(XFF_BIT, 1 << HOP_BY_HOP.len());
    }

    #[test]
    fn connection_may_name_headers_in_any_case_and_repeat() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("X-One , keep-alive"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-two,, bad name"),
        );
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("x-kept", HeaderValue::from_static("3"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    proptest::proptest! {
        #[test]
        fn no_hop_by_hop_header_survives(
            named in proptest::collection::vec("x-[a-z]{1,6}", 0..4),
            kept in proptest::collection::vec("y-[a-z]{1,6}", 0..4),
        ) {
            let mut h = HeaderMap::new();
            for name in HOP_BY_HOP.iter() {
                h.insert(name.clone(), HeaderValue::from_static("1"));
            }
            h.insert(header::CONNECTION, HeaderValue::try_from(named.join(", ")).unwrap());
            for name in named.iter().chain(&kept) {
                h.append(HeaderName::try_from(name.as_str()).unwrap(), HeaderValue::from_static("v"));
            }
            remove_hop_by_hop(&mut h);
            for name in HOP_BY_HOP.iter() {
                proptest::prop_assert!(!h.contains_key(name));
            }
            for name in &named {
                proptest::prop_assert!(!h.contains_key(name.as_str()));
            }
            for name in &kept {
                proptest::prop_assert!(h.contains_key(name.as_str()));
            }
        }
    }

    #[test]
    fn upgrade_headers_are_kept_only_for_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade, x-secret"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        assert!(asks_upgrade(&h));
        assert!(remove_hop_by_hop_but_upgrade(&mut h));
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(h.contains_key("sec-websocket-key"));
        assert_eq!(h.len(), 3, "{h:?}");

        // An `Upgrade` header without the `Connection` token is no upgrade, and a
        // token without `Upgrade` is none either.
        for (connection, upgrade) in [("keep-alive", Some("websocket")), ("upgrade", None)] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(connection));
            if let Some(upgrade) = upgrade {
                h.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
            }
            assert!(!asks_upgrade(&h));
            assert!(!remove_hop_by_hop_but_upgrade(&mut h));
            assert!(h.is_empty(), "{h:?}");
        }

        // Two `Connection` headers, the token in the second, protocols in two headers.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static(" UPGRADE "));
        h.append(header::UPGRADE, HeaderValue::from_static("foo/2, h2c"));
        h.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(remove_hop_by_hop_but_upgrade(&mut h));
        let protocols: Vec<_> = h.get_all(header::UPGRADE).iter().collect();
        assert_eq!(protocols, ["foo/2, websocket"]);
        assert_eq!(h.get_all(header::CONNECTION).iter().count(), 1);

        // `h2c` alone (curl --http2 on http://) is no upgrade to pass on: the
        // connection stays HTTP/1.1 and balanced request by request.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
        );
        assert!(!asks_upgrade(&h));
        assert!(!remove_hop_by_hop_but_upgrade(&mut h));
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn an_upgrade_request_keeps_its_upgrade_upstream() {
        let mut req = Request::builder()
            .uri("http://10.0.0.9:81/ws")
            .header(header::HOST, "front.example")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::PROXY_AUTHORIZATION, "secret")
            .body(())
            .unwrap();
        let mut plain = req.clone();
        prepare(
            &mut req,
            &HeaderValue::from_static("http"),
            true,
            &Written::default(),
        );
        assert_eq!(req.headers()[header::CONNECTION], "upgrade");
        assert_eq!(req.headers()[header::UPGRADE], "websocket");
        assert!(!req.headers().contains_key(header::PROXY_AUTHORIZATION));
        prepare(
            &mut plain,
            &HeaderValue::from_static("http"),
            false,
            &Written::default(),
        );
        assert!(!plain.headers().contains_key(header::CONNECTION));
        assert!(!plain.headers().contains_key(header::UPGRADE));
    }

    #[test]
    fn forwarded_headers() {
        let mut req = Request::builder()
            .uri("http://10.0.0.9:81/p")
            .header(header::HOST, "front.example")
            .header(X_FORWARDED_FOR, "1.2.3.4")
            .header(X_FORWARDED_FOR, "5.6.7.8, 9.9.9.9")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("127.0.0.7:5000".parse().unwrap()));
        prepare(
            &mut req,
            &HeaderValue::from_static("http"),
            false,
            &Written::default(),
        );
        let h = req.headers();
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.7");
        assert_eq!(h[&X_FORWARDED_HOST], "front.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::HOST], "10.0.0.9:81");
    }

    fn prepared(uri: &str, headers: &[(HeaderName, &'static str)]) -> HeaderMap {
        let mut req = Request::builder().uri(uri).body(()).unwrap();
        for (name, value) in headers {
            req.headers_mut()
                .append(name, HeaderValue::from_static(value));
        }
        req.extensions_mut()
            .insert(ClientAddr("127.0.0.7:5000".parse().unwrap()));
        prepare(
            &mut req,
            &HeaderValue::from_static("http"),
            false,
            &Written::default(),
        );
        req.into_parts().0.headers
    }

    #[test]
    fn forwarded_headers_without_earlier_hops_or_a_host() {
        let h = prepared("http://10.0.0.9:81/p", &[]);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.7");
        assert_eq!(h[header::HOST], "10.0.0.9:81");
        assert!(
            !h.contains_key(&X_FORWARDED_HOST),
            "no client Host to forward"
        );
        // A relative URI (no server authority): the client's Host stays and is forwarded.
        let h = prepared("/p", &[(header::HOST, "front.example")]);
        assert_eq!(h[header::HOST], "front.example");
        assert_eq!(h[&X_FORWARDED_HOST], "front.example");
    }

    #[test]
    fn a_connection_header_naming_host_or_forwarded_for() {
        // The client's Host is still forwarded, whether or not the URI has an authority.
        for uri in ["http://10.0.0.9:81/p", "/p"] {
            let h = prepared(
                uri,
                &[
                    (header::HOST, "front.example"),
                    (header::CONNECTION, "close, Host"),
                ],
            );
            assert_eq!(h[&X_FORWARDED_HOST], "front.example", "{uri}");
            assert!(!h.contains_key(header::CONNECTION), "{uri}");
        }
        // Earlier hops named by `Connection` are gone: only this one is left.
        let h = prepared(
            "http://10.0.0.9:81/p",
            &[
                (X_FORWARDED_FOR, "1.2.3.4"),
                (header::CONNECTION, "x-forwarded-for"),
            ],
        );
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.7");
    }

    #[test]
    fn trailers_in_any_of_repeated_te_headers_is_kept() {
        let h = prepared(
            "http://10.0.0.9:81/p",
            &[(header::TE, "gzip"), (header::TE, "trailers")],
        );
        assert_eq!(
            h.get_all(header::TE).iter().collect::<Vec<_>>(),
            ["trailers"]
        );
    }

    #[test]
    fn te_trailers_is_the_one_te_value_kept() {
        for (te, kept) in [
            ("trailers", true),
            ("gzip, Trailers", true),
            ("trailers;q=0.5", true),
            ("gzip", false),
            ("x-trailers", false),
        ] {
            let mut req = Request::builder()
                .uri("http://10.0.0.9:81/p")
                .header(header::TE, te)
                .body(())
                .unwrap();
            prepare(
                &mut req,
                &HeaderValue::from_static("http"),
                false,
                &Written::default(),
            );
            let got = req.headers().get(header::TE);
            assert_eq!(got.is_some(), kept, "{te}");
            if kept {
                assert_eq!(got.unwrap(), "trailers", "{te}");
            }
        }
    }

    /// One forwarder's kept values give, request after request, the headers fresh
    /// ones give: for clients and servers that change, repeat, or come back, and past
    /// the bound on kept `Host` values.
    #[test]
    fn kept_values_write_what_fresh_ones_write() {
        let written = Written::default();
        let head = |uri: &str, client: &str, xff: Option<&'static str>, written: &Written| {
            let mut req = Request::builder().uri(uri).body(()).unwrap();
            if let Some(xff) = xff {
                req.headers_mut()
                    .insert(&X_FORWARDED_FOR, HeaderValue::from_static(xff));
            }
            req.extensions_mut()
                .insert(ClientAddr(client.parse().unwrap()));
            prepare(&mut req, &HeaderValue::from_static("http"), false, written);
            req.into_parts().0.headers
        };
        let cases = [
            ("http://10.0.0.1:81/a", "127.0.0.7:5000", None),
            ("http://10.0.0.1:81/b", "127.0.0.7:5001", None),
            ("http://10.0.0.2:82/a", "192.168.1.200:9", None),
            ("http://10.0.0.1:81/a", "[2001:db8::1]:443", None),
            ("http://[::1]:8080/a", "127.0.0.7:5000", Some("203.0.113.9")),
            ("http://10.0.0.1:81/a", "127.0.0.7:5000", None),
        ];
        for _ in 0..2 {
            for (uri, client, xff) in cases {
                let kept = head(uri, client, xff, &written);
                assert_eq!(
                    kept,
                    head(uri, client, xff, &Written::default()),
                    "{uri} {client}"
                );
            }
        }
        assert_eq!(
            head("http://10.0.0.1:81/a", "[2001:db8::1]:443", None, &written)[&X_FORWARDED_FOR],
            "2001:db8::1"
        );
        for port in 1..=u16::try_from(crate::cache::MAX_ENTRIES + 10).unwrap() {
            let uri = format!("http://10.0.0.3:{port}/");
            assert_eq!(
                head(&uri, "127.0.0.7:5000", None, &written)[header::HOST],
                format!("10.0.0.3:{port}").as_str()
            );
        }
        let kept = written.hosts.len();
        assert!(
            (1..=crate::cache::MAX_ENTRIES).contains(&kept),
            "{kept} kept"
        );
    }
}
