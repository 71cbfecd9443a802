//! A fast hasher for maps keyed by configured servers (their URL or `host:port`): a
//! few short keys that only the operator chooses, so SipHash's resistance to
//! collision flooding buys nothing on the request path and costs a lookup per request.

use core::hash::{BuildHasherDefault, Hasher};

/// Builds [`Fnv`] hashers.
pub(crate) type FnvBuild = BuildHasherDefault<Fnv>;

/// FNV-1a (64-bit).
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        // The offset basis.
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    #[inline]
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
}

impl Hasher for Fnv {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// One step, not a one-byte slice (`str` ends its hash with one `write_u8`).
    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.byte(b);
    }
}

#[cfg(test)]
mod tests {
    use core::hash::Hasher as _;

    use super::Fnv;

    #[test]
    fn matches_published_fnv1a_vectors() {
        // From the FNV reference test suite (Landon Curt Noll).
        for (input, hash) in [
            (&b"a"[..], 0xaf63_dc4c_8601_ec8c_u64),
            (b"foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv::default();
            h.write(input);
            assert_eq!(h.finish(), hash);
            let mut bytewise = Fnv::default();
            input.iter().for_each(|&b| bytewise.write_u8(b));
            assert_eq!(bytewise.finish(), hash);
        }
    }
}
