//! `--config FILE` as an operator meets it: the file's servers served, a flag beside it
//! winning, SIGHUP and `POST /reload` applying an edited file, an invalid file
//! rejected whole, and the process without a file.

use core::convert::Infallible;
use core::net::SocketAddr;
use core::time::Duration;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_hyper::serve;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

mod support;
use support::{collect_stderr, run, TempFile};

/// A backend answering `name`, until the sender is dropped.
async fn backend(name: &'static str) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let svc = service_fn(move |_req: Request<Incoming>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
    });
    tokio::spawn(serve(listener, svc, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

/// A backend that answers `slow` after `delay`.
async fn slow_backend(delay: Duration) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let svc = service_fn(move |_req: Request<Incoming>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("slow"))))
    });
    tokio::spawn(serve(listener, svc, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

/// The running proxy, its addresses and its stderr so far.
struct Proxy {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roundrobin-proxy"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = collect_stderr(&mut child);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let Some(first) = lines.next_line().await.unwrap() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!("the proxy did not start: {}", stderr.lock().unwrap());
        };
        let listen = first
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        let line = lines.next_line().await.unwrap().unwrap();
        let admin = line.strip_prefix("admin on ").unwrap().parse().unwrap();
        Self {
            child,
            listen,
            admin,
            stderr,
        }
    }

    /// `method path` on the admin listener.
    async fn admin(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.admin.port()));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        send(req.body(Full::default()).unwrap()).await
    }

    /// `(url, original weight)` of every server, in pool order.
    async fn servers(&self, token: Option<&str>) -> Vec<(String, u64)> {
        let (status, body) = self.admin("GET", "/servers", token).await;
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["url"].as_str().unwrap().to_owned(),
                    s["original_weight"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Waits until `GET /servers` lists `want`.
    async fn servers_become(&self, token: Option<&str>, want: &[(&str, u64)]) {
        let want: Vec<(String, u64)> = want.iter().map(|(u, w)| ((*u).to_owned(), *w)).collect();
        let mut got = Vec::new();
        for _ in 0..100 {
            got = self.servers(token).await;
            if got == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "servers are {got:?}, not {want:?}; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    /// The body of `GET /` through the proxy.
    async fn get(&self) -> String {
        let (status, body) = self.get_status().await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `GET /` through the proxy.
    async fn get_status(&self) -> (u16, String) {
        let req = Request::get(format!("http://{}/", self.listen))
            .body(Full::default())
            .unwrap();
        send(req).await
    }

    fn hup(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until stderr holds `needle`.
    async fn stderr_contains(&self, needle: &str) -> String {
        for _ in 0..100 {
            let s = self.stderr.lock().unwrap().clone();
            if s.contains(needle) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "stderr never said {needle:?}:\n{}",
            self.stderr.lock().unwrap()
        );
    }
}

async fn send(req: Request<Full<Bytes>>) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A config file's text: loopback listeners on free ports, `servers`, and `extra`.
fn config(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{extra}\nservers = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn serves_the_files_servers_and_flags_beside_it_win() {
    run(async {
        let (a, _a) = backend("a").await;
        let (b, _b) = backend("b").await;
        let (c, _c) = backend("c").await;
        let file = TempFile::new(
            "config",
            "serves",
            &config(
                &[a.clone(), format!("{b}=2")],
                "default_weight = 3\ntimeout = \"30s\"",
            ),
        );
        let proxy = Proxy::start(&["--config", file.arg()]).await;
        proxy.servers_become(None, &[(&a, 3), (&b, 2)]).await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(proxy.get().await);
        }
        seen.sort();
        assert_eq!(seen, ["a", "a", "a", "b", "b"]);
        drop(proxy);

        // a flag beside the file wins over its key, here and on reload
        let proxy = Proxy::start(&["--config", file.arg(), "--default-weight", "7"]).await;
        proxy.servers_become(None, &[(&a, 7), (&b, 2)]).await;
        proxy
            .stderr_contains("`default_weight` is overridden by its flag")
            .await;
        drop(proxy);
        let proxy = Proxy::start(&["--config", file.arg(), "--backend", &c]).await;
        // the file's default weight applies to the flag's server
        proxy.servers_become(None, &[(&c, 3)]).await;
        assert_eq!(proxy.get().await, "c");
        file.write(&config(
            core::slice::from_ref(&a),
            "timeout = \"30s\"\nretries = 4",
        ));
        let (status, body) = proxy.admin("POST", "/reload", None).await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["overridden"], serde_json::json!(["servers"]));
        assert_eq!(
            report["needs_restart"],
            serde_json::json!(["default_weight", "retries"])
        );
        proxy.servers_become(None, &[(&c, 3)]).await;
    });
}

#[test]
fn sighup_applies_the_edited_servers() {
    run(async {
        let (a, _a) = backend("a").await;
        let (b, _b) = backend("b").await;
        let (c, _c) = backend("c").await;
        let file = TempFile::new(
            "config",
            "sighup",
            &config(&[a.clone(), format!("{b}=2")], ""),
        );
        let proxy = Proxy::start(&["--config", file.arg()]).await;
        proxy.servers_become(None, &[(&a, 1), (&b, 2)]).await;
        // a removed, b reweighted, c added
        file.write(&config(&[format!("{b}=3"), c.clone()], ""));
        proxy.hup();
        proxy.servers_become(None, &[(&b, 3), (&c, 1)]).await;
        let log = proxy.stderr_contains("config: server removed").await;
        assert!(log.contains("config: server added"), "{log}");
        assert!(log.contains("config: server reweighted"), "{log}");
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(proxy.get().await);
        }
        seen.sort();
        assert_eq!(seen, ["b", "b", "b", "c"]);
        // an unchanged file changes nothing; a second SIGHUP works too
        proxy.hup();
        proxy
            .stderr_contains("0 added, 0 removed, 0 reweighted, 2 unchanged")
            .await;
        proxy.servers_become(None, &[(&b, 3), (&c, 1)]).await;
    });
}

#[test]
fn post_reload_applies_the_file_behind_the_token() {
    run(async {
        let (a, _a) = backend("a").await;
        let (b, _b) = backend("b").await;
        let token = TempFile::new("config", "token", "s3cret\n");
        let text = |servers: &[String], extra: &str| {
            config(
                servers,
                &format!("admin_token_file = {:?}\n{extra}", token.arg()),
            )
        };
        let file = TempFile::new("config", "post", &text(core::slice::from_ref(&a), ""));
        let proxy = Proxy::start(&["--config", file.arg()]).await;
        let t = Some("s3cret");
        proxy.servers_become(t, &[(&a, 1)]).await;
        file.write(&text(&[a.clone(), format!("{b}=5")], "workers = 1"));
        assert_eq!(proxy.admin("POST", "/reload", None).await.0, 401);
        assert_eq!(proxy.servers(t).await.len(), 1);
        let (status, body) = proxy.admin("POST", "/reload", t).await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            report["added"],
            serde_json::json!([{"url": b, "weight": 5}])
        );
        assert_eq!(report["unchanged"], 1);
        assert_eq!(report["needs_restart"], serde_json::json!(["workers"]));
        proxy
            .stderr_contains("`workers` changed: it needs a restart")
            .await;
        proxy.servers_become(t, &[(&a, 1), (&b, 5)]).await;
        file.write(&text(&[format!("{b}=1")], "workers = 1"));
        let (status, body) = proxy.admin("POST", "/reload", t).await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["removed"], serde_json::json!([a]));
        assert_eq!(
            report["reweighted"],
            serde_json::json!([{"url": b, "from": 5, "to": 1}])
        );
        proxy.servers_become(t, &[(&b, 1)]).await;
        assert_eq!(proxy.admin("GET", "/reload", t).await.0, 405);
    });
}

#[test]
fn an_invalid_file_is_rejected_whole_and_the_servers_stay() {
    run(async {
        let (a, _a) = backend("a").await;
        let (b, _b) = backend("b").await;
        let file = TempFile::new("config", "invalid", &config(core::slice::from_ref(&a), ""));
        let proxy = Proxy::start(&["--config", file.arg()]).await;
        proxy.servers_become(None, &[(&a, 1)]).await;
        for (extra, servers, needle) in [
            (
                "retrys = 3\nlistn = 1",
                vec![b.clone()],
                "unknown keys `listn`, `retrys`",
            ),
            ("", vec![b.clone(), "ftp://nope".into()], "`servers[1]`"),
            (
                "connect_timeout = \"3 parsecs\"",
                vec![b.clone()],
                "`connect_timeout`",
            ),
            ("servers = 1", vec![b.clone()], "line"),
        ] {
            file.write(&config(&servers, extra));
            let (status, body) = proxy.admin("POST", "/reload", None).await;
            assert_eq!(status, 400, "{body}");
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            let error = error["error"].as_str().unwrap();
            assert!(error.contains(needle), "{error} lacks {needle}");
            assert_eq!(proxy.servers(None).await, [(a.clone(), 1)]);
        }
        proxy.hup();
        proxy
            .stderr_contains("reload rejected, the running configuration is kept")
            .await;
        assert_eq!(proxy.servers(None).await, [(a.clone(), 1)]);
        assert_eq!(proxy.get().await, "a");
    });
}

#[test]
fn a_bad_file_at_start_exits_2_naming_the_key() {
    let file = TempFile::new(
        "config",
        "start",
        "listen = \"127.0.0.1:0\"\nlisten_backlog = 5\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roundrobin-proxy"))
        .args(["--config", file.arg()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `listen_backlog`"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roundrobin-proxy"))
        .args(["--config", "/nonexistent/roundrobin.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn without_a_file_sighup_is_ignored_and_reload_says_so() {
    run(async {
        let (a, _a) = backend("a").await;
        let proxy = Proxy::start(&[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--backend",
            &a,
        ])
        .await;
        let (status, body) = proxy.admin("POST", "/reload", None).await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("no configuration file"), "{body}");
        proxy.hup();
        proxy.stderr_contains("SIGHUP ignored").await;
        assert_eq!(proxy.get().await, "a");
    });
}

#[test]
fn the_files_timeout_applies_and_the_timeout_flag_wins() {
    run(async {
        let (slow, _slow) = slow_backend(Duration::from_millis(800)).await;
        let file = TempFile::new(
            "config",
            "timeout",
            &config(core::slice::from_ref(&slow), "timeout = \"200ms\""),
        );
        let proxy = Proxy::start(&["--config", file.arg()]).await;
        assert_eq!(proxy.get_status().await.0, 504);
        drop(proxy);
        let proxy = Proxy::start(&["--config", file.arg(), "--timeout", "5s"]).await;
        assert_eq!(proxy.get_status().await, (200, "slow".to_owned()));
    });
}
