//! The chat binary on several nodes over one real `redis-server`: a node killed
//! without a word (SIGKILL) has its users announced as gone by the others, once,
//! within the documented bound, and their names are free again; a node stopped
//! with SIGTERM announces its users' departures at once; and on both runtimes.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Server, next_text};
use tokio_tungstenite::tungstenite::Message;

/// The bound the README gives for a killed node's users to be announced as gone.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(15);

/// A `redis-server` on a free loopback port, persisting nothing; killed when
/// dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
        Self { child: Self::spawn(port), port }
    }

    /// Kills it and starts it again, empty, on the same port.
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port);
    }

    fn spawn(port: u16) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (tests/run.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Write;
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(redis: &Redis, runtime: &str) -> Server {
    let server = Server::start(
        &["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--runtime", runtime, "--bus", &redis.url()],
        &[("CHINWAG_DRAIN_DELAY", "0")],
        true,
    );
    // Ready once it reached Redis and loaded who is in the chat.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.admin_get("/ready").0 != 200 {
        assert!(Instant::now() < deadline, "the node did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

type Ws = support::Ws;

async fn join(server: &Server, name: &str) -> Ws {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat/{name}", server.addr)).await.expect("connects");
    assert_eq!(next_text(&mut ws).await, format!("Hi {name}! You have successfully connected to the chat"));
    assert_eq!(next_text(&mut ws).await, format!("{name} connected to chat"));
    ws
}

async fn status(server: &Server, name: &str) -> u16 {
    match tokio_tungstenite::connect_async(format!("ws://{}/chat/{name}", server.addr)).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

fn killed_node(runtime: &str) {
    let redis = Redis::start();
    let a = node(&redis, runtime);
    let b = node(&redis, runtime);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::SinkExt;
        let mut ann = join(&a, "ann").await;
        let _bob = join(&b, "bob").await;
        let _cy = join(&b, "cy").await;
        assert_eq!(next_text(&mut ann).await, "bob connected to chat");
        assert_eq!(next_text(&mut ann).await, "cy connected to chat");
        assert_eq!(status(&a, "bob").await, 409);
        // Node B dies without a word.
        b.signal("KILL");
        let killed = Instant::now();
        let mut gone = vec![next_text(&mut ann).await, next_text(&mut ann).await];
        let took = killed.elapsed();
        gone.sort();
        assert_eq!(gone, ["bob left the chat", "cy left the chat"]);
        assert!(took < DEAD_NODE_BOUND, "announced after {took:?}");
        eprintln!("a killed node's users were announced as gone after {took:?}");
        // Once: nothing more comes, and the list is right.
        ann.send(Message::text("/users")).await.unwrap();
        assert_eq!(next_text(&mut ann).await, "online (1): ann");
        // Their names are free again, on the surviving node.
        assert_eq!(status(&a, "bob").await, 101);
    });
}

#[test]
fn tokio_killed_node() {
    killed_node("tokio");
}

#[test]
fn async_std_killed_node() {
    killed_node("async-std");
}

/// SIGTERM: the node's users get 1001, and the others see them leave at once
/// (not when its registration expires).
#[test]
fn stopped_node_announces_its_users_at_once() {
    let redis = Redis::start();
    let a = node(&redis, "tokio");
    let mut b = node(&redis, "tokio");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut ann = join(&a, "ann").await;
        let mut bob = join(&b, "bob").await;
        assert_eq!(next_text(&mut ann).await, "bob connected to chat");
        // Bob's client answers the server's close, as clients do.
        let bob = tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(_)) = bob.next().await {}
        });
        b.signal("TERM");
        let stopped = Instant::now();
        assert_eq!(next_text(&mut ann).await, "bob left the chat");
        assert!(stopped.elapsed() < Duration::from_secs(3), "announced after {:?}", stopped.elapsed());
        let (status, _) = b.wait_exit(stopped, Duration::from_secs(10));
        assert!(status.success());
        bob.await.unwrap();
    });
}

/// A node dies while Redis is away, and Redis comes back empty: nothing in Redis
/// says that node existed, but the survivor still lists its users. They are
/// announced as gone once the node has stayed unregistered past the grace, and
/// no ghost is left.
#[test]
fn a_node_that_dies_while_redis_is_away_is_reaped_after_it_returns() {
    let mut redis = Redis::start();
    let a = node(&redis, "tokio");
    let b = node(&redis, "tokio");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::SinkExt;
        let mut ann = join(&a, "ann").await;
        let _bob = join(&b, "bob").await;
        assert_eq!(next_text(&mut ann).await, "bob connected to chat");
        let _ = redis.child.kill();
        let _ = redis.child.wait();
        b.signal("KILL");
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.restart_empty();
        let back = Instant::now();
        assert_eq!(next_text(&mut ann).await, "bob left the chat");
        let took = back.elapsed();
        assert!(took < DEAD_NODE_BOUND, "announced {took:?} after Redis came back");
        eprintln!("a node that died while Redis was away was reaped {took:?} after Redis came back");
        ann.send(Message::text("/users")).await.unwrap();
        assert_eq!(next_text(&mut ann).await, "online (1): ann");
        // Bob's name is free again once admissions reopen.
        let deadline = Instant::now() + DEAD_NODE_BOUND;
        while status(&a, "bob").await != 101 {
            assert!(Instant::now() < deadline, "bob's name was not freed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// `--history N` bounds what a `chinwag.v1` client gets on joining.
#[test]
fn the_history_flag_bounds_what_v1_clients_get() {
    let server = Server::start(
        &["--addr", "127.0.0.1:0", "--admin-addr", "off", "--history", "2"],
        &[("CHINWAG_DRAIN_DELAY", "0")],
        false,
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut bob = join(&server, "bob").await;
        for n in 0..4 {
            bob.send(Message::text(format!("line {n}"))).await.unwrap();
            assert_eq!(next_text(&mut bob).await, format!("bob: line {n}"));
        }
        let mut request = format!("ws://{}/chat/ann?history=10", server.addr).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "chinwag.v1".parse().unwrap());
        let (mut ann, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "chinwag.v1");
        let mut texts = Vec::new();
        loop {
            let message: serde_json::Value = serde_json::from_str(&next_text(&mut ann).await).unwrap();
            if message["type"] == "members" {
                break;
            }
            if message["type"] == "line" {
                texts.push(message["text"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(
            texts,
            ["bob: line 2", "bob: line 3", "ann connected to chat"],
            "two lines of history, then the join"
        );
    });
}
