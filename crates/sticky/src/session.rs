//! `StickySession` and its precomputed `StickyIndex`.

use core::fmt;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use roundrobin_core::ServerUrl;

use crate::codec::{is_cookie_octet, Hmac, ValueCodec, ValueIndex};
use crate::options::{is_token, CookieOptions};
use crate::Error;

/// Cookie session affinity: reads which server a client is pinned to, and pins it.
///
/// Cheap to clone (one `Arc`), `Send + Sync`. `Debug` never prints keys or salts.
///
/// ```
/// use http::header::{COOKIE, SET_COOKIE};
/// use http::HeaderMap;
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::StickySession;
///
/// let pool: Vec<ServerUrl> = vec!["http://10.0.0.1:8080".parse()?, "http://10.0.0.2:8080".parse()?];
/// let sticky = StickySession::new("backend");
///
/// // First response: the balancer picked pool[1]; pin the client to it.
/// let mut response = HeaderMap::new();
/// sticky.stick(&pool[1], &mut response);
/// let set_cookie = response[SET_COOKIE].to_str()?;
/// assert!(set_cookie.starts_with("backend=") && set_cookie.ends_with("; Path=/"));
///
/// // Next request: the browser sends the cookie back.
/// let pair = set_cookie.split(';').next().unwrap();
/// let mut request = HeaderMap::new();
/// request.insert(COOKIE, format!("theme=dark; {pair}").parse()?);
/// assert_eq!(sticky.server(&request, &pool), Some(pool[1].clone()));
///
/// // A server removed from the pool is never chosen.
/// assert_eq!(sticky.server(&request, &pool[..1]), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct StickySession {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    name: String,
    options: CookieOptions,
    codec: Arc<dyn ValueCodec>,
    /// Why no cookie can be written with this name and options, if so.
    invalid: Option<Error>,
    /// The `Set-Cookie` values written so far, when they depend on nothing but the
    /// server; a fresh one after every change of name, options or codec.
    written: Option<Arc<Written>>,
}

impl Inner {
    fn check(&mut self) {
        self.invalid = if is_token(&self.name) {
            self.options.validate().err()
        } else {
            Some(Error::InvalidName)
        };
        let timeless = self.codec.timeless() && self.options.expires.is_none();
        self.written = timeless.then(Arc::default);
    }
}

/// Servers whose `Set-Cookie` is kept, at most: a pool that churns through more
/// addresses starts over (the values are written again as servers are picked).
const MAX_WRITTEN: usize = 65_536;

/// Each server's `Set-Cookie` value, written once (the codec's MAC and the cookie's
/// text cost about 10k instructions a response) and cloned after (a reference count).
#[derive(Default)]
struct Written(RwLock<HashMap<ServerUrl, HeaderValue>>);

impl Written {
    fn get(&self, server: &ServerUrl) -> Option<HeaderValue> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(server).cloned()
    }

    fn put(&self, server: &ServerUrl, value: HeaderValue) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_WRITTEN {
            map.clear();
        }
        map.insert(server.clone(), value);
    }
}

impl StickySession {
    /// Affinity through the cookie `cookie_name`, with the [`Hmac`] codec keyed by 32
    /// random bytes drawn for this session.
    ///
    /// The key lives only in this process (and the clones of this session): cookies do
    /// not survive a restart and are not recognised by other proxies. A fleet of proxies
    /// must share one key: use [`StickySession::with_codec`] with [`Hmac::new`].
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails, as `std`'s `HashMap` would; use
    /// [`StickySession::try_new`] to get the error instead.
    pub fn new(cookie_name: impl Into<String>) -> Self {
        Self::try_new(cookie_name).unwrap_or_else(|e| panic!("sticky session key: {e}"))
    }

    /// Like [`StickySession::new`], returning [`Error::Random`] when the operating
    /// system's random source fails.
    pub fn try_new(cookie_name: impl Into<String>) -> Result<Self, Error> {
        Ok(Self::with_codec(cookie_name, Hmac::random()?))
    }

    /// Affinity through the cookie `cookie_name`, with values written and read by `codec`.
    pub fn with_codec(cookie_name: impl Into<String>, codec: impl ValueCodec + 'static) -> Self {
        let mut inner = Inner {
            name: cookie_name.into(),
            options: CookieOptions::default(),
            codec: Arc::new(codec),
            invalid: None,
            written: None,
        };
        inner.check();
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Replaces the cookie attributes.
    #[must_use]
    pub fn options(mut self, opts: CookieOptions) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.options = opts;
        inner.check();
        self
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.inner.name
    }

