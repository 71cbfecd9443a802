//! `Aes`: AES-GCM encrypted server URL with an optional expiry, in the reference's format.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::Arc;
use std::time::SystemTime;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use roundrobin_core::ServerUrl;

use super::raw::UrlIndex;
use super::{url_key, Redacted, ValueCodec, ValueIndex};
use crate::unix::unix_secs;
use crate::Error;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longer values are rejected before decoding: browsers cap a cookie at 4096 bytes.
const MAX_VALUE_LEN: usize = 4096;

/// AES-GCM of the server URL, optionally with an expiry, in the reference's `AESValue`
/// format, so its cookies interoperate with Go deployments in both directions.
///
/// The value is base64url without padding of `ciphertext ‖ tag ‖ nonce` (12-byte nonce);
/// the plaintext is `url` or, with a TTL, `url|unix-expiry-seconds`. The key is 16, 24 or
/// 32 bytes (AES-128, -192, -256). A forged or expired value names no server.
///
/// Nonces are a random 96-bit start drawn at construction, incremented per value; clones
/// share the counter.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::codec::{Aes, ValueCodec};
/// use roundrobin_sticky::Error;
///
/// let pool: Vec<ServerUrl> = vec!["http://10.0.0.1:8080".parse()?];
/// let codec = Aes::new([1u8; 32])?.ttl(Duration::from_secs(3600));
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let value = codec.encode_at(&pool[0], now);
/// assert_eq!(codec.decode_at(&value, &pool, now), Ok(0));
/// let later = now + Duration::from_secs(3601);
/// assert_eq!(codec.decode_at(&value, &pool, later), Err(Error::Expired));
/// assert_eq!(Aes::new([1u8; 15]).err(), Some(Error::InvalidKeyLength(15)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Aes {
    cipher: Arc<Cipher>,
    ttl: Option<Duration>,
    nonces: Arc<NonceSource>,
}

impl Aes {
    /// A codec with `key` (16, 24 or 32 bytes) and no TTL.
    ///
    /// Errors: [`Error::InvalidKeyLength`], or [`Error::Random`] when the operating system
    /// cannot seed the nonces.
    pub fn new(key: impl AsRef<[u8]>) -> Result<Self, Error> {
        let key = key.as_ref();
        let cipher = match key.len() {
            16 => Aes128Gcm::new_from_slice(key).map(Cipher::Aes128),
            24 => Aes192Gcm::new_from_slice(key).map(Cipher::Aes192),
            32 => Aes256Gcm::new_from_slice(key).map(Cipher::Aes256),
            other => return Err(Error::InvalidKeyLength(other)),
        }
        .map_err(|_| Error::InvalidKeyLength(key.len()))?;
        let mut seed = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut seed).map_err(Error::Random)?;
        let (prefix, counter) = seed.split_at(4);
        let mut counter_bytes = [0u8; 8];
        counter_bytes.copy_from_slice(counter);
        let mut prefix_bytes = [0u8; 4];
        prefix_bytes.copy_from_slice(prefix);
        Ok(Self {
            cipher: Arc::new(cipher),
            ttl: None,
            nonces: Arc::new(NonceSource {
                prefix: prefix_bytes,
                counter: AtomicU64::new(u64::from_be_bytes(counter_bytes)),
            }),
        })
    }

    /// Values written from now on carry an expiry `ttl` after the time of writing, and are
    /// rejected once it has passed. With a TTL, values without an expiry are rejected too
    /// ([`Error::Expired`]), as in the reference, so that a TTL bounds every accepted
    /// value. A zero TTL means no TTL, as in the reference.
    ///
    /// Without a TTL, a value that carries an expiry is still checked against it (the
    /// reference would not match such a value at all).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }
}

impl fmt::Debug for Aes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aes")
            .field("key", &Redacted)
            .field("ttl", &self.ttl)
            .finish()
    }
}

type Aes192Gcm = AesGcm<Aes192, U12>;

enum Cipher {
    Aes128(Aes128Gcm),
    Aes192(Aes192Gcm),
    Aes256(Aes256Gcm),
}

