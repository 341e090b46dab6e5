//! The chat on several nodes over one real `redis-server` (started on a free
//! loopback port), on every runtime: clients spread round-robin over two or
//! three nodes see the guide's exact lines, one order for everyone, names
//! unique across nodes (409 anywhere, the page's pre-check included), rooms and
//! direct messages across nodes, `/users` listing the whole cluster, and a Redis
//! restart (lines refused with an `error:` line while it is away, delivery
//! resuming, no ghosts).

use chinwag_core::{CloseCode, Config, HandshakeError, Message};
use chinwag_driver::{Error, Runtime, connect, parse_url};
use chinwag_tests::chat_client::{Client, join, lines, next, nothing_before};
use chinwag_tests::processes::RedisServer;
use chinwag_tests::{raw_exchange, start_chat_node};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = chinwag_tests::chat_client::LINE_LIMIT;

/// A Redis and `n` chat nodes on it, on runtime `S`.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<SocketAddr>,
    handles: Vec<std::sync::Arc<chinwag::cluster::Cluster>>,
}

impl Cluster {
    fn start<S: Runtime>(n: usize) -> Self {
        let redis = RedisServer::start();
        let (mut nodes, mut handles) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (addr, _, cluster) = start_chat_node::<S>(&redis.url());
            nodes.push(addr);
            handles.push(cluster);
        }
        Self { redis, nodes, handles }
    }

    /// Waits until every node says it is ready (or not).
    async fn wait_ready<C: Runtime>(&self, ready: bool) {
        let deadline = Instant::now() + LIMIT;
        while self.handles.iter().any(|node| node.readiness().ready != ready) {
            assert!(Instant::now() < deadline, "nodes not ready={ready} in time");
            C::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node the `i`th client uses: round-robin.
    fn node(&self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()]
    }
}

/// The status a WebSocket handshake at `path` gets (101 if it opens).
async fn status<C: Runtime>(addr: SocketAddr, path: &str) -> u16 {
    match connect::<C>(&parse_url(&format!("ws://{addr}{path}")).unwrap(), Config::default()).await {
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(s))) => s,
        Ok(mut ws) => {
            let _ = ws.close(CloseCode::NORMAL, "").await;
            101
        }
        Err(e) => panic!("{e}"),
    }
}

async fn guide_scenario_on_three_nodes<S: Runtime, C: Runtime>() {
    let cluster = Cluster::start::<S>(3);
    let mut alice = join::<C>(cluster.node(0), "/chat/Alice?age=20").await;
    assert_eq!(
        lines::<C>(&mut alice, 2).await,
        ["Hi Alice! You have successfully connected to the chat", "Alice with age 20 connected to chat"]
    );
    let mut bob = join::<C>(cluster.node(1), "/chat/Bob").await;
    assert_eq!(
        lines::<C>(&mut bob, 2).await,
        ["Hi Bob! You have successfully connected to the chat", "Bob connected to chat"]
    );
    assert_eq!(next::<C>(&mut alice).await, "Bob connected to chat");
    let mut carol = join::<C>(cluster.node(2), "/chat/Carol%20C?age=31").await;
    assert_eq!(
        lines::<C>(&mut carol, 2).await,
        ["Hi Carol C! You have successfully connected to the chat", "Carol C with age 31 connected to chat"]
    );
    for ws in [&mut alice, &mut bob] {
        assert_eq!(next::<C>(ws).await, "Carol C with age 31 connected to chat");
    }
    bob.send(&Message::text("hello <b>all</b>")).await.unwrap();
    for ws in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next::<C>(ws).await, "Bob: hello <b>all</b>");
    }
    nothing_before::<C>(&mut carol, "/users", "online (3): Alice, Bob, Carol C").await;
    bob.close(CloseCode::NORMAL, "").await.unwrap();
    for ws in [&mut alice, &mut carol] {
        assert_eq!(next::<C>(ws).await, "Bob left the chat");
    }
    nothing_before::<C>(&mut alice, "/users", "online (2): Alice, Carol C").await;
}

