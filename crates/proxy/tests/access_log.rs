//! `--access-log text|json`: one line per request on stdout, with the client, method,
//! path, server, status, latency and retries.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod support;
use support::{get, run, text_backend};

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        + key.len()
        + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"')
}

#[test]
fn json_access_log_has_one_line_per_request() {
    run(async {
        let backend = text_backend("b").await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_roundrobin-proxy"))
            .args(["--listen", "127.0.0.1:0", "--access-log", "json"])
            .args(["--backend", backend.url().as_str()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        let addr = first.strip_prefix("listening on ").unwrap().to_owned();
        assert!(get(&addr, "/a?x=1").await.starts_with("HTTP/1.1 200"));
        assert!(get(&addr, "foo").await.starts_with("HTTP/1.1 400"));
        let ok = lines.next_line().await.unwrap().unwrap();
        assert_eq!(field(&ok, "method"), "GET", "{ok}");
        assert_eq!(field(&ok, "path"), "/a?x=1", "{ok}");
        assert_eq!(field(&ok, "server"), backend.url().as_str(), "{ok}");
        assert_eq!(field(&ok, "status"), "200", "{ok}");
        assert_eq!(field(&ok, "retries"), "0", "{ok}");
        assert!(field(&ok, "client").starts_with("127.0.0.1:"), "{ok}");
        assert!(field(&ok, "latency_ms").parse::<f64>().unwrap() >= 0.0);
        let refused = lines.next_line().await.unwrap().unwrap();
        assert_eq!(field(&refused, "status"), "400", "{refused}");
        assert_eq!(field(&refused, "server"), "-", "{refused}");
    });
}
