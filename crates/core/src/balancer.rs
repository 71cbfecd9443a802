//! The shared balancer (`std`): picks from an `Arc` snapshot swapped on every change.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::hash::Hash;
use core::marker::PhantomData;
use core::panic::AssertUnwindSafe;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use arc_swap::cache::Cache;
use arc_swap::ArcSwap;
use thread_local::ThreadLocal;

use crate::pool::build;
use crate::schedule::{AtomicCursor, Schedule};
use crate::{Error, Policy};

/// A weighted round-robin balancer shared by every task of a server.
///
/// Every method takes `&self`. A pick reads the current snapshot (servers, schedule and
/// cursor; cached per calling thread, see [`RoundRobin::next_server`]) and claims the
/// next position of its sequence with one `fetch_add` (see
/// [`Schedule::next_atomic`]): no lock, and
/// concurrent callers get distinct positions. A change (upsert, remove)
/// builds a new snapshot with a fresh cursor and swaps it in, so the iteration restarts
/// atomically; changes are serialised among themselves by a lock that picks never take.
///
/// Lookups by server ([`RoundRobin::server_weight`], and finding the server an upsert
/// or a removal names) go through a hash index kept in the snapshot: O(1) expected,
/// hence the `S: Eq + Hash` bound of those methods. A change that only sets weights of
/// servers already in the pool shares the server list and the index with the previous
/// snapshot; one that adds or removes servers copies them (O(n) clones of `S`).
///
/// ```
/// use roundrobin_core::RoundRobin;
/// let rr: RoundRobin<&'static str> = RoundRobin::new(); // default weight 1, interleaved
/// rr.upsert_server("a", None)?;
/// rr.upsert_server("b", Some(3))?;
/// let picks: Vec<&str> = (0..4).map(|_| rr.next_server()).collect::<Result<_, _>>()?;
/// assert_eq!(picks, ["b", "b", "a", "b"]);
/// assert_eq!(rr.servers(), ["a", "b"]);
/// assert_eq!(rr.server_weight(&"b"), Some(3));
/// rr.remove_server(&"a")?;
/// assert!(rr.remove_server(&"a").is_err());
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
#[derive(Debug)]
pub struct RoundRobin<S> {
    default_weight: u32,
    policy: Policy,
    start_offset: u64,
    /// Serialises changes; picks never take it.
    writer: Mutex<()>,
    snapshot: Arc<ArcSwap<Snapshot<S>>>,
    /// What [`RoundRobin::next_server`] keeps on each thread that calls it.
    local: Local<S>,
}

/// A [`Picker`]-like cache of the current snapshot for each thread that calls
/// [`RoundRobin::next_server`], owned by the balancer (no global state): a pick compares
/// one pointer instead of protecting the snapshot with an `arc-swap` load (two atomic
/// read-modify-writes). Boxed behind [`LocalPick`] so that the balancer's type needs no
/// `Send` bound on `S`; `next_server` asks for it.
///
/// `AssertUnwindSafe`: a panic while a cell is borrowed (a panicking `S::clone`) leaves
/// a valid cache behind, and the borrow ends with the unwinding.
struct Local<S>(ThreadLocal<AssertUnwindSafe<RefCell<Option<LocalCache<S>>>>>);

/// One thread's cache in [`Local`].
type LocalCache<S> = Box<dyn LocalPick<S> + Send>;

impl<S> fmt::Debug for Local<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

/// The pick of one thread's cache ([`Local`]).
trait LocalPick<S> {
    fn pick(&mut self) -> Result<S, Error>;
}

impl<S: Clone> LocalPick<S> for Cache<Arc<ArcSwap<Snapshot<S>>>, Arc<Snapshot<S>>> {
    #[inline]
    fn pick(&mut self) -> Result<S, Error> {
        self.load().pick()
    }
}

#[derive(Debug)]
struct Snapshot<S> {
    servers: Arc<[S]>,
    /// Position of every server in `servers`.
    index: Arc<HashMap<S, usize>>,
    weights: Vec<u32>,
    generation: u64,
    state: Result<(Schedule, AtomicCursor), Error>,
}

