//! The proxy binary as a process: flags, the lines it prints, the admin API, and a
//! graceful SIGTERM with a request in flight.

use core::convert::Infallible;
use core::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundrobin_hyper::serve;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::{oneshot, Notify};

mod support;
use support::{bin, run, start_proxy};

/// A backend answering `name`; with a gate, it signals `arrived` and waits for `release`.
async fn backend(
    name: &'static str,
    gate: Option<(Arc<Notify>, Arc<Notify>)>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let svc = service_fn(move |_req: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            if let Some((arrived, release)) = gate {
                arrived.notify_one();
                release.notified().await;
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
        }
    });
    tokio::spawn(serve(listener, svc, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn send(method: &str, url: String, body: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["--bogus"][..],
        &["--backend", "nope"],
        &["--backend", "http://a:1=x"],
        &["--policy", "random"],
        &["--timeout", "5"],
        &["--sticky-codec", "rot13"],
        &["--listen", "127.0.0.1:7", "--admin", "127.0.0.1:7"],
        &["--sticky", "s", "--sticky-codec", "aes"],
        &[
            "--sticky",
            "s",
            "--sticky-codec",
            "aes",
            "--sticky-key",
            "00",
        ],
        &["--sticky", "s", "--sticky-key", "zz"],
        &[
            "--sticky",
            "s",
            "--sticky-codec",
            "raw",
            "--sticky-key",
            "00",
        ],
        &["--sticky", "s", "--sticky-ttl", "1s"],
        &["--sticky", "bad name"],
        &["--sticky-salt", "x"],
        &["--rebalance", "--backoff", "soon"],
        &["--backend", "h2://a:1"],
        &["--upstream-ca", "/nonexistent/ca.pem"],
    ] {
        run(async {
            let out = Command::new(bin())
                .args(args)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(!out.stderr.is_empty(), "{args:?}: no message");
        });
    }
}

#[test]
fn proxies_serves_admin_and_shuts_down_gracefully() {
    run(async {
        let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (a, _stop_a) = backend("a", None).await;
        let (slow, _stop_slow) =
            backend("slow", Some((Arc::clone(&arrived), Arc::clone(&release)))).await;
        let a_url = format!("http://{a}");
        let (mut child, listen, admin) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--backend",
            &format!("{a_url}=2"),
            "--timeout",
            "10s",
        ])
        .await;
        let admin = admin.unwrap();
        assert_ne!(listen, admin);

        assert_eq!(
            send("GET", format!("http://{listen}/"), "").await,
            (200, "a".into())
        );
        let (status, body) = send("GET", format!("http://{admin}/servers"), "").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            format!(r#"[{{"url":"{a_url}","weight":2,"original_weight":2,"rating":0.0}}]"#)
        );
        let (status, _) = send(
            "DELETE",
            format!("http://{admin}/servers"),
            &format!(r#"{{"url":"{a_url}"}}"#),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(
            "DELETE",
            format!("http://{admin}/servers"),
            &format!(r#"{{"url":"{a_url}"}}"#),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(
            send("PUT", format!("http://{admin}/servers"), "{").await.0,
            400
        );
        assert_eq!(send("GET", format!("http://{listen}/"), "").await.0, 503);
        let put = format!(r#"{{"url":"http://{slow}"}}"#);
        assert_eq!(
            send("PUT", format!("http://{admin}/servers"), &put).await.0,
            200
        );

        // A request in flight when SIGTERM arrives still gets its answer.
        let in_flight = tokio::spawn(send("GET", format!("http://{listen}/"), ""));
        arrived.notified().await;
        let pid = child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        release.notify_one();
        assert_eq!(in_flight.await.unwrap(), (200, "slow".into()));
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status}");
    });
}

fn curl(url: &str, jar: &std::path::Path) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-c"])
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .arg(url)
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "curl failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_cookie_jar_sticks_to_one_backend() {
    run(async {
        let (a, _stop_a) = backend("a", None).await;
        let (b, _stop_b) = backend("b", None).await;
        let (_child, listen, _) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &format!("http://{a}"),
            "--backend",
            &format!("http://{b}"),
            "--sticky",
            "backend",
        ])
        .await;
        let jar = std::env::temp_dir().join(format!("roundrobin-jar-{}", std::process::id()));
        let url = format!("http://{listen}/");
        let first = tokio::task::spawn_blocking({
            let (url, jar) = (url.clone(), jar.clone());
            move || (curl(&url, &jar), curl(&url, &jar), curl(&url, &jar))
        })
        .await
        .unwrap();
        let _ = std::fs::remove_file(&jar);
        // Round robin alone would answer a, b, a.
        assert_eq!(first, ("a".into(), "a".into(), "a".into()));
    });
}

#[test]
fn rebalance_flag_serves_ratings() {
    run(async {
        let (a, _stop_a) = backend("a", None).await;
        let (_child, listen, admin) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--rebalance",
            "--backoff",
            "500ms",
            "--backend",
            &format!("http://{a}=3"),
            "--policy",
            "smooth",
            "--default-weight",
            "2",
            "--backend",
            "http://127.0.0.1:9",
        ])
        .await;
        assert_eq!(
            send("GET", format!("http://{listen}/"), "").await,
            (200, "a".into())
        );
        let (status, body) = send("GET", format!("http://{}/servers", admin.unwrap()), "").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            format!(
                r#"[{{"url":"http://{a}","weight":3,"original_weight":3,"rating":0.0}},{{"url":"http://127.0.0.1:9","weight":2,"original_weight":2,"rating":0.0}}]"#
            )
        );
    });
}
