//! The admin API over a socket on 127.0.0.1: token, `Host` check, body cap, bad input,
//! the dashboard and `/stats`. Raw HTTP/1.1, so every header is the test's own.

#![cfg(feature = "admin")]

use core::time::Duration;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::Service;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{spawn_on, Admin, Serving, ADMIN_MAX_BODY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Pool = RoundRobin<ServerUrl>;

/// One answer: status, headers (lowercase names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` on a
/// fresh connection and reads the answer to the end.
async fn raw(server: &Serving, head: &str, body: &[u8]) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut conn = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut request = format!("{head}\r\nConnection: close\r\n\r\n").into_bytes();
        request.extend_from_slice(body);
        conn.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    })
    .await
    .expect("the admin API answers within 10 s")
}

/// `METHOD PATH` with a `Host` naming the server, extra headers and a JSON body.
async fn send(server: &Serving, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}",
        server.local_addr(),
        body.len()
    );
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    raw(server, &head, body.as_bytes()).await
}

fn new_pool(servers: &[(&str, u32)]) -> Arc<Pool> {
    let pool = Arc::new(RoundRobin::new());
    for (url, weight) in servers {
        pool.upsert_server(ServerUrl::parse(url).unwrap(), Some(*weight))
            .unwrap();
    }
    pool
}

fn weights(pool: &Pool) -> Vec<(String, u32)> {
    pool.servers()
        .into_iter()
        .map(|s| {
            let w = pool.server_weight(&s).unwrap();
            (s.to_string(), w)
        })
        .collect()
}

