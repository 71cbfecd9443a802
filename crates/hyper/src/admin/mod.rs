//! A JSON admin API over a pool ([`Manage`]): list, upsert and remove servers at run
//! time.

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use roundrobin_core::ServerUrl;
use roundrobin_rebalancer::ServerState;
use serde::{Deserialize, Serialize};

use crate::{Error, Manage};

/// The largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

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

/// The admin API as a hyper service:
///
/// - `GET /servers` → 200, `[{"url":..,"weight":..,"original_weight":..,"rating":..}]`
///   in pool order;
/// - `PUT /servers` with `{"url":..,"weight":N}` (weight optional) → upsert, 200;
/// - `DELETE /servers` with `{"url":..}` → 200, or 404 when the server is absent;
/// - malformed JSON or URL → 400 with `{"error": message}`; other paths 404, other
///   methods 405.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use http_body_util::{BodyExt, Full};
/// use hyper::service::Service;
/// use roundrobin_core::RoundRobin;
/// use roundrobin_hyper::Admin;
///
/// let admin = Admin::new(Arc::new(RoundRobin::new()));
/// let put = http::Request::put("/servers")
///     .body(Full::new(bytes::Bytes::from(r#"{"url":"http://10.0.0.1:80","weight":2}"#)))
///     .unwrap();
/// assert_eq!(admin.call(put).await.unwrap().status(), 200);
/// let get = http::Request::get("/servers").body(Full::<bytes::Bytes>::default()).unwrap();
/// let body = admin.call(get).await.unwrap().into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, r#"[{"url":"http://10.0.0.1:80","weight":2,"original_weight":2,"rating":0.0}]"#);
/// # }
/// ```
pub struct Admin<P: ?Sized> {
    pool: Arc<P>,
}

impl<P: ?Sized> Clone for Admin<P> {
    fn clone(&self) -> Self {
        Self {
            pool: Arc::clone(&self.pool),
        }
    }
}

impl<P: ?Sized> core::fmt::Debug for Admin<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl<P: Manage + ?Sized> Admin<P> {
    /// The admin API over `pool` (share the same `Arc` with the balancer).
    pub fn new(pool: Arc<P>) -> Self {
        Self { pool }
    }

    /// The servers as `GET /servers` lists them.
    pub fn servers(&self) -> Vec<ServerState<ServerUrl>> {
        self.pool.snapshot()
    }

    fn list(&self, status: StatusCode) -> Response<Full<Bytes>> {
        let servers = self.servers();
        let rows: Vec<Row<'_>> = servers.iter().map(Row::from).collect();
        json(status, &rows)
    }

    fn handle(&self, method: &Method, path: &str, body: &[u8]) -> Response<Full<Bytes>> {
        if path != "/servers" {
            return message(StatusCode::NOT_FOUND, "not found: try /servers");
        }
        match *method {
            Method::GET => self.list(StatusCode::OK),
            Method::PUT => {
                let req: Upsert = match serde_json::from_slice(body) {
                    Ok(r) => r,
                    Err(e) => return message(StatusCode::BAD_REQUEST, &format!("bad json: {e}")),
                };
                let result = ServerUrl::parse(&req.url)
                    .map_err(Error::from)
                    .and_then(|url| self.pool.upsert_server(url, req.weight));
                match result {
                    Ok(_weight) => self.list(StatusCode::OK),
                    Err(e) => message(StatusCode::BAD_REQUEST, &e.to_string()),
                }
            }
            Method::DELETE => {
                let req: Remove = match serde_json::from_slice(body) {
                    Ok(r) => r,
                    Err(e) => return message(StatusCode::BAD_REQUEST, &format!("bad json: {e}")),
                };
                let url = match ServerUrl::parse(&req.url) {
                    Ok(url) => url,
                    Err(e) => return message(StatusCode::BAD_REQUEST, &e.to_string()),
                };
                match self.pool.remove_server(&url) {
                    Ok(()) => self.list(StatusCode::OK),
                    Err(e) => message(StatusCode::NOT_FOUND, &e.to_string()),
                }
            }
            _ => message(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE"),
        }
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut res = Response::new(Full::new(Bytes::from(body)));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn message(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": text }).to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

impl<P, B> hyper::service::Service<Request<B>> for Admin<P>
where
    P: Manage + ?Sized,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: core::error::Error + Send + Sync + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return Ok(message(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read body: {e}"),
                    ))
                }
            };
            Ok(this.handle(&parts.method, parts.uri.path(), &body))
        })
    }
}

#[cfg(test)]
mod tests {
    use roundrobin_core::RoundRobin;

    use super::*;

    fn admin() -> Admin<RoundRobin<ServerUrl>> {
        Admin::new(Arc::new(RoundRobin::new()))
    }

    fn status(a: &Admin<RoundRobin<ServerUrl>>, m: Method, body: &str) -> u16 {
        a.handle(&m, "/servers", body.as_bytes()).status().as_u16()
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
                let status = a.handle(&m, "/servers", &body).status().as_u16();
                proptest::prop_assert!([200, 400, 404].contains(&status));
            }
        }
    }

    #[test]
    fn bad_requests_are_400_with_a_message() {
        let a = admin();
        for body in [
            "",
            "{",
            r#"{"weight":1}"#,
            r#"{"url":"nope"}"#,
            r#"{"url":"http://a","weight":-1}"#,
        ] {
            let res = a.handle(&Method::PUT, "/servers", body.as_bytes());
            assert_eq!(res.status(), 400, "{body}");
        }
        assert_eq!(a.handle(&Method::GET, "/other", b"").status(), 404);
        assert_eq!(a.handle(&Method::POST, "/servers", b"").status(), 405);
    }
}