/// Everyone talks at once, on three nodes: every client sees every line once,
/// and all in one order.
async fn one_order_for_everyone<S: Runtime, C: Runtime>() {
    const LINES: usize = 20;
    let cluster = Cluster::start::<S>(3);
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut ws = join::<C>(cluster.node(i), &format!("/chat/u{i}")).await;
        // Its own greeting and join line, then the joins of those after it.
        lines::<C>(&mut ws, 2).await;
        clients.push(ws);
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        lines::<C>(ws, 5 - i).await;
    }
    // Each sends its lines without waiting for anything.
    for (i, ws) in clients.iter_mut().enumerate() {
        for n in 0..LINES {
            ws.send(&Message::text(format!("{i}.{n}"))).await.unwrap();
        }
    }
    let mut seen = Vec::new();
    for ws in &mut clients {
        seen.push(lines::<C>(ws, 6 * LINES).await);
    }
    for (i, transcript) in seen.iter().enumerate() {
        assert_eq!(transcript, &seen[0], "client {i} saw another order");
    }
    // Each sender's lines in the order it sent them, each once.
    for i in 0..6 {
        let mine: Vec<&String> = seen[0].iter().filter(|l| l.starts_with(&format!("u{i}: "))).collect();
        let sent: Vec<String> = (0..LINES).map(|n| format!("u{i}: {i}.{n}")).collect();
        assert_eq!(mine, sent.iter().collect::<Vec<_>>());
    }
}

async fn names_are_unique_across_nodes<S: Runtime, C: Runtime>() {
    let cluster = Cluster::start::<S>(2);
    let mut alice = join::<C>(cluster.node(0), "/chat/Alice").await;
    lines::<C>(&mut alice, 2).await;
    assert_eq!(status::<C>(cluster.node(1), "/chat/Alice").await, 409, "held on the other node");
    assert_eq!(status::<C>(cluster.node(0), "/chat/Alic%65").await, 409, "held on this node");
    assert_eq!(status::<C>(cluster.node(1), "/chat/Alice%20").await, 400, "the rules still come first");
    // The page's pre-check answers the same, on either node.
    let request = format!("GET /chat/Alice HTTP/1.1\r\nHost: {}\r\n\r\n", cluster.node(1));
    let answer = raw_exchange::<C>(cluster.node(1), request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("Alice is already in the chat"), "{answer}");
    let request = format!("GET /chat/Bob HTTP/1.1\r\nHost: {}\r\n\r\n", cluster.node(1));
    assert!(raw_exchange::<C>(cluster.node(1), request.as_bytes()).await.starts_with("HTTP/1.1 200"));
    // Two clients racing for one name on two nodes: exactly one gets it (each
    // keeps its connection until both have their answer).
    let attempt = |addr: SocketAddr| async move {
        match connect::<C>(&parse_url(&format!("ws://{addr}/chat/Zed")).unwrap(), Config::default()).await {
            Err(Error::Handshake(HandshakeError::UnexpectedStatus(s))) => (s, None),
            Ok(ws) => (101, Some(ws)),
            Err(e) => panic!("{e}"),
        }
    };
    let ((a, _held_a), (b, _held_b)) =
        futures_util::future::join(attempt(cluster.node(0)), attempt(cluster.node(1))).await;
    assert_eq!([a.min(b), a.max(b)], [101, 409], "one of two racing clients");
    // Free again as soon as its holder leaves.
    alice.close(CloseCode::NORMAL, "").await.unwrap();
    let deadline = Instant::now() + LIMIT;
    while status::<C>(cluster.node(1), "/chat/Alice").await != 101 {
        assert!(Instant::now() < deadline, "Alice's name was not freed");
        C::sleep(Duration::from_millis(20)).await;
    }
}

