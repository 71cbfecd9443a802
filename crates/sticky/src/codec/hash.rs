//! `Hash`: the reference's salted FNV-1a 64 format.

use core::fmt;
use std::time::SystemTime;

use roundrobin_core::ServerUrl;

use super::{MixMap, Redacted, ValueCodec, ValueIndex};
use crate::Error;

/// Salted FNV-1a 64 of the normalised URL, lowercase hex without leading zeros.
///
/// Reads and writes the reference's `HashValue` format, so cookies issued by existing Go
/// deployments keep working. The Go package hashed the full URL when writing but the
/// normalised URL when reading; both directions use the normalised URL
/// ([`ServerUrl::as_str`]) here.
///
/// Go deployments' cookies match when the Go side's normalised URL is the same string:
/// true for the usual `scheme://host[:port][/path]` with a lowercase host and a path that
/// needs no percent-encoding. Go keeps the host's case and percent-encodes paths
/// (`url.URL.String()`), while [`ServerUrl`] lowercases the host and keeps the path as
/// configured: configure such servers the way Go printed them.
///
/// FNV is not a MAC: anyone who knows the salt and the backend addresses can compute the
/// values, and the salt can be brute-forced from observed cookies. Prefer [`Hmac`](super::Hmac)
/// unless Go interoperability is needed.
///
/// ```
/// use roundrobin_sticky::codec::{Hash, ValueCodec};
/// let server = "http://10.0.0.1:8080".parse()?;
/// let value = Hash::new("s3cr3t").encode(&server);
/// assert!(value.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Hash {
    salt: String,
}

impl Hash {
    /// A codec hashing with `salt` prepended.
    pub fn new(salt: impl Into<String>) -> Self {
        Self { salt: salt.into() }
    }

    fn hash(&self, server: &ServerUrl) -> u64 {
        fnv1a(
            fnv1a(FNV_OFFSET, self.salt.as_bytes()),
            server.as_str().as_bytes(),
        )
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hash").field("salt", &Redacted).finish()
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// Parses the canonical form written by [`Hash`]: 1 to 16 lowercase hex digits, no
/// leading zero (Go compares the strings, so `0ab` never matched `ab`).
fn parse_canonical_hex(value: &str) -> Option<u64> {
    let bytes = value.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.len() <= 16
        && (bytes.len() == 1 || bytes[0] != b'0')
        && bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if canonical {
        u64::from_str_radix(value, 16).ok()
    } else {
        None
    }
}

impl ValueCodec for Hash {
    fn encode_at(&self, server: &ServerUrl, _now: SystemTime) -> String {
        format!("{:x}", self.hash(server))
    }

    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
        let mut map = MixMap::with_capacity_and_hasher(servers.len(), Default::default());
        for (i, server) in servers.iter().enumerate() {
            // On a collision the first server wins, as in the reference's linear scan.
            map.entry(self.hash(server)).or_insert(i);
        }
        Box::new(HashIndex { map })
    }

    fn timeless(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct HashIndex {
    map: MixMap<u64, usize>,
}

impl ValueIndex for HashIndex {
    fn find(&self, value: &str, _now: SystemTime) -> Result<usize, Error> {
        let hash = parse_canonical_hex(value).ok_or(Error::Malformed)?;
        self.map.get(&hash).copied().ok_or(Error::NotInPool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_test_vectors() {
        // From the FNV reference test suite (Landon Curt Noll).
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn only_canonical_hex_is_accepted() {
        assert_eq!(parse_canonical_hex("0"), Some(0));
        assert_eq!(parse_canonical_hex("ffffffffffffffff"), Some(u64::MAX));
        for bad in ["", "0a", "A", "g", "1ffffffffffffffff", "+1", " 1"] {
            assert_eq!(parse_canonical_hex(bad), None, "{bad:?}");
        }
    }
}
