//! The listener: header-read timeout, graceful shutdown that drains streams.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::decode::decode;
use crate::helpers::spawn_app_with;

/// A client that never finishes its request head is disconnected, while others are served.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = spawn_app_with("[server]\nheader_read_timeout_secs = 1").await;
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // Meanwhile a normal request is served.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    let read = read.expect("the server must close the connection, not wait forever");
    // Closed: a reset, or EOF after at most a 408 head. Nothing else was sent.
    if read.is_ok() {
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
}

/// SIGTERM-style shutdown lets a stream in flight finish, and stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_streams_in_flight() {
    let mut app = spawn_app_with("").await;
    let text = "One sentence. ".repeat(60);
    let response = app
        .speech(
            json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    app.stop();
    let bytes = response.bytes().await.expect("the stream completes");
    decode("wav", &bytes).assert_speech(20.0, 120.0);
    let server = app.server.take().expect("server");
    server.await.expect("join").expect("clean exit");
    assert!(
        TcpStream::connect(app.addr).await.is_err(),
        "no longer accepting"
    );
}
