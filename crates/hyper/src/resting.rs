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
//!
//! On Linux and Android (64-bit), a plain TCP socket also leaves tokio's reactor while it rests: tokio keeps
//! about 300 bytes per registered socket, so the socket is registered in the set's
//! own epoll instead (the kernel's memory, one entry in the set; mio's `Poll`, which
//! tokio's reactor watches as one file descriptor). Its next bytes, or its end, come
//! as an event of that epoll; it is registered with tokio again when its next request
//! comes. Other sockets (TLS streams, a caller's I/O) rest registered with tokio.

use core::convert::Infallible;
use core::task::{Context, Poll, Waker};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Wake;

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::conn::{Watched, ABORT, CLOSE, DROP, RELEASE};
use crate::fnv::FnvBuild;

/// The orders that close a resting connection.
const STOP: u8 = CLOSE | DROP | ABORT;

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
    /// Where plain TCP sockets rest, out of tokio's reactor: made at the first one
    /// (tried again at the next while it cannot be made; they rest registered with
    /// tokio meanwhile).
    #[cfg(rest_epoll)]
    epoll: std::sync::OnceLock<plain::Epoll>,
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
    socket: Socket<I>,
    rest: C,
    waker: Waker,
}

/// A resting connection's socket, and its state.
enum Socket<I> {
    /// Registered with tokio: its entry's waker is woken by the socket. Boxed: an
    /// entry with a plain socket is 64 bytes, not 136.
    Tokio(Box<Watched<I>>),
    /// A plain TCP socket in the set's epoll (see [`plain`]), keyed by its entry's key.
    #[cfg(rest_epoll)]
    Plain(std::net::TcpStream, Arc<crate::conn::ConnState>),
}

impl<I> Socket<I> {
    fn state(&self) -> &crate::conn::ConnState {
        match self {
            Self::Tokio(io) => io.state(),
            #[cfg(rest_epoll)]
            Self::Plain(_, state) => state,
        }
    }
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
            #[cfg(rest_epoll)]
            epoll: std::sync::OnceLock::new(),
        }
    }

    /// Parks a connection at rest; it is polled first by the accept loop, which the
    /// park wakes. Once the server stopped, the connection is dropped (closed) instead.
    pub(crate) fn park(&self, parked: Parked<I, C>)
    where
        I: 'static,
    {
        let Parked { io, rest } = parked;
        #[cfg(rest_epoll)]
        let io = match self.unregister(io) {
            Ok(plain) => plain,
            Err(Some(io)) => Socket::Tokio(Box::new(io)),
            Err(None) => return,
        };
        #[cfg(not(rest_epoll))]
        let io = Socket::Tokio(Box::new(io));
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
            #[cfg(rest_epoll)]
            let io = match io {
                Socket::Plain(stream, state) => {
                    // Orders wake the entry (a plain socket is not polled with its waker).
                    state.register(&Context::from_waker(&waker), &mut None);
                    match self.epoll().map(|epoll| epoll.add(&stream, key)) {
                        Some(Ok(())) => Socket::Plain(stream, state),
                        _ => match plain::register::<I>(stream) {
                            Ok(io) => Socket::Tokio(Box::new(Watched::new(io, state))),
                            Err(_) => return, // closed
                        },
                    }
                }
                tokio => tokio,
            };
            let entry = Box::new(Entry {
                socket: io,
                rest,
                waker: waker.clone(),
            });
            entries.map.insert(key, entry);
            waker
        };
        // Its first poll (by the accept loop) registers its waker with its socket, or
        // reads what came already.
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

