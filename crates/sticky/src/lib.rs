//! Cookie session affinity for `roundrobin-core` balancers.
//!
//! A [`StickySession`] pins a client to the server that served it: the response carries a
//! `Set-Cookie` naming the server ([`StickySession::stick`]), and the next request's
//! `Cookie` is read back ([`StickySession::server`]). How a server is written into the
//! cookie value is a [`ValueCodec`](codec::ValueCodec); see [`codec`] for the choices.
//!
//! # Contract
//!
//! - A cookie only ever selects a server of the pool passed in: never another address,
//!   whatever the client sends.
//! - An absent, malformed, forged, expired or stale cookie is not an error: the lookup
//!   yields `None` and a `tracing` event, and the caller balances normally. Nothing here
//!   panics on request input (headers that are not UTF-8 included).
//! - Server identity is [`ServerUrl`]'s: scheme, host, port and path.
//! - Time is a parameter: every operation has an `_at` variant taking `now`
//!   (`SystemTime`, for `Expires` and AES TTLs); the plain variants read the system clock.
//! - With [`StickySession::index`], finding the server from a cookie costs O(1) in the
//!   pool size (one MAC or hash-map lookup), instead of the reference's hashing of every
//!   server on every request.
//!
//! # Choosing a codec
//!
//! | codec | value | use |
//! |---|---|---|
//! | [`Hmac`](codec::Hmac) (default) | keyed MAC, 22 chars | reveals nothing, unforgeable; share the key across a fleet |
//! | [`Aes`](codec::Aes) | AES-GCM of the URL (+ expiry) | Go `AESValue` interop; TTL |
//! | [`Hash`](codec::Hash) | salted FNV-1a 64 | Go `HashValue` interop only: not a MAC |
//! | [`Raw`](codec::Raw) | the URL in clear | discloses backends; opt-in only |
//! | [`Fallback`](codec::Fallback) | write one, read two | key rotation, migration |
//!
//! ```
//! use std::time::Duration;
//! use roundrobin_sticky::codec::{Aes, Fallback, Hash};
//! use roundrobin_sticky::{CookieOptions, SameSite, StickySession};
//!
//! // Migrating a Go deployment that used HashValue to AES cookies with a 1 h TTL:
//! let codec = Fallback::new(Hash::new("old salt"), Aes::new([42u8; 32])?.ttl(Duration::from_secs(3600)));
//! let sticky = StickySession::with_codec("_backend", codec).options(CookieOptions {
//!     http_only: true,
//!     secure: true,
//!     same_site: Some(SameSite::Lax),
//!     ..CookieOptions::default()
//! });
//! assert!(sticky.validate().is_ok());
//! # Ok::<(), roundrobin_sticky::Error>(())
//! ```
#![forbid(unsafe_code)]

mod cache;
pub mod codec;
mod error;
mod options;
mod session;
mod unix;

pub use cache::CachedIndex;
pub use error::Error;
pub use options::{CookieOptions, SameSite};
pub use roundrobin_core::ServerUrl;
pub use session::{StickyIndex, StickySession};