    /// The cookie attributes.
    pub fn cookie_options(&self) -> &CookieOptions {
        &self.inner.options
    }

    /// The value codec.
    pub fn codec(&self) -> &dyn ValueCodec {
        &*self.inner.codec
    }

    /// Whether cookies can be written: the name is a token and the options
    /// [validate](CookieOptions::validate).
    pub fn validate(&self) -> Result<(), Error> {
        self.inner.invalid.clone().map_or(Ok(()), Err)
    }

    /// The server of `servers` the request's cookie names, if any, at the current time.
    ///
    /// Builds the codec's lookup for `servers` on every call (O(n), like the reference);
    /// on a hot path build a [`StickyIndex`] once per pool change with
    /// [`StickySession::index`]. An absent, malformed, forged, expired or stale cookie
    /// yields `None` and a `tracing` event (`debug`, `trace` when absent). Pass every
    /// server of the pool, drained ones (weight 0) included, so that their sessions stick.
    pub fn server(&self, headers: &HeaderMap, servers: &[ServerUrl]) -> Option<ServerUrl> {
        self.server_at(headers, servers, SystemTime::now())
    }

    /// [`StickySession::server`] at the time `now`.
    pub fn server_at(
        &self,
        headers: &HeaderMap,
        servers: &[ServerUrl],
        now: SystemTime,
    ) -> Option<ServerUrl> {
        if servers.is_empty() {
            return None;
        }
        let index = self.inner.codec.index(servers);
        // `get`: a custom codec returning an index outside the pool yields no server.
        self.find(headers, &*index, now)
            .and_then(|i| servers.get(i).cloned())
    }

    /// Appends a `Set-Cookie` pinning the client to `server`, keeping the other headers
    /// (other cookies included).
    ///
    /// While the name or options are invalid (see [`StickySession::validate`]) nothing is
    /// written and an `error` event is logged: the response goes out without affinity.
    pub fn stick(&self, server: &ServerUrl, headers: &mut HeaderMap) {
        self.stick_at(server, headers, SystemTime::now());
    }

    /// [`StickySession::stick`] at the time `now` (used for `Expires` and TTLs).
    pub fn stick_at(&self, server: &ServerUrl, headers: &mut HeaderMap, now: SystemTime) {
        match self.set_cookie_once(server, now) {
            Ok(value) => {
                headers.append(SET_COOKIE, value);
            }
            Err(error) => {
                tracing::error!(cookie = %self.inner.name, %error, "sticky cookie not written");
            }
        }
    }

    /// [`StickySession::set_cookie_at`], from the values already written when the
    /// codec is [timeless](ValueCodec::timeless) and no `Expires` is set.
    fn set_cookie_once(&self, server: &ServerUrl, now: SystemTime) -> Result<HeaderValue, Error> {
        let Some(written) = &self.inner.written else {
            return self.set_cookie_at(server, now);
        };
        if let Some(value) = written.get(server) {
            return Ok(value);
        }
        let value = self.set_cookie_at(server, now)?;
        written.put(server, value.clone());
        Ok(value)
    }

    /// Old name of [`StickySession::server`].
    #[deprecated(since = "0.2.0", note = "renamed to `server`")]
    pub fn get_backend(&self, headers: &HeaderMap, servers: &[ServerUrl]) -> Option<ServerUrl> {
        self.server(headers, servers)
    }

    /// Old name of [`StickySession::server_at`].
    #[deprecated(since = "0.2.0", note = "renamed to `server_at`")]
    pub fn get_backend_at(
        &self,
        headers: &HeaderMap,
        servers: &[ServerUrl],
        now: SystemTime,
    ) -> Option<ServerUrl> {
        self.server_at(headers, servers, now)
    }

    /// Old name of [`StickySession::stick`].
    #[deprecated(since = "0.2.0", note = "renamed to `stick`")]
    pub fn stick_backend(&self, server: &ServerUrl, headers: &mut HeaderMap) {
        self.stick(server, headers);
    }

    /// Old name of [`StickySession::stick_at`].
    #[deprecated(since = "0.2.0", note = "renamed to `stick_at`")]
    pub fn stick_backend_at(&self, server: &ServerUrl, headers: &mut HeaderMap, now: SystemTime) {
        self.stick_at(server, headers, now);
    }