impl<I: AsyncRead + Unpin + 'static, C> Resting<I, C> {
    /// Polls the entries woken since the last call, [`BATCH`] at most (and as many
    /// plain sockets the set's epoll reports): hands those that got their next bytes
    /// (kept for hyper to read first) to `restart`, to be served by a task again, and
    /// drops those that closed or were ordered to close. Never ready: the accept loop's
    /// waker is noted, or, with more entries woken than one batch, woken at once, so
    /// that the loop yields between batches.
    pub(crate) fn poll_woken(
        &self,
        cx: &mut Context<'_>,
        mut restart: impl FnMut(Parked<I, C>),
    ) -> Poll<Infallible> {
        #[cfg(rest_epoll)]
        if let Some(epoll) = self.epoll.get() {
            let mut keys = [0u64; BATCH];
            let ready = epoll.poll_ready(cx, &mut keys);
            for &key in &keys[..ready] {
                self.poll_entry(key, &mut restart);
            }
        }
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
            self.poll_entry(key, &mut restart);
        }
        lock(&self.entries).shrink();
        Poll::Pending
    }

    /// Polls the entry of `key` once (see [`poll_woken`](Self::poll_woken)).
    fn poll_entry(&self, key: u64, restart: &mut impl FnMut(Parked<I, C>)) {
        // Taken out to be polled, not under the lock: a socket's wake may come at
        // once, from another thread.
        let taken = lock(&self.entries).map.remove(&key);
        let Some(mut entry) = taken else {
            return; // gone already (a late wake), or woken twice
        };
        let mut next = [0u8; 32];
        let polled = match &mut entry.socket {
            Socket::Tokio(io) => core::pin::Pin::new(&mut **io).poll_bytes(
                &mut Context::from_waker(&entry.waker),
                &mut next,
                STOP,
            ),
            #[cfg(rest_epoll)]
            Socket::Plain(stream, state) => plain::read(stream, state, &mut next),
        };
        match polled {
            Poll::Pending => {
                let mut entries = lock(&self.entries);
                if !entries.closed {
                    entries.map.insert(key, entry);
                }
                // else dropped (closed) once the lock is released
            }
            Poll::Ready(Ok(read)) if read > 0 => {
                let Entry { socket, rest, .. } = *entry;
                let mut io = match socket {
                    Socket::Tokio(io) => *io,
                    #[cfg(rest_epoll)]
                    Socket::Plain(stream, state) => {
                        if let Some(epoll) = self.epoll() {
                            epoll.remove(&stream);
                        }
                        match plain::register::<I>(stream) {
                            Ok(io) => Watched::new(io, state),
                            Err(error) => return state.failed(&error),
                        }
                    }
                };
                io.replay(Bytes::copy_from_slice(&next[..read]));
                io.state().clear(RELEASE);
                restart(Parked { io, rest });
            }
            Poll::Ready(Ok(_)) => {} // closed, or ordered to close: dropped
            Poll::Ready(Err(error)) => entry.socket.state().failed(&error),
        }
    }
}

#[cfg(rest_epoll)]
impl<I: 'static, C> Resting<I, C> {
    /// The set's epoll, made at the first call that can (needs a tokio runtime).
    fn epoll(&self) -> Option<&plain::Epoll> {
        if let Some(epoll) = self.epoll.get() {
            return Some(epoll);
        }
        match plain::Epoll::new() {
            // Made twice by two parks at once: one is kept, the other closed.
            Ok(epoll) => Some(self.epoll.get_or_init(|| epoll)),
            Err(error) => {
                // Out of descriptors, say: this connection rests registered with tokio.
                tracing::debug!(%error, "no epoll for resting connections");
                None
            }
        }
    }

    /// A plain TCP socket out of tokio's reactor (`Ok`), or the connection as it was
    /// (`Err(Some)`: another kind of socket, or something still to replay); `Err(None)`
    /// when it failed (the socket is closed).
    fn unregister(&self, io: Watched<I>) -> Result<Socket<I>, Option<Watched<I>>> {
        let plain =
            core::any::TypeId::of::<I>() == core::any::TypeId::of::<tokio::net::TcpStream>();
        if !plain || self.epoll().is_none() {
            return Err(Some(io));
        }
        let (io, state) = io.split().map_err(Some)?;
        match plain::cast::<I, tokio::net::TcpStream>(io) {
            Err(io) => Err(Some(Watched::new(io, state))),
            Ok(tcp) => match tcp.into_std() {
                Ok(stream) => Ok(Socket::Plain(stream, state)),
                Err(error) => {
                    state.failed(&error);
                    Err(None)
                }
            },
        }
    }
}

/// Plain TCP sockets at rest in an epoll of their own.
#[cfg(rest_epoll)]
mod plain {
    use core::task::{Context, Poll};
    use core::time::Duration;
    use std::io::{self, Read as _};
    use std::net::TcpStream;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Mutex;

    use mio::unix::SourceFd;
    use mio::{Events, Interest, Token};
    use tokio::io::unix::AsyncFd;

    use super::{lock, BATCH, STOP};
    use crate::conn::ConnState;

    /// An epoll instance (mio's `Poll`) that tokio's reactor watches.
    pub(super) struct Epoll {
        poller: AsyncFd<Poller>,
        /// Registers without the poller's lock.
        registry: mio::Registry,
    }

    struct Poller {
        poll: Mutex<(mio::Poll, Events)>,
        fd: RawFd,
    }

    impl AsRawFd for Poller {
        fn as_raw_fd(&self) -> RawFd {
            self.fd
        }
    }

