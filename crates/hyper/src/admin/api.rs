//! The JSON endpoints: `GET /servers`, `GET /stats`, `PUT` and `DELETE /servers`.

use core::fmt;
use core::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use roundrobin_core::ServerUrl;
use roundrobin_rebalancer::ServerState;
use serde::{Deserialize, Serialize};

use super::{Admin, ADMIN_MAX_WEIGHT};
use crate::{Error, Manage};

/// How `GET /servers` writes one server: a view of a [`ServerState`].
#[derive(Serialize)]
struct Row<'a> {
    url: &'a str,
    weight: u32,
    original_weight: u32,
    rating: f64,
}

impl<'a> From<&'a ServerState<ServerUrl>> for Row<'a> {
    fn from(s: &'a ServerState<ServerUrl>) -> Self {
        Self {
            url: s.server.as_str(),
            weight: s.current_weight,
            original_weight: s.original_weight,
            rating: s.rating,
        }
    }
}

/// How `GET /stats` writes one server.
#[derive(Serialize)]
struct StatsRow<'a> {
    /// What `GET /servers` says of it.
    #[serde(flatten)]
    row: Row<'a>,
    ready: bool,
    /// `up`, `slow-start`, `ejected` or `down`.
    health: &'static str,
    /// `weight` over the total weight: the server's expected share of the picks.
    share: f64,
}

#[derive(Serialize)]
struct Stats<'a> {
    servers: Vec<StatsRow<'a>>,
    total_weight: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upsert {
    url: String,
    weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Remove {
    url: String,
}

/// A server's weights, for the change log.
struct Weights(Option<(u32, u32)>);

impl Weights {
    fn of<P: Manage + ?Sized>(pool: &P, url: &ServerUrl) -> Self {
        Self(
            pool.snapshot()
                .into_iter()
                .find(|s| &s.server == url)
                .map(|s| (s.current_weight, s.original_weight)),
        )
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("absent"),
            Some((current, original)) => write!(f, "weight {current} (configured {original})"),
        }
    }
}

/// `client` field of the change log.
struct Who(Option<SocketAddr>);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("in-process"),
        }
    }
}

impl<P: Manage + ?Sized> Admin<P> {
    pub(super) fn list(&self, status: StatusCode) -> Response<Full<Bytes>> {
        let servers = self.servers();
        let rows: Vec<Row<'_>> = servers.iter().map(Row::from).collect();
        json(status, &rows)
    }

    pub(super) fn stats(&self) -> Response<Full<Bytes>> {
        let servers = self.servers();
        let total_weight: u64 = servers.iter().map(|s| u64::from(s.current_weight)).sum();
        let rows = servers
            .iter()
            .map(|s| StatsRow {
                row: Row::from(s),
                ready: s.ready,
                health: self
                    .pool
                    .health(&s.server)
                    .unwrap_or(crate::Health::Up)
                    .as_str(),
                share: if total_weight == 0 {
                    0.0
                } else {
                    f64::from(s.current_weight) / total_weight as f64
                },
            })
            .collect();
        json(
            StatusCode::OK,
            &Stats {
                servers: rows,
                total_weight,
            },
        )
    }
}

