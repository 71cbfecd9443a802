//! Every ignored cookie leaves a `tracing` event saying why, at the documented level.

use core::fmt;
use std::sync::{Arc, Mutex};

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use roundrobin_sticky::codec::{Aes, Hmac, ValueCodec};
use roundrobin_sticky::{CookieOptions, ServerUrl, StickySession};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// `(level, "field=value ...")` of every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(Level, String)>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn events(f: impl FnOnce()) -> Vec<(Level, String)> {
    let collect = Collect::default();
    tracing::subscriber::with_default(collect.clone(), f);
    let events = collect.0.lock().unwrap().clone();
    events
}

fn headers(cookie: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_bytes(cookie).unwrap());
    headers
}

/// A `Cookie` header, the index of the server it should find, the events it should log.
type Case = (Vec<u8>, Option<usize>, Vec<(Level, &'static str)>);

#[test]
fn each_ignored_cookie_is_logged_with_its_reason() {
    let pool: Vec<ServerUrl> = vec![
        "http://a:80".parse().unwrap(),
        "http://b:80".parse().unwrap(),
    ];
    let aes = Aes::new([1u8; 16]).unwrap();
    let session = StickySession::with_codec("s", aes.clone());
    let good = aes.encode(&pool[1]);
    let stale = aes.encode(&"http://gone:80".parse().unwrap());
    let forged = Aes::new([2u8; 16]).unwrap().encode(&pool[0]);
    let cases: Vec<Case> = vec![
        (
            b"other=1".to_vec(),
            None,
            vec![(Level::TRACE, "no sticky cookie")],
        ),
        (
            b"s=%%%".to_vec(),
            None,
            vec![(Level::DEBUG, "reason=malformed cookie value")],
        ),
        (
            format!("s={forged}").into_bytes(),
            None,
            vec![(Level::DEBUG, "reason=forged cookie value")],
        ),
        (
            format!("s={stale}").into_bytes(),
            None,
            vec![(
                Level::DEBUG,
                "reason=cookie value names no server of the pool",
            )],
        ),
        (
            b"s=\xff".to_vec(),
            None,
            vec![
                (Level::DEBUG, "not utf-8"),
                (Level::TRACE, "no sticky cookie"),
            ],
        ),
        (
            format!("s=bad; s={good}").into_bytes(),
            Some(1),
            vec![(Level::DEBUG, "reason=malformed cookie value")],
        ),
    ];
    for (cookie, expected, logged) in cases {
        let headers = headers(&cookie);
        let mut found = None;
        let seen = events(|| found = session.server(&headers, &pool));
        assert_eq!(found, expected.map(|i| pool[i].clone()), "{cookie:?}");
        assert_eq!(seen.len(), logged.len(), "{cookie:?}: {seen:?}");
        for ((level, text), (want_level, want)) in seen.iter().zip(&logged) {
            assert_eq!(level, want_level, "{cookie:?}: {text}");
            assert!(
                text.contains(want) && text.contains("cookie=s"),
                "{cookie:?}: {text}"
            );
        }
    }
}

#[test]
fn a_cookie_that_cannot_be_written_is_an_error_event() {
    let session = StickySession::with_codec("s", Hmac::new([0u8; 32])).options(CookieOptions {
        domain: Some("a;b".into()),
        ..CookieOptions::default()
    });
    let mut response = HeaderMap::new();
    let seen = events(|| session.stick(&"http://a:80".parse().unwrap(), &mut response));
    assert!(response.is_empty());
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, Level::ERROR);
    assert!(seen[0].1.contains("invalid cookie domain"), "{}", seen[0].1);
}
