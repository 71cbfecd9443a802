//! Maps kept per thread: values the request path derives from a configured server and
//! would otherwise build again for every request (a parsed authority, a header value).
//! A worker's own map needs no lock, and the values' reference counts are not cache
//! lines shared between workers.

use core::borrow::Borrow;
use core::cell::RefCell;
use core::hash::Hash;
use std::collections::HashMap;

use thread_local::ThreadLocal;

use crate::fnv::FnvBuild;

/// Past this many entries a thread's map starts again from empty: servers that
/// discovery removed would otherwise stay in it.
pub(crate) const MAX_ENTRIES: usize = 4096;

/// A map per thread, of at most [`MAX_ENTRIES`] entries.
pub(crate) struct PerThread<K: Send, V: Send> {
    maps: ThreadLocal<RefCell<HashMap<K, V, FnvBuild>>>,
}

impl<K: Send, V: Send> Default for PerThread<K, V> {
    fn default() -> Self {
        Self {
            maps: ThreadLocal::new(),
        }
    }
}

impl<K: Hash + Eq + Send, V: Clone + Send> PerThread<K, V> {
    /// This thread's value for `key`; when it has none, `make`'s, kept under
    /// `own(key)`. An error of `make` is returned and nothing kept.
    pub(crate) fn get<Q, E>(
        &self,
        key: &Q,
        own: impl FnOnce(&Q) -> K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Nothing here calls out to code that could come back to this map; a borrow
        // that fails all the same makes the value without it.
        let Ok(mut map) = self.maps.get_or_default().try_borrow_mut() else {
            return make();
        };
        if let Some(value) = map.get(key) {
            return Ok(value.clone());
        }
        let value = make()?;
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(own(key), value.clone());
        Ok(value)
    }

    /// Entries in this thread's map.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.maps.get().map_or(0, |map| map.borrow().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_per_key_and_bounded() {
        let map: PerThread<String, usize> = PerThread::default();
        let mut made = 0;
        for _ in 0..3 {
            let got = map.get("a", str::to_owned, || {
                made += 1;
                Ok::<_, ()>(7)
            });
            assert_eq!(got, Ok(7));
        }
        assert_eq!(made, 1);
        assert_eq!(map.get("b", str::to_owned, || Err("bad")), Err("bad"));
        assert_eq!(map.len(), 1, "a failed make keeps nothing");
        for i in 0..MAX_ENTRIES + 10 {
            let key = i.to_string();
            assert_eq!(
                map.get(key.as_str(), str::to_owned, || Ok::<_, ()>(i)),
                Ok(i)
            );
        }
        assert!((1..=MAX_ENTRIES).contains(&map.len()), "{}", map.len());
    }
}