async fn rooms_and_direct_messages_across_nodes<S: Runtime, C: Runtime>() {
    let cluster = Cluster::start::<S>(2);
    let mut ann = join::<C>(cluster.node(0), "/chat/Ann%20Lee").await;
    lines::<C>(&mut ann, 2).await;
    let mut bob = join::<C>(cluster.node(1), "/chat/bob").await;
    lines::<C>(&mut bob, 2).await;
    assert_eq!(next::<C>(&mut ann).await, "bob connected to chat");
    let mut cy = join::<C>(cluster.node(0), "/chat/cy").await;
    lines::<C>(&mut cy, 2).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next::<C>(ws).await, "cy connected to chat");
    }

    bob.send(&Message::text("/msg \"Ann Lee\" psst")).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "bob -> Ann Lee: psst");
    assert_eq!(next::<C>(&mut bob).await, "bob -> Ann Lee: psst");
    nothing_before::<C>(&mut cy, "/rooms", "you are in no rooms").await;

    // A room with members on both nodes; joining and talking at once works.
    bob.send(&Message::text("/join #ops")).await.unwrap();
    bob.send(&Message::text("/say ops first")).await.unwrap();
    assert_eq!(lines::<C>(&mut bob, 2).await, ["bob joined #ops", "#ops bob: first"]);
    cy.send(&Message::text("/join ops")).await.unwrap();
    assert_eq!(next::<C>(&mut cy).await, "cy joined #ops");
    assert_eq!(next::<C>(&mut bob).await, "cy joined #ops");
    cy.send(&Message::text("/say ops deploy at 5")).await.unwrap();
    for ws in [&mut bob, &mut cy] {
        assert_eq!(next::<C>(ws).await, "#ops cy: deploy at 5");
    }
    nothing_before::<C>(&mut ann, "/say ops let me in", "error: you are not in #ops (try /join ops)").await;
    bob.send(&Message::text("/leave ops")).await.unwrap();
    for ws in [&mut bob, &mut cy] {
        assert_eq!(next::<C>(ws).await, "bob left #ops");
    }
    cy.send(&Message::text("/say ops alone")).await.unwrap();
    assert_eq!(next::<C>(&mut cy).await, "#ops cy: alone");
    nothing_before::<C>(&mut bob, "/users", "online (3): Ann Lee, bob, cy").await;
    nothing_before::<C>(&mut bob, "/msg nobody hi", "error: no one named nobody is online").await;
}

/// Redis goes away and comes back empty: clients stay connected, a line meanwhile
/// gets an `error:` line (and reaches no one), new clients get 503; afterwards
/// lines flow again, everyone is still listed once and nobody who left is.
async fn a_redis_restart<S: Runtime, C: Runtime>() {
    let mut cluster = Cluster::start::<S>(2);
    let mut ann = join::<C>(cluster.node(0), "/chat/ann").await;
    lines::<C>(&mut ann, 2).await;
    let mut bob = join::<C>(cluster.node(1), "/chat/bob").await;
    lines::<C>(&mut bob, 2).await;
    assert_eq!(next::<C>(&mut ann).await, "bob connected to chat");
    let mut cy = join::<C>(cluster.node(1), "/chat/cy").await;
    lines::<C>(&mut cy, 2).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next::<C>(ws).await, "cy connected to chat");
    }
    cluster.redis.stop();
    // Each node notices at its next heartbeat, and says so on /ready.
    cluster.wait_ready::<C>(false).await;
    nothing_before::<C>(
        &mut ann,
        "anyone?",
        "error: the chat is unavailable right now (its store cannot be reached); your message was not sent, try again later",
    )
    .await;
    assert_eq!(status::<C>(cluster.node(1), "/chat/dan").await, 503);
    // cy leaves while Redis is away: the departure waits, and is not lost.
    cy.close(CloseCode::NORMAL, "").await.unwrap();
    cluster.redis.restart();
    // Lines flow again once both nodes are back (and admissions reopen after
    // the grace that lets every node register its users again).
    let deadline = Instant::now() + Duration::from_secs(20);
    while status::<C>(cluster.node(0), "/chat/dan").await != 101 {
        assert!(Instant::now() < deadline, "no admissions after Redis came back");
        C::sleep(Duration::from_millis(200)).await;
    }
    let mut seen_by_bob = Vec::new();
    loop {
        bob.send(&Message::text("/users")).await.unwrap();
        let line = loop {
            let line = next::<C>(&mut bob).await;
            if line.starts_with("online") {
                break line;
            }
            seen_by_bob.push(line);
        };
        if line == "online (2): ann, bob" {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {line}");
        C::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_by_bob.iter().filter(|l| *l == "cy left the chat").count() <= 1, "{seen_by_bob:?}");
    bob.send(&Message::text("back")).await.unwrap();
    until::<C>(&mut ann, "bob: back").await;
    until::<C>(&mut bob, "bob: back").await;
}

