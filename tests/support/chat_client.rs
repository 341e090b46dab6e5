//! A chat client for the tests, on any runtime: join, read the next lines, and
//! check that nothing else was waiting.

use chinwag_core::{Config, Message};
use chinwag_driver::{Runtime, WebSocket, connect, parse_url};
use std::net::SocketAddr;
use std::time::Duration;

use crate::timeout;

/// How long a line may take to arrive.
pub const LINE_LIMIT: Duration = Duration::from_secs(10);

/// A WebSocket client on runtime `C`.
pub type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

/// Connects to `path` on the server at `addr` (panics if refused).
pub async fn join<C: Runtime>(addr: SocketAddr, path: &str) -> Client<C> {
    connect::<C>(&parse_url(&format!("ws://{addr}{path}")).unwrap(), Config::default()).await.unwrap()
}

/// The next text message; panics on anything else or after [`LINE_LIMIT`].
pub async fn next<C: Runtime>(ws: &mut Client<C>) -> String {
    match timeout::<C, _>(LINE_LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => t.to_string(),
        other => panic!("expected a line, got {other:?}"),
    }
}

/// The next `n` text messages.
pub async fn lines<C: Runtime>(ws: &mut Client<C>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next::<C>(ws).await);
    }
    out
}

/// Asserts that no line is waiting for `ws`: sends `command`, which the server
/// answers to the sender alone, and expects `answer` as the very next line. A line
/// the server had queued for `ws` before it handled the command would come first.
pub async fn nothing_before<C: Runtime>(ws: &mut Client<C>, command: &str, answer: &str) {
    ws.send(&Message::text(command)).await.unwrap();
    assert_eq!(next::<C>(ws).await, answer, "the next line after {command}");
}
