//! What the proxy's process tests share: the binary, a bounded runtime, temporary
//! files and a raw HTTP/1.1 GET.

#![allow(dead_code)] // each test file takes a part

use core::time::Duration;
use std::path::PathBuf;

use core::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The proxy binary, built by cargo for the tests.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roundrobin-proxy"))
}

/// Runs `f` on a fresh 2-thread runtime, failing if it takes longer than 30 s.
pub(crate) fn run<F: core::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .expect("test timed out");
        });
}

/// A backend on 127.0.0.1 answering every request with `body`; stopped when dropped.
pub(crate) async fn text_backend(body: &'static str) -> roundrobin_hyper::Serving {
    let answer = hyper::service::service_fn(
        move |_req: http::Request<hyper::body::Incoming>| async move {
            Ok::<_, core::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(body),
            )))
        },
    );
    roundrobin_hyper::spawn_on("127.0.0.1:0", answer)
        .await
        .unwrap()
}

/// Collects `child`'s stderr (started with it piped), line by line, into a string the
/// test reads its logs from.
pub(crate) fn collect_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = std::sync::Arc::clone(&stderr);
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    stderr
}

/// A file in the temporary directory holding `content`, removed when dropped.
pub(crate) struct TempFile(PathBuf);

impl TempFile {
    /// `prefix` names the test file, `name` the file within it.
    pub(crate) fn new(prefix: &str, name: &str, content: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "roundrobin-{prefix}-test-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, content).unwrap();
        Self(path)
    }

    pub(crate) fn write(&self, content: &str) {
        std::fs::write(&self.0, content).unwrap();
    }

    pub(crate) fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `GET path` to `addr` on a fresh connection (`Host` = `addr`, then closed): the
/// whole answer, head and body, as text.
pub(crate) async fn get(addr: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

/// Starts the proxy with `args` and returns it with the addresses it printed
/// (`admin on` only when `args` has `--admin`).
pub(crate) async fn start_proxy(args: &[&str]) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let listen = first
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let admin = if args.contains(&"--admin") {
        let line = lines.next_line().await.unwrap().unwrap();
        Some(line.strip_prefix("admin on ").unwrap().parse().unwrap())
    } else {
        None
    };
    (child, listen, admin)
}