#[tokio::test]
async fn a_token_is_needed_on_every_request() {
    let pool = new_pool(&[("http://10.0.0.1:80", 1)]);
    let admin = Admin::new(Arc::clone(&pool)).token("t0ken-é");
    assert!(admin.has_token());
    assert!(!format!("{admin:?}").contains("t0ken"), "Debug hides it");
    let server = spawn_on("127.0.0.1:0", admin).await.unwrap();
    let bearer = "Authorization: Bearer t0ken-é";

    for (path, headers) in [
        ("/servers", &[][..]),
        ("/servers", &["Authorization: Bearer t0ken"][..]),
        ("/servers", &["Authorization: Bearer t0ken-é2"][..]),
        ("/servers", &["Authorization: Basic dDBrZW4="][..]),
        ("/servers", &["Authorization: Bearer "][..]),
        ("/servers?token=t0ken-%C3%A9", &[][..]),
        ("/stats", &[][..]),
        ("/nope", &[][..]),
    ] {
        let answer = send(&server, "GET", path, headers, "").await;
        assert_eq!(answer.status, 401, "{path} {headers:?}");
        assert!(answer
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        assert!(answer.body.contains("error"), "{answer:?}");
    }
    let answer = send(&server, "GET", "/servers", &[bearer], "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = send(
        &server,
        "GET",
        "/servers",
        &["authorization: bearer  t0ken-é "],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "scheme is case-insensitive: {answer:?}");

    // A change without the token changes nothing.
    let put = r#"{"url":"http://10.0.0.1:80","weight":5}"#;
    assert_eq!(send(&server, "PUT", "/servers", &[], put).await.status, 401);
    assert_eq!(weights(&pool), [("http://10.0.0.1:80".into(), 1)]);
    assert_eq!(
        send(&server, "PUT", "/servers", &[bearer], put)
            .await
            .status,
        200
    );
    assert_eq!(weights(&pool), [("http://10.0.0.1:80".into(), 5)]);

    // The dashboard: 401 with a form without the token; the page with it, as a header
    // or (only here) a query parameter.
    let login = send(&server, "GET", "/", &[], "").await;
    assert_eq!(login.status, 401);
    assert!(login
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(login.body.contains("<form"), "{login:?}");
    let wrong = send(&server, "GET", "/?token=nope", &[], "").await;
    assert_eq!(wrong.status, 401);
    for (path, headers) in [("/", &[bearer][..]), ("/?token=t0ken-%C3%A9", &[][..])] {
        let page = send(&server, "GET", path, headers, "").await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("roundrobin admin"));
    }

    // With a token, any Host will do.
    let head = "GET /servers HTTP/1.1\r\nHost: admin.example:443\r\nAuthorization: Bearer t0ken-é";
    assert_eq!(raw(&server, head, b"").await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_token_only_loopback_hosts_are_answered() {
    let server = spawn_on("127.0.0.1:0", Admin::new(new_pool(&[])))
        .await
        .unwrap();
    let port = server.local_addr().port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let head = format!("GET /servers HTTP/1.1\r\nHost: {host}");
        assert_eq!(raw(&server, &head, b"").await.status, 200, "{host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "10.0.0.1".to_owned(),
        "localhost.evil.example".to_owned(),
    ] {
        for path in ["/servers", "/"] {
            let head = format!("GET {path} HTTP/1.1\r\nHost: {host}");
            let answer = raw(&server, &head, b"").await;
            assert_eq!(answer.status, 421, "{host}");
            assert!(answer.body.contains("DNS-rebinding"), "{answer:?}");
        }
    }
    let head = "PUT /servers HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 24";
    let answer = raw(&server, head, br#"{"url":"http://a:1"}    "#).await;
    assert_eq!(answer.status, 421);
    let head = "GET /servers HTTP/1.1\r\nHost: a b";
    assert_eq!(raw(&server, head, b"").await.status, 400);
    server.shutdown().await;

    // Allowed hosts replace the default.
    let admin = Admin::new(new_pool(&[])).allowed_hosts(["Admin.Internal"]);
    let server = spawn_on("127.0.0.1:0", admin).await.unwrap();
    let head = "GET /servers HTTP/1.1\r\nHost: admin.internal:8081";
    assert_eq!(raw(&server, head, b"").await.status, 200);
    let head = "GET /servers HTTP/1.1\r\nHost: localhost";
    assert_eq!(raw(&server, head, b"").await.status, 421);
    server.shutdown().await;

    let server = spawn_on("127.0.0.1:0", Admin::new(new_pool(&[])).any_host())
        .await
        .unwrap();
    let head = "GET /servers HTTP/1.1\r\nHost: anything.example";
    assert_eq!(raw(&server, head, b"").await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_cap_are_413() {
    let pool = new_pool(&[]);
    let server = spawn_on("127.0.0.1:0", Admin::new(Arc::clone(&pool)))
        .await
        .unwrap();
    let port = server.local_addr().port();
    // Announced: answered from the header alone.
    let head = format!(
        "PUT /servers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}",
        ADMIN_MAX_BODY + 1
    );
    assert_eq!(raw(&server, &head, b"").await.status, 413);
    // Chunked: counted while read.
    let chunk = vec![b' '; 8 * 1024];
    let mut body = Vec::new();
    for _ in 0..9 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head =
        format!("PUT /servers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked");
    let answer = raw(&server, &head, &body).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.body.contains("65536"), "{answer:?}");
    server.shutdown().await;

    // In process, without a length: the same.
    let admin = Admin::new(Arc::clone(&pool));
    let big = format!(
        r#"{{"url":"http://a:1","weight":1{}}}"#,
        " ".repeat(ADMIN_MAX_BODY)
    );
    let req = http::Request::put("/servers")
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    assert_eq!(admin.call(req).await.unwrap().status(), 413);
    assert!(pool.servers().is_empty());
}

#[tokio::test]
async fn bad_input_is_400_with_a_json_error_and_changes_nothing() {
    let pool = new_pool(&[("http://10.0.0.1:80", 3)]);
    let server = spawn_on("127.0.0.1:0", Admin::new(Arc::clone(&pool)))
        .await
        .unwrap();
    for body in [
        "{",
        r#"{"url":"http://10.0.0.1:80","weight":2,"why":"unknown field"}"#,
        r#"{"url":"http://10.0.0.1:80","weight":1000001}"#,
        r#"{"url":"http://10.0.0.1:80","weight":-1}"#,
        r#"{"url":"http://[::1","weight":2}"#,
        r#"{"url":"http://a:99999","weight":2}"#,
        r#"{"url":"http://a:-1","weight":2}"#,
        r#"{"url":"http://a:abc","weight":2}"#,
        r#"{"url":"ftp://x","weight":2}"#,
        r#"{"url":"gopher://x","weight":2}"#,
    ] {
        let answer = send(&server, "PUT", "/servers", &[], body).await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert!(
            json["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
    assert_eq!(weights(&pool), [("http://10.0.0.1:80".into(), 3)]);
    let answer = send(
        &server,
        "PUT",
        "/servers",
        &[],
        r#"{"url":"http://a:99999"}"#,
    )
    .await;
    assert!(answer.body.contains("port"), "{answer:?}");
    let answer = send(&server, "PUT", "/servers", &[], r#"{"url":"ftp://x"}"#).await;
    assert!(answer.body.contains("scheme"), "{answer:?}");

    let answer = send(&server, "POST", "/servers", &[], "").await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("GET, PUT, DELETE"));
    assert_eq!(send(&server, "DELETE", "/", &[], "").await.status, 405);
    assert_eq!(send(&server, "GET", "/nope", &[], "").await.status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn dashboard_page_and_stats() {
    let pool = new_pool(&[("http://10.0.0.1:80", 1), ("http://10.0.0.2:80", 3)]);
    let server = spawn_on("127.0.0.1:0", Admin::new(Arc::clone(&pool)))
        .await
        .unwrap();
    let page = send(&server, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(page.body.contains("<svg") && page.body.contains("fetch(\"stats\""));

    let stats = send(&server, "GET", "/stats", &[], "").await;
    assert_eq!(stats.status, 200);
    let json: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(json["total_weight"], 4);
    let servers = json["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[1]["url"], "http://10.0.0.2:80");
    assert_eq!(servers[1]["weight"], 3);
    assert_eq!(servers[1]["original_weight"], 3);
    assert_eq!(servers[1]["ready"], true);
    assert_eq!(servers[1]["share"], 0.75);

    // `GET /servers` keeps its format.
    let list = send(&server, "GET", "/servers", &[], "").await;
    assert_eq!(
        list.body,
        r#"[{"url":"http://10.0.0.1:80","weight":1,"original_weight":1,"rating":0.0},{"url":"http://10.0.0.2:80","weight":3,"original_weight":3,"rating":0.0}]"#
    );
    server.shutdown().await;

    // An empty pool: shares of nothing are 0, not NaN.
    let admin = Admin::new(new_pool(&[("http://10.0.0.1:80", 0)]));
    let req = http::Request::get("/stats")
        .body(Full::<Bytes>::default())
        .unwrap();
    let body = admin.call(req).await.unwrap().into_body().collect().await;
    let json: serde_json::Value = serde_json::from_slice(&body.unwrap().to_bytes()).unwrap();
    assert_eq!(json["servers"][0]["share"], 0.0);
}
