//! What every service of one balancer shares: the pool, the error handler, the
//! rewrite hook and the sticky cookie.

use http::HeaderMap;
use roundrobin_core::ServerUrl;
use roundrobin_sticky::CachedIndex;

use crate::{Error, RewriteHook, Select};

pub(crate) struct Config<P, H> {
    pub(crate) pool: P,
    pub(crate) handler: H,
    pub(crate) rewrite: Option<Box<dyn RewriteHook>>,
    pub(crate) sticky: Option<CachedIndex>,
}

/// The server chosen for a request.
pub(crate) struct Chosen {
    pub(crate) server: ServerUrl,
    /// Whether the response must set the sticky cookie.
    pub(crate) stick: bool,
}

impl<P: Select, H> Config<P, H> {
    /// The server for a request: the one its sticky cookie names when that is in the
    /// pool, else the pool's pick.
    pub(crate) fn choose(&self, headers: &HeaderMap) -> Result<Chosen, Error> {
        let Some(sticky) = &self.sticky else {
            return Ok(Chosen {
                server: self.pool.select()?,
                stick: false,
            });
        };
        let named = sticky.server(headers, self.pool.generation(), || self.pool.servers());
        Ok(match named {
            Some(server) => Chosen {
                server,
                stick: false,
            },
            None => Chosen {
                server: self.pool.select()?,
                stick: true,
            },
        })
    }

    /// Sets the sticky cookie on `headers` when the choice asks for it.
    pub(crate) fn stick(&self, chosen: &Chosen, headers: &mut HeaderMap) {
        if let (true, Some(sticky)) = (chosen.stick, &self.sticky) {
            sticky.session().stick(&chosen.server, headers);
        }
    }
}
