//! The binary on several threads (`--threads`, one per core by default on
//! tokio): each thread has a runtime and a listener of its own, connections are
//! spread over them, a chat line reaches clients on every thread, and a shutdown
//! reaches them all.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{Server, next_text};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 24;

/// Each thread of the process by name, with the nanoseconds it has run so far
/// (`/proc/PID/task/TID/schedstat`, exact where `stat`'s ticks are 10 ms).
fn threads(pid: u32) -> HashMap<String, u64> {
    let mut threads = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_owned();
        let ran = std::fs::read_to_string(path.join("schedstat"))
            .unwrap_or_default()
            .split(' ')
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0);
        threads.insert(name, ran);
    }
    threads
}

#[test]
fn tokio_chat_on_three_threads() {
    let mut server = Server::start(
        &["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--runtime", "tokio", "--threads", "3"],
        &[],
        true,
    );
    assert!(
        server.log.lock().unwrap().iter().any(|line| line.contains("threads=3")),
        "the start line says how many threads serve"
    );
    let pid = server.child.id();
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut clients = rt.block_on(async {
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let (mut ws, _) =
                tokio_tungstenite::connect_async(format!("ws://{addr}/chat/user{i}")).await.expect("connects");
            assert_eq!(next_text(&mut ws).await, format!("Hi user{i}! You have successfully connected to the chat"));
            clients.push(ws);
        }
        // Every join line reached every client already in the chat.
        for (i, ws) in clients.iter_mut().enumerate() {
            for j in i..CLIENTS {
                assert_eq!(next_text(ws).await, format!("user{j} connected to chat"));
            }
        }
        clients
    });
    assert_eq!(server.metric("chinwag_connections"), CLIENTS as f64);
    // The worker threads start before any connection is served.
    let names = threads(pid);
    for worker in ["chinwag-1", "chinwag-2"] {
        assert!(names.contains_key(worker), "no thread {worker} in {names:?}");
    }
    // A line from each client reaches every client, whichever thread holds it;
    // every thread works for its own clients meanwhile.
    let before = threads(pid);
    rt.block_on(async {
        for i in 0..CLIENTS {
            clients[i].send(Message::text(format!("line {i}"))).await.unwrap();
            for ws in &mut clients {
                assert_eq!(next_text(ws).await, format!("user{i}: line {i}"));
            }
        }
    });
    let after = threads(pid);
    for thread in ["chinwag", "chinwag-1", "chinwag-2"] {
        assert!(
            after[thread] > before[thread],
            "thread {thread} did no work while its share of the clients chatted: {before:?} -> {after:?}"
        );
    }
    // A shutdown reaches every client on every thread.
    let signalled = Instant::now();
    server.signal("TERM");
    let closes = rt.block_on(async {
        let mut closes = Vec::new();
        for mut ws in clients {
            let code = loop {
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a close in time") {
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    other => panic!("expected a close, got {other:?}"),
                }
            };
            let _ = ws.flush().await;
            closes.push(code);
        }
        closes
    });
    assert!(closes.iter().all(|code| *code == Some(1001)), "{closes:?}");
    let (status, _) = server.wait_exit(signalled, Duration::from_secs(6));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn zero_threads_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chinwag"))
        .args(["--threads", "0", "--addr", "127.0.0.1:0", "--admin-addr", "off"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--threads"), "{stderr}");
}
