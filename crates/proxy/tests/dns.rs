//! A backend given by DNS name: the proxy resolves it through `--resolver` (a minimal
//! UDP DNS server run by the test on 127.0.0.1) and follows its records every
//! `--dns-refresh`.

use core::convert::Infallible;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_hyper::serve;
use tokio::net::{TcpListener, UdpSocket};
use tokio::process::Child;

mod support;

type Records = Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>;

/// A DNS server on 127.0.0.1 answering `A` queries from `records` (TTL 300; absent
/// names are NXDOMAIN, other types NOERROR without records).
async fn dns_server(records: Records) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let records = records.lock().unwrap().clone();
            if let Some(reply) = answer(&buf[..n], &records) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

fn answer(query: &[u8], records: &HashMap<String, Vec<Ipv4Addr>>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let (rcode, ips) = match records.get(&labels.join(".")) {
        None => (3, vec![]),
        Some(ips) if qtype == 1 => (0, ips.clone()),
        Some(_) => (0, vec![]),
    };
    let mut reply = query[..2].to_vec();
    reply.extend_from_slice(&[0x80 | (query[2] & 0x79), 0x80 | rcode, 0, 1]);
    reply.extend_from_slice(&u16::try_from(ips.len()).unwrap().to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..i + 4]);
    for ip in ips {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// A backend on `ip:port` answering its own address.
async fn backend(ip: Ipv4Addr, port: u16) -> SocketAddr {
    let listener = TcpListener::bind((ip, port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = service_fn(move |_req: Request<Incoming>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(ip.to_string()))))
    });
    tokio::spawn(serve(listener, svc, core::future::pending::<()>()));
    addr
}

/// Two backends on 127.0.0.2 and 127.0.0.3 with the same port.
async fn two_backends() -> u16 {
    for _ in 0..20 {
        let first = backend(Ipv4Addr::new(127, 0, 0, 2), 0).await;
        if TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), first.port()))
            .await
            .is_ok()
        {
            backend(Ipv4Addr::new(127, 0, 0, 3), first.port()).await;
            return first.port();
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

async fn start_proxy(args: &[&str]) -> (Child, SocketAddr) {
    let (child, listen, _admin) = support::start_proxy(args).await;
    (child, listen)
}

/// Which backends answer `n` requests through the proxy (`status N` for an error).
async fn answered_by(proxy: SocketAddr, n: usize) -> BTreeSet<String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let res = client
            .get(format!("http://{proxy}/").parse().unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        seen.insert(if status == 200 {
            String::from_utf8(body.to_vec()).unwrap()
        } else {
            format!("status {status}")
        });
    }
    seen
}

fn set(seen: &[&str]) -> BTreeSet<String> {
    seen.iter().map(|s| (*s).to_owned()).collect()
}

/// Polls until the backends answering 8 requests are `want`, for at most 10 s.
async fn eventually(proxy: SocketAddr, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = answered_by(proxy, 8).await;
        if seen == set(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "answered by {seen:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_backend_is_resolved_and_followed() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let port = two_backends().await;
        let records: Records = Arc::default();
        records
            .lock()
            .unwrap()
            .insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 2)]);
        let dns = dns_server(Arc::clone(&records)).await;
        let (_proxy, listen) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &format!("http://svc.test:{port}"),
            "--resolver",
            &dns.to_string(),
            "--dns-refresh",
            "200ms",
        ])
        .await;
        // resolved before serving: the first requests already reach it
        assert_eq!(answered_by(listen, 4).await, set(&["127.0.0.2"]));
        // a second address
        records.lock().unwrap().insert(
            "svc.test".into(),
            vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
        );
        eventually(listen, &["127.0.0.2", "127.0.0.3"]).await;
        // the name gone: the last good set stays
        records.lock().unwrap().remove("svc.test");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            answered_by(listen, 8).await,
            set(&["127.0.0.2", "127.0.0.3"])
        );
        // back with only the second address
        records
            .lock()
            .unwrap()
            .insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        eventually(listen, &["127.0.0.3"]).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_backends_stay_beside_named_ones() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let port = two_backends().await;
        let records: Records = Arc::default();
        records
            .lock()
            .unwrap()
            .insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        let dns = dns_server(Arc::clone(&records)).await;
        let (_proxy, listen) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &format!("http://127.0.0.2:{port}"),
            "--backend",
            &format!("http://svc.test:{port}"),
            "--resolver",
            &dns.to_string(),
            "--dns-refresh",
            "200ms",
        ])
        .await;
        assert_eq!(
            answered_by(listen, 4).await,
            set(&["127.0.0.2", "127.0.0.3"])
        );
        // the name now resolves to the static backend's address only: it stays, the
        // discovered one goes
        records
            .lock()
            .unwrap()
            .insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 2)]);
        eventually(listen, &["127.0.0.2"]).await;
        // and the name's removal does not take the static backend away
        records
            .lock()
            .unwrap()
            .insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        eventually(listen, &["127.0.0.2", "127.0.0.3"]).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_start_is_tried_again() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let port = two_backends().await;
        let records: Records = Arc::default();
        let dns = dns_server(Arc::clone(&records)).await;
        let (_proxy, listen) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &format!("http://svc.test:{port}"),
            "--resolver",
            &dns.to_string(),
            "--dns-refresh",
            "200ms",
        ])
        .await;
        // NXDOMAIN: the proxy serves anyway, with no backend yet
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let res = client
            .get(format!("http://{listen}/").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        records
            .lock()
            .unwrap()
            .insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        eventually(listen, &["127.0.0.3"]).await;
    })
    .await
    .expect("test timed out");
}
