//! The proxy's admin listener as an operator meets it: `--admin-token-file`, the
//! refusals at startup (exit 2), the warning without a token, the dashboard at `/`,
//! and the change log on stderr.

use core::net::SocketAddr;
use core::time::Duration;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

mod support;
use support::{bin, collect_stderr, run, TempFile};

/// The running proxy, the admin address it printed, and its stderr so far.
struct Proxy {
    _child: Child,
    admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = collect_stderr(&mut child);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        assert!(first.starts_with("listening on "), "{first}");
        let line = lines.next_line().await.unwrap().unwrap();
        let admin = line.strip_prefix("admin on ").unwrap().parse().unwrap();
        Self {
            _child: child,
            admin,
            stderr,
        }
    }

    /// `method path` on the admin listener, as 127.0.0.1.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let port = self.admin.port();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{port}{path}"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let res = client
            .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        if status == 401 {
            assert!(res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
        }
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until stderr (without colours) holds `needle`.
    async fn stderr_contains(&self, needle: &str) -> String {
        for _ in 0..100 {
            let s = strip_ansi(&self.stderr.lock().unwrap());
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

/// `text` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        rest = rest[at..].find('m').map_or("", |end| &rest[at + end + 1..]);
    }
    out.push_str(rest);
    out
}

#[test]
fn a_token_file_protects_every_admin_request() {
    run(async {
        let token = TempFile::new("admin", "token", "  s3cr3t-token\n");
        let p = Proxy::start(&[
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            token.arg(),
            "--backend",
            "http://127.0.0.1:9=2",
        ])
        .await;
        let good = Some("s3cr3t-token");
        for (method, path, token) in [
            ("GET", "/servers", None),
            ("GET", "/servers", Some("s3cr3t-token2")),
            ("GET", "/servers", Some("S3CR3T-TOKEN")),
            ("GET", "/servers", Some("wrong")),
            ("GET", "/stats", None),
            ("GET", "/", None),
            ("GET", "/?token=wrong", None),
            ("PUT", "/servers", None),
            ("DELETE", "/servers", Some("s3cr3t")),
        ] {
            let body = r#"{"url":"http://127.0.0.1:9"}"#;
            let (status, _) = p.send(method, path, token, body).await;
            assert_eq!(status, 401, "{method} {path} {token:?}");
        }
        let (status, body) = p.send("GET", "/servers", good, "").await;
        assert_eq!(
            (status, body.as_str()),
            (
                200,
                r#"[{"url":"http://127.0.0.1:9","weight":2,"original_weight":2,"rating":0.0}]"#
            )
        );
        let (status, page) = p.send("GET", "/", good, "").await;
        assert_eq!(status, 200);
        assert!(page.contains("<svg"));
        let (status, page) = p.send("GET", "/?token=s3cr3t-token", None, "").await;
        assert_eq!(status, 200);
        assert!(page.contains("roundrobin admin"));
        let (status, _) = p
            .send(
                "PUT",
                "/servers",
                good,
                r#"{"url":"http://127.0.0.1:9","weight":5}"#,
            )
            .await;
        assert_eq!(status, 200);
        let log = p.stderr_contains("admin: server upserted").await;
        let line = log
            .lines()
            .find(|l| l.contains("admin: server upserted"))
            .unwrap();
        assert!(line.contains("client=127.0.0.1:"), "{line}");
        assert!(line.contains("server=http://127.0.0.1:9"), "{line}");
        assert!(
            line.contains("before=weight 2 (configured 2)")
                && line.contains("after=weight 5 (configured 5)"),
            "{line}"
        );
        assert!(
            !log.contains("has no token"),
            "no warning with a token:\n{log}"
        );
        assert!(!log.contains("s3cr3t"), "the token is never logged:\n{log}");
    });
}

#[test]
fn on_loopback_without_a_token_it_works_and_warns() {
    run(async {
        let p = Proxy::start(&["--admin", "127.0.0.1:0"]).await;
        p.stderr_contains("warning: the admin API on 127.0.0.1:")
            .await;
        let (status, body) = p.send("GET", "/servers", None, "").await;
        assert_eq!((status, body.as_str()), (200, "[]"));
        let (status, page) = p.send("GET", "/", None, "").await;
        assert_eq!(status, 200);
        assert!(page.contains("roundrobin admin"));
        let big = format!(r#"{{"url":"http://a:1"{}}}"#, " ".repeat(70 * 1024));
        assert_eq!(p.send("PUT", "/servers", None, &big).await.0, 413);
        let (status, body) = p
            .send("PUT", "/servers", None, r#"{"url":"http://a:99999"}"#)
            .await;
        assert_eq!(status, 400);
        assert!(body.starts_with(r#"{"error":"#), "{body}");
        assert_eq!(p.send("GET", "/servers", None, "").await.1, "[]");
    });
}

#[test]
fn off_loopback_the_token_is_required_and_honoured() {
    run(async {
        let token = TempFile::new("admin", "wide", "tok\n");
        let p = Proxy::start(&["--admin", "0.0.0.0:0", "--admin-token-file", token.arg()]).await;
        assert!(p.admin.ip().is_unspecified());
        assert_eq!(p.send("GET", "/servers", None, "").await.0, 401);
        assert_eq!(p.send("GET", "/servers", Some("tok"), "").await.0, 200);
    });
}

#[test]
fn bad_admin_setups_exit_2_with_a_message() {
    let empty = TempFile::new("admin", "empty", " \n\t\n");
    let spaced = TempFile::new("admin", "spaced", "two words\n");
    let missing = std::env::temp_dir().join("roundrobin-admin-test-no-such-file");
    let token = TempFile::new("admin", "ok", "tok");
    for (args, says) in [
        (vec!["--admin", "0.0.0.0:0"], "--admin-token-file"),
        (vec!["--admin", "[::]:0"], "--admin-token-file"),
        (vec!["--admin", "10.1.2.3:8081"], "loopback"),
        (
            vec!["--admin", "127.0.0.1:0", "--admin-token-file", empty.arg()],
            "empty",
        ),
        (
            vec!["--admin", "127.0.0.1:0", "--admin-token-file", spaced.arg()],
            "one word",
        ),
        (
            vec![
                "--admin",
                "127.0.0.1:0",
                "--admin-token-file",
                missing.to_str().unwrap(),
            ],
            "cannot read",
        ),
        (vec!["--admin-token-file", token.arg()], "--admin"),
        (
            vec!["--listen", "127.0.0.1:7", "--admin", "127.0.0.1:7"],
            "--listen",
        ),
        (
            vec![
                "--listen",
                "0.0.0.0:7",
                "--admin",
                "127.0.0.1:7",
                "--admin-token-file",
                token.arg(),
            ],
            "--listen",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:7",
                "--admin",
                "0.0.0.0:7",
                "--admin-token-file",
                token.arg(),
            ],
            "--listen",
        ),
    ] {
        run(async {
            let mut child = Command::new(bin())
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .await
                .unwrap();
            let status = child.wait().await.unwrap();
            assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(says),
                "{args:?} should say {says:?}: {stderr}"
            );
        });
    }
}
