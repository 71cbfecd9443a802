//! A JSON admin API over a pool ([`Manage`]): list, upsert and remove servers at run
//! time, and a live dashboard.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Admin`]: settings, the request's way through the checks, routing |
//! | `auth.rs` | the bearer token (constant-time) and the `Host` check |
//! | `api.rs` | the JSON endpoints and the change log |
//! | `dashboard.rs`, `dashboard.html` | `GET /`: the page and its token prompt |

mod api;
mod auth;
mod dashboard;

use core::convert::Infallible;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use roundrobin_core::ServerUrl;
use roundrobin_rebalancer::ServerState;

use self::api::message;
use self::auth::{HostError, Hosts, Token};
use crate::{ClientAddr, Manage};

/// The largest weight `PUT /servers` accepts: weights are `0..=ADMIN_MAX_WEIGHT`
/// (0 drains a server). Larger ones are answered 400 and change nothing.
pub const ADMIN_MAX_WEIGHT: u32 = 1_000_000;

/// The largest request body the admin API reads; larger ones are answered 413.
pub const ADMIN_MAX_BODY: usize = 64 * 1024;

/// What `POST /reload` runs: `Ok(json)` is answered 200 with that JSON document,
/// `Err(message)` 400 with `{"error": message}`.
type ReloadHook = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What every clone of one [`Admin`] shares.
#[derive(Clone)]
struct Settings {
    token: Option<Token>,
    /// Served at `GET /metrics` when set.
    metrics: Option<Arc<crate::Metrics>>,
    /// Set by `allowed_hosts` / `any_host`; else derived from whether there is a token.
    hosts: Option<Hosts>,
    /// Set by `on_reload`.
    reload: Option<ReloadHook>,
}

impl Settings {
    fn hosts(&self) -> &Hosts {
        match (&self.hosts, &self.token) {
            (Some(hosts), _) => hosts,
            (None, Some(_)) => &Hosts::Any,
            (None, None) => &Hosts::Loopback,
        }
    }
}

/// The admin API and dashboard as a hyper service.
///
/// | request | answer |
/// |---|---|
/// | `GET /` | the live dashboard (HTML): every server's weights, share and rating, with a one-minute history drawn as charts |
/// | `GET /servers` | `[{"url":..,"weight":..,"original_weight":..,"rating":..}]` in pool order |
/// | `GET /stats` | `{"servers":[{"url":..,"weight":..,"original_weight":..,"rating":..,"ready":..,"health":..,"share":..}],"total_weight":..}`; `health` is `up`, `slow-start`, `ejected` or `down`; `share` is the server's weight over the total, its expected share of the picks |
/// | `PUT /servers` `{"url":..,"weight":N}` | upsert (weight optional, `0..=`[`ADMIN_MAX_WEIGHT`]), 200 with the list |
/// | `DELETE /servers` `{"url":..}` | 200 with the list, or 404 when the server is absent |
/// | `POST /reload` | runs the [`on_reload`](Self::on_reload) hook: 200 with its JSON answer, or 400 `{"error":..}`; 404 without a hook |
///
/// Bad input (malformed JSON, unknown fields, a weight out of range, a URL that is not
/// `http://`, `https://` or `h2c://host[:port][/path]`, see [`ServerUrl::parse`]) is answered 400 with
/// `{"error": message}` and changes nothing; a body over [`ADMIN_MAX_BODY`] is 413;
/// other paths 404, other methods 405. Every change is logged with `tracing::info!`:
/// the client (the [`ClientAddr`] extension, set by [`serve`](crate::serve)), the
/// server, and its weights before and after.
///
/// # Access
///
/// | setting | default | with [`token`](Self::token) |
/// |---|---|---|
/// | `Authorization: Bearer <token>` | not asked | required on every request, else 401 with `WWW-Authenticate: Bearer` (compared in constant time) |
/// | `Host` (or HTTP/2 `:authority`) | a loopback name only: `localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`, any port; else 421 (400 when malformed) | any |
///
/// [`allowed_hosts`](Self::allowed_hosts) and [`any_host`](Self::any_host) replace the
/// `Host` default either way. The `Host` check defends the token-less API against DNS
/// rebinding: a web page of another site cannot reach it through the visitor's browser,
/// because the browser sends that site's name. A request naming no host at all (an
/// in-process call; browsers always send one) is not refused by it.
///
/// The dashboard (`GET /`) also takes the token as a query parameter, `/?token=..`,
/// so a browser can open it; the page then drops it from the address bar, keeps it for
/// the tab (`sessionStorage`) and sends it as a bearer header on its own requests.
/// Without a valid token `GET /` answers 401 with a form asking for it. No other path
/// accepts the query parameter.
///
/// For comparison: HAProxy's stats socket has no authentication of its own (it relies on
/// being a Unix socket, or on where a TCP one binds), and Traefik's API and dashboard
/// are either on a separate entry point without authentication (`api.insecure`) or
/// routed through a router that adds an authentication middleware. This API is open
/// on loopback only (`roundrobin-proxy` warns, and refuses a non-loopback `--admin`
/// without a token).
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
///
/// // With a token, every request needs it.
/// let admin = admin.token("s3cret");
/// let get = || http::Request::get("/servers");
/// let anonymous = get().body(Full::<bytes::Bytes>::default()).unwrap();
/// assert_eq!(admin.call(anonymous).await.unwrap().status(), 401);
/// let authorized = get()
///     .header("authorization", "Bearer s3cret")
///     .body(Full::<bytes::Bytes>::default())
///     .unwrap();
/// assert_eq!(admin.call(authorized).await.unwrap().status(), 200);
/// # }
/// ```
pub struct Admin<P: ?Sized> {
    pool: Arc<P>,
    settings: Arc<Settings>,
}