impl<S> Snapshot<S> {
    fn empty() -> Self {
        Self {
            servers: Arc::from(Vec::new()),
            index: Arc::new(HashMap::new()),
            weights: Vec::new(),
            generation: 0,
            state: Err(Error::NoServers),
        }
    }
}

impl<S: Clone> Snapshot<S> {
    /// Claims the next position of this snapshot's sequence.
    #[inline]
    fn pick(&self) -> Result<S, Error> {
        match &self.state {
            Ok((schedule, cursor)) => Ok(self.servers[schedule.next_atomic(cursor)].clone()),
            Err(e) => Err(e.clone()),
        }
    }
}

/// A caching pick handle for hot loops, from [`RoundRobin::picker`].
///
/// A picker keeps the current snapshot and only compares one pointer per pick, so a
/// pick costs the single atomic operation that claims its position.
/// [`RoundRobin::next_server`] does the same through a cache per thread held by the
/// balancer (a thread-local lookup more, about 2 ns), for server types that are
/// `Send + Sync + 'static`; a picker works for any `S: Clone` and spares that lookup.
/// Pickers and `next_server` share one sequence: every caller still gets distinct
/// positions. A change is seen at the picker's next pick; until then the picker keeps
/// the old snapshot alive.
///
/// ```
/// use roundrobin_core::RoundRobin;
/// let rr = RoundRobin::new();
/// rr.upsert_servers([("a", Some(3)), ("b", Some(2))])?;
/// let mut picker = rr.picker();
/// assert_eq!(picker.next_server()?, "a");
/// assert_eq!(rr.next_server()?, "a");
/// assert_eq!(picker.next_server()?, "b");
/// rr.upsert_server("b", Some(9))?; // the sequence restarts, for the picker too
/// assert_eq!(picker.next_server()?, "b");
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
pub struct Picker<'a, S> {
    cache: Cache<&'a ArcSwap<Snapshot<S>>, Arc<Snapshot<S>>>,
}

impl<S> fmt::Debug for Picker<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker").finish_non_exhaustive()
    }
}

impl<S: Clone> Picker<'_, S> {
    /// The next server of the balancer's sequence, cloned. Lock-free.
    ///
    /// Errors: [`Error::NoServers`], [`Error::AllWeightsZero`].
    #[inline]
    pub fn next_server(&mut self) -> Result<S, Error> {
        self.cache.load().pick()
    }
}

/// Configures a [`RoundRobin`]. Typed by the server type, so
/// `RoundRobin::<String>::builder()..build()` needs no further annotation.
///
/// ```
/// use roundrobin_core::{Policy, RoundRobin};
/// let rr = RoundRobin::<String>::builder().default_weight(2).smooth().build();
/// rr.upsert_server("a".to_string(), None)?;
/// assert_eq!(rr.server_weight(&"a".to_string()), Some(2));
/// assert_eq!(rr.policy(), Policy::Smooth);
/// # Ok::<(), roundrobin_core::Error>(())
/// ```
pub struct Builder<S> {
    default_weight: u32,
    policy: Policy,
    start_offset: u64,
    server: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for Builder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("default_weight", &self.default_weight)
            .field("policy", &self.policy)
            .field("start_offset", &self.start_offset)
            .finish()
    }
}

impl<S> Clone for Builder<S> {
    fn clone(&self) -> Self {
        Self {
            default_weight: self.default_weight,
            policy: self.policy,
            start_offset: self.start_offset,
            server: PhantomData,
        }
    }
}

impl<S> Builder<S> {
    /// Weight given to servers upserted without one (default 1).
    pub fn default_weight(mut self, w: u32) -> Self {
        self.default_weight = w;
        self
    }

    /// Use [`Policy::Smooth`].
    pub fn smooth(mut self) -> Self {
        self.policy = Policy::Smooth;
        self
    }

