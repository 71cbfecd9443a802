//! Fuzzes cookie decoding: arbitrary `Cookie` headers, and arbitrary values for every codec,
//! must never panic and never name a server outside the pool.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use roundrobin_sticky::codec::{Aes, Fallback, Hash, Hmac, Raw, ValueCodec};
use roundrobin_sticky::{ServerUrl, StickyIndex, StickySession};

struct Fixture {
    servers: Vec<ServerUrl>,
    indexes: Vec<StickyIndex>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let servers: Vec<ServerUrl> = [
            "http://10.0.0.1:8080",
            "https://10.0.0.2/api",
            "http://b.example/x%22|y",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let key = [7u8; 32];
        let codecs: Vec<Box<dyn ValueCodec>> = vec![
            Box::new(Raw),
            Box::new(Hash::new("salt")),
            Box::new(Hmac::new(key)),
            Box::new(Aes::new(key).unwrap().ttl(Duration::from_secs(60))),
            Box::new(Fallback::new(
                Hash::new("salt"),
                Aes::new(&key[..16]).unwrap(),
            )),
        ];
        let indexes = codecs
            .into_iter()
            .map(|codec| StickySession::with_codec("s", codec).index(&servers))
            .collect();
        Fixture { servers, indexes }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(COOKIE, value);
        }
    }
    let mut single = b"s=".to_vec();
    single.extend_from_slice(data);
    let mut as_value = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(&single) {
        as_value.insert(COOKIE, value);
    }
    for index in &fixture.indexes {
        for h in [&headers, &as_value] {
            if let Some(server) = index.server_at(h, now) {
                assert!(fixture.servers.contains(server));
            }
        }
    }
});
