//! `Hmac`: a keyed MAC of the server URL (the default codec).

use core::fmt;
use std::time::SystemTime;

use ::hmac::{Hmac as HmacImpl, Mac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use roundrobin_core::ServerUrl;
use sha2::Sha256;

use super::{MixMap, Redacted, ValueCodec, ValueIndex};
use crate::Error;

type HmacSha256 = HmacImpl<Sha256>;

/// Bytes of the HMAC-SHA-256 output kept in the cookie (128 bits).
const TAG_LEN: usize = 16;
/// Length of a value: base64url without padding of [`TAG_LEN`] bytes.
const VALUE_LEN: usize = 22;

/// HMAC-SHA-256 of the normalised server URL, truncated to 128 bits, base64url without
/// padding (22 characters).
///
/// The value reveals nothing about the backend, and a client cannot compute the value of a
/// server it has not been sent to. Every proxy of a fleet must use the same key, or a
/// client moving between proxies loses its affinity. Use at least 32 random bytes.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::codec::{Hmac, ValueCodec};
/// let pool: Vec<ServerUrl> = vec!["http://a:80".parse()?, "http://b:80".parse()?];
/// let codec = Hmac::new([7u8; 32]);
/// let value = codec.encode(&pool[1]);
/// assert_eq!(value.len(), 22);
/// assert_eq!(codec.decode(&value, &pool), Ok(1));
/// assert!(Hmac::new([8u8; 32]).decode(&value, &pool).is_err());
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Hmac {
    /// The MAC state after absorbing the key, cloned for each computation.
    keyed: HmacSha256,
}

impl Hmac {
    /// A codec keyed with `key` (any length; HMAC hashes keys longer than 64 bytes).
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        Self {
            keyed: <HmacSha256 as Mac>::new_from_slice(key.as_ref())
                .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length")),
        }
    }

    /// A codec with a 32-byte key drawn from the operating system's random source.
    ///
    /// Cookies it writes are recognised only by this codec (and its clones): fine for a
    /// single proxy process, wrong for a fleet, and lost on restart.
    pub fn random() -> Result<Self, Error> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(Error::Random)?;
        Ok(Self::new(key))
    }

    fn tag(&self, server: &ServerUrl) -> [u8; TAG_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(server.as_str().as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

impl fmt::Debug for Hmac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hmac").field("key", &Redacted).finish()
    }
}

impl ValueCodec for Hmac {
    fn encode_at(&self, server: &ServerUrl, _now: SystemTime) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(server))
    }

    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
        let mut map = MixMap::with_capacity_and_hasher(servers.len(), Default::default());
        for (i, server) in servers.iter().enumerate() {
            map.entry(self.tag(server)).or_insert(i);
        }
        Box::new(HmacIndex { map })
    }

    fn timeless(&self) -> bool {
        true
    }
}

struct HmacIndex {
    map: MixMap<[u8; TAG_LEN], usize>,
}

impl fmt::Debug for HmacIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacIndex")
            .field("servers", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl ValueIndex for HmacIndex {
    fn find(&self, value: &str, _now: SystemTime) -> Result<usize, Error> {
        if value.len() != VALUE_LEN {
            return Err(Error::Malformed);
        }
        let mut tag = [0u8; TAG_LEN];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut tag) {
            Ok(TAG_LEN) => {}
            _ => return Err(Error::Malformed),
        }
        // A well-formed tag that is no server's: stale after a removal, or forged; the
        // two cannot be told apart without the removed server's tag.
        self.map.get(&tag).copied().ok_or(Error::NotInPool)
    }
}