    /// Use the given policy (default [`Policy::Interleaved`]).
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    /// After every change, start the sequence at position `seed % period` instead of
    /// its first pick (the default, as in the reference, is 0).
    ///
    /// Proxies that receive the same configuration otherwise all send their next
    /// request to the same first server; give each a different seed (the core has no
    /// randomness: the caller picks it, e.g. at random once per process). Quotas over
    /// every period stay exact: the sequence is the same, shifted.
    ///
    /// ```
    /// use roundrobin_core::RoundRobin;
    /// let rr = RoundRobin::<&str>::builder().start_offset(2).build();
    /// rr.upsert_servers([("a", Some(1)), ("b", Some(1)), ("c", Some(1))])?;
    /// let picks: Vec<&str> = (0..4).map(|_| rr.next_server()).collect::<Result<_, _>>()?;
    /// assert_eq!(picks, ["c", "a", "b", "c"]);
    /// # Ok::<(), roundrobin_core::Error>(())
    /// ```
    pub fn start_offset(mut self, seed: u64) -> Self {
        self.start_offset = seed;
        self
    }

    /// Builds an empty balancer.
    pub fn build(self) -> RoundRobin<S> {
        RoundRobin {
            default_weight: self.default_weight,
            policy: self.policy,
            start_offset: self.start_offset,
            writer: Mutex::new(()),
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
            local: Local(ThreadLocal::new()),
        }
    }
}

impl<S> Default for RoundRobin<S> {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl<S> RoundRobin<S> {
    /// An empty balancer: default weight 1, [`Policy::Interleaved`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, to set the default weight and the policy.
    pub fn builder() -> Builder<S> {
        Builder {
            default_weight: 1,
            policy: Policy::Interleaved,
            start_offset: 0,
            server: PhantomData,
        }
    }

    /// The start position seed set by [`Builder::start_offset`] (0 by default).
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// The policy of the balancer.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The weight of servers upserted without one.
    pub fn default_weight(&self) -> u32 {
        self.default_weight
    }

    /// A caching pick handle for one task or thread: cheaper picks, same sequence (see
    /// [`Picker`]).
    pub fn picker(&self) -> Picker<'_, S> {
        Picker {
            cache: Cache::new(&*self.snapshot),
        }
    }

    /// Starts at 0 and increases by one on every accepted change of the pool, so
    /// layers above can cache what they derive from [`RoundRobin::servers`].
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }
}

impl<S: Clone> RoundRobin<S> {
    /// The servers, in insertion order.
    pub fn servers(&self) -> Vec<S> {
        self.snapshot.load().servers.to_vec()
    }

    /// Every server with its weight, in insertion order, from one snapshot: one pass
    /// for callers that need them all (instead of a [`RoundRobin::server_weight`] per
    /// server).
    ///
    /// ```
    /// use roundrobin_core::RoundRobin;
    /// let rr = RoundRobin::new();
    /// rr.upsert_servers([("a", Some(3)), ("b", None), ("z", Some(0))])?;
    /// assert_eq!(rr.weights(), [("a", 3), ("b", 1), ("z", 0)]);
    /// # Ok::<(), roundrobin_core::Error>(())
    /// ```
    pub fn weights(&self) -> Vec<(S, u32)> {
        let snap = self.snapshot.load();
        snap.servers
            .iter()
            .cloned()
            .zip(snap.weights.iter().copied())
            .collect()
    }
}

impl<S: Clone + Send + Sync + 'static> RoundRobin<S> {
    /// The next server of the sequence, cloned. Lock-free.
    ///
    /// Each thread that calls it keeps the current snapshot in a cache of its own, held
    /// by the balancer, so a pick compares one pointer and claims its position with one
    /// atomic operation, as a [`Picker`] does. Until its next pick, a thread's cache
    /// keeps alive the snapshot it last picked from (one per thread, freed with the
    /// balancer). For a server type that is not `Send + Sync + 'static`, use a
    /// [`Picker`].
    ///
    /// Errors: [`Error::NoServers`], [`Error::AllWeightsZero`].
    #[inline]
    pub fn next_server(&self) -> Result<S, Error> {
        let cell = self.local.0.get_or(Default::default);
        // Taken already only if `S::clone` picks from this balancer again.
        let Ok(mut cache) = cell.try_borrow_mut() else {
            return self.snapshot.load().pick();
        };
        cache
            .get_or_insert_with(|| Box::new(Cache::new(Arc::clone(&self.snapshot))))
            .pick()
    }
}

