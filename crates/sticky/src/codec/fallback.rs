//! `Fallback`: write with one codec, read with two (key rotation, format migration).

use std::time::SystemTime;

use roundrobin_core::ServerUrl;

use super::{ValueCodec, ValueIndex};
use crate::Error;

/// Writes with `to`; reads with `from`, then `to` (the reference's `FallbackValue`).
///
/// Deploy it to migrate: cookies issued under the old codec (`from`) keep working while
/// every new cookie is written with the new one (`to`). Once the old cookies have expired,
/// switch to `to` alone.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::codec::{Fallback, Hash, Hmac, ValueCodec};
///
/// let pool: Vec<ServerUrl> = vec!["http://a:80".parse()?, "http://b:80".parse()?];
/// let old = Hash::new("salt");
/// let old_cookie = old.encode(&pool[0]);
/// let codec = Fallback::new(old, Hmac::new([9u8; 32]));
/// assert_eq!(codec.decode(&old_cookie, &pool), Ok(0));
/// let new_cookie = codec.encode(&pool[1]);
/// assert_eq!(new_cookie, Hmac::new([9u8; 32]).encode(&pool[1]));
/// assert_eq!(codec.decode(&new_cookie, &pool), Ok(1));
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fallback<F, T> {
    from: F,
    to: T,
}

impl<F: ValueCodec, T: ValueCodec> Fallback<F, T> {
    /// Reads `from` then `to`, writes `to`.
    pub const fn new(from: F, to: T) -> Self {
        Self { from, to }
    }
}

impl<F: ValueCodec, T: ValueCodec> ValueCodec for Fallback<F, T> {
    fn encode_at(&self, server: &ServerUrl, now: SystemTime) -> String {
        self.to.encode_at(server, now)
    }

    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
        Box::new(FallbackIndex {
            from: self.from.index(servers),
            to: self.to.index(servers),
        })
    }

    fn timeless(&self) -> bool {
        self.to.timeless()
    }
}

#[derive(Debug)]
struct FallbackIndex {
    from: Box<dyn ValueIndex>,
    to: Box<dyn ValueIndex>,
}

impl ValueIndex for FallbackIndex {
    fn find(&self, value: &str, now: SystemTime) -> Result<usize, Error> {
        self.from.find(value, now).or_else(|from| {
            self.to.find(value, now).map_err(|to| {
                // Report the more specific reason: a value one codec recognised as its own.
                if to == Error::Malformed {
                    from
                } else {
                    to
                }
            })
        })
    }
}