impl<P: ?Sized> Clone for Admin<P> {
    fn clone(&self) -> Self {
        Self {
            pool: Arc::clone(&self.pool),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<P: ?Sized> core::fmt::Debug for Admin<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Admin")
            .field("token", &self.settings.token.is_some())
            .field("hosts", self.settings.hosts())
            .field("reload", &self.settings.reload.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Manage + ?Sized> Admin<P> {
    /// The admin API over `pool` (share the same `Arc` with the balancer): no token,
    /// loopback `Host` names only.
    pub fn new(pool: Arc<P>) -> Self {
        Self {
            pool,
            settings: Arc::new(Settings {
                token: None,
                metrics: None,
                hosts: None,
                reload: None,
            }),
        }
    }

    /// Requires `Authorization: Bearer <token>` on every request (or `?token=` on
    /// `GET /`), and, unless [`allowed_hosts`](Self::allowed_hosts) says otherwise,
    /// accepts any `Host`. Only a digest of the token is kept. An empty token matches
    /// no request: the API then answers 401 to everything.
    #[must_use]
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        Arc::make_mut(&mut self.settings).token = Some(Token::new(token.as_ref()));
        self
    }

    /// Answers only requests whose `Host` is one of `hosts` (names or addresses, with
    /// or without a port, case-insensitive; `admin.internal` admits
    /// `admin.internal:8081`, `10.0.0.1:9000` admits only that port); others get 421.
    /// Replaces the default (loopback names without a token, any host with one).
    #[must_use]
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = hosts
            .into_iter()
            .map(|h| h.into().to_ascii_lowercase())
            .collect();
        Arc::make_mut(&mut self.settings).hosts = Some(Hosts::List(list));
        self
    }

    /// Answers whatever `Host` a request names (behind a proxy that checks it, say).
    /// Without a [`token`](Self::token) this gives up the DNS-rebinding defence.
    #[must_use]
    pub fn any_host(mut self) -> Self {
        Arc::make_mut(&mut self.settings).hosts = Some(Hosts::Any);
        self
    }

    /// Serves `metrics` (and the pool's weights, ratings and health) at
    /// `GET /metrics` in the OpenMetrics text format; without it `/metrics` is 404.
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<crate::Metrics>) -> Self {
        Arc::make_mut(&mut self.settings).metrics = Some(metrics);
        self
    }

    /// Answers `POST /reload` by calling `hook` (on the connection's task: keep it
    /// short, e.g. re-reading a small configuration file): `Ok(json)` is answered 200
    /// with `json` as the body (`application/json`, sent as is), `Err(message)` 400
    /// with `{"error": message}`. The request passes the same `Host` and token checks
    /// as any other; its body is ignored. Without a hook `POST /reload` answers 404.
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
    /// let post = || http::Request::post("/reload").body(Full::<bytes::Bytes>::default()).unwrap();
    /// let admin = Admin::new(Arc::new(RoundRobin::new()));
    /// assert_eq!(admin.call(post()).await.unwrap().status(), 404);
    ///
    /// let admin = admin.on_reload(|| Err("line 3: unknown field `listn`".to_owned()));
    /// let res = admin.call(post()).await.unwrap();
    /// assert_eq!(res.status(), 400);
    /// let body = res.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, r#"{"error":"line 3: unknown field `listn`"}"#);
    ///
    /// let admin = admin.on_reload(|| Ok(r#"{"added":[]}"#.to_owned()));
    /// assert_eq!(admin.call(post()).await.unwrap().status(), 200);
    /// let get = http::Request::get("/reload").body(Full::<bytes::Bytes>::default()).unwrap();
    /// assert_eq!(admin.call(get).await.unwrap().status(), 405);
    /// # }
    /// ```
    #[must_use]
    pub fn on_reload(
        mut self,
        hook: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.settings).reload = Some(Arc::new(hook));
        self
    }

