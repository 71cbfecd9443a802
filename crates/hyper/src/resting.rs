//! The HTTP/1 client connections of a server at rest, waiting for their next bytes in
//! one set the accept loop polls, not each in a task of its own.
//!
//! A resting connection has handed hyper's state and buffers back (see
//! [`Watched`]); what is left is its socket, its state and its service. A task to wait
//! on them would cost more than all of that (tokio's task of a connection is 384
//! bytes), so the connection is parked here instead: an entry in a map, and a waker of
//! its own, which its socket (readable, closed) and its orders (idle timeout, the
//! server stopping) wake. A woken entry is queued for the accept loop, which polls it
//! once: its next bytes send it back to a new task, an end or an order closes it.

use core::convert::Infallible;
use core::task::{Context, Poll, Waker};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Wake;

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::conn::{Watched, ABORT, CLOSE, DROP, RELEASE};
use crate::fnv::FnvBuild;

/// How many woken entries the accept loop polls before it yields: a stream of wakes
/// from other threads cannot hold it (nor its accepts and sweeps) for longer.
const BATCH: usize = 64;

/// A connection at rest, as parked: `C` is the rest of what its task held (its
/// service, and its hold on the server).
pub(crate) struct Parked<I, C> {
    pub(crate) io: Watched<I>,
    pub(crate) rest: C,
}

/// The resting connections of one server.
pub(crate) struct Resting<I, C> {
    entries: Mutex<Entries<I, C>>,
    queue: Arc<Mutex<Queue>>,
}

struct Entries<I, C> {
    /// By key; an entry being polled is out of the map. Keys are never reused, so a
    /// late wake of a gone entry finds nothing. Boxed: the map's spare room costs a
    /// pointer, not an entry.
    map: HashMap<u64, Box<Entry<I, C>>, FnvBuild>,
    next: u64,
    /// The server stopped: no more parking.
    closed: bool,
}

impl<I, C> Entries<I, C> {
    /// Gives memory back after a burst of resting connections is gone.
    fn shrink(&mut self) {
        if self.map.capacity() > 64 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
    }
}

struct Entry<I, C> {
    parked: Parked<I, C>,
    waker: Waker,
}

/// The keys of woken entries, oldest first, and the accept loop's waker.
#[derive(Default)]
struct Queue {
    keys: VecDeque<u64>,
    waker: Option<Waker>,
}

/// The waker of one entry: queues its key and wakes the accept loop.
struct EntryWaker {
    key: u64,
    queue: Weak<Mutex<Queue>>,
}

impl Wake for EntryWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(queue) = self.queue.upgrade() else {
            return;
        };
        let waker = {
            let mut queue = lock(&queue);
            queue.keys.push_back(self.key);
            queue.waker.take()
        };
        // Woken outside the lock: a waker that polls at once would find it held.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<I, C> Resting<I, C> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::default(),
                next: 0,
                closed: false,
            }),
            queue: Arc::default(),
        }
    }

    /// Parks a connection at rest; it is polled first by the accept loop, which the
    /// park wakes. Once the server stopped, the connection is dropped (closed) instead.
    pub(crate) fn park(&self, parked: Parked<I, C>) {
        let waker = {
            let mut entries = lock(&self.entries);
            if entries.closed {
                return;
            }
            let key = entries.next;
            entries.next += 1;
            let waker = Waker::from(Arc::new(EntryWaker {
                key,
                queue: Arc::downgrade(&self.queue),
            }));
            let entry = Box::new(Entry {
                parked,
                waker: waker.clone(),
            });
            entries.map.insert(key, entry);
            waker
        };
        // Its first poll (by the accept loop) registers its waker with its socket.
        waker.wake();
    }

    /// Drops every parked connection (closing them) and refuses new ones: the server
    /// stopped.
    pub(crate) fn close(&self) {
        let parked = {
            let mut entries = lock(&self.entries);
            entries.closed = true;
            core::mem::take(&mut entries.map)
        };
        drop(parked);
    }
}

impl<I: AsyncRead + Unpin, C> Resting<I, C> {
    /// Polls the entries woken since the last call, [`BATCH`] at most: hands those
    /// that got their next bytes (kept for hyper to read first) to `restart`, to be
    /// served by a task again, and drops those that closed or were ordered to close.
    /// Never ready: the accept loop's waker is noted, or, with more entries woken than
    /// one batch, woken at once, so that the loop yields between batches.
    pub(crate) fn poll_woken(
        &self,
        cx: &Context<'_>,
        mut restart: impl FnMut(Parked<I, C>),
    ) -> Poll<Infallible> {
        // The oldest first, one key at a time (no batch to allocate): a stream of new
        // wakes cannot keep the first waiting.
        let mut count = 0;
        loop {
            let key = {
                let mut queue = lock(&self.queue);
                match queue.keys.pop_front() {
                    Some(key) if count < BATCH => key,
                    Some(key) => {
                        queue.keys.push_front(key);
                        cx.waker().wake_by_ref();
                        break;
                    }
                    None => {
                        // Noted under the lock the wakes take: none is missed.
                        if !queue
                            .waker
                            .as_ref()
                            .is_some_and(|w| w.will_wake(cx.waker()))
                        {
                            queue.waker = Some(cx.waker().clone());
                        }
                        break;
                    }
                }
            };
            count += 1;
            // Taken out to be polled, not under the lock: a socket's wake may come at
            // once, from another thread.
            let taken = lock(&self.entries).map.remove(&key);
            let Some(mut entry) = taken else {
                continue; // gone already (a late wake), or woken twice
            };
            let mut next = [0u8; 32];
            let polled = core::pin::Pin::new(&mut entry.parked.io).poll_bytes(
                &mut Context::from_waker(&entry.waker),
                &mut next,
                CLOSE | DROP | ABORT,
            );
            match polled {
                Poll::Pending => {
                    let mut entries = lock(&self.entries);
                    if !entries.closed {
                        entries.map.insert(key, entry);
                    }
                    // else dropped (closed) once the lock is released
                }
                Poll::Ready(Ok(read)) if read > 0 => {
                    let mut parked = entry.parked;
                    parked.io.replay(Bytes::copy_from_slice(&next[..read]));
                    parked.io.state().clear(RELEASE);
                    restart(parked);
                }
                Poll::Ready(Ok(_)) => {} // closed, or ordered to close: dropped
                Poll::Ready(Err(error)) => {
                    let peer = entry.parked.io.state().peer();
                    tracing::debug!(%error, %peer, "connection error");
                }
            }
        }
        lock(&self.entries).shrink();
        Poll::Pending
    }
}
