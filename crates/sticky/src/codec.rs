//! Cookie value codecs: how a server is written into a cookie value and found again.

use core::fmt::{self, Debug, Write as _};
use std::borrow::Cow;
use std::time::SystemTime;

use roundrobin_core::ServerUrl;

use crate::Error;

mod aes;
mod fallback;
mod hash;
mod hmac;
mod raw;

pub use self::aes::Aes;
pub use self::fallback::Fallback;
pub use self::hash::Hash;
pub use self::hmac::Hmac;
pub use self::raw::Raw;

/// Writes a server into a cookie value, and builds the lookup that finds it again.
///
/// Implementations must produce values made of cookie-value characters only (RFC 6265
/// `cookie-octet`: visible ASCII except `"`, `,`, `;` and `\`), and their [`ValueIndex`]
/// must only ever return indices of the pool it was built for.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::codec::{Hash, ValueCodec};
///
/// let pool: Vec<ServerUrl> = vec!["http://a:80".parse()?, "http://b:80".parse()?];
/// let codec = Hash::new("salt");
/// let value = codec.encode(&pool[1]);
/// assert_eq!(codec.decode(&value, &pool), Ok(1));
/// assert!(codec.decode("garbage", &pool).is_err());
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
pub trait ValueCodec: Send + Sync + Debug {
    /// Encodes `server` as a cookie value, reading the system clock if the codec needs it.
    fn encode(&self, server: &ServerUrl) -> String {
        self.encode_at(server, SystemTime::now())
    }

    /// Encodes `server` as a cookie value at the time `now` (used by codecs with a TTL).
    fn encode_at(&self, server: &ServerUrl, now: SystemTime) -> String;

    /// Precomputes the lookup of cookie values for the pool `servers`.
    ///
    /// The built-in codecs make [`ValueIndex::find`] O(1) in the pool size.
    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex>;

    /// Whether [`ValueCodec::encode_at`] gives one value per server whatever the time
    /// and however often it is called. A [`StickySession`](crate::StickySession) then
    /// writes each server's `Set-Cookie` once and reuses it (unless its options set a
    /// relative `Expires`). Default: `false` (encode on every response).
    ///
    /// `true` for [`Hash`](struct@Hash), [`Hmac`] and
    /// [`Raw`]; `false` for [`Aes`] (a fresh
    /// nonce per value).
    fn timeless(&self) -> bool {
        false
    }

    /// Which of `servers` `value` names, reading the system clock if the codec needs it.
    ///
    /// Builds an index each call (O(n)); for repeated lookups build one with
    /// [`ValueCodec::index`].
    fn decode(&self, value: &str, servers: &[ServerUrl]) -> Result<usize, Error> {
        self.decode_at(value, servers, SystemTime::now())
    }

    /// Which of `servers` `value` names at the time `now`. See [`ValueCodec::decode`].
    fn decode_at(
        &self,
        value: &str,
        servers: &[ServerUrl],
        now: SystemTime,
    ) -> Result<usize, Error> {
        self.index(servers).find(value, now)
    }
}

/// A precomputed lookup from cookie values to the servers of one pool.
pub trait ValueIndex: Send + Sync + Debug {
    /// The index, in the pool the lookup was built for, of the server `value` names at `now`.
    ///
    /// Errors say why there is none: [`Error::Malformed`], [`Error::Forged`],
    /// [`Error::Expired`] or [`Error::NotInPool`].
    fn find(&self, value: &str, now: SystemTime) -> Result<usize, Error>;
}

impl<C: ValueCodec + ?Sized> ValueCodec for Box<C> {
    fn encode(&self, server: &ServerUrl) -> String {
        (**self).encode(server)
    }
    fn encode_at(&self, server: &ServerUrl, now: SystemTime) -> String {
        (**self).encode_at(server, now)
    }
    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
        (**self).index(servers)
    }
    fn timeless(&self) -> bool {
        (**self).timeless()
    }
}

/// Whether `b` may appear in a cookie value (RFC 6265 `cookie-octet`).
pub(crate) const fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Whether `b` is written unescaped by [`url_key`]: a cookie octet other than `|`, which
/// separates the URL from the expiry in the AES plaintext.
const fn is_plain(b: u8) -> bool {
    is_cookie_octet(b) && b != b'|'
}

/// The URL form written into cookie values and used as the lookup key by the codecs that
/// carry the URL (`Raw`, `Aes`): the normalised URL with every byte that is not a
/// cookie-value character, and `|`, percent-encoded (`%XX`, uppercase, as Go's
/// `url.URL.String()` writes them).
pub(crate) fn url_key(url: &str) -> Cow<'_, str> {
    if url.bytes().all(is_plain) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 8);
    for b in url.bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

/// A fast hasher for index keys that are already uniformly distributed (MACs, FNV hashes).
///
/// Not resistant to chosen collisions, which is fine here: index maps are filled from the
/// configured pool only; a client's value is only ever looked up, and a lookup costs at most
/// the probe length the configured keys produced.
#[derive(Default, Clone, Copy)]
pub(crate) struct MixHasher(u64);

impl core::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

/// A `HashMap` keyed by uniformly distributed values, see [`MixHasher`].
pub(crate) type MixMap<K, V> =
    std::collections::HashMap<K, V, core::hash::BuildHasherDefault<MixHasher>>;

/// Formats key material as a fixed placeholder: `Debug` output never shows keys or salts.
pub(crate) struct Redacted;

impl Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_key_escapes_only_what_cookies_cannot_carry() {
        assert_eq!(
            url_key("http://10.0.0.1:8080/a-b_c.d~e"),
            "http://10.0.0.1:8080/a-b_c.d~e"
        );
        assert_eq!(
            url_key("http://a/\"x\",y;z\\|é"),
            "http://a/%22x%22%2Cy%3Bz%5C%7C%C3%A9"
        );
    }
}