    impl Epoll {
        pub(super) fn new() -> io::Result<Self> {
            let poll = mio::Poll::new()?;
            let registry = poll.registry().try_clone()?;
            let fd = poll.as_raw_fd();
            let poller = Poller {
                poll: Mutex::new((poll, Events::with_capacity(BATCH))),
                fd,
            };
            // Sound: the poller owns the epoll's file descriptor, which stays open and
            // the same until the poller is dropped (what tokio's unsafe constructor asks).
            #[allow(deprecated, reason = "the safe constructor, without `unsafe`")]
            let poller = AsyncFd::with_interest(poller, tokio::io::Interest::READABLE)?;
            Ok(Self { poller, registry })
        }

        /// Watches `stream` for its next bytes (or its end), as `key`. Edge-triggered:
        /// bytes that came already are reported once too.
        pub(super) fn add(&self, stream: &TcpStream, key: u64) -> io::Result<()> {
            self.registry.register(
                &mut SourceFd(&stream.as_raw_fd()),
                Token(key as usize),
                Interest::READABLE,
            )
        }

        /// Stops watching `stream` (it goes back to tokio).
        pub(super) fn remove(&self, stream: &TcpStream) {
            let _ = self.registry.deregister(&mut SourceFd(&stream.as_raw_fd()));
        }