impl Cipher {
    fn seal(&self, nonce: &Nonce<U12>, plaintext: &[u8]) -> Result<Vec<u8>, aes_gcm::Error> {
        match self {
            Self::Aes128(c) => c.encrypt(nonce, plaintext),
            Self::Aes192(c) => c.encrypt(nonce, plaintext),
            Self::Aes256(c) => c.encrypt(nonce, plaintext),
        }
    }

    fn open(&self, nonce: &Nonce<U12>, sealed: &[u8]) -> Result<Vec<u8>, aes_gcm::Error> {
        match self {
            Self::Aes128(c) => c.decrypt(nonce, sealed),
            Self::Aes192(c) => c.decrypt(nonce, sealed),
            Self::Aes256(c) => c.decrypt(nonce, sealed),
        }
    }
}

struct NonceSource {
    prefix: [u8; 4],
    counter: AtomicU64,
}

impl NonceSource {
    fn next(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        nonce
    }
}

/// Whether `now` is after the expiry `expiry` (Unix seconds), as Go's `After` decides.
fn is_expired(expiry: i64, now: SystemTime) -> bool {
    let magnitude = Duration::from_secs(expiry.unsigned_abs());
    let instant = if expiry >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    match instant {
        Some(instant) => now > instant,
        // Not representable: far in the future never expires, far in the past has.
        None => expiry < 0,
    }
}

impl ValueCodec for Aes {
    fn encode_at(&self, server: &ServerUrl, now: SystemTime) -> String {
        let mut plaintext = url_key(server.as_str()).into_owned();
        if let Some(ttl) = self.ttl {
            let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
            plaintext.push('|');
            plaintext.push_str(&unix_secs(now).saturating_add(ttl).to_string());
        }
        let nonce = self.nonces.next();
        let mut sealed = self
            .cipher
            .seal(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_else(|_| unreachable!("aes-gcm seals messages up to 64 GiB"));
        sealed.extend_from_slice(&nonce);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
        Box::new(AesIndex {
            cipher: Arc::clone(&self.cipher),
            require_expiry: self.ttl.is_some(),
            urls: UrlIndex::new(servers),
        })
    }
}

struct AesIndex {
    cipher: Arc<Cipher>,
    /// A TTL is configured: values without an expiry are refused.
    require_expiry: bool,
    urls: UrlIndex,
}

impl fmt::Debug for AesIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesIndex")
            .field("key", &Redacted)
            .field("require_expiry", &self.require_expiry)
            .field("urls", &self.urls)
            .finish()
    }
}

impl ValueIndex for AesIndex {
    fn find(&self, value: &str, now: SystemTime) -> Result<usize, Error> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| Error::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Malformed);
        }
        let (sealed, nonce) = bytes.split_at(bytes.len() - NONCE_LEN);
        let plaintext = self
            .cipher
            .open(Nonce::from_slice(nonce), sealed)
            .map_err(|_| Error::Forged)?;
        let plaintext = core::str::from_utf8(&plaintext).map_err(|_| Error::Malformed)?;
        let url = match plaintext.split_once('|') {
            Some((url, expiry)) => {
                let expiry: i64 = expiry.parse().map_err(|_| Error::Malformed)?;
                if is_expired(expiry, now) {
                    return Err(Error::Expired);
                }
                url
            }
            // Authentic, but not bounded by the configured TTL.
            None if self.require_expiry => return Err(Error::Expired),
            None => plaintext,
        };
        self.urls.find_url(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_exclusive_like_go_after() {
        let at = |s: u64, ms: u64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms)
        };
        assert!(!is_expired(100, at(100, 0)));
        assert!(is_expired(100, at(100, 1)));
        assert!(is_expired(-5, at(0, 0)));
        assert!(!is_expired(i64::MAX, at(100, 0)));
        assert!(is_expired(i64::MIN, at(0, 0)));
    }

    #[test]
    fn nonces_never_repeat_across_clones() {
        let codec = Aes::new([0u8; 16]).unwrap();
        let other = codec.clone();
        let a = codec.nonces.next();
        let b = other.nonces.next();
        assert_ne!(a, b);
        assert_eq!(a[..4], b[..4]);
    }
}
