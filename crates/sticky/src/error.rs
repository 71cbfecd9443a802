//! The crate's error type.

/// Errors of the sticky-session layer.
///
/// Configuration errors (a bad key, a bad cookie attribute, no OS randomness) are returned
/// by constructors. The other variants say why a cookie value did not name a server; they
/// never reach the client: [`StickySession::server`](crate::StickySession::server)
/// turns them into `None` and a `tracing` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An AES key is not 16, 24 or 32 bytes long.
    #[error("invalid aes key length {0}: expected 16, 24 or 32 bytes")]
    InvalidKeyLength(usize),
    /// The operating system's random source failed.
    #[error("os random source failed: {0}")]
    Random(getrandom::Error),
    /// A cookie attribute holds a character that would change the `Set-Cookie` header's meaning.
    #[error("invalid cookie {0}: only visible ascii without `;` is allowed")]
    InvalidAttribute(&'static str),
    /// A cookie name is empty or holds a character not allowed in a token.
    #[error("invalid cookie name")]
    InvalidName,
    /// A codec wrote a value holding characters a cookie value cannot carry (anything but
    /// visible ASCII without `"`, `,`, `;` and `\`).
    #[error("codec wrote an invalid cookie value")]
    InvalidValue,
    /// The cookie value is not in the codec's format.
    #[error("malformed cookie value")]
    Malformed,
    /// The cookie value is in the codec's format but fails authentication.
    #[error("forged cookie value")]
    Forged,
    /// The cookie value was authentic but its expiry time has passed.
    #[error("expired cookie value")]
    Expired,
    /// The cookie value names no server of the current pool (removed, or never present).
    #[error("cookie value names no server of the pool")]
    NotInPool,
}