        /// The keys of the sockets that became readable, into `keys`: their count.
        /// Returns with the task's waker registered for the next events, or, when
        /// `keys` is full or more are ready, with the task woken to come back for them.
        pub(super) fn poll_ready(&self, cx: &mut Context<'_>, keys: &mut [u64; BATCH]) -> usize {
            loop {
                // `Ready` leaves no waker with tokio: only `Pending` registers one.
                let Poll::Ready(Ok(mut ready)) = self.poller.poll_read_ready(cx) else {
                    return 0; // registered (or the runtime is shutting down)
                };
                let mut poll = lock(&self.poller.get_ref().poll);
                let (poll, events) = &mut *poll;
                match poll.poll(events, Some(Duration::ZERO)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        // Readiness kept: the next poll of the accept loop tries again.
                        tracing::debug!(%error, "resting connections' epoll");
                        return 0;
                    }
                }
                let mut count = 0;
                for (slot, event) in keys.iter_mut().zip(events.iter()) {
                    *slot = event.token().0 as u64;
                    count += 1;
                }
                if count == BATCH {
                    cx.waker().wake_by_ref();
                    return count;
                }
                // All read: readiness cleared (unless an event came meanwhile).
                ready.clear_ready();
                if count > 0 {
                    // Registers the waker for the next events, or comes back at once
                    // for events that came meanwhile.
                    if self.poller.poll_read_ready(cx).is_ready() {
                        cx.waker().wake_by_ref();
                    }
                    return count;
                }
            }
        }
    }

    /// Reads a resting socket's next bytes: `Pending` when none came yet (a spurious
    /// event), `Ok(0)` at its end or when it is ordered to close.
    pub(super) fn read(
        stream: &mut TcpStream,
        state: &ConnState,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if state.orders() & STOP != 0 {
            return Poll::Ready(Ok(0));
        }
        loop {
            return match stream.read(buf) {
                Ok(n) => {
                    if n > 0 {
                        state.read();
                    }
                    Poll::Ready(Ok(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Poll::Ready(Err(e)),
            };
        }
    }

    /// `stream` registered with tokio again, as the server's socket type.
    pub(super) fn register<I: 'static>(stream: TcpStream) -> io::Result<I> {
        let tcp = tokio::net::TcpStream::from_std(stream)?;
        cast::<tokio::net::TcpStream, I>(tcp)
            .map_err(|_| io::Error::other("not the server's socket type"))
    }

    /// `a` as a `B`, when `A` is `B`.
    pub(super) fn cast<A: 'static, B: 'static>(a: A) -> Result<B, A> {
        let mut a = Some(a);
        let b = (&mut a as &mut dyn core::any::Any)
            .downcast_mut::<Option<B>>()
            .and_then(Option::take);
        match (b, a) {
            (Some(b), _) => Ok(b),
            (None, Some(a)) => Err(a),
            (None, None) => unreachable!("taken only when it was a `B`"),
        }
    }
}

#[cfg(all(test, rest_epoll))]
mod tests {
    use core::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::conn::ConnState;

    /// A connected pair over loopback: the server's side, the client's side.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    /// Parks `server` with `rest` beside it; returns its state.
    async fn park(resting: &Resting<TcpStream, u8>, server: TcpStream, rest: u8) -> Arc<ConnState> {
        let state = crate::conn::tests::state().await;
        resting.park(Parked {
            io: Watched::new(server, Arc::clone(&state)),
            rest,
        });
        state
    }

    fn is_plain(resting: &Resting<TcpStream, u8>) -> bool {
        let entries = lock(&resting.entries);
        entries.map.len() == 1
            && entries
                .map
                .values()
                .all(|e| matches!(e.socket, Socket::Plain(..)))
    }

    /// Polls the set until it restarts a connection (or 5 s pass).
    async fn restarted(resting: &Resting<TcpStream, u8>) -> Parked<TcpStream, u8> {
        let mut out = None;
        let polled = core::future::poll_fn(|cx| {
            let Poll::Pending = resting.poll_woken(cx, |p| out = Some(p));
            match out.take() {
                Some(parked) => Poll::Ready(parked),
                None => Poll::Pending,
            }
        });
        tokio::time::timeout(Duration::from_secs(5), polled)
            .await
            .expect("restarted")
    }

    /// Polls the set until it holds no connection (or 5 s pass).
    async fn emptied(resting: &Resting<TcpStream, u8>) {
        let polled = core::future::poll_fn(|cx| {
            let Poll::Pending = resting.poll_woken(cx, |_| panic!("not restarted"));
            if lock(&resting.entries).map.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::time::timeout(Duration::from_secs(5), polled)
            .await
            .expect("emptied");
    }

    #[tokio::test]
    async fn a_plain_socket_rests_out_of_tokio_and_comes_back_with_its_next_bytes() {
        let (server, mut client) = pair().await;
        let resting = Resting::new();
        park(&resting, server, 7).await;
        assert!(is_plain(&resting), "in the set's epoll, not tokio's");
        // Its first poll finds no bytes: it stays.
        let early = tokio::time::timeout(Duration::from_millis(50), restarted(&resting)).await;
        assert!(early.is_err(), "nothing came");
        assert!(is_plain(&resting));

        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(request).await.unwrap();
        let mut parked = restarted(&resting).await;
        assert_eq!(parked.rest, 7);
        assert!(lock(&resting.entries).map.is_empty());
        // Registered with tokio again: the bytes read while it rested come first.
        let mut got = vec![0; request.len()];
        parked.io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request);
        parked.io.write_all(b"ok").await.unwrap();
        let mut answer = [0; 2];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ok");
    }

    /// Polled as the accept loop polls it, only when woken: each socket's bytes wake
    /// it, also after others were served.
    #[tokio::test]
    async fn each_plain_socket_wakes_the_set_when_its_bytes_come() {
        let (server_a, mut client_a) = pair().await;
        let (server_b, mut client_b) = pair().await;
        let resting = Resting::new();
        park(&resting, server_a, 1).await;
        park(&resting, server_b, 2).await;
        let writer = tokio::spawn(async move {
            client_a.write_all(b"GET /a").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            client_b.write_all(b"GET /b").await.unwrap();
            (client_a, client_b)
        });
        let mut served = Vec::new();
        let both = core::future::poll_fn(|cx| {
            let Poll::Pending = resting.poll_woken(cx, |p| served.push(p.rest));
            if served.len() == 2 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(3)) => panic!("served only {served:?}"),
            () = both => {}
        }
        assert_eq!(served, [1, 2]);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_plain_resting_socket_closes_on_an_order_or_when_its_client_goes() {
        for order in [CLOSE, DROP, ABORT] {
            let (server, mut client) = pair().await;
            let resting = Resting::new();
            let state = park(&resting, server, 0).await;
            assert!(is_plain(&resting));
            state.order(order);
            emptied(&resting).await;
            let mut byte = [0; 1];
            assert_eq!(client.read(&mut byte).await.unwrap(), 0, "closed ({order})");
        }
        let (server, client) = pair().await;
        let resting = Resting::new();
        park(&resting, server, 0).await;
        assert!(is_plain(&resting));
        drop(client);
        emptied(&resting).await;
    }

    #[test]
    fn an_entry_with_a_plain_socket_is_a_cache_line() {
        // What the server parks beside the socket: its service and its hold (4 pointers).
        let bytes = size_of::<Entry<TcpStream, [usize; 4]>>();
        assert!(bytes <= 64, "a resting entry takes {bytes} bytes");
    }

    #[tokio::test]
    async fn a_socket_with_bytes_to_replay_rests_registered_with_tokio() {
        let (server, _client) = pair().await;
        let mut io = Watched::new(server, crate::conn::tests::state().await);
        io.replay(Bytes::from_static(b"G"));
        let resting = Resting::new();
        resting.park(Parked { io, rest: 0 });
        let entries = lock(&resting.entries);
        assert!(matches!(
            entries.map.values().next().map(|e| &e.socket),
            Some(Socket::Tokio(_))
        ));
    }
}
