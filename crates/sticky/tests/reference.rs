//! The reference's sticky-session cases, and the header handling around them.

use core::time::Duration;
use std::time::SystemTime;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use roundrobin_sticky::codec::{Aes, Fallback, Hash, Hmac, Raw, ValueCodec};
use roundrobin_sticky::{CookieOptions, Error, SameSite, ServerUrl, StickySession};

fn url(s: &str) -> ServerUrl {
    s.parse().unwrap()
}

fn pool() -> Vec<ServerUrl> {
    vec![
        url("http://10.0.0.1:8080"),
        url("http://10.0.0.2:8080/api"),
        url("https://10.0.0.3"),
    ]
}

/// 2023-11-14T22:13:20Z.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn request(cookie: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    headers
}

/// The `name=value` pair of the single `Set-Cookie` in `headers`.
fn pair(headers: &HeaderMap) -> String {
    let all: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
    assert_eq!(all.len(), 1, "{headers:?}");
    let text = all[0].to_str().unwrap();
    text.split(';').next().unwrap().to_owned()
}

/// Sticks `server` with `session` at `t0` and reads the cookie back against `servers`.
fn round_trip(
    session: &StickySession,
    server: &ServerUrl,
    servers: &[ServerUrl],
) -> Option<ServerUrl> {
    let mut response = HeaderMap::new();
    session.stick_at(server, &mut response, t0());
    session.server_at(&request(&pair(&response)), servers, t0())
}

#[test]
fn raw_cookie_of_a_member_sticks() {
    let servers = pool();
    let session = StickySession::with_codec("test", Raw);
    for server in &servers {
        assert_eq!(
            session
                .server(&request(&format!("test={server}")), &servers)
                .as_ref(),
            Some(server)
        );
    }
}

#[test]
fn raw_cookie_written_by_go_with_query_or_user_info_sticks() {
    let servers = pool();
    let session = StickySession::with_codec("test", Raw);
    let go_value = "http://user@10.0.0.2:8080/api?x=1";
    assert_eq!(
        session.server(&request(&format!("test={go_value}")), &servers),
        Some(servers[1].clone())
    );
}

#[test]
fn cookie_for_an_absent_server_another_scheme_or_path_or_garbage_is_none() {
    let servers = pool();
    let session = StickySession::with_codec("test", Raw);
    for value in [
        "http://10.0.0.9:8080",
        "https://10.0.0.1:8080",
        "http://10.0.0.1:8080/other",
        "http://10.0.0.2:8080",
        "http://10.0.0.1:8081",
        "garbage",
        "",
        "%%%",
        "\"\"",
    ] {
        assert_eq!(
            session.server(&request(&format!("test={value}")), &servers),
            None,
            "{value:?}"
        );
    }
}

#[test]
fn raw_values_are_written_in_clear() {
    let session = StickySession::with_codec("test", Raw);
    let mut response = HeaderMap::new();
    session.stick(&url("http://10.0.0.2:8080/api"), &mut response);
    assert_eq!(
        response[SET_COOKIE],
        "test=http://10.0.0.2:8080/api; Path=/"
    );
}

#[test]
fn raw_values_escape_what_a_cookie_cannot_carry_and_round_trip() {
    let odd = url("http://a:80/x\"y,z;w\\é");
    let servers = vec![url("http://a:80/x"), odd.clone()];
    let session = StickySession::with_codec("test", Raw);
    let mut response = HeaderMap::new();
    session.stick(&odd, &mut response);
    assert_eq!(pair(&response), "test=http://a:80/x%22y%2Cz%3Bw%5C%C3%A9");
    assert_eq!(round_trip(&session, &odd, &servers), Some(odd));
}

#[test]
fn every_codec_round_trips_every_member_and_rejects_removed_ones() {
    let servers = pool();
    let codecs: Vec<Box<dyn ValueCodec>> = vec![
        Box::new(Raw),
        Box::new(Hash::new("salt")),
        Box::new(Hmac::new([3u8; 32])),
        Box::new(Aes::new([4u8; 16]).unwrap()),
        Box::new(Aes::new([4u8; 24]).unwrap().ttl(Duration::from_secs(60))),
        Box::new(Aes::new([4u8; 32]).unwrap()),
        Box::new(Fallback::new(Raw, Hmac::new([5u8; 32]))),
    ];
    for codec in codecs {
        let name = format!("{codec:?}");
        let session = StickySession::with_codec("test", codec);
        for (i, server) in servers.iter().enumerate() {
            assert_eq!(
                round_trip(&session, server, &servers).as_ref(),
                Some(server),
                "{name}"
            );
            let mut rest = servers.clone();
            rest.remove(i);
            assert_eq!(round_trip(&session, server, &rest), None, "{name}");
            assert_eq!(round_trip(&session, server, &[]), None, "{name}");
        }
    }
}