/// Reads lines until `line` comes.
async fn until<C: Runtime>(ws: &mut Client<C>, line: &str) {
    while next::<C>(ws).await != line {}
}

/// A `chinwag.v1` client of the chat, with its history or recovery query.
async fn join_v1<C: Runtime>(addr: SocketAddr, path: &str) -> Client<C> {
    let request = chinwag_core::ClientRequest::new(&format!("ws://{addr}{path}"))
        .unwrap()
        .with_subprotocol(chinwag_core::chat::v1::PROTOCOL)
        .unwrap();
    let ws = chinwag_driver::connect::<C>(&request, Config::default()).await.unwrap();
    assert_eq!(ws.subprotocol().as_deref(), Some(chinwag_core::chat::v1::PROTOCOL), "the server speaks v1");
    ws
}

/// The next v1 message.
async fn next_json<C: Runtime>(ws: &mut Client<C>) -> serde_json::Value {
    serde_json::from_str(&next::<C>(ws).await).expect("a JSON object")
}

/// v1 messages up to and including the next one of type `kind` (`members`
/// follows a client's own join line; `presence` follows a room's join line).
async fn until_type<C: Runtime>(ws: &mut Client<C>, kind: &str) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    loop {
        let message = next_json::<C>(ws).await;
        let done = message["type"] == kind;
        got.push(message);
        if done {
            return got;
        }
    }
}

/// The texts of the `line` objects.
fn line_texts(messages: &[serde_json::Value]) -> Vec<String> {
    messages.iter().filter(|m| m["type"] == "line").map(|m| m["text"].as_str().unwrap().to_owned()).collect()
}

