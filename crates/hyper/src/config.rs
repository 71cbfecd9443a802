//! What every service of one balancer shares: the pool, the error handler, the
//! rewrite hook, the sticky cookie and the retry policy, and the steps of a request
//! that depend only on them.

use http::header::{self, HeaderValue};
use http::{request, HeaderMap, Uri};
use roundrobin_core::ServerUrl;
use roundrobin_sticky::CachedIndex;

use crate::rewrite::Targets;
use crate::{Error, Retry, RewriteHook, Select};

pub(crate) struct Config<P, H> {
    pub(crate) pool: P,
    pub(crate) handler: H,
    pub(crate) rewrite: Option<Box<dyn RewriteHook>>,
    pub(crate) sticky: Option<CachedIndex>,
    pub(crate) retry: Retry,
    pub(crate) max_body: Option<u64>,
    pub(crate) access_log: bool,
    pub(crate) metrics: Option<std::sync::Arc<crate::Metrics>>,
    pub(crate) replay_bodies: Option<usize>,
    /// The servers' parsed schemes and authorities, for [`point_at`](Self::point_at).
    pub(crate) targets: Targets,
}

/// How many picks a retry makes at most to find a server not tried yet: a pick costs a
/// few nanoseconds, and any server with at least 0.1 % of the weight comes up within
/// them.
const MAX_REDISPATCH_PICKS: usize = 1024;

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

    /// A server for a retry: the next pick that is not in `tried`, within
    /// [`MAX_REDISPATCH_PICKS`] picks (no listing of the pool: retries come in storms
    /// when a server dies). The response sets a new sticky cookie.
    pub(crate) fn choose_other(&self, tried: &[ServerUrl]) -> Option<Chosen> {
        (0..MAX_REDISPATCH_PICKS)
            .map_while(|_| self.pool.select().ok())
            .find(|server| !tried.contains(server))
            .map(|server| Chosen {
                server,
                stick: self.sticky.is_some(),
            })
    }

    /// Points `parts` (whose URI is still the client's, `original`) at `server`: the
    /// URI rewrite, `Host` when the client sent none, then the rewrite hook; an upgrade
    /// request also gets the server's tunnel gauge when metrics are on.
    pub(crate) fn point_at(
        &self,
        parts: &mut request::Parts,
        server: &ServerUrl,
    ) -> Result<(), http::Error> {
        let uri = self.targets.rewrite(&parts.uri, server)?;
        let original: Uri = core::mem::replace(&mut parts.uri, uri);
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = original
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, host);
            }
        }
        if let Some(hook) = &self.rewrite {
            hook.rewrite(&original, server, parts);
        }
        // An upgrade may become a tunnel to this server: the forwarder counts it there.
        if let Some(metrics) = &self.metrics {
            if crate::headers::asks_upgrade(&parts.headers) {
                parts.extensions.insert(metrics.tunnel_gauge(server));
            }
        }
        Ok(())
    }

    /// Sets the sticky cookie on `headers` when the choice asks for it.
    pub(crate) fn stick(&self, chosen: &Chosen, headers: &mut HeaderMap) {
        if let (true, Some(sticky)) = (chosen.stick, &self.sticky) {
            sticky.session().stick(&chosen.server, headers);
        }
    }
}
