//! WebSocket through the proxy binary, with no flag: an echo through a tunnel, and
//! SIGTERM draining the open tunnel within `--shutdown-timeout`.

mod support;

use core::time::Duration;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use support::{run, start_proxy};

/// A WebSocket echo server on 127.0.0.1; stops with the test's runtime.
async fn echo_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

const SOON: Duration = Duration::from_secs(5);

#[test]
fn websocket_echo_through_the_binary_and_sigterm_drains_the_tunnel() {
    run(async {
        let backend = echo_backend().await;
        let (mut child, listen, _) = start_proxy(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &backend,
            "--workers",
            "1",
            "--shutdown-timeout",
            "1s",
        ])
        .await;
        let (mut ws, response) = tokio::time::timeout(
            SOON,
            tokio_tungstenite::connect_async(format!("ws://{listen}/")),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.status(), 101);
        for message in [Message::text("hello"), Message::binary(vec![1u8; 70_000])] {
            ws.send(message.clone()).await.unwrap();
            let back = tokio::time::timeout(SOON, ws.next()).await.unwrap();
            assert_eq!(back.unwrap().unwrap(), message);
        }

        // SIGTERM: the tunnel goes on until the shutdown timeout, then it is closed
        // and the process exits.
        let pid = child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let signalled = Instant::now();
        ws.send(Message::text("draining")).await.unwrap();
        let back = tokio::time::timeout(SOON, ws.next()).await.unwrap();
        assert_eq!(back.unwrap().unwrap(), Message::text("draining"));
        let next = tokio::time::timeout(SOON, ws.next())
            .await
            .expect("the tunnel outlives the shutdown timeout");
        assert!(
            matches!(next, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{next:?}"
        );
        let status = tokio::time::timeout(SOON, child.wait())
            .await
            .expect("the proxy does not exit")
            .unwrap();
        assert!(status.success(), "{status}");
        let took = signalled.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(4),
            "{took:?}"
        );
    });
}
