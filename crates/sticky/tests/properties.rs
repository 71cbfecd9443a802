//! Invariants over random pools, codecs and cookie values.

use core::time::Duration;
use std::collections::HashSet;
use std::time::SystemTime;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use roundrobin_sticky::codec::{Aes, Fallback, Hash, Hmac, Raw, ValueCodec};
use roundrobin_sticky::{ServerUrl, StickySession};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A server URL with a random scheme, host, port and path; paths include characters a
/// cookie value cannot carry.
fn server() -> impl Strategy<Value = ServerUrl> {
    (
        prop::sample::select(vec!["http", "https", "HTTP"]),
        prop::sample::select(vec![
            "10.0.0.1",
            "10.0.0.2",
            "backend.example",
            "Backend.Example",
            "[::1]",
        ]),
        prop::option::of(1u16..),
        "(/[a-z0-9._~%|\"é;,-]{0,6}){0,3}",
    )
        .prop_map(|(scheme, host, port, path)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}").parse().unwrap()
        })
}

/// 1..40 distinct servers. Distinct by their cookie form, too: `Raw` and `Aes` treat a
/// character and its percent-encoding as the same URL (`/"` and `/%22`).
fn pool() -> impl Strategy<Value = Vec<ServerUrl>> {
    prop::collection::vec(server(), 1..40).prop_map(|servers| {
        let mut seen = HashSet::new();
        servers
            .into_iter()
            .filter(|s| seen.insert(Raw.encode(s)))
            .collect()
    })
}

/// A codec and its keys, built into a `ValueCodec` by [`Spec::build`].
#[derive(Debug, Clone)]
enum Spec {
    Raw,
    Hash(String),
    Hmac([u8; 32]),
    Aes([u8; 32], usize, u64),
    HashToHmac(String, [u8; 32]),
    HmacToAes([u8; 32]),
}

impl Spec {
    fn build(&self) -> Box<dyn ValueCodec> {
        match self {
            Self::Raw => Box::new(Raw),
            Self::Hash(salt) => Box::new(Hash::new(salt.as_str())),
            Self::Hmac(key) => Box::new(Hmac::new(key)),
            Self::Aes(key, len, ttl) => Box::new(
                Aes::new(&key[..*len])
                    .unwrap()
                    .ttl(Duration::from_secs(*ttl)),
            ),
            Self::HashToHmac(salt, key) => {
                Box::new(Fallback::new(Hash::new(salt.as_str()), Hmac::new(key)))
            }
            Self::HmacToAes(key) => Box::new(Fallback::new(Hmac::new(key), Aes::new(key).unwrap())),
        }
    }
}

fn codec() -> impl Strategy<Value = Spec> {
    let key = prop::array::uniform32(any::<u8>());
    prop_oneof![
        Just(Spec::Raw),
        ".{0,16}".prop_map(Spec::Hash),
        key.prop_map(Spec::Hmac),
        (
            key,
            prop::sample::select(vec![16usize, 24, 32]),
            0u64..1_000_000
        )
            .prop_map(|(k, len, ttl)| Spec::Aes(k, len, ttl)),
        (".{0,8}", key).prop_map(|(salt, k)| Spec::HashToHmac(salt, k)),
        key.prop_map(Spec::HmacToAes),
    ]
}

fn request(set_cookie: &HeaderValue) -> HeaderMap {
    let pair = set_cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut headers = HeaderMap::new();
    headers.insert(
        COOKIE,
        HeaderValue::from_str(&format!("other=1; {pair}; last=2")).unwrap(),
    );
    headers
}

proptest! {
    #[test]
    fn stuck_server_is_found_while_in_the_pool_and_never_after(
        servers in pool(),
        codec in codec(),
        pick in any::<prop::sample::Index>(),
    ) {
        let s = pick.get(&servers).clone();
        let session = StickySession::with_codec("sticky", codec.build());
        let mut response = HeaderMap::new();
        session.stick_at(&s, &mut response, t0());
        let headers = request(&response[SET_COOKIE]);

        prop_assert_eq!(session.server_at(&headers, &servers, t0()), Some(s.clone()));
        let index = session.index(&servers);
        prop_assert_eq!(index.server_at(&headers, t0()), Some(&s));

        // The `cookie` crate (as a client or another proxy would) reads the same value back.
        let parsed = cookie::Cookie::parse(response[SET_COOKIE].to_str().unwrap()).unwrap();
        prop_assert_eq!(parsed.name(), "sticky");
        prop_assert_eq!(parsed.path(), Some("/"));
        let codec_index = session.codec().index(&servers);
        prop_assert_eq!(codec_index.find(parsed.value(), t0()), Ok(servers.iter().position(|x| *x == s).unwrap()));

        let rest: Vec<ServerUrl> = servers.iter().filter(|x| **x != s).cloned().collect();
        prop_assert_eq!(session.server_at(&headers, &rest, t0()), None);
        let index = session.index(&rest);
        prop_assert_eq!(index.server_at(&headers, t0()), None);
    }

    #[test]
    fn cookie_values_are_cookie_octets(servers in pool(), codec in codec()) {
        let codec = codec.build();
        for s in &servers {
            let value = codec.encode_at(s, t0());
            prop_assert!(
                value.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)),
                "{}", value
            );
        }
    }

    #[test]
    fn arbitrary_values_never_name_a_server_outside_the_pool(
        servers in pool(),
        codec in codec(),
        value in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let codec = codec.build();
        let text = String::from_utf8_lossy(&value);
        let index = codec.index(&servers);
        if let Ok(i) = index.find(&text, t0()) {
            prop_assert!(i < servers.len());
        }
        let session = StickySession::with_codec("sticky", codec);
        let mut header = b"sticky=".to_vec();
        header.extend_from_slice(&value);
        if let Ok(header) = HeaderValue::from_bytes(&header) {
            let mut headers = HeaderMap::new();
            headers.insert(COOKIE, header);
            if let Some(found) = session.server_at(&headers, &servers, t0()) {
                prop_assert!(servers.contains(&found));
            }
        }
    }

    #[test]
    fn arbitrary_cookie_headers_never_panic_or_escape_the_pool(
        servers in pool(),
        headers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 0..4),
    ) {
        let session = StickySession::with_codec("sticky", Raw);
        let index = session.index(&servers);
        let mut map = HeaderMap::new();
        for h in headers {
            if let Ok(value) = HeaderValue::from_bytes(&h) {
                map.append(COOKIE, value);
            }
        }
        if let Some(found) = index.server_at(&map, t0()) {
            prop_assert!(servers.contains(found));
        }
    }
}
