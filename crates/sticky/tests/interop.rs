//! Interoperability with the Go reference's `HashValue` and `AESValue` formats, in both
//! directions, checked against implementations independent of this crate: literal vectors
//! from `vectors/go_format.py` (Python `cryptography`), and test helpers built on the
//! published FNV constants and on the `aes-gcm` crate directly.

use core::time::Duration;
use std::time::SystemTime;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use roundrobin_sticky::codec::{Aes, Hash, ValueCodec};
use roundrobin_sticky::{Error, ServerUrl};

fn url(s: &str) -> ServerUrl {
    s.parse().unwrap()
}

fn at(unix: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
}

fn pool() -> Vec<ServerUrl> {
    vec![
        url("http://10.0.0.1:8080"),
        url("http://10.0.0.2:8080/api"),
        url("https://backend.example:443"),
    ]
}

/// FNV-1a 64 by its published constants, formatted as Go's `%x`.
fn go_hash_value(salt: &str, url: &str) -> String {
    let mut h: u64 = 14_695_981_039_346_656_037;
    for b in salt.bytes().chain(url.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(1_099_511_628_211);
    }
    format!("{h:x}")
}

#[test]
fn hash_vectors_from_the_go_format_both_directions() {
    let servers = pool();
    // `python3 vectors/go_format.py`
    let vectors = [
        ("foo", 0, "665a75617952c75"),
        ("", 1, "97e09ca04dd1823f"),
        ("s", 2, "4f9036c3a7d9d85c"),
    ];
    for (salt, i, value) in vectors {
        let codec = Hash::new(salt);
        assert_eq!(codec.encode(&servers[i]), value, "write {salt:?}");
        assert_eq!(codec.decode(value, &servers), Ok(i), "read {salt:?}");
        assert_eq!(
            go_hash_value(salt, servers[i].as_str()),
            value,
            "helper {salt:?}"
        );
    }
}

#[test]
fn hash_matches_an_independent_fnv1a_for_many_urls() {
    let servers: Vec<ServerUrl> = (0..200)
        .map(|i| {
            url(&format!(
                "http://10.{}.{}.{}:{}/p{i}",
                i % 7,
                i % 11,
                i % 13,
                8000 + i
            ))
        })
        .chain((0..5).map(|i| url(&format!("https://h{i}.example"))))
        .collect();
    for salt in ["", "salt", "a much longer salt with spaces"] {
        let codec = Hash::new(salt);
        let index = codec.index(&servers);
        for (i, server) in servers.iter().enumerate() {
            let go = go_hash_value(salt, server.as_str());
            assert_eq!(codec.encode(server), go);
            assert_eq!(index.find(&go, at(0)), Ok(i));
        }
    }
}

#[test]
fn aes_vectors_from_the_go_format_are_read() {
    let servers = pool();
    let key = |n: u8| (0..n).collect::<Vec<u8>>();
    // `python3 vectors/go_format.py`: Go's nonce layout, Go's plaintexts (`url.String()`,
    // query included), expiry 1700003600.
    let vectors = [
        (16, 0, "WV_uENyxu4ta4O15iJSXYvjP5tkuzQR6pjIv5sjmva41G6IkqrSu2Me_zpdSQU5E"),
        (
            24,
            1,
            "2HVq00IQrPJ8TGgmUTib1-4Z0jUcRJD4tPrJZiC-xslH_UvXEUpK2tDAoNQoEpzM_ZbmsaMDWKq0rtjHv86XUkFORA",
        ),
        (
            32,
            2,
            "s2btoOV5O0HACcLZ6kBb973Hqs1u4zCHrCpska3AMhVGMqT7TYkOYEM7s7ahmcg7SPygIvcYqrSu2Me_zpdSQU5E",
        ),
    ];
    for (len, i, value) in vectors {
        let codec = Aes::new(key(len)).unwrap();
        assert_eq!(
            codec.decode_at(value, &servers, at(1_700_000_000)),
            Ok(i),
            "aes-{len}"
        );
        assert_eq!(
            codec.decode_at(value, &servers, at(1_700_003_600)),
            Ok(i),
            "aes-{len}"
        );
        let after = codec.decode_at(value, &servers, at(1_700_003_601));
        // The first vector has no expiry.
        assert_eq!(
            after,
            if i == 0 { Ok(0) } else { Err(Error::Expired) },
            "aes-{len}"
        );
        assert_eq!(
            codec.decode_at(value, &servers[..i], at(0)),
            Err(Error::NotInPool)
        );
        // With a TTL, as in Go, a value must carry an expiry.
        let with_ttl = Aes::new(key(len)).unwrap().ttl(Duration::from_secs(60));
        let read = with_ttl.decode_at(value, &servers, at(1_700_000_000));
        assert_eq!(
            read,
            if i == 0 { Err(Error::Expired) } else { Ok(i) },
            "aes-{len}"
        );
    }
}

/// Go's `AESValue.Get`, on the `aes-gcm` crate: `base64url(seal(plaintext) ‖ nonce)`.
fn go_aes_value(key: &[u8; 32], plaintext: &str, nonce: [u8; 12]) -> String {
    let mut sealed = Aes256Gcm::new(key.into())
        .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
        .unwrap();
    sealed.extend_from_slice(&nonce);
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Go's `AESValue.FindURL` up to the URL match, on the `aes-gcm` crate: the plaintext.
fn go_aes_open(key: &[u8], value: &str) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(value).unwrap();
    let (sealed, nonce) = bytes.split_at(bytes.len() - 12);
    let plain = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(Nonce::from_slice(nonce), sealed),
        _ => Aes256Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(Nonce::from_slice(nonce), sealed),
    };
    String::from_utf8(plain.unwrap()).unwrap()
}

#[test]
fn aes_values_written_here_open_as_go_expects() {
    let servers = pool();
    let key = [0x5a; 32];
    let with_ttl = Aes::new(key).unwrap().ttl(Duration::from_secs(3600));
    let without = Aes::new([0x5a; 16]).unwrap();
    for server in &servers {
        let value = with_ttl.encode_at(server, at(1_700_000_000));
        assert_eq!(
            go_aes_open(&key, &value),
            format!("{}|1700003600", server.as_str())
        );
        let value = without.encode_at(server, at(1_700_000_000));
        assert_eq!(go_aes_open(&[0x5a; 16], &value), server.as_str());
    }
}

#[test]
fn aes_values_written_go_style_are_read_here() {
    let servers = pool();
    let key = [0x33; 32];
    let codec = Aes::new(key).unwrap();
    for (i, server) in servers.iter().enumerate() {
        for (n, plaintext) in [
            server.as_str().to_owned(),
            format!("{}|1700000010", server.as_str()),
            format!("{}?q=1|1700000010", server.as_str()),
        ]
        .into_iter()
        .enumerate()
        {
            let value = go_aes_value(&key, &plaintext, [n as u8; 12]);
            assert_eq!(
                codec.decode_at(&value, &servers, at(1_700_000_000)),
                Ok(i),
                "{plaintext}"
            );
            let late = codec.decode_at(&value, &servers, at(1_700_000_011));
            assert_eq!(late.is_ok(), n == 0, "{plaintext}");
        }
    }
    // Authentic but not Go's format: the expiry is not a number.
    let value = go_aes_value(&key, "http://10.0.0.1:8080|soon", [9; 12]);
    assert_eq!(
        codec.decode_at(&value, &servers, at(0)),
        Err(Error::Malformed)
    );
}