    /// The `Set-Cookie` header value pinning a client to `server` at the time `now`.
    ///
    /// Errors when the name or options are invalid (see [`StickySession::validate`]).
    pub fn set_cookie_at(&self, server: &ServerUrl, now: SystemTime) -> Result<HeaderValue, Error> {
        self.validate()?;
        let value = self.inner.codec.encode_at(server, now);
        if !value.bytes().all(is_cookie_octet) {
            return Err(Error::InvalidValue);
        }
        let text = self.inner.options.set_cookie(&self.inner.name, &value, now);
        // Name, options and value are visible ASCII, as checked above.
        HeaderValue::from_str(&text).map_err(|_| Error::InvalidValue)
    }

    /// Precomputes the lookup for the pool `servers`: [`StickyIndex::server`] is then
    /// O(1) in the pool size for the [`Hash`](crate::codec::Hash),
    /// [`Hmac`](crate::codec::Hmac), [`Raw`](crate::codec::Raw) and
    /// [`Aes`](crate::codec::Aes) codecs. Rebuild it when the pool changes.
    pub fn index(&self, servers: &[ServerUrl]) -> StickyIndex {
        StickyIndex {
            session: self.clone(),
            index: Arc::from(self.inner.codec.index(servers)),
            servers: Arc::from(servers),
        }
    }

    /// The index of the server the cookies in `headers` name, trying every cookie with
    /// this session's name in every `Cookie` header, in order.
    fn find(&self, headers: &HeaderMap, index: &dyn ValueIndex, now: SystemTime) -> Option<usize> {
        let name = self.inner.name.as_str();
        let mut seen = false;
        for header in headers.get_all(COOKIE) {
            let Ok(text) = core::str::from_utf8(header.as_bytes()) else {
                tracing::debug!(cookie = %name, "cookie header is not utf-8: ignored");
                continue;
            };
            for (cookie_name, value) in cookie_pairs(text) {
                if cookie_name != name {
                    continue;
                }
                seen = true;
                match index.find(value, now) {
                    Ok(i) => return Some(i),
                    Err(reason) => {
                        tracing::debug!(cookie = %name, %reason, "sticky cookie ignored");
                    }
                }
            }
        }
        if !seen {
            tracing::trace!(cookie = %name, "no sticky cookie");
        }
        None
    }
}

impl fmt::Debug for StickySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickySession")
            .field("cookie_name", &self.inner.name)
            .field("options", &self.inner.options)
            .field("codec", &self.inner.codec)
            .finish()
    }
}

/// A [`StickySession`]'s lookup precomputed for one pool of servers.
///
/// Cheap to clone; build one per pool snapshot with [`StickySession::index`].
///
/// ```
/// use http::{header::COOKIE, HeaderMap};
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::codec::Hmac;
/// use roundrobin_sticky::StickySession;
///
/// let pool: Vec<ServerUrl> = vec!["http://a:80".parse()?, "http://b:80".parse()?];
/// let sticky = StickySession::with_codec("srv", Hmac::new(b"a key shared by the whole fleet"));
/// let index = sticky.index(&pool);
/// let value = sticky.codec().encode(&pool[0]);
/// let mut request = HeaderMap::new();
/// request.insert(COOKIE, format!("srv={value}").parse()?);
/// assert_eq!(index.server(&request), Some(&pool[0]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct StickyIndex {
    session: StickySession,
    index: Arc<dyn ValueIndex>,
    servers: Arc<[ServerUrl]>,
}

impl StickyIndex {
    /// The server of the pool the request's cookie names, if any, at the current time.
    /// See [`StickySession::server`].
    pub fn server(&self, headers: &HeaderMap) -> Option<&ServerUrl> {
        self.server_at(headers, SystemTime::now())
    }

    /// [`StickyIndex::server`] at the time `now`.
    pub fn server_at(&self, headers: &HeaderMap, now: SystemTime) -> Option<&ServerUrl> {
        self.session
            .find(headers, &*self.index, now)
            .and_then(|i| self.servers.get(i))
    }

    /// Old name of [`StickyIndex::server`].
    #[deprecated(since = "0.2.0", note = "renamed to `server`")]
    pub fn get_backend(&self, headers: &HeaderMap) -> Option<&ServerUrl> {
        self.server(headers)
    }

    /// Old name of [`StickyIndex::server_at`].
    #[deprecated(since = "0.2.0", note = "renamed to `server_at`")]
    pub fn get_backend_at(&self, headers: &HeaderMap, now: SystemTime) -> Option<&ServerUrl> {
        self.server_at(headers, now)
    }

