//! Sticky-session cookie decoding: the cost of finding the pinned server from a request's
//! `Cookie` header, per codec, with 10 and 1000 servers in the pool.
//!
//! - `decode/<codec>/<n>`: `StickyIndex::server_at`: cookie parsing, value decoding
//!   and lookup in the precomputed index. Target: HMAC and hash independent of `n` and
//!   under 300 ns; AES under 1.5 µs.
//! - `decode_unindexed/<codec>/<n>`: `StickySession::server_at` with the pool slice,
//!   which builds the lookup on each call: O(n), like the Go reference's scan.
//! - `encode/<codec>`: `StickySession::set_cookie_at`, the `Set-Cookie` value.
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]
use core::hint::black_box;
use core::time::Duration;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use roundrobin_core::ServerUrl;
use roundrobin_sticky::codec::{Aes, Hash, Hmac, Raw, ValueCodec};
use roundrobin_sticky::{CookieOptions, SameSite, StickySession};

fn servers(n: usize) -> Vec<ServerUrl> {
    (0..n)
        .map(|i| {
            format!(
                "http://10.{}.{}.{}:8080",
                i / 65_536,
                (i / 256) % 256,
                i % 256
            )
        })
        .map(|s| s.parse().unwrap())
        .collect()
}

fn codecs() -> Vec<(&'static str, Box<dyn ValueCodec>)> {
    vec![
        ("raw", Box::new(Raw)),
        ("hash", Box::new(Hash::new("salt"))),
        ("hmac", Box::new(Hmac::new([7u8; 32]))),
        (
            "aes",
            Box::new(Aes::new([7u8; 32]).unwrap().ttl(Duration::from_secs(3600))),
        ),
    ]
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A request carrying the session cookie for `server` between two unrelated cookies.
fn request(session: &StickySession, server: &ServerUrl) -> HeaderMap {
    let value = session.codec().encode_at(server, now());
    let mut headers = HeaderMap::new();
    let cookie = format!(
        "_ga=GA1.2.3.4; {}={value}; theme=dark",
        session.cookie_name()
    );
    headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
    headers
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, codec) in codecs() {
        let session = StickySession::with_codec("backend", codec);
        for n in [10, 1000] {
            let pool = servers(n);
            let index = session.index(&pool);
            let headers = request(&session, &pool[n / 2]);
            assert_eq!(index.server_at(&headers, now()), Some(&pool[n / 2]));
            group.bench_with_input(BenchmarkId::new(name, n), &headers, |b, headers| {
                b.iter(|| index.server_at(black_box(headers), now()).is_some());
            });
        }
    }
    group.finish();
}

fn decode_unindexed(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_unindexed");
    for (name, codec) in codecs()
        .into_iter()
        .filter(|(n, _)| matches!(*n, "hash" | "hmac"))
    {
        let session = StickySession::with_codec("backend", codec);
        for n in [10, 1000] {
            let pool = servers(n);
            let headers = request(&session, &pool[n / 2]);
            group.bench_with_input(BenchmarkId::new(name, n), &headers, |b, headers| {
                b.iter(|| session.server_at(black_box(headers), &pool, now()));
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let server = servers(1).remove(0);
    let options = CookieOptions {
        http_only: true,
        secure: true,
        max_age: Some(Duration::from_secs(3600)),
        same_site: Some(SameSite::Lax),
        ..CookieOptions::default()
    };
    for (name, codec) in codecs() {
        let session = StickySession::with_codec("backend", codec).options(options.clone());
        group.bench_function(name, |b| {
            b.iter(|| session.set_cookie_at(black_box(&server), now()).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, decode, decode_unindexed, encode);
criterion_main!(benches);