impl<S: Clone + Eq + Hash> RoundRobin<S> {
    /// Inserts `server` (appended) or updates its weight; `None` means the balancer's
    /// default weight, `Some(0)` drains the server (kept, never picked). The iteration
    /// restarts from the beginning of the sequence (or from the
    /// [start offset](Builder::start_offset)).
    ///
    /// Errors ([`Error::TooManyServers`]) leave the pool unchanged.
    pub fn upsert_server(&self, server: S, weight: Option<u32>) -> Result<(), Error> {
        self.upsert_servers([(server, weight)])
    }

    /// Upserts several servers as one change: one rebuild, one restart, one
    /// generation; all or nothing. Each server is found in O(1) expected time.
    ///
    /// ```
    /// use roundrobin_core::RoundRobin;
    /// let rr = RoundRobin::new();
    /// rr.upsert_servers([("a", Some(3)), ("b", Some(2)), ("z", Some(0))])?;
    /// let picks: Vec<&str> = (0..6).map(|_| rr.next_server()).collect::<Result<_, _>>()?;
    /// assert_eq!(picks, ["a", "a", "b", "a", "b", "a"]);
    /// assert_eq!(rr.generation(), 1);
    /// # Ok::<(), roundrobin_core::Error>(())
    /// ```
    pub fn upsert_servers<I>(&self, servers: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = (S, Option<u32>)>,
    {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot.load_full();
        let mut weights = current.weights.clone();
        // Copied on the first new server only: weight changes share the lists.
        let mut index: Option<HashMap<S, usize>> = None;
        let mut added: Vec<S> = Vec::new();
        for (server, weight) in servers {
            let w = weight.unwrap_or(self.default_weight);
            let found = index.as_ref().unwrap_or(&current.index).get(&server);
            match found {
                Some(&i) => weights[i] = w,
                None => {
                    let index = index.get_or_insert_with(|| (*current.index).clone());
                    index.insert(server.clone(), weights.len());
                    added.push(server);
                    weights.push(w);
                }
            }
        }
        let (servers, index) = match index {
            None => (Arc::clone(&current.servers), Arc::clone(&current.index)),
            Some(index) => {
                let mut servers = Vec::with_capacity(current.servers.len() + added.len());
                servers.extend_from_slice(&current.servers);
                servers.extend(added);
                (Arc::from(servers), Arc::new(index))
            }
        };
        self.publish(&current, servers, index, weights)
    }

    /// Removes `server`; the iteration restarts.
    ///
    /// Errors: [`Error::ServerNotFound`].
    pub fn remove_server(&self, server: &S) -> Result<(), Error> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot.load_full();
        let i = *current.index.get(server).ok_or(Error::ServerNotFound)?;
        let mut servers = current.servers.to_vec();
        servers.remove(i);
        let mut weights = current.weights.clone();
        weights.remove(i);
        let mut index = (*current.index).clone();
        index.remove(server);
        for position in index.values_mut() {
            if *position > i {
                *position -= 1;
            }
        }
        self.publish(&current, Arc::from(servers), Arc::new(index), weights)
    }

    /// The weight of `server`, `None` when it is not in the pool. O(1) expected.
    pub fn server_weight(&self, server: &S) -> Option<u32> {
        let snap = self.snapshot.load();
        let &i = snap.index.get(server)?;
        snap.weights.get(i).copied()
    }

    /// Builds the schedule of the new lists and swaps the snapshot in, or changes
    /// nothing. The caller holds the writer lock.
    fn publish(
        &self,
        current: &Snapshot<S>,
        servers: Arc<[S]>,
        index: Arc<HashMap<S, usize>>,
        weights: Vec<u32>,
    ) -> Result<(), Error> {
        let state = build(&weights, self.policy)?.map(|s| {
            let c = AtomicCursor::from(s.start_at(self.start_offset));
            (s, c)
        });
        let next = Snapshot {
            servers,
            index,
            weights,
            generation: current.generation + 1,
            state,
        };
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}