/// A `PUT` or `DELETE /servers` with its body, from `who`: validated whole before
/// anything changes, logged once applied.
pub(super) fn change<P: Manage + ?Sized>(
    admin: &Admin<P>,
    method: &Method,
    body: &[u8],
    who: Option<SocketAddr>,
) -> Response<Full<Bytes>> {
    let pool = &*admin.pool;
    let who = Who(who);
    if *method == Method::PUT {
        let req: Upsert = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("bad json: {e}")),
        };
        let url = match ServerUrl::parse(&req.url) {
            Ok(url) => url,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("`{}`: {e}", req.url)),
        };
        if let Some(weight) = req.weight.filter(|w| *w > ADMIN_MAX_WEIGHT) {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("weight {weight} out of range: use 0..={ADMIN_MAX_WEIGHT}"),
            );
        }
        let before = Weights::of(pool, &url);
        match pool.upsert_server(url.clone(), req.weight) {
            Ok(_) => {
                let after = Weights::of(pool, &url);
                tracing::info!(client = %who, server = %url, %before, %after, "admin: server upserted");
                admin.list(StatusCode::OK)
            }
            Err(e) => {
                tracing::info!(client = %who, server = %url, error = %e, "admin: upsert refused");
                message(StatusCode::BAD_REQUEST, &e.to_string())
            }
        }
    } else {
        let req: Remove = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("bad json: {e}")),
        };
        let url = match ServerUrl::parse(&req.url) {
            Ok(url) => url,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("`{}`: {e}", req.url)),
        };
        let before = Weights::of(pool, &url);
        match pool.remove_server(&url) {
            Ok(()) => {
                tracing::info!(client = %who, server = %url, %before, after = "absent", "admin: server removed");
                admin.list(StatusCode::OK)
            }
            Err(e @ Error::Balancer(roundrobin_core::Error::ServerNotFound)) => {
                message(StatusCode::NOT_FOUND, &e.to_string())
            }
            Err(e) => message(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, Bytes::from(body), "application/json"),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `{"error": text}` with `status`.
pub(super) fn message(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": text }).to_string();
    with_type(status, Bytes::from(body), "application/json")
}

pub(super) fn with_type(
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roundrobin_core::RoundRobin;

    use super::*;

    fn admin() -> Admin<RoundRobin<ServerUrl>> {
        Admin::new(Arc::new(RoundRobin::new()))
    }

    fn status(a: &Admin<RoundRobin<ServerUrl>>, m: Method, body: &str) -> u16 {
        change(a, &m, body.as_bytes(), None).status().as_u16()
    }

    #[test]
    fn upsert_list_remove() {
        let a = admin();
        assert_eq!(status(&a, Method::PUT, r#"{"url":"http://a:1"}"#), 200);
        assert_eq!(
            status(&a, Method::PUT, r#"{"url":"http://b:1","weight":3}"#),
            200
        );
        let urls: Vec<(String, u32)> = a
            .servers()
            .into_iter()
            .map(|s| (s.server.to_string(), s.current_weight))
            .collect();
        assert_eq!(urls, [("http://a:1".into(), 1), ("http://b:1".into(), 3)]);
        assert_eq!(status(&a, Method::DELETE, r#"{"url":"http://a:1"}"#), 200);
        assert_eq!(status(&a, Method::DELETE, r#"{"url":"http://a:1"}"#), 404);
        assert_eq!(a.servers().len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let a = admin();
            for m in [Method::PUT, Method::DELETE] {
                let status = change(&a, &m, &body, None).status().as_u16();
                proptest::prop_assert!([200, 400, 404].contains(&status));
            }
        }
    }

    #[test]
    fn bad_requests_are_400_with_a_message_and_change_nothing() {
        let a = admin();
        assert_eq!(
            status(&a, Method::PUT, r#"{"url":"http://a:1","weight":2}"#),
            200
        );
        for body in [
            "",
            "{",
            "[]",
            r#"{"weight":1}"#,
            r#"{"url":"nope"}"#,
            r#"{"url":"http://a:1","weight":-1}"#,
            r#"{"url":"http://a:1","weight":1.5}"#,
            r#"{"url":"http://a:1","weight":1000001}"#,
            r#"{"url":"http://a:1","weight":4294967296}"#,
            r#"{"url":"http://a:1","weight":1,"extra":true}"#,
            r#"{"url":"http://[::1","weight":1}"#,
            r#"{"url":"http://a:99999","weight":1}"#,
            r#"{"url":"http://a:-1","weight":1}"#,
            r#"{"url":"http://a:abc","weight":1}"#,
            r#"{"url":"ftp://x","weight":1}"#,
            r#"{"url":"gopher://x","weight":1}"#,
        ] {
            let res = change(&a, &Method::PUT, body.as_bytes(), None);
            assert_eq!(res.status(), 400, "{body}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        }
        assert_eq!(
            status(&a, Method::DELETE, r#"{"url":"http://a:1","x":1}"#),
            400
        );
        let servers = a.servers();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].current_weight, 2);
        assert_eq!(
            status(&a, Method::PUT, r#"{"url":"http://a:1","weight":1000000}"#),
            200
        );
        assert_eq!(
            status(&a, Method::PUT, r#"{"url":"http://a:1","weight":0}"#),
            200
        );
    }
}