#[test]
fn hash_values_are_lowercase_hex_of_the_normalised_url() {
    let session = StickySession::with_codec("test", Hash::new("foo"));
    let mut response = HeaderMap::new();
    // Query, user info and fragment are not part of the identity, so not of the hash.
    session.stick(&url("http://u@10.0.0.1:8080?q=1#f"), &mut response);
    let mut plain = HeaderMap::new();
    session.stick(&url("http://10.0.0.1:8080"), &mut plain);
    assert_eq!(response, plain);
    let value = pair(&response)["test=".len()..].to_owned();
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{value}"
    );
}

#[test]
fn hash_with_another_salt_does_not_match() {
    let servers = pool();
    let value = Hash::new("one").encode(&servers[0]);
    assert_eq!(
        Hash::new("two").decode(&value, &servers),
        Err(Error::NotInPool)
    );
    assert_eq!(Hash::new("one").decode(&value, &servers), Ok(0));
}

#[test]
fn aes_value_expires_after_its_ttl() {
    let servers = pool();
    let codec = Aes::new([9u8; 32]).unwrap().ttl(Duration::from_secs(5));
    let value = codec.encode_at(&servers[2], t0());
    assert_eq!(
        codec.decode_at(&value, &servers, t0() + Duration::from_secs(5)),
        Ok(2)
    );
    assert_eq!(
        codec.decode_at(
            &value,
            &servers,
            t0() + Duration::from_secs(5) + Duration::from_millis(1)
        ),
        Err(Error::Expired)
    );
    let session = StickySession::with_codec("test", codec);
    let headers = request(&format!("test={value}"));
    assert_eq!(
        session.server_at(&headers, &servers, t0() + Duration::from_secs(6)),
        None
    );
}

#[test]
fn aes_with_ttl_refuses_values_without_expiry() {
    let servers = pool();
    let value = Aes::new([9u8; 16]).unwrap().encode_at(&servers[0], t0());
    let with_ttl = Aes::new([9u8; 16]).unwrap().ttl(Duration::from_secs(60));
    assert_eq!(
        with_ttl.decode_at(&value, &servers, t0()),
        Err(Error::Expired)
    );
    // And the other way round: without a TTL, a written expiry is still honoured.
    let value = with_ttl.encode_at(&servers[0], t0());
    let without = Aes::new([9u8; 16]).unwrap();
    assert_eq!(without.decode_at(&value, &servers, t0()), Ok(0));
    let late = t0() + Duration::from_secs(61);
    assert_eq!(
        without.decode_at(&value, &servers, late),
        Err(Error::Expired)
    );
}

#[test]
fn aes_without_ttl_never_expires() {
    let servers = pool();
    let codec = Aes::new([9u8; 16]).unwrap().ttl(Duration::ZERO);
    let value = codec.encode_at(&servers[0], t0());
    let far = t0() + Duration::from_secs(100 * 365 * 86_400);
    assert_eq!(codec.decode_at(&value, &servers, far), Ok(0));
}

#[test]
fn aes_values_differ_each_time_and_reject_tampering_and_other_keys() {
    let servers = pool();
    let codec = Aes::new([9u8; 32]).unwrap();
    let a = codec.encode_at(&servers[0], t0());
    let b = codec.encode_at(&servers[0], t0());
    assert_ne!(a, b, "fresh nonce per value");
    let mut tampered = a.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        codec.decode_at(&tampered, &servers, t0()),
        Err(Error::Forged)
    );
    let other = Aes::new([8u8; 32]).unwrap();
    assert_eq!(other.decode_at(&a, &servers, t0()), Err(Error::Forged));
    assert_eq!(
        codec.decode_at("AAAA", &servers, t0()),
        Err(Error::Malformed)
    );
    assert_eq!(
        codec.decode_at("not base64!", &servers, t0()),
        Err(Error::Malformed)
    );
}

#[test]
fn aes_rejects_bad_key_lengths() {
    for len in [0, 1, 15, 17, 23, 25, 31, 33, 64] {
        assert_eq!(
            Aes::new(vec![0u8; len]).err(),
            Some(Error::InvalidKeyLength(len))
        );
    }
}

