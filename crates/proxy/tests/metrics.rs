//! `GET /metrics` on the admin listener: OpenMetrics text with per-server request
//! counters (`roundrobin_server_requests_total{server=URL,code_class=..}`), errors,
//! latency, weights and health, and the proxy's connection counters.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod support;
use support::{get, run, text_backend};

#[test]
fn metrics_count_requests_per_server_and_show_the_pool() {
    run(async {
        let backend = text_backend("b").await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_roundrobin-proxy"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--backend", backend.url().as_str(), "--backend", &dead])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listen = lines.next_line().await.unwrap().unwrap();
        let listen = listen.strip_prefix("listening on ").unwrap().to_owned();
        let admin = lines.next_line().await.unwrap().unwrap();
        let admin = admin.strip_prefix("admin on ").unwrap().to_owned();
        for _ in 0..4 {
            assert!(get(&listen, "/").await.starts_with("HTTP/1.1 200"));
        }
        let metrics = get(&admin, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        let live = backend.url();
        let line =
            format!("roundrobin_server_requests_total{{server=\"{live}\",code_class=\"2xx\"}} 4");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
        // the dead server was tried, failed to connect, and every such try was
        // retried on the live one
        let value = |key: String| -> u64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{key} in {metrics}"))
        };
        let refused = value(format!(
            "roundrobin_server_errors_total{{server=\"{dead}\",kind=\"connect\"}}"
        ));
        assert!(refused > 0, "{metrics}");
        let retried = value(format!(
            "roundrobin_server_retries_total{{server=\"{dead}\"}}"
        ));
        assert_eq!(retried, refused, "{metrics}");
        assert!(
            metrics.contains(&format!(
                "roundrobin_server_weight{{server=\"{live}\"}} 1.0"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains("roundrobin_client_connections_accepted_total{} 4"),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "roundrobin_server_latency_seconds_count{{server=\"{live}\"}} 4"
            )),
            "{metrics}"
        );
        assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    });
}
