//! `Raw`: the server URL in clear.

use std::collections::HashMap;
use std::time::SystemTime;

use roundrobin_core::ServerUrl;

use super::{url_key, ValueCodec, ValueIndex};
use crate::Error;

/// The normalised server URL in clear (the reference's `RawValue`, its default).
///
/// **Discloses backend addresses to clients**, and lets a client choose any server of the
/// pool by name; opt-in only. Bytes that cannot appear in a cookie value (`"`, `,`, `;`,
/// `\`, non-ASCII) and `|` are percent-encoded, so a path holding one of them and the same
/// path with it percent-encoded are one server for this codec (and for [`Aes`](super::Aes)),
/// as they are for URL parsers. Reading accepts any URL with the same identity (scheme,
/// host, port, path), so values written by the Go reference (`url.String()`, query
/// included) match.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::codec::{Raw, ValueCodec};
/// let pool: Vec<ServerUrl> = vec!["http://10.0.0.1:8080/api".parse()?];
/// assert_eq!(Raw.encode(&pool[0]), "http://10.0.0.1:8080/api");
/// assert_eq!(Raw.decode("http://10.0.0.1:8080/api?from=go", &pool), Ok(0));
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl ValueCodec for Raw {
    fn encode_at(&self, server: &ServerUrl, _now: SystemTime) -> String {
        url_key(server.as_str()).into_owned()
    }

    fn index(&self, servers: &[ServerUrl]) -> Box<dyn ValueIndex> {
        Box::new(UrlIndex::new(servers))
    }

    fn timeless(&self) -> bool {
        true
    }
}

/// Lookup by [`url_key`] of the normalised URL; shared with `Aes`.
#[derive(Debug)]
pub(crate) struct UrlIndex {
    map: HashMap<String, usize>,
}

impl UrlIndex {
    pub(crate) fn new(servers: &[ServerUrl]) -> Self {
        let mut map = HashMap::with_capacity(servers.len());
        for (i, server) in servers.iter().enumerate() {
            map.entry(url_key(server.as_str()).into_owned())
                .or_insert(i);
        }
        Self { map }
    }

    /// The server whose identity `url` has.
    pub(crate) fn find_url(&self, url: &str) -> Result<usize, Error> {
        if let Some(&i) = self.map.get(url) {
            return Ok(i);
        }
        let parsed = ServerUrl::parse(url).map_err(|_| Error::Malformed)?;
        self.map
            .get(url_key(parsed.as_str()).as_ref())
            .copied()
            .ok_or(Error::NotInPool)
    }
}

impl ValueIndex for UrlIndex {
    fn find(&self, value: &str, _now: SystemTime) -> Result<usize, Error> {
        self.find_url(value)
    }
}