#[test]
fn hmac_values_are_short_opaque_and_keyed() {
    let servers = pool();
    let codec = Hmac::new(b"fleet key");
    let value = codec.encode(&servers[1]);
    assert_eq!(value.len(), 22);
    assert!(!value.contains("10.0.0"), "{value}");
    assert_eq!(codec.decode(&value, &servers), Ok(1));
    assert_eq!(
        Hmac::new(b"other key").decode(&value, &servers),
        Err(Error::NotInPool)
    );
    assert_eq!(codec.decode("short", &servers), Err(Error::Malformed));
    assert_eq!(
        codec.decode("!!!!!!!!!!!!!!!!!!!!!!", &servers),
        Err(Error::Malformed)
    );
}

#[test]
fn default_session_uses_a_random_hmac_key_per_session() {
    let servers = pool();
    let a = StickySession::new("test");
    let b = StickySession::new("test");
    let mut response = HeaderMap::new();
    a.stick(&servers[0], &mut response);
    let value = &pair(&response)["test=".len()..];
    assert_eq!(value.len(), 22);
    let headers = request(&pair(&response));
    assert_eq!(a.server(&headers, &servers), Some(servers[0].clone()));
    assert_eq!(
        a.clone().server(&headers, &servers),
        Some(servers[0].clone())
    );
    assert_eq!(b.server(&headers, &servers), None);
}

/// Each codec, by name, for the fallback matrix.
fn codec(kind: &str) -> Box<dyn ValueCodec> {
    match kind {
        "raw" => Box::new(Raw),
        "hash" => Box::new(Hash::new("salt")),
        "hmac" => Box::new(Hmac::new([1u8; 32])),
        "aes" => Box::new(Aes::new([2u8; 16]).unwrap()),
        other => unreachable!("{other}"),
    }
}

#[test]
fn fallback_reads_from_then_to_and_writes_to_in_every_combination() {
    let servers = pool();
    let kinds = ["raw", "hash", "hmac", "aes"];
    for from in kinds {
        for to in kinds {
            let fallback = Fallback::new(codec(from), codec(to));
            for (i, server) in servers.iter().enumerate() {
                let old = codec(from).encode_at(server, t0());
                assert_eq!(
                    fallback.decode_at(&old, &servers, t0()),
                    Ok(i),
                    "{from}->{to}"
                );
                let new = fallback.encode_at(server, t0());
                assert_eq!(
                    codec(to).decode_at(&new, &servers, t0()),
                    Ok(i),
                    "{from}->{to}"
                );
                if from != to {
                    // Written with `to`, which `from` alone does not read (unless the two
                    // formats coincide, which none of these do).
                    assert!(
                        codec(from).decode_at(&new, &servers, t0()).is_err(),
                        "{from}->{to}"
                    );
                }
                assert!(fallback.decode_at("garbage", &servers, t0()).is_err());
                assert!(fallback.decode_at(&old, &servers[..0], t0()).is_err());
            }
        }
    }
}

#[test]
fn fallback_reports_the_reason_of_the_codec_that_recognised_the_value() {
    let servers = pool();
    let aes = Aes::new([2u8; 16]).unwrap().ttl(Duration::from_secs(1));
    let value = aes.encode_at(&servers[0], t0());
    let fallback = Fallback::new(aes, Hash::new("salt"));
    let later = t0() + Duration::from_secs(2);
    assert_eq!(
        fallback.decode_at(&value, &servers, later),
        Err(Error::Expired)
    );
}

