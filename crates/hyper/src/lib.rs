//! hyper 1.x and tower reverse-proxy services over `roundrobin` balancers.
//!
//! This is where the pool meets the network. A [`Balancer`] picks a server for each
//! request from a pool (anything that implements [`Select`]), or the server its sticky
//! cookie names, rewrites the request URI to that server, hands the request to an inner
//! service that forwards it (by default the [`Forwarder`], on hyper-util's pooled
//! client), records the outcome in the pool, and turns failures into responses through
//! an [`ErrorHandler`]. [`serve`] runs any hyper service on a `TcpListener` with
//! graceful shutdown ([`spawn`] does it in the background), and [`Admin`] is a JSON API
//! that changes a pool ([`Manage`]) at run time, with a live dashboard and an optional
//! bearer token.
//!
//! The pool is a [`RoundRobin`](roundrobin_core::RoundRobin), a
//! [`Rebalancer`](roundrobin_rebalancer::Rebalancer) (which moves weight away from
//! servers that fail), or your own; sticky sessions come from
//! [`roundrobin_sticky::StickySession`], set with [`Builder::sticky`].
//!
//! | file | what |
//! |---|---|
//! | `select.rs`, `manage.rs` | the two views of a pool: request path ([`Select`]) and administration ([`Manage`]) |
//! | `layer.rs` | [`Builder`], [`BalancerLayer`] |
//! | `service.rs`, `future.rs`, `body.rs` | [`Balancer`], its [`ResponseFuture`] and [`ResponseBody`] |
//! | `config.rs`, `outcome.rs` | what a balancer's services share; the record-exactly-once guard |
//! | `rewrite.rs`, `forward.rs`, `upgrade.rs` | the URI rewrite and [`RewriteHook`]; the [`Forwarder`]; upgraded connections ([`Tunnels`]) |
//! | `error.rs`, `admin/`, `server.rs` | [`Error`] and its mapping; [`Admin`] (API, token and `Host` checks, dashboard); [`serve`] and [`spawn`] |
//! | `tls.rs` (feature `tls`) | `TlsAcceptor`: a PEM certificate and key, ALPN `h2`/`http/1.1`, reloads; served by `serve_tls_with` |
//!
//! # Contract
//!
//! - Every request either reaches the inner service with its URI pointing at a server
//!   of the pool, or is answered by the error handler: 503 when the pool is empty or
//!   all weights are 0, 502 when the server cannot be reached or the connection fails,
//!   504 on timeout (the forwarder's, or any inner layer's). A client that goes away
//!   before the response is recorded as 499.
//! - A sticky cookie only selects a server that is in the pool now; any other cookie
//!   (stale, forged, garbage) is ignored and the request is balanced, and its response
//!   sets a fresh cookie.
//! - Every request that was sent to a server is recorded exactly once in the pool
//!   ([`Select::record`]) with the status answered (or mapped), its latency and the
//!   time, both read from the pool's clock ([`Select::now`]).
//! - Bodies are streamed frame by frame in both directions, never buffered whole.
//! - This crate owns the sockets and the tasks: the layers below are sans-IO.
//!
//! # Quick start
//!
//! ```no_run
//! use std::sync::Arc;
//! use roundrobin_core::{RoundRobin, ServerUrl};
//! use roundrobin_hyper::{serve, Balancer, Forwarder};
//! use roundrobin_rebalancer::Rebalancer;
//! use roundrobin_sticky::StickySession;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pool = Arc::new(Rebalancer::new(RoundRobin::new()));
//!     for (url, weight) in [("http://127.0.0.1:9001", 1), ("http://127.0.0.1:9002", 2)] {
//!         pool.upsert_server(ServerUrl::parse(url)?, Some(weight))?;
//!     }
//!     let balancer = Balancer::builder(Arc::clone(&pool))
//!         .sticky(StickySession::new("_backend"))
//!         .service(Forwarder::new().timeout(std::time::Duration::from_secs(5)));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     serve(listener, balancer, async { let _ = tokio::signal::ctrl_c().await; }).await;
//!     Ok(())
//! }
//! ```
//!
//! # Crate features
//!
//! - `admin` (default): [`Admin`], the JSON admin API and dashboard (adds `serde`,
//!   `serde_json`, and `sha2` and `subtle` for the token comparison).
//! - `dns` (default): `DnsDiscovery` (adds `hickory-resolver`).
//! - `tls` (default): TLS both ways: `https://` servers (`UpstreamTls`; without it the
//!   `Connector` speaks to `http://` and `h2c://` servers only), and serving over TLS
//!   (`TlsAcceptor`, `serve_tls_with`, `spawn_tls`). Adds `rustls` with the ring
//!   provider, `tokio-rustls`, `hyper-rustls`, `rustls-pemfile` and `webpki-roots`.
#![forbid(unsafe_code)]
// Docs link items of the default features; without them those links cannot resolve.
#![cfg_attr(
    not(all(feature = "admin", feature = "tls")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod access;
#[cfg(feature = "admin")]
mod admin;
mod body;
mod cache;
mod config;
mod conn;
mod connpool;
mod discovery;
mod error;
mod fnv;
mod forward;
mod future;
mod headers;
mod health;
mod layer;
mod manage;
mod metrics;
mod outcome;
mod resting;
mod retry;
mod rewrite;
mod select;
mod server;
mod service;
mod timeout;
#[cfg(feature = "tls")]
mod tls;
mod upgrade;
mod upstream;

pub use access::ACCESS_LOG_TARGET;
#[cfg(feature = "admin")]
pub use admin::{Admin, ADMIN_MAX_BODY, ADMIN_MAX_WEIGHT};
pub use body::{ClientBodyError, RequestBody, ResponseBody};
pub use conn::TrackedBody;
#[cfg(feature = "dns")]
pub use discovery::DnsDiscovery;
pub use discovery::{
    expands_by_dns, names_a_host, spawn_discovery, Discovered, Discovery, DiscoveryDriver,
    DEFAULT_REFRESH, FAILURE_RETRY, MIN_TTL_REFRESH,
};
pub use error::{BoxError, DefaultErrorHandler, Error, ErrorHandler, CLIENT_CLOSED_REQUEST};
pub use forward::{default_client, pooled_client, Forwarder, DEFAULT_CONNECT_TIMEOUT};
pub use future::ResponseFuture;
pub use headers::{remove_hop_by_hop, ClientAddr};
pub use health::{spawn_stepper, HealthCheck, STEPPER_TICK};
pub use layer::{BalancerLayer, Builder};
pub use manage::Manage;
pub use metrics::Metrics;
pub use retry::{Retry, RetryOn};
pub use rewrite::{rewrite_uri, RewriteHook};
pub use roundrobin_rebalancer::{Health, ServerState};
pub use select::Select;
pub use server::{serve, serve_with, spawn, spawn_on, ServerLimits, Serving, ACCEPT_ERROR_PAUSE};
#[cfg(feature = "tls")]
pub use server::{serve_tls_with, spawn_tls};
pub use service::Balancer;
pub use timeout::{Download, Upload};
#[cfg(feature = "tls")]
pub use tls::{TlsAcceptor, TlsError, ALPN_PROTOCOLS};
pub use upgrade::Tunnels;
pub use upstream::{pooled_client_with, Connector, UpstreamIo, MAX_IDLE_PER_SERVER};
#[cfg(feature = "tls")]
pub use upstream::{UpstreamTls, UpstreamTlsError};
