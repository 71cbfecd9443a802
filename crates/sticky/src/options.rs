//! Attributes of the sticky cookie.

use core::time::Duration;
use std::time::SystemTime;

use cookie::time::OffsetDateTime;
use cookie::Cookie;

use crate::unix::unix_secs;
use crate::Error;

/// The `SameSite` attribute of the sticky cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SameSite {
    /// `SameSite=Strict`: sent only with same-site requests.
    Strict,
    /// `SameSite=Lax`: also sent with top-level cross-site navigations.
    Lax,
    /// `SameSite=None`: sent with every request. Browsers require `Secure` with it; when
    /// [`CookieOptions::secure`] is false the attribute `Secure` is still written.
    None,
}

impl From<SameSite> for cookie::SameSite {
    fn from(value: SameSite) -> Self {
        match value {
            SameSite::Strict => Self::Strict,
            SameSite::Lax => Self::Lax,
            SameSite::None => Self::None,
        }
    }
}

/// Attributes written with every sticky cookie.
///
/// The default is a session cookie for the whole site: `Path=/`, nothing else.
///
/// ```
/// use std::time::Duration;
/// use roundrobin_sticky::{CookieOptions, SameSite};
///
/// let options = CookieOptions {
///     http_only: true,
///     secure: true,
///     same_site: Some(SameSite::Lax),
///     max_age: Some(Duration::from_secs(3600)),
///     ..CookieOptions::default()
/// };
/// assert_eq!(options.path.as_deref(), Some("/"));
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieOptions {
    /// `HttpOnly`: hidden from scripts.
    pub http_only: bool,
    /// `Secure`: sent over HTTPS only.
    pub secure: bool,
    /// `Path`; `None` omits the attribute. Default `/`.
    pub path: Option<String>,
    /// `Domain`; `None` (the default) omits the attribute: the cookie goes to this host only.
    pub domain: Option<String>,
    /// `Expires`, relative: each cookie expires this long after it is written.
    pub expires: Option<Duration>,
    /// `Max-Age`, in whole seconds.
    pub max_age: Option<Duration>,
    /// `SameSite`; `None` omits the attribute.
    pub same_site: Option<SameSite>,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self {
            http_only: false,
            secure: false,
            path: Some("/".to_owned()),
            domain: None,
            expires: None,
            max_age: None,
            same_site: None,
        }
    }
}

/// The last second `Expires` can hold (9999-12-31T23:59:59Z); later instants are clamped.
const MAX_EXPIRES: i64 = 253_402_300_799;

impl CookieOptions {
    /// Checks that `Path` and `Domain` hold only visible ASCII and no `;`, so that they
    /// cannot break the `Set-Cookie` header or inject attributes.
    ///
    /// [`StickySession::stick`](crate::StickySession::stick) writes no
    /// cookie while the options are invalid.
    pub fn validate(&self) -> Result<(), Error> {
        let valid = |text: &Option<String>| {
            text.as_deref()
                .is_none_or(|t| t.bytes().all(|b| matches!(b, 0x20..=0x7E) && b != b';'))
        };
        if !valid(&self.path) {
            return Err(Error::InvalidAttribute("path"));
        }
        if !valid(&self.domain) {
            return Err(Error::InvalidAttribute("domain"));
        }
        Ok(())
    }

    /// The `Set-Cookie` header value for `name=value` written at `now`.
    pub(crate) fn set_cookie(&self, name: &str, value: &str, now: SystemTime) -> String {
        let mut cookie = Cookie::build((name, value)).http_only(self.http_only);
        if self.secure {
            cookie = cookie.secure(true);
        }
        if let Some(path) = &self.path {
            cookie = cookie.path(path.as_str());
        }
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.as_str());
        }
        if let Some(same_site) = self.same_site {
            cookie = cookie.same_site(same_site.into());
        }
        if let Some(max_age) = self.max_age {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            cookie = cookie.max_age(cookie::time::Duration::seconds(secs));
        }
        if let Some(expires) = self.expires {
            let ttl = i64::try_from(expires.as_secs()).unwrap_or(i64::MAX);
            let at = unix_secs(now).saturating_add(ttl).clamp(0, MAX_EXPIRES);
            let at = OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            cookie = cookie.expires(at);
        }
        cookie.build().to_string()
    }
}

/// Whether `name` is a valid cookie name (an RFC 9110 token).
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}