/// A v1 client loses its connection; lines go on meanwhile; it reconnects, to
/// another node, with the last offset it saw: it gets every line it missed, once,
/// in order, then the live lines. A node started after those lines serves the
/// same recovery (from the log it loaded). An offset older than the history gets
/// `recovered: false`, never silence.
async fn v1_recovery_across_nodes<S: Runtime, C: Runtime>() {
    let mut cluster = Cluster::start::<S>(2);
    let mut bob = join::<C>(cluster.node(1), "/chat/bob").await;
    lines::<C>(&mut bob, 2).await;
    let mut ann = join_v1::<C>(cluster.node(0), "/chat/ann").await;
    let first = until_type::<C>(&mut ann, "members").await;
    assert_eq!(first[0]["type"], "welcome");
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(line_texts(&first), ["ann connected to chat"]);
    assert_eq!(first.last().unwrap()["members"], serde_json::json!(["ann", "bob"]));
    assert_eq!(next::<C>(&mut bob).await, "ann connected to chat");
    // Both in #ops, on their two nodes.
    bob.send(&Message::text("/join ops")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "bob joined #ops");
    ann.send(&Message::text("/join ops")).await.unwrap();
    assert_eq!(next_json::<C>(&mut ann).await["text"], "ann joined #ops");
    assert_eq!(next_json::<C>(&mut ann).await["type"], "presence");
    assert_eq!(next::<C>(&mut bob).await, "ann joined #ops");
    bob.send(&Message::text("/say ops in ops")).await.unwrap();
    let line = next_json::<C>(&mut ann).await;
    assert_eq!(line["text"], "#ops bob: in ops");
    let ops_since = line["offset"].as_str().unwrap().to_owned();
    assert_eq!(next::<C>(&mut bob).await, "#ops bob: in ops");
    bob.send(&Message::text("before")).await.unwrap();
    let line = next_json::<C>(&mut ann).await;
    assert_eq!(line["text"], "bob: before");
    let since = line["offset"].as_str().unwrap().to_owned();
    assert_eq!(next::<C>(&mut bob).await, "bob: before");
    // The connection is cut (no close frame).
    drop(ann);
    assert_eq!(next::<C>(&mut bob).await, "ann left the chat");
    for text in ["away 1", "away 2"] {
        bob.send(&Message::text(text)).await.unwrap();
        assert_eq!(next::<C>(&mut bob).await, format!("bob: {text}"));
    }
    bob.send(&Message::text("/say ops ops while away")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "#ops bob: ops while away");
    let path = format!("/chat/ann?since={since}&epoch={epoch}");
    let mut ann = join_v1::<C>(cluster.node(1), &path).await;
    let got = until_type::<C>(&mut ann, "members").await;
    assert_eq!(line_texts(&got), ["ann left the chat", "bob: away 1", "bob: away 2", "ann connected to chat"]);
    let recovered = got.iter().find(|m| m["type"] == "recovered").expect("a recovery outcome");
    assert_eq!(recovered["recovered"], true);
    assert_eq!(recovered["missed"], 3);
    assert_eq!(next::<C>(&mut bob).await, "ann connected to chat");
    // Joining #ops again from the last offset seen there: its missed line first.
    ann.send(&Message::text(format!("/join ops {ops_since} {epoch}"))).await.unwrap();
    let got = until_type::<C>(&mut ann, "presence").await;
    assert_eq!(line_texts(&got), ["#ops bob: ops while away", "ann joined #ops"]);
    assert_eq!(got[1], serde_json::json!({"type": "recovered", "room": "ops", "recovered": true, "missed": 1}));
    assert_eq!(next::<C>(&mut bob).await, "ann joined #ops");
    bob.send(&Message::text("live")).await.unwrap();
    assert_eq!(next_json::<C>(&mut ann).await["text"], "bob: live");
    assert_eq!(next::<C>(&mut bob).await, "bob: live");

    // A node that starts now recovers the same from the log it loads.
    let (late, _, _) = start_chat_node::<S>(&cluster.redis.url());
    cluster.nodes.push(late);
    let mut carol = join_v1::<C>(late, &format!("/chat/carol?since={since}&epoch={epoch}")).await;
    let got = until_type::<C>(&mut carol, "members").await;
    assert_eq!(
        line_texts(&got),
        [
            "ann left the chat",
            "bob: away 1",
            "bob: away 2",
            "ann connected to chat",
            "bob: live",
            "carol connected to chat"
        ]
    );
    // And a room this node does not read yet: it loads the room's last lines
    // from Redis when carol joins it.
    carol.send(&Message::text(format!("/join ops {ops_since} {epoch}"))).await.unwrap();
    let got = until_type::<C>(&mut carol, "presence").await;
    assert_eq!(line_texts(&got), ["#ops bob: ops while away", "ann joined #ops", "carol joined #ops"]);
    assert_eq!(got[2], serde_json::json!({"type": "recovered", "room": "ops", "recovered": true, "missed": 2}));

    // More lines than the history holds (100): lines were lost, and it says so.
    // Three senders, each within the rate limit's burst of 100.
    for n in 0..40 {
        for ws in [&mut bob, &mut ann, &mut carol] {
            ws.send(&Message::text(format!("flood {n}"))).await.unwrap();
        }
    }
    let mut floods = 0;
    while floods < 120 {
        if next::<C>(&mut bob).await.contains(": flood ") {
            floods += 1;
        }
    }
    let mut dan = join_v1::<C>(cluster.node(0), &format!("/chat/dan?since={since}&epoch={epoch}")).await;
    let got = until_type::<C>(&mut dan, "members").await;
    let recovered = got.iter().find(|m| m["type"] == "recovered").expect("a recovery outcome");
    assert_eq!(recovered["recovered"], false);
    assert!(recovered["lost_at_least"].as_u64().unwrap() >= 1);
    // And another epoch cannot be recovered from at all.
    let mut eve = join_v1::<C>(cluster.node(1), &format!("/chat/eve?since={since}&epoch=another")).await;
    let got = until_type::<C>(&mut eve, "members").await;
    assert_eq!(got.iter().find(|m| m["type"] == "recovered").unwrap()["recovered"], false);
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 4;
    scenarios: [
        guide_scenario_on_three_nodes,
        one_order_for_everyone,
        names_are_unique_across_nodes,
        rooms_and_direct_messages_across_nodes,
        a_redis_restart,
        v1_recovery_across_nodes,
    ];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
}
