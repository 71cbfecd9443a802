//! WebSocket through the balancer, over loopback sockets: tungstenite echo backends,
//! the balancer on `serve`, tungstenite clients. Each test is bounded by
//! [`TEST_TIMEOUT`]; waits on events are bounded by `tokio::time::timeout`.

use core::net::SocketAddr;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{
    serve_with, spawn, spawn_on, Balancer, Forwarder, Metrics, Retry, Select, ServerLimits,
    Serving, Tunnels,
};
use roundrobin_sticky::StickySession;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, Barrier, Notify};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long an event that should come at once may take.
const SOON: Duration = Duration::from_secs(5);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[path = "support/run.rs"]
mod support_run;
use support_run::run;

/// A listener on a free loopback port whose accept queue holds a thousand handshakes
/// arriving at once (`TcpListener::bind` allows 128: the rest would wait for SYN
/// retransmits, a second or more).
fn listener() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// A WebSocket echo server: every text or binary message comes back as it was.
struct Backend {
    addr: SocketAddr,
    /// Handshakes it accepted.
    sessions: Arc<AtomicUsize>,
    /// Sessions open now, and their ends.
    live: Arc<(AtomicUsize, Notify)>,
    /// The accept loop and every session, aborted by `kill`.
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    async fn start() -> Self {
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let sessions = Arc::new(AtomicUsize::new(0));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let live = Arc::new((AtomicUsize::new(0), Notify::new()));
        let (count, all, open) = (Arc::clone(&sessions), Arc::clone(&tasks), Arc::clone(&live));
        tasks.lock().unwrap().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, open) = (Arc::clone(&count), Arc::clone(&open));
                all.lock().unwrap().spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let _live = Live::new(open);
                    while let Some(Ok(message)) = ws.next().await {
                        if (message.is_text() || message.is_binary())
                            && ws.send(message).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            sessions,
            live,
            tasks,
        }
    }

    /// Waits (bounded) until no session is open.
    async fn all_ended(&self) {
        let (open, ended) = &*self.live;
        tokio::time::timeout(SOON, async {
            loop {
                let notified = ended.notified();
                if open.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("a backend session is still open");
    }

    fn url(&self) -> ServerUrl {
        ServerUrl::parse(&format!("http://{}", self.addr)).unwrap()
    }

    fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every open connection.
    fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

/// A backend session, counted while open.
struct Live(Arc<(AtomicUsize, Notify)>);

impl Live {
    fn new(live: Arc<(AtomicUsize, Notify)>) -> Self {
        live.0.fetch_add(1, Ordering::SeqCst);
        Self(live)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A balancer over `servers` (with their weights) on 127.0.0.1, with metrics, and
/// sticky sessions when `sticky`.
struct Proxy {
    serving: Serving,
    balancer: Balancer<Forwarder, RoundRobin<ServerUrl>>,
    metrics: Arc<Metrics>,
    tunnels: Tunnels,
}

impl Proxy {
    async fn start(servers: &[(ServerUrl, u32)], sticky: bool) -> Self {
        let metrics = Metrics::new();
        let forwarder = Forwarder::new();
        let tunnels = forwarder.tunnels().clone();
        let mut builder = Balancer::builder(RoundRobin::new()).metrics(Arc::clone(&metrics));
        if sticky {
            builder = builder.sticky(StickySession::new("s"));
        }
        let balancer = builder.service(forwarder);
        for (url, weight) in servers {
            balancer
                .pool()
                .upsert_server(url.clone(), Some(*weight))
                .unwrap();
        }
        let serving = spawn(listener(), balancer.clone());
        Self {
            serving,
            balancer,
            metrics,
            tunnels,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/echo", self.serving.local_addr())
    }

    /// A metric's value for `server` in the OpenMetrics text (0 when absent).
    fn metric(&self, name: &str, server: &ServerUrl, extra: &str) -> f64 {
        metric(
            &self.metrics.encode(self.balancer.pool()),
            name,
            server,
            extra,
        )
    }

    fn tunnels_open(&self, server: &ServerUrl) -> f64 {
        self.metric("roundrobin_server_tunnels_open", server, "")
    }

    /// Waits (bounded) until every tunnel is closed.
    async fn all_closed(&self) {
        let deadline = tokio::time::Instant::now() + SOON;
        assert!(
            self.tunnels.wait_closed(deadline).await,
            "{} tunnels still open",
            self.tunnels.open()
        );
    }
}

fn metric(text: &str, name: &str, server: &ServerUrl, extra: &str) -> f64 {
    let label = format!("server=\"{}\"", server.as_str());
    text.lines()
        .find(|line| {
            line.starts_with(&format!("{name}{{")) && line.contains(&label) && line.contains(extra)
        })
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A WebSocket handshake to `url` (bounded).
async fn connect(url: &str) -> (Client, http::Response<Option<Vec<u8>>>) {
    tokio::time::timeout(SOON, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake timed out")
        .expect("handshake failed")
}

/// Sends `message` and expects it back (bounded).
async fn echo(ws: &mut Client, message: Message) {
    ws.send(message.clone()).await.unwrap();
    let back = tokio::time::timeout(SOON, ws.next())
        .await
        .expect("no echo in time")
        .expect("closed instead of echoing")
        .unwrap();
    assert_eq!(back, message);
}

/// Closes `ws` and waits for the server's side of the close (bounded).
async fn close(mut ws: Client) {
    ws.close(None).await.unwrap();
    tokio::time::timeout(SOON, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("close not answered");
}

#[test]
fn text_binary_and_a_mebibyte_echo_and_the_tunnel_is_counted() {
    run(async {
        let backend = Backend::start().await;
        let proxy = Proxy::start(&[(backend.url(), 1)], false).await;
        assert_eq!(proxy.tunnels_open(&backend.url()), 0.0);
        let (mut ws, response) = connect(&proxy.ws_url()).await;
        assert_eq!(response.status(), 101);
        assert_eq!(response.headers()["upgrade"], "websocket");
        // Counted from the 101 on, before the client has read it.
        assert_eq!(proxy.tunnels_open(&backend.url()), 1.0);
        assert_eq!(proxy.tunnels.open(), 1);
        // The handshake is recorded like any response: a 1xx, no error.
        let onexx = proxy.metric(
            "roundrobin_server_requests_total",
            &backend.url(),
            "code_class=\"1xx\"",
        );
        assert_eq!(onexx, 1.0);

        echo(&mut ws, Message::text("hello")).await;
        echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
        let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        echo(&mut ws, Message::binary(big)).await;
        echo(&mut ws, Message::text("after the big one")).await;
        close(ws).await;

        proxy.all_closed().await;
        backend.all_ended().await;
        assert_eq!(proxy.tunnels_open(&backend.url()), 0.0);
        assert_eq!(backend.sessions(), 1);
    });
}

#[test]
fn a_thousand_concurrent_sessions_follow_the_weights() {
    const SESSIONS: usize = 1000;
    run(async {
        let (a, b) = (Backend::start().await, Backend::start().await);
        let proxy = Proxy::start(&[(a.url(), 1), (b.url(), 3)], false).await;
        let url = proxy.ws_url();
        let started = Instant::now();
        // All open at once: each holds its session until the count is checked.
        let (open, done) = (
            Arc::new(Barrier::new(SESSIONS + 1)),
            Arc::new(Barrier::new(SESSIONS + 1)),
        );
        let mut sessions = JoinSet::new();
        for i in 0..SESSIONS {
            let (url, open, done) = (url.clone(), Arc::clone(&open), Arc::clone(&done));
            sessions.spawn(async move {
                let (mut ws, _) = connect(&url).await;
                echo(&mut ws, Message::text(format!("session {i}"))).await;
                open.wait().await;
                done.wait().await;
                close(ws).await;
            });
        }
        tokio::time::timeout(Duration::from_secs(20), open.wait())
            .await
            .expect("not all sessions opened");
        assert_eq!((a.sessions(), b.sessions()), (250, 750));
        assert_eq!(proxy.tunnels.open(), SESSIONS);
        assert_eq!(proxy.tunnels_open(&a.url()), 250.0);
        assert_eq!(proxy.tunnels_open(&b.url()), 750.0);
        done.wait().await;
        while let Some(session) = sessions.join_next().await {
            session.unwrap();
        }
        proxy.all_closed().await;
        assert_eq!(proxy.tunnels_open(&a.url()), 0.0);
        assert_eq!(proxy.tunnels_open(&b.url()), 0.0);
        eprintln!("{SESSIONS} sessions in {:?}", started.elapsed());
    });
}

#[test]
fn a_backend_killed_mid_session_closes_the_client() {
    run(async {
        let backend = Backend::start().await;
        let proxy = Proxy::start(&[(backend.url(), 1)], false).await;
        let (mut ws, _) = connect(&proxy.ws_url()).await;
        echo(&mut ws, Message::text("before")).await;
        backend.kill();
        let next = tokio::time::timeout(SOON, ws.next())
            .await
            .expect("the client hangs after its backend died");
        assert!(
            matches!(next, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{next:?}"
        );
        drop(ws);
        proxy.all_closed().await;
        assert_eq!(proxy.tunnels_open(&backend.url()), 0.0);
    });
}

#[test]
fn the_client_closing_closes_the_backend_side() {
    run(async {
        let backend = Backend::start().await;
        let proxy = Proxy::start(&[(backend.url(), 1)], false).await;
        let (mut ws, _) = connect(&proxy.ws_url()).await;
        echo(&mut ws, Message::text("x")).await;
        // Gone without a close handshake: the tunnel and the backend's session end.
        drop(ws);
        proxy.all_closed().await;
        backend.all_ended().await;
    });
}

#[test]
fn the_sticky_cookie_is_set_on_the_101_and_honoured() {
    run(async {
        let (a, b) = (Backend::start().await, Backend::start().await);
        let proxy = Proxy::start(&[(a.url(), 1), (b.url(), 1)], true).await;
        let (ws, response) = connect(&proxy.ws_url()).await;
        assert_eq!(response.status(), 101);
        let set = response.headers()["set-cookie"].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        assert!(cookie.starts_with("s="), "{set}");
        close(ws).await;
        assert_eq!((a.sessions(), b.sessions()), (1, 0));
        for _ in 0..4 {
            let mut request = proxy.ws_url().into_client_request().unwrap();
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
            let (mut ws, response) =
                tokio::time::timeout(SOON, tokio_tungstenite::connect_async(request))
                    .await
                    .unwrap()
                    .unwrap();
            assert!(!response.headers().contains_key("set-cookie"));
            echo(&mut ws, Message::text("sticky")).await;
            close(ws).await;
        }
        assert_eq!((a.sessions(), b.sessions()), (5, 0));
        proxy.all_closed().await;
    });
}

/// A pool that remembers every recorded outcome.
#[derive(Default)]
struct Recording {
    inner: RoundRobin<ServerUrl>,
    outcomes: Mutex<Vec<(ServerUrl, u16)>>,
}

impl Select for Recording {
    fn select(&self) -> Result<ServerUrl, roundrobin_hyper::Error> {
        self.inner.select()
    }
    fn servers(&self) -> Vec<ServerUrl> {
        self.inner.servers()
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
    fn record(&self, server: &ServerUrl, status: u16, _latency: Duration, _now: Instant) {
        self.outcomes.lock().unwrap().push((server.clone(), status));
    }
}

#[test]
fn an_upgrade_that_cannot_connect_is_retried_but_one_that_was_sent_is_not() {
    run(async {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ServerUrl::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap()
        };
        let live = Backend::start().await;
        let pool = Arc::new(Recording::default());
        // Connect failures and resets are retried (the default).
        let retry = Retry::default();
        assert!(retry.on.connect && retry.on.reset);
        let balancer = Balancer::builder(Arc::clone(&pool))
            .retry(retry)
            .service(Forwarder::new());
        pool.inner.upsert_server(dead.clone(), None).unwrap();
        pool.inner.upsert_server(live.url(), None).unwrap();
        let serving = spawn_on("127.0.0.1:0", balancer).await.unwrap();
        let url = format!("ws://{}/", serving.local_addr());
        // The dead server is tried first: the handshake goes on to the live one, with
        // the client's connection still there to hand over.
        let (mut ws, response) = connect(&url).await;
        assert_eq!(response.status(), 101);
        echo(&mut ws, Message::text("retried")).await;
        close(ws).await;
        assert_eq!(
            *pool.outcomes.lock().unwrap(),
            [(dead.clone(), 502), (live.url(), 101)]
        );

        // A server that takes the handshake and hangs up: not sent again.
        let (hangs_up, arrived) = hang_up_backend().await;
        let pool = Arc::new(Recording::default());
        let balancer = Balancer::builder(Arc::clone(&pool))
            .retry(retry)
            .service(Forwarder::new());
        pool.inner.upsert_server(hangs_up.clone(), None).unwrap();
        pool.inner.upsert_server(live.url(), None).unwrap();
        let serving = spawn_on("127.0.0.1:0", balancer).await.unwrap();
        let url = format!("ws://{}/", serving.local_addr());
        let refused = tokio::time::timeout(SOON, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap();
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 502);
            }
            other => panic!("{:?}", other.map(|(_, r)| r)),
        }
        arrived.await.unwrap();
        assert_eq!(*pool.outcomes.lock().unwrap(), [(hangs_up, 502)]);
        assert_eq!(live.sessions(), 1, "the live server got no second try");
    });
}

/// Reads a request or response head from `stream`, lowercased.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::io::AsyncReadExt::read(stream, &mut buf)
            .await
            .unwrap();
        assert!(n > 0, "the head was cut short: {head:?}");
        head.push(buf[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[test]
fn h2c_is_not_passed_on_and_a_101_nobody_asked_for_is_502() {
    run(async {
        // A server that switches protocols whatever it is asked.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = ServerUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (got, head) = oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = got.send(read_head(&mut stream).await);
            let answer =
                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n";
            tokio::io::AsyncWriteExt::write_all(&mut stream, answer.as_bytes())
                .await
                .unwrap();
            core::future::pending::<()>().await;
        });
        let proxy = Proxy::start(&[(url.clone(), 1)], false).await;
        let mut client = TcpStream::connect(proxy.serving.local_addr())
            .await
            .unwrap();
        let request = "GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n\
                       upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
            .await
            .unwrap();
        let upstream = tokio::time::timeout(SOON, head).await.unwrap().unwrap();
        assert!(upstream.starts_with("get / http/1.1\r\n"), "{upstream}");
        for stripped in ["\r\nupgrade:", "\r\nconnection:", "\r\nhttp2-settings:"] {
            assert!(!upstream.contains(stripped), "{upstream}");
        }
        let answer = tokio::time::timeout(SOON, read_head(&mut client))
            .await
            .unwrap();
        assert!(answer.starts_with("http/1.1 502 "), "{answer}");
        assert_eq!(proxy.tunnels.open(), 0);
    });
}

/// A server that reads one request head and closes the connection; the receiver
/// resolves when it did.
async fn hang_up_backend() -> (ServerUrl, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = ServerUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "the request head was cut short");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
        drop(stream);
        let _ = tx.send(());
    });
    (url, rx)
}

/// A balancer served by `serve_with` under `limits` on a free loopback port.
struct Limited {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Limited {
    async fn start(
        balancer: Balancer<Forwarder, RoundRobin<ServerUrl>>,
        limits: ServerLimits,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve_with(listener, balancer, shutdown, limits));
        Self { addr, stop, server }
    }

    /// Shuts the server down and waits (bounded) for it to end.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(SOON, self.server)
            .await
            .unwrap()
            .unwrap();
    }
}

#[test]
fn a_tunnel_outlives_the_idle_timeout_while_it_is_used_and_closes_when_silent() {
    run(async {
        let backend = Backend::start().await;
        let idle = Duration::from_millis(300);
        let forwarder = Forwarder::new().body_timeout(idle);
        let tunnels = forwarder.tunnels().clone();
        let balancer = Balancer::builder(RoundRobin::new()).service(forwarder);
        balancer.pool().upsert_server(backend.url(), None).unwrap();
        let server = Limited::start(
            balancer,
            ServerLimits {
                idle_timeout: Duration::from_millis(100),
                header_timeout: Duration::from_millis(100),
                ..ServerLimits::default()
            },
        )
        .await;
        let addr = server.addr;
        let (mut ws, _) = connect(&format!("ws://{addr}/")).await;
        // A message every 100 ms for 1.5 s: longer than the server's idle and header
        // timeouts and the tunnel's idle time, never idle for either.
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for i in 0..15 {
            tick.tick().await;
            echo(&mut ws, Message::text(format!("{i}"))).await;
        }
        assert!(started.elapsed() > 4 * idle);
        // Silent now: the tunnel closes after its idle time, and the client sees it.
        let silent = Instant::now();
        let next = tokio::time::timeout(SOON, ws.next())
            .await
            .expect("an idle tunnel stays open");
        assert!(
            matches!(next, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{next:?}"
        );
        // (Timed from the last bytes, just before `silent`, to the millisecond.)
        let waited = silent.elapsed();
        assert!(waited >= idle - Duration::from_millis(50), "{waited:?}");
        assert!(
            tunnels
                .wait_closed(tokio::time::Instant::now() + SOON)
                .await
        );
        server.stop().await;
    });
}

#[test]
fn shutdown_waits_for_tunnels_then_closes_them() {
    run(async {
        let backend = Backend::start().await;
        let proxy = Proxy::start(&[(backend.url(), 1)], false).await;
        let (mut ws, _) = connect(&proxy.ws_url()).await;
        echo(&mut ws, Message::text("x")).await;
        // The HTTP side drains at once: the upgraded connection is no longer its own.
        let Proxy {
            serving, tunnels, ..
        } = proxy;
        tokio::time::timeout(SOON, serving.shutdown())
            .await
            .expect("the server waits for the tunnel");
        echo(&mut ws, Message::text("still open")).await;
        // A tunnel that closes by itself within the timeout: shutdown returns then.
        let draining = tokio::spawn({
            let tunnels = tunnels.clone();
            async move { tunnels.shutdown(Duration::from_secs(20)).await }
        });
        echo(&mut ws, Message::text("while draining")).await;
        assert!(!draining.is_finished());
        close(ws).await;
        assert_eq!(
            tokio::time::timeout(SOON, draining).await.unwrap().unwrap(),
            0
        );

        // One that does not: closed at the timeout, the client sees the close.
        let proxy = Proxy::start(&[(backend.url(), 1)], false).await;
        let (mut ws, _) = connect(&proxy.ws_url()).await;
        echo(&mut ws, Message::text("y")).await;
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        assert_eq!(proxy.tunnels.shutdown(timeout).await, 1);
        assert!(started.elapsed() >= timeout);
        let next = tokio::time::timeout(SOON, ws.next()).await.unwrap();
        assert!(
            matches!(next, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{next:?}"
        );
        assert_eq!(proxy.tunnels_open(&backend.url()), 0.0);
    });
}

#[test]
fn a_tunnel_keeps_its_connection_slot_and_gauge_until_it_closes() {
    run(async {
        let backend = Backend::start().await;
        let metrics = Metrics::new();
        let balancer = Balancer::builder(RoundRobin::new())
            .metrics(Arc::clone(&metrics))
            .service(Forwarder::new());
        balancer.pool().upsert_server(backend.url(), None).unwrap();
        let watched = balancer.clone();
        let server = Limited::start(
            balancer,
            ServerLimits {
                max_connections: 1,
                metrics: Some(Arc::clone(&metrics)),
                ..ServerLimits::default()
            },
        )
        .await;
        let addr = server.addr;
        let open = || {
            let text = metrics.encode(watched.pool());
            text.lines()
                .find(|l| l.starts_with("roundrobin_client_connections_open"))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<f64>().unwrap())
        };
        let (mut ws, _) = connect(&format!("ws://{addr}/")).await;
        echo(&mut ws, Message::text("in the tunnel")).await;
        // The upgraded connection still holds the one slot: a second client waits.
        assert_eq!(open(), Some(1.0));
        let mut waiting = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            tokio::io::AsyncWriteExt::write_all(&mut c, request)
                .await
                .unwrap();
            read_head(&mut c).await
        });
        // (A bounded wait for something that must not happen.)
        let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
        assert!(
            early.is_err(),
            "a second connection was served beside the tunnel"
        );
        // The tunnel closes: its slot goes to the waiting client.
        close(ws).await;
        let head = tokio::time::timeout(SOON, waiting).await.unwrap().unwrap();
        assert!(head.starts_with("http/1.1 "), "{head}");
        server.stop().await;
    });
}