#[test]
fn every_cookie_option_appears_in_set_cookie_exactly() {
    let server = url("http://10.0.0.1:8080");
    let cases: Vec<(CookieOptions, &str)> = vec![
        (
            CookieOptions::default(),
            "test=http://10.0.0.1:8080; Path=/",
        ),
        (
            CookieOptions {
                http_only: true,
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; HttpOnly; Path=/",
        ),
        (
            CookieOptions {
                secure: true,
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; Secure; Path=/",
        ),
        (
            CookieOptions {
                path: Some("/foo".into()),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; Path=/foo",
        ),
        (
            CookieOptions {
                path: None,
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080",
        ),
        (
            CookieOptions {
                domain: Some("example.org".into()),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; Path=/; Domain=example.org",
        ),
        (
            CookieOptions {
                expires: Some(Duration::from_secs(3600)),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; Path=/; Expires=Tue, 14 Nov 2023 23:13:20 GMT",
        ),
        (
            CookieOptions {
                max_age: Some(Duration::from_secs(20)),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; Path=/; Max-Age=20",
        ),
        (
            CookieOptions {
                same_site: Some(SameSite::Strict),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; SameSite=Strict; Path=/",
        ),
        (
            CookieOptions {
                same_site: Some(SameSite::Lax),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; SameSite=Lax; Path=/",
        ),
        (
            CookieOptions {
                same_site: Some(SameSite::None),
                ..CookieOptions::default()
            },
            "test=http://10.0.0.1:8080; SameSite=None; Secure; Path=/",
        ),
        (
            CookieOptions {
                http_only: true,
                secure: true,
                path: Some("/app".into()),
                domain: Some("example.org".into()),
                expires: Some(Duration::from_secs(60)),
                max_age: Some(Duration::from_secs(60)),
                same_site: Some(SameSite::Lax),
            },
            "test=http://10.0.0.1:8080; HttpOnly; SameSite=Lax; Secure; Path=/app; \
             Domain=example.org; Max-Age=60; Expires=Tue, 14 Nov 2023 22:14:20 GMT",
        ),
    ];
    for (options, expected) in cases {
        let session = StickySession::with_codec("test", Raw).options(options.clone());
        let mut response = HeaderMap::new();
        session.stick_at(&server, &mut response, t0());
        assert_eq!(response.get_all(SET_COOKIE).iter().count(), 1);
        assert_eq!(response[SET_COOKIE], expected, "{options:?}");
    }
}

#[test]
fn expires_is_computed_at_each_write() {
    let session = StickySession::with_codec("test", Raw).options(CookieOptions {
        expires: Some(Duration::from_secs(60)),
        path: None,
        ..CookieOptions::default()
    });
    let server = url("http://a:80");
    let mut first = HeaderMap::new();
    session.stick_at(&server, &mut first, t0());
    let mut second = HeaderMap::new();
    session.stick_at(&server, &mut second, t0() + Duration::from_secs(3600));
    assert_eq!(
        first[SET_COOKIE],
        "test=http://a:80; Expires=Tue, 14 Nov 2023 22:14:20 GMT"
    );
    assert_eq!(
        second[SET_COOKIE],
        "test=http://a:80; Expires=Tue, 14 Nov 2023 23:14:20 GMT"
    );
}

#[test]
fn expires_beyond_year_9999_is_clamped() {
    let session = StickySession::with_codec("test", Raw).options(CookieOptions {
        expires: Some(Duration::MAX),
        max_age: Some(Duration::MAX),
        path: None,
        ..CookieOptions::default()
    });
    let mut response = HeaderMap::new();
    session.stick_at(&url("http://a:80"), &mut response, t0());
    assert_eq!(
        response[SET_COOKIE],
        "test=http://a:80; Max-Age=9223372036854775807; Expires=Fri, 31 Dec 9999 23:59:59 GMT"
    );
}

#[test]
fn stick_keeps_other_set_cookies() {
    let session = StickySession::with_codec("test", Raw);
    let mut response = HeaderMap::new();
    response.append(SET_COOKIE, HeaderValue::from_static("session=abc; Path=/"));
    session.stick(&url("http://a:80"), &mut response);
    let all: Vec<_> = response.get_all(SET_COOKIE).iter().collect();
    assert_eq!(all, ["session=abc; Path=/", "test=http://a:80; Path=/"]);
}

#[test]
fn invalid_name_or_attributes_write_no_cookie() {
    let server = url("http://a:80");
    let bad_sessions = [
        (StickySession::with_codec("", Raw), Error::InvalidName),
        (StickySession::with_codec("a=b", Raw), Error::InvalidName),
        (StickySession::with_codec("a;b", Raw), Error::InvalidName),
        (
            StickySession::with_codec("ok", Raw).options(CookieOptions {
                path: Some("/; Domain=evil".into()),
                ..CookieOptions::default()
            }),
            Error::InvalidAttribute("path"),
        ),
        (
            StickySession::with_codec("ok", Raw).options(CookieOptions {
                domain: Some("a\r\nb".into()),
                ..CookieOptions::default()
            }),
            Error::InvalidAttribute("domain"),
        ),
    ];
    for (session, error) in bad_sessions {
        assert_eq!(session.validate(), Err(error.clone()));
        assert_eq!(session.set_cookie_at(&server, t0()), Err(error));
        let mut response = HeaderMap::new();
        session.stick(&server, &mut response);
        assert!(response.is_empty());
    }
    let fixed = StickySession::with_codec("ok", Raw)
        .options(CookieOptions {
            path: Some("/;".into()),
            ..CookieOptions::default()
        })
        .options(CookieOptions::default());
    assert_eq!(fixed.validate(), Ok(()));
}

/// A codec breaking the contract: its values hold characters a cookie cannot carry.
#[derive(Debug)]
struct Spacey;

impl ValueCodec for Spacey {
    fn encode_at(&self, _: &ServerUrl, _: SystemTime) -> String {
        "a b;c".to_owned()
    }
    fn index(&self, servers: &[ServerUrl]) -> Box<dyn roundrobin_sticky::codec::ValueIndex> {
        Raw.index(servers)
    }
}

#[test]
fn a_codec_writing_invalid_values_gets_no_cookie_written() {
    let session = StickySession::with_codec("test", Spacey);
    let server = url("http://a:80");
    assert_eq!(
        session.set_cookie_at(&server, t0()),
        Err(Error::InvalidValue)
    );
    let mut response = HeaderMap::new();
    session.stick(&server, &mut response);
    assert!(response.is_empty());
}

#[test]
fn the_named_cookie_is_found_among_several_and_across_cookie_headers() {
    let servers = pool();
    let session = StickySession::with_codec("test", Raw);
    let cases = [
        "a=1; test=http://10.0.0.2:8080/api; b=2",
        "test=http://10.0.0.2:8080/api",
        "test=\"http://10.0.0.2:8080/api\"",
        "  test = http://10.0.0.2:8080/api ;",
        // A stale or garbled cookie of the same name first (e.g. another Path): the next one wins.
        "test=http://10.0.0.9:80; test=http://10.0.0.2:8080/api",
        "=x; ;; test; test=http://10.0.0.2:8080/api",
    ];
    for case in cases {
        assert_eq!(
            session.server(&request(case), &servers),
            Some(servers[1].clone()),
            "{case:?}"
        );
    }
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, HeaderValue::from_static("a=1"));
    headers.append(COOKIE, HeaderValue::from_bytes(b"b=\xff\xfe").unwrap());
    headers.append(COOKIE, HeaderValue::from_static("test=http://10.0.0.3"));
    headers.append(COOKIE, HeaderValue::from_static("test=https://10.0.0.3"));
    assert_eq!(session.server(&headers, &servers), Some(servers[2].clone()));
}

#[test]
fn other_cookie_names_and_missing_headers_give_none() {
    let servers = pool();
    let session = StickySession::with_codec("test", Raw);
    assert_eq!(session.server(&HeaderMap::new(), &servers), None);
    for case in [
        "tes=http://10.0.0.1:8080",
        "Test=http://10.0.0.1:8080",
        "testx=http://10.0.0.1:8080",
    ] {
        assert_eq!(session.server(&request(case), &servers), None, "{case:?}");
    }
}

#[test]
fn a_cookie_header_that_is_not_utf8_is_ignored() {
    let servers = pool();
    let session = StickySession::with_codec("test", Raw);
    let mut headers = HeaderMap::new();
    headers.insert(
        COOKIE,
        HeaderValue::from_bytes(b"test=http://10.0.0.1:8080\xff").unwrap(),
    );
    assert_eq!(session.server(&headers, &servers), None);
    assert_eq!(session.index(&servers).server(&headers), None);
}

#[test]
fn index_answers_like_the_slice_lookup() {
    let servers = pool();
    let session = StickySession::with_codec("test", Hmac::new([7u8; 32]));
    let index = session.index(&servers);
    assert_eq!(index.servers(), &servers[..]);
    assert_eq!(index.session().cookie_name(), "test");
    for server in &servers {
        let mut response = HeaderMap::new();
        session.stick(server, &mut response);
        let headers = request(&pair(&response));
        assert_eq!(index.server(&headers), Some(server));
        assert_eq!(index.clone().server_at(&headers, t0()), Some(server));
    }
    let smaller = session.index(&servers[..1]);
    let mut response = HeaderMap::new();
    session.stick(&servers[2], &mut response);
    assert_eq!(smaller.server(&request(&pair(&response))), None);
}

#[test]
fn debug_never_prints_keys_or_salts() {
    let key = b"SUPERSECRETKEY0123456789abcdef!!";
    let session = StickySession::with_codec(
        "test",
        Fallback::new(
            Hash::new("SALTYSALT"),
            Fallback::new(Hmac::new(key), Aes::new(key).unwrap()),
        ),
    );
    let index = session.index(&pool());
    for text in [
        format!("{session:?}"),
        format!("{session:#?}"),
        format!("{index:?}"),
    ] {
        assert!(
            !text.contains("SUPERSECRET") && !text.contains("SALTYSALT"),
            "{text}"
        );
        assert!(!text.contains("83, 85, 80"), "{text}"); // "SUP" as bytes
        assert!(text.contains("redacted"), "{text}");
    }
}

#[test]
fn session_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<StickySession>();
    assert_send_sync::<roundrobin_sticky::StickyIndex>();
}
