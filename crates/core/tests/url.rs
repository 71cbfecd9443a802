//! `ServerUrl::parse` on arbitrary input: it never panics, everything it accepts is
//! `http(s)://host[:port][/path]` and parses back to itself, and well-formed URLs are
//! accepted.

use proptest::prelude::*;
use roundrobin_core::{Error, ServerUrl};

/// What every accepted URL looks like, checked by hand rather than by the parser.
fn check_accepted(url: &ServerUrl) -> Result<(), TestCaseError> {
    prop_assert!(["http", "https"].contains(&url.scheme()), "{url:?}");
    prop_assert_eq!(
        url.as_str(),
        format!("{}://{}{}", url.scheme(), url.authority(), url.path())
    );
    let authority = url.authority();
    prop_assert!(!authority.is_empty());
    let port = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').unwrap();
        prop_assert!(ip.parse::<core::net::Ipv6Addr>().is_ok(), "{url:?}");
        after.strip_prefix(':')
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        prop_assert!(!host.is_empty());
        prop_assert!(host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
        port
    };
    if let Some(port) = port {
        let n: u16 = port
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert!(n >= 1);
        prop_assert_eq!(n.to_string(), port, "no leading zeros");
    }
    prop_assert!(url.path().is_empty() || url.path().starts_with('/'));
    prop_assert!(url.path().bytes().all(|b| b.is_ascii_graphic()));
    // Round trip.
    prop_assert_eq!(ServerUrl::parse(url.as_str()), Ok(url.clone()));
    Ok(())
}

fn scheme() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["http", "https", "HTTP", "Https"])
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,3}".prop_filter("not all digits", |h| {
            !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        }),
        any::<core::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<core::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_strings_never_panic_and_accepted_ones_round_trip(input in ".{0,40}") {
        if let Ok(url) = ServerUrl::parse(&input) {
            check_accepted(&url)?;
        }
    }

    #[test]
    fn url_shaped_strings_never_panic_and_accepted_ones_round_trip(
        scheme in "[a-zA-Z0-9+]{0,6}",
        authority in "[a-zA-Z0-9.:\\[\\]@%_-]{0,24}",
        path in "(/[ -~]{0,12})?",
    ) {
        if let Ok(url) = ServerUrl::parse(&format!("{scheme}://{authority}{path}")) {
            check_accepted(&url)?;
        }
    }

    #[test]
    fn well_formed_urls_are_accepted(
        scheme in scheme(),
        host in host(),
        port in proptest::option::of(1u16..),
        path in "(/[a-zA-Z0-9._~%-]{0,8}){0,3}",
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let input = format!("{scheme}://{host}{port}{path}");
        let url = ServerUrl::parse(&input).map_err(|e| TestCaseError::fail(format!("{input}: {e}")))?;
        let expected = format!(
            "{}://{}{port}{path}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        );
        prop_assert_eq!(url.as_str(), expected);
        check_accepted(&url)?;
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused(port in prop_oneof![Just(0u64), 65_536u64..]) {
        prop_assert_eq!(
            ServerUrl::parse(&format!("http://a:{port}")),
            Err(Error::InvalidUrl("invalid port: use 1..=65535"))
        );
    }
}

#[test]
fn schemes_other_than_http_https_and_h2c_are_refused() {
    for good in ["http://x", "https://x", "h2c://x", "H2C://x"] {
        assert!(ServerUrl::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "ftp://x",
        "gopher://x",
        "ws://x",
        "h2://x",
        "grpc://x",
        "javascript://x",
    ] {
        assert!(
            matches!(ServerUrl::parse(bad), Err(Error::InvalidUrl(m)) if m.contains("scheme")),
            "{bad}"
        );
    }
}

#[test]
fn the_urls_of_issue_14_are_refused() {
    for bad in [
        "http://[::1",
        "http://a:99999",
        "http://a:-1",
        "http://a:abc",
        "ftp://x",
        "gopher://x",
    ] {
        assert!(ServerUrl::parse(bad).is_err(), "{bad}");
    }
}
