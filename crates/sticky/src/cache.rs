//! `CachedIndex`: a [`StickyIndex`] kept in step with a changing pool.

use core::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderMap;
use roundrobin_core::ServerUrl;

use crate::{StickyIndex, StickySession};

/// A [`StickySession`] with the [`StickyIndex`] of the pool's current servers, rebuilt
/// when the pool's generation changes.
///
/// A balancer calls [`CachedIndex::server`] on every request with the pool's
/// generation (a number that changes whenever the set of servers changes, such as
/// `RoundRobin::generation`) and a way to list its servers. While the generation stays
/// the same, a lookup reads the cached index without a lock; the first request after a
/// change rebuilds it (O(n)) and publishes it for everyone. Concurrent requests that
/// see the change at the same moment may each rebuild once; the last one wins, and
/// every index they build is correct for that generation.
///
/// ```
/// use http::{header::COOKIE, HeaderMap};
/// use roundrobin_core::ServerUrl;
/// use roundrobin_sticky::{CachedIndex, StickySession};
///
/// let pool: Vec<ServerUrl> = vec!["http://a:80".parse()?, "http://b:80".parse()?];
/// let cache = CachedIndex::new(StickySession::new("srv"));
/// let mut response = HeaderMap::new();
/// cache.session().stick(&pool[1], &mut response);
/// let pair = response["set-cookie"].to_str()?.split(';').next().unwrap().to_owned();
/// let mut request = HeaderMap::new();
/// request.insert(COOKIE, pair.parse()?);
/// assert_eq!(cache.server(&request, 1, || pool.clone()), Some(pool[1].clone()));
/// // generation 2: b left the pool, the cookie no longer routes
/// assert_eq!(cache.server(&request, 2, || pool[..1].to_vec()), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CachedIndex {
    session: StickySession,
    current: ArcSwap<Generation>,
}

struct Generation {
    generation: Option<u64>,
    index: StickyIndex,
}

impl CachedIndex {
    /// A cache for `session`, empty until the first lookup.
    pub fn new(session: StickySession) -> Self {
        let index = session.index(&[]);
        Self {
            session,
            current: ArcSwap::from_pointee(Generation {
                generation: None,
                index,
            }),
        }
    }

    /// The session whose cookies are read and written.
    pub fn session(&self) -> &StickySession {
        &self.session
    }

    /// The server of the pool the request's cookie names, if any, at the current time;
    /// `servers` lists the pool and is called only when `generation` differs from the
    /// cached index's.
    pub fn server(
        &self,
        headers: &HeaderMap,
        generation: u64,
        servers: impl FnOnce() -> Vec<ServerUrl>,
    ) -> Option<ServerUrl> {
        self.server_at(headers, generation, servers, SystemTime::now())
    }

    /// [`CachedIndex::server`] at the time `now`.
    pub fn server_at(
        &self,
        headers: &HeaderMap,
        generation: u64,
        servers: impl FnOnce() -> Vec<ServerUrl>,
        now: SystemTime,
    ) -> Option<ServerUrl> {
        let cached = self.current.load();
        if cached.generation == Some(generation) {
            return cached.index.server_at(headers, now).cloned();
        }
        drop(cached);
        let index = self.session.index(&servers());
        let found = index.server_at(headers, now).cloned();
        self.current.store(Arc::new(Generation {
            generation: Some(generation),
            index,
        }));
        found
    }
}

impl fmt::Debug for CachedIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedIndex")
            .field("session", &self.session)
            .field("generation", &self.current.load().generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use http::header::{COOKIE, SET_COOKIE};

    use super::*;

    #[test]
    fn servers_are_listed_once_per_generation() {
        let pool: Vec<ServerUrl> =
            vec!["http://a:1".parse().unwrap(), "http://b:1".parse().unwrap()];
        let cache = CachedIndex::new(StickySession::new("s"));
        let mut res = HeaderMap::new();
        cache.session().stick(&pool[0], &mut res);
        let pair = res[SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut req = HeaderMap::new();
        req.insert(COOKIE, pair.parse().unwrap());
        let listed = Cell::new(0);
        let list = || {
            listed.set(listed.get() + 1);
            pool.clone()
        };
        for _ in 0..3 {
            assert_eq!(cache.server(&req, 7, list), Some(pool[0].clone()));
        }
        assert_eq!(listed.get(), 1);
        assert_eq!(cache.server(&req, 8, || pool[1..].to_vec()), None);
        assert_eq!(cache.server(&req, 8, || unreachable!()), None);
    }
}