    /// Whether a token is required.
    pub fn has_token(&self) -> bool {
        self.settings.token.is_some()
    }

    /// The servers as `GET /servers` lists them.
    pub fn servers(&self) -> Vec<ServerState<ServerUrl>> {
        self.pool.snapshot()
    }

    /// The checks every request goes through before it is routed, `Host` then token:
    /// the answer when it is refused.
    fn refuse<T>(&self, req: &Request<T>) -> Option<Response<Full<Bytes>>> {
        match self.settings.hosts().check(req.headers(), req.uri()) {
            Ok(()) => {}
            Err(HostError::Malformed) => {
                return Some(message(StatusCode::BAD_REQUEST, "malformed Host header"))
            }
            Err(HostError::NotAllowed(host)) => {
                tracing::debug!(%host, "admin: Host refused");
                return Some(message(
                    StatusCode::MISDIRECTED_REQUEST,
                    &format!(
                        "Host `{host}` is not served here: without a token the admin API \
                         answers loopback names only (DNS-rebinding defence)"
                    ),
                ));
            }
        }
        let token = self.settings.token.as_ref()?;
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(auth::bearer)
            .is_some_and(|t| token.matches(t));
        let dashboard = req.method() == Method::GET && req.uri().path() == "/";
        let query = dashboard
            && req
                .uri()
                .query()
                .and_then(auth::query_token)
                .is_some_and(|t| token.matches(&t));
        if header || query {
            return None;
        }
        tracing::debug!(client = ?req.extensions().get::<ClientAddr>(), "admin: no valid token");
        let mut res = if dashboard {
            dashboard::login()
        } else {
            message(
                StatusCode::UNAUTHORIZED,
                "this admin API needs `Authorization: Bearer <token>`",
            )
        };
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"roundrobin-admin\""),
        );
        Some(res)
    }

    async fn respond<B>(self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: core::error::Error + Send + Sync + 'static,
    {
        if let Some(refused) = self.refuse(&req) {
            return refused;
        }
        let who = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let method = req.method().clone();
        match (req.uri().path(), &method) {
            ("/", &Method::GET) => dashboard::page(),
            ("/servers", &Method::GET) => self.list(StatusCode::OK),
            ("/stats", &Method::GET) => self.stats(),
            ("/metrics", &Method::GET) => match &self.settings.metrics {
                Some(metrics) => openmetrics(metrics.encode(&*self.pool)),
                None => message(StatusCode::NOT_FOUND, "no metrics on this admin API"),
            },
            ("/servers", &Method::PUT | &Method::DELETE) => match read_body(req).await {
                Ok(body) => self.change(&method, &body, who),
                Err(res) => *res,
            },
            ("/reload", &Method::POST) => self.reload(),
            ("/" | "/stats" | "/metrics", _) => not_allowed("GET"),
            ("/reload", _) => not_allowed("POST"),
            ("/servers", _) => not_allowed("GET, PUT, DELETE"),
            _ => message(
                StatusCode::NOT_FOUND,
                "not found: try / (dashboard), /servers, /stats or POST /reload",
            ),
        }
    }

    /// `POST /reload`: the hook's answer.
    fn reload(&self) -> Response<Full<Bytes>> {
        let Some(hook) = &self.settings.reload else {
            return message(
                StatusCode::NOT_FOUND,
                "nothing to reload: no configuration file (no reload hook is set)",
            );
        };
        match hook() {
            Ok(json) => api::with_type(StatusCode::OK, Bytes::from(json), "application/json"),
            Err(e) => message(StatusCode::BAD_REQUEST, &e),
        }
    }

    /// A `PUT` or `DELETE /servers` with its body, from `who`.
    fn change(
        &self,
        method: &Method,
        body: &[u8],
        who: Option<SocketAddr>,
    ) -> Response<Full<Bytes>> {
        api::change(self, method, body, who)
    }
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut res = message(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed: use {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    res
}

/// The body, at most [`ADMIN_MAX_BODY`] bytes (413 beyond, announced or not).
async fn read_body<B>(req: Request<B>) -> Result<Bytes, Box<Response<Full<Bytes>>>>
where
    B: Body,
    B::Error: core::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        Box::new(message(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {ADMIN_MAX_BODY} bytes"),
        ))
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > ADMIN_MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), ADMIN_MAX_BODY)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Box::new(message(
            StatusCode::BAD_REQUEST,
            &format!("cannot read body: {e}"),
        ))),
    }
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
        Box::pin(async move { Ok(this.respond(req).await) })
    }
}

/// A `GET /metrics` answer.
fn openmetrics(text: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(text)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    res
}
