//! The client side's limits over real sockets: slow heads, idle keep-alive connections,
//! the connection cap, oversized heads, and a shutdown that does not wait forever.

use core::convert::Infallible;
use core::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{serve_with, Metrics, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::run;

const SHORT: Duration = Duration::from_millis(200);

fn limits() -> ServerLimits {
    ServerLimits {
        header_timeout: SHORT,
        idle_timeout: SHORT,
        max_connections: 100,
        shutdown_timeout: Duration::from_secs(5),
        ..ServerLimits::default()
    }
}

/// A server answering `ok` after `delay`, with `limits`, until the sender is used.
async fn server(
    limits: ServerLimits,
    delay: Duration,
) -> (core::net::SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = service_fn(move |_req: Request<Incoming>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let task = tokio::spawn(serve_with(
        listener,
        svc,
        async {
            let _ = stopped.await;
        },
        limits,
    ));
    (addr, stop, task)
}

/// Reads until EOF; returns what was read.
async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

/// Reads until `n` responses of the `ok` server have arrived; returns them.
async fn read_responses(stream: &mut TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches("\r\n\r\nok").count() < n {
        let read = stream.read(&mut buf).await.unwrap();
        assert!(read > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The `roundrobin_client_connection_rests` counter of `metrics`.
fn rests(metrics: &std::sync::Arc<Metrics>) -> u64 {
    let pool = RoundRobin::<ServerUrl>::new();
    metrics
        .encode(&pool)
        .lines()
        .find(|l| l.starts_with("roundrobin_client_connection_rests"))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap()
}

/// Waits (within the test's bound) until `metrics` counts `n` rests.
async fn rested(metrics: &std::sync::Arc<Metrics>, n: u64) {
    while rests(metrics) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Limits under which a keep-alive connection rests after 10 ms, counted in `metrics`.
fn resting_limits(metrics: &std::sync::Arc<Metrics>) -> ServerLimits {
    ServerLimits {
        idle_release: Duration::from_millis(10),
        metrics: Some(std::sync::Arc::clone(metrics)),
        ..limits()
    }
}

/// [`resting_limits`] with header and idle timeouts (30 s) that a test never meets:
/// a connection only rests.
fn long_resting_limits(metrics: &std::sync::Arc<Metrics>) -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..resting_limits(metrics)
    }
}

/// A connection to `addr` that had one request answered and is now at rest.
async fn at_rest(addr: core::net::SocketAddr, metrics: &std::sync::Arc<Metrics>) -> TcpStream {
    let before = rests(metrics);
    let mut resting = TcpStream::connect(addr).await.unwrap();
    resting.write_all(GET).await.unwrap();
    read_responses(&mut resting, 1).await;
    rested(metrics, before + 1).await;
    resting
}

#[test]
fn a_connection_at_rest_hands_back_its_state_and_serves_what_comes_next() {
    run(async {
        let metrics = Metrics::new();
        let limits = ServerLimits {
            idle_release: Duration::from_millis(20),
            ..long_resting_limits(&metrics)
        };
        let (addr, _stop, _task) = server(limits, Duration::ZERO).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        read_responses(&mut client, 1).await;
        rested(&metrics, 1).await;
        // one request in one write
        client.write_all(GET).await.unwrap();
        read_responses(&mut client, 1).await;
        rested(&metrics, 2).await;
        // a head longer than what is read while at rest, in two writes
        let long = format!(
            "GET /{} HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
            "a".repeat(100),
            "b".repeat(3000)
        );
        client.write_all(&long.as_bytes()[..10]).await.unwrap();
        // a pause, so that the first bytes arrive alone (no condition to wait on: the
        // connection reads them whenever they come)
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&long.as_bytes()[10..]).await.unwrap();
        read_responses(&mut client, 1).await;
        rested(&metrics, 3).await;
        // two pipelined requests in one write
        client.write_all(&[GET, GET].concat()).await.unwrap();
        let got = read_responses(&mut client, 2).await;
        assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
        rested(&metrics, 4).await;
        // and a client that closes at rest is let go
        drop(client);
    });
}

#[test]
fn many_connections_at_rest_are_all_served_again_at_once() {
    // More than the accept loop takes from its resting set at a time (64).
    const N: usize = 200;
    run(async {
        let metrics = Metrics::new();
        let limits = ServerLimits {
            max_connections: 2 * N,
            ..long_resting_limits(&metrics)
        };
        let (addr, _stop, _task) = server(limits, Duration::ZERO).await;
        let mut clients = Vec::with_capacity(N);
        for _ in 0..N {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(GET).await.unwrap();
            read_responses(&mut client, 1).await;
            clients.push(client);
        }
        rested(&metrics, N as u64).await;
        for client in &mut clients {
            client.write_all(GET).await.unwrap();
        }
        for client in &mut clients {
            let got = read_responses(client, 1).await;
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        }
        // ... and each rests again.
        rested(&metrics, 2 * N as u64).await;
    });
}

#[test]
fn a_connection_at_rest_still_closes_when_idle_and_on_shutdown() {
    run(async {
        let metrics = Metrics::new();
        let (addr, stop, task) = server(resting_limits(&metrics), Duration::ZERO).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(GET).await.unwrap();
        let start = Instant::now();
        let got = read_to_end(&mut idle).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(start.elapsed() >= SHORT, "closed when idle, not at rest");
        let mut resting = at_rest(addr, &metrics).await;
        stop.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(
            read_to_end(&mut resting).await,
            "",
            "closed by the shutdown"
        );
    });
}

#[test]
fn a_connection_at_rest_closes_when_its_server_is_dropped() {
    run(async {
        let metrics = Metrics::new();
        let (addr, _stop, task) = server(resting_limits(&metrics), Duration::ZERO).await;
        let mut resting = at_rest(addr, &metrics).await;
        // A second request is served after the rest, then the server goes.
        resting.write_all(GET).await.unwrap();
        assert!(read_responses(&mut resting, 1).await.contains("ok"));
        rested(&metrics, 2).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let closed = tokio::time::timeout(Duration::from_secs(5), read_to_end(&mut resting));
        assert_eq!(closed.await.expect("closed with its server"), "");
    });
}

#[test]
fn a_head_dribbled_past_the_header_timeout_is_closed() {
    run(async {
        let (addr, _stop, _task) = server(limits(), Duration::ZERO).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut slow).await;
        assert!(!got.contains("200"), "{got}");
        assert!(start.elapsed() >= SHORT, "not before the timeout");
    });
}

#[test]
fn an_idle_keep_alive_connection_is_closed_but_a_slow_response_is_not() {
    run(async {
        let (addr, _stop, _task) = server(limits(), SHORT * 2).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        // the response takes twice the idle timeout: the connection is busy, not idle
        let got = read_to_end(&mut client).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("ok"), "then closed when idle: {got}");
    });
}

#[test]
fn connections_above_the_cap_wait_until_one_closes() {
    run(async {
        let capped = ServerLimits {
            max_connections: 1,
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            ..limits()
        };
        let (addr, _stop, _task) = server(capped, Duration::ZERO).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(GET).await.unwrap();
        let mut buf = [0u8; 256];
        let n = first.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // the second connection is queued, not refused: its answer waits for the first
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(GET).await.unwrap();
        let queued = tokio::time::timeout(SHORT, second.read(&mut buf)).await;
        assert!(queued.is_err(), "served above the cap");
        drop(first);
        let n = second.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    });
}

#[test]
fn too_many_headers_are_431() {
    run(async {
        let (addr, _stop, _task) = server(limits(), Duration::ZERO).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
        for i in 0..150 {
            head.push_str(&format!("x-h{i}: v\r\n"));
        }
        head.push_str("\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        let got = read_to_end(&mut client).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    });
}

#[test]
fn shutdown_closes_half_open_connections_within_its_timeout() {
    run(async {
        let stuck = ServerLimits {
            header_timeout: Duration::from_secs(30),
            shutdown_timeout: SHORT,
            ..limits()
        };
        let (addr, stop, task) = server(stuck, Duration::ZERO).await;
        let mut partial = Vec::new();
        for _ in 0..5 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
            partial.push(c);
        }
        // let the server accept them
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(GET).await.unwrap();
        let mut buf = [0u8; 64];
        let _ = ok.read(&mut buf).await.unwrap();
        let start = Instant::now();
        stop.send(()).unwrap();
        task.await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        for mut c in partial {
            assert_eq!(read_to_end(&mut c).await, "", "closed");
        }
    });
}