    /// The pool this index was built for.
    pub fn servers(&self) -> &[ServerUrl] {
        &self.servers
    }

    /// The session this index was built from.
    pub fn session(&self) -> &StickySession {
        &self.session
    }
}

/// The `name=value` pairs of a `Cookie` header, in order (RFC 6265 §5.4 syntax, read
/// leniently): pairs are separated by `;`, whitespace around names and values is ignored,
/// a value in double quotes is unquoted, and pieces without `=` or with an empty name are
/// skipped.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|piece| {
        let (name, value) = piece.split_once('=')?;
        let name = name.trim_matches(is_space);
        let value = value.trim_matches(is_space);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!name.is_empty()).then_some((name, value))
    })
}

const fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t')
}

#[cfg(test)]
mod tests {
    use super::cookie_pairs;

    #[test]
    fn cookie_pairs_split_trim_and_unquote() {
        let pairs: Vec<_> =
            cookie_pairs(" a=1;b = \"two\" ;; =x; c; d=\"; e==f=; \tg=\"\"").collect();
        assert_eq!(
            pairs,
            [
                ("a", "1"),
                ("b", "two"),
                ("d", "\""),
                ("e", "=f="),
                ("g", "")
            ]
        );
    }
}

#[cfg(test)]
mod written {
    use core::sync::atomic::{AtomicUsize, Ordering};
    use core::time::Duration;
    use std::sync::Arc;
    use std::time::SystemTime;

    use http::header::SET_COOKIE;
    use http::HeaderMap;
    use roundrobin_core::ServerUrl;

    use crate::codec::{Raw, ValueCodec, ValueIndex};
    use crate::{CookieOptions, StickySession};

    /// `Raw`, counting its encodings, timeless or not as told.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        timeless: bool,
    }

    impl ValueCodec for Counting {
        fn encode_at(&self, server: &ServerUrl, now: SystemTime) -> String {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Raw.encode_at(server, now)
        }
        fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
            Raw.index(servers)
        }
        fn timeless(&self) -> bool {
            self.timeless
        }
    }

    fn session(timeless: bool) -> (StickySession, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let codec = Counting {
            calls: Arc::clone(&calls),
            timeless,
        };
        (StickySession::with_codec("srv", codec), calls)
    }

    fn stick(session: &StickySession, server: &ServerUrl, at: u64) -> String {
        let mut headers = HeaderMap::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
        session.stick_at(server, &mut headers, now);
        headers[SET_COOKIE].to_str().unwrap().to_owned()
    }

    fn servers() -> [ServerUrl; 2] {
        ["http://a:1".parse().unwrap(), "http://b:2".parse().unwrap()]
    }

    #[test]
    fn a_timeless_codec_encodes_each_server_once() {
        let (session, calls) = session(true);
        let [a, b] = servers();
        let first = stick(&session, &a, 1);
        assert_eq!(stick(&session, &a, 2), first);
        assert_eq!(stick(&session, &a, 3), first);
        assert_ne!(stick(&session, &b, 4), first);
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        // Clones share what was written.
        assert_eq!(stick(&session.clone(), &a, 5), first);
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn other_codecs_encode_every_response() {
        let (session, calls) = session(false);
        let [a, _] = servers();
        for at in 0..3 {
            stick(&session, &a, at);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_relative_expires_is_written_every_response() {
        let (session, calls) = session(true);
        let session = session.options(CookieOptions {
            expires: Some(Duration::from_secs(60)),
            ..CookieOptions::default()
        });
        let [a, _] = servers();
        let early = stick(&session, &a, 1_000_000);
        let late = stick(&session, &a, 2_000_000);
        assert_ne!(early, late, "Expires follows the time of writing");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn new_options_are_not_served_from_the_old_ones() {
        let (session, _) = session(true);
        let [a, _] = servers();
        let plain = stick(&session, &a, 1);
        let secure = session.clone().options(CookieOptions {
            secure: true,
            ..CookieOptions::default()
        });
        assert!(stick(&secure, &a, 2).contains("Secure"));
        assert_eq!(stick(&session, &a, 3), plain);
        assert!(!plain.contains("Secure"));
    }

    #[test]
    fn the_builtin_codecs_say_whether_they_are_timeless() {
        use crate::codec::{Aes, Hash, Hmac};
        assert!(Raw.timeless());
        assert!(Hmac::new([7; 32]).timeless());
        assert!(Hash::new("salt").timeless());
        assert!(!Aes::new([1; 32]).unwrap().timeless());
    }
}
