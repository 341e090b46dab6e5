//! The gateway across processes, against a real `redis-server` on a free loopback
//! port: two gateway nodes on one Redis, and the Python example handler
//! (examples/gateway-handler/handler.py) answering their events from its own
//! process. Connect replies and failures, typed routing, sends to a user in a
//! namespace on any node, broadcasts, close events, the heartbeat, JWT identities
//! at the handshake, and a Redis restart; on every runtime.
//!
//! The test also watches the bus itself (a [`BusObserver`]) and publishes the
//! envelopes a service in any language would.

use chinwag_core::http::{HeaderValue, header};
use chinwag_core::{CloseCode, Config, Message};
use chinwag_driver::{Runtime, WebSocket, connect, parse_url};
use chinwag_gateway::{Authenticator, Gateway, GatewayHandle, Handlers, Verifier};
use chinwag_tests::processes::{BusObserver, PythonHandler, RedisServer};
use chinwag_tests::{raw_exchange, timeout, upgrade_request, write_all};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

/// Every event topic of the tests' configuration ([`chinwag_tests::gateway_config`]).
const EVENT_TOPICS: [&str; 5] =
    ["socket:connection", "socket:generalMessage", "socket:type_one", "socket:type_two", "socket:close"];

/// One gateway node, serving on runtime `S` in a thread of its own.
struct Node {
    addr: SocketAddr,
    handle: GatewayHandle,
}

impl Node {
    fn start<S: Runtime>(redis_url: &str, authenticator: Authenticator) -> Self {
        let config =
            chinwag_tests::gateway_config(&format!("  bus: \"{redis_url}\"\n  limits: {{ message_rate: 0 }}\n"));
        let gateway = Gateway::new(config, authenticator, Handlers::new()).unwrap();
        let handle = gateway.handle();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            S::block_on(async move {
                let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
                tx.send(S::local_addr(&listener).unwrap()).unwrap();
                gateway.serve::<S>(listener).await.unwrap();
            })
        });
        Self { addr: rx.recv().unwrap(), handle }
    }

    fn id(&self) -> String {
        self.handle.bus_status().expect("a Redis bus").node
    }

    fn connected(&self) -> bool {
        self.handle.bus_status().expect("a Redis bus").connected
    }

    fn refused(&self) -> u64 {
        self.handle.bus_status().expect("a Redis bus").refused
    }
}

/// Redis, the Python handler, an observer of the event topics, and gateway nodes.
/// Dropping it shuts the nodes down before Redis and the handler stop.
struct Cluster {
    nodes: Vec<Node>,
    observer: BusObserver,
    handler: PythonHandler,
    redis: RedisServer,
}

impl Cluster {
    fn start<S: Runtime>(authenticators: Vec<Authenticator>) -> Self {
        let redis = RedisServer::start();
        let handler = PythonHandler::start(&redis.url());
        let observer = BusObserver::start(&redis.url(), &EVENT_TOPICS);
        let nodes: Vec<Node> = authenticators.into_iter().map(|a| Node::start::<S>(&redis.url(), a)).collect();
        let cluster = Self { nodes, observer, handler, redis };
        cluster.wait_connected(true);
        cluster
    }

    /// Waits until every node's bus is up (or down).
    fn wait_connected(&self, up: bool) {
        let deadline = Instant::now() + LIMIT;
        while self.nodes.iter().any(|n| n.connected() != up) {
            assert!(Instant::now() < deadline, "the nodes' buses never became {}", if up { "up" } else { "down" });
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Publishes a command as a service elsewhere would.
    fn publish(&self, channel: &str, envelope: Value) {
        self.redis.publish(channel, &envelope.to_string());
    }

    /// Waits for an event on `topic` that satisfies `what`.
    async fn event<C: Runtime>(&self, topic: &str, what: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some((_, body)) = self.observer.seen().into_iter().find(|(t, b)| t == topic && what(b)) {
                return body;
            }
            assert!(Instant::now() < deadline, "no such event on {topic}; seen: {:#?}", self.observer.seen());
            C::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.handle.service().shutdown();
        }
    }
}

type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

async fn next<C: Runtime>(ws: &mut Client<C>) -> Value {
    match timeout::<C, _>(LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn send<C: Runtime>(ws: &Client<C>, value: Value) {
    ws.send(&Message::text(value.to_string())).await.unwrap();
}

/// Joins `node` as `user` (development mode) and takes the handler's connect reply.
async fn join<C: Runtime>(node: &Node, user: &str, namespace: &str) -> Client<C> {
    let url = parse_url(&format!("ws://{}/connect?username={user}&namespace={namespace}", node.addr)).unwrap();
    let mut ws = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut ws).await, json!({"type": "onconnect", "payload": {"hello": user}}));
    ws
}

/// Proves that `quiet` clients got nothing before now: a broadcast to everyone,
/// published after whatever they must not get, is the next thing each receives
/// (Redis delivers one subscription's messages in order).
async fn fence<C: Runtime>(cluster: &Cluster, n: u32, quiet: &mut [&mut Client<C>]) {
    cluster.publish("socket:broadcast", json!({"type": "fence", "payload": n}));
    for ws in quiet.iter_mut() {
        assert_eq!(next::<C>(ws).await, json!({"type": "fence", "payload": n}));
    }
}

async fn two_nodes_one_handler<S: Runtime, C: Runtime>() {
    let cluster = Cluster::start::<S>(vec![Authenticator::DevelopmentUsernames, Authenticator::DevelopmentUsernames]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut alex_a = join::<C>(a, "alex", "acme").await;
    let mut alex_b = join::<C>(b, "alex", "acme").await;
    let mut alex_other = join::<C>(b, "alex", "other").await;
    let mut bob_a = join::<C>(a, "bob", "acme").await;

    // The connect event, as it crossed the bus: the context and the reply address.
    let event = cluster.event::<C>("socket:connection", |e| e["context"]["username"] == "bob").await;
    assert_eq!(event["event"], "connect");
    assert_eq!(event["context"]["namespace"], "acme");
    assert_eq!(event["context"]["query"], json!({"username": "bob", "namespace": "acme"}));
    assert_eq!(event["reply_to"]["node"], a.id());
    assert_eq!(event["reply_to"]["on_connect"], true);
    assert_eq!(event["reply_to"]["reply_type"], "onconnect");
    assert_eq!(event["reply_to"]["connection"], event["context"]["connection"]);

    // Typed routing: the type's topic answers; the general topic sees it too.
    send::<C>(&alex_b, json!({"type": "message_type_one", "payload": {"x": 1}})).await;
    assert_eq!(next::<C>(&mut alex_b).await, json!({"type": "socket:type_one", "payload": {"echo": {"x": 1}}}));
    let general = cluster.event::<C>("socket:generalMessage", |e| e["message"]["payload"]["x"] == 1).await;
    assert_eq!(general["reply_to"]["node"], b.id());
    assert!(!cluster.observer.seen().iter().any(|(t, e)| t == "socket:type_two" && e["message"]["payload"]["x"] == 1));
    // A failed message: an error, and the connection stays open.
    send::<C>(&alex_b, json!({"type": "message_type_two"})).await;
    assert_eq!(next::<C>(&mut alex_b).await, json!({"type": "error", "payload": {"message": "nope"}}));
    send::<C>(&alex_b, json!({"type": "message_type_one", "payload": "still open"})).await;
    assert_eq!(next::<C>(&mut alex_b).await["payload"]["echo"], "still open");

    // A send by the handler, from bob on node A, to alex in acme: both of alex's
    // acme connections, on both nodes; not alex in another namespace, not bob.
    send::<C>(&bob_a, json!({"type": "tell", "payload": {"to": "alex", "text": "hi"}})).await;
    for ws in [&mut alex_a, &mut alex_b] {
        assert_eq!(next::<C>(ws).await, json!({"type": "told", "payload": {"from": "bob", "text": "hi"}}));
    }
    fence::<C>(&cluster, 1, &mut [&mut alex_other, &mut bob_a, &mut alex_a, &mut alex_b]).await;

    // A send without a namespace, from a service elsewhere: all of alex's connections.
    cluster.publish("socket:send", json!({"username": "alex", "type": "note", "payload": 2}));
    for ws in [&mut alex_a, &mut alex_b, &mut alex_other] {
        assert_eq!(next::<C>(ws).await, json!({"type": "note", "payload": 2}));
    }
    fence::<C>(&cluster, 2, &mut [&mut bob_a, &mut alex_a, &mut alex_b, &mut alex_other]).await;

    // A broadcast to one namespace (the handler's "announce"): nobody outside it.
    send::<C>(&alex_other, json!({"type": "announce", "payload": {"text": "only other"}})).await;
    let announcement = json!({"type": "announcement", "payload": {"from": "alex", "text": "only other"}});
    assert_eq!(next::<C>(&mut alex_other).await, announcement);
    fence::<C>(&cluster, 3, &mut [&mut alex_a, &mut alex_b, &mut bob_a, &mut alex_other]).await;
    // And to everyone.
    cluster.publish("socket:broadcast", json!({"type": "news", "payload": "all"}));
    for ws in [&mut alex_a, &mut alex_b, &mut alex_other, &mut bob_a] {
        assert_eq!(next::<C>(ws).await, json!({"type": "news", "payload": "all"}));
    }

    // A malformed command is refused by every node (and logged), and delivers nothing.
    let refused_before: Vec<u64> = cluster.nodes.iter().map(Node::refused).collect();
    cluster.publish("socket:send", json!({"usename": "alex", "type": "note"}));
    cluster.publish("socket:broadcast", json!(["not", "an", "object"]));
    fence::<C>(&cluster, 4, &mut [&mut alex_a, &mut alex_b, &mut alex_other, &mut bob_a]).await;
    for (node, before) in cluster.nodes.iter().zip(refused_before) {
        assert_eq!(node.refused(), before + 2);
    }
    // A reply addressed to another node is refused by the node that gets it.
    let stray =
        json!({"reply_to": {"node": "elsewhere", "connection": 1, "reply_type": "x", "on_connect": false}, "reply": 1});
    cluster.publish(&chinwag_gateway::envelope::reply_channel(&a.id()), stray);
    fence::<C>(&cluster, 5, &mut [&mut alex_a, &mut bob_a]).await;
    assert_eq!(a.refused(), 3);
    // A null payload is a payload: a late reply of null to bob's connect event.
    let bob_connect = cluster.event::<C>("socket:connection", |e| e["context"]["username"] == "bob").await;
    let null_reply = json!({"reply_to": bob_connect["reply_to"], "reply": null});
    cluster.publish(&chinwag_gateway::envelope::reply_channel(&a.id()), null_reply);
    assert_eq!(next::<C>(&mut bob_a).await, json!({"type": "onconnect", "payload": null}));
    assert_eq!(a.refused(), 3, "a null reply is not refused");

    // Close events carry the code and reason of the end that closed.
    bob_a.close(CloseCode::NORMAL, "bye").await.unwrap();
    let closed = cluster.event::<C>("socket:close", |e| e["context"]["username"] == "bob").await;
    assert_eq!(closed["closed"], json!({"code": 1000, "reason": "bye", "initiator": "client"}));
    assert_eq!(closed["reply_to"]["node"], a.id());

    // A failed connect: the error, then close 1008, and its close event.
    let url = parse_url(&format!("ws://{}/connect?username=mallory&namespace=acme", b.addr)).unwrap();
    let mut mallory = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut mallory).await, json!({"type": "error", "payload": {"message": "not you"}}));
    assert!(timeout::<C, _>(LIMIT, mallory.recv()).await.expect("closed in time").is_none());
    assert_eq!(mallory.close_info().unwrap().code, CloseCode::POLICY_VIOLATION);
    let closed = cluster.event::<C>("socket:close", |e| e["context"]["username"] == "mallory").await;
    assert_eq!(
        closed["closed"],
        json!({"code": 1008, "reason": "refused by the connect handler", "initiator": "server"})
    );
}

async fn heartbeat_and_a_redis_restart<S: Runtime, C: Runtime>() {
    let mut cluster =
        Cluster::start::<S>(vec![Authenticator::DevelopmentUsernames, Authenticator::DevelopmentUsernames]);
    let (a_addr, b_addr) = (cluster.nodes[0].addr, cluster.nodes[1].addr);

    // A client that never answers pings is closed, and its close event published.
    let mut ghost = C::connect("127.0.0.1", b_addr.port()).await.unwrap();
    write_all(&mut ghost, upgrade_request(b_addr, "/connect?username=ghost&namespace=acme").as_bytes()).await.unwrap();
    let started = Instant::now();
    cluster.event::<C>("socket:close", |e| e["context"]["username"] == "ghost").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(5), "closed after {waited:?}");
    drop(ghost);

    // Redis goes away: the nodes notice, and say so on /health.
    let mut alex = join::<C>(&cluster.nodes[0], "alex", "acme").await;
    cluster.redis.stop();
    cluster.wait_connected(false);
    let health = raw_exchange::<C>(a_addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{health}");

    // Redis is back: everyone reconnects, and events and commands flow again.
    cluster.redis.restart();
    cluster.handler.wait_ready();
    cluster.wait_connected(true);
    let health = raw_exchange::<C>(a_addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    let mut bob = join::<C>(&cluster.nodes[1], "bob", "acme").await;
    send::<C>(&bob, json!({"type": "tell", "payload": {"to": "alex", "text": "after"}})).await;
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "told", "payload": {"from": "bob", "text": "after"}}));
    fence::<C>(&cluster, 1, &mut [&mut alex, &mut bob]).await;
}

/// A burst larger than the outbox, while Redis is up: the connection waits for
/// room instead of the node dropping events, and every event reaches Redis once,
/// in order.
async fn a_burst_waits_instead_of_dropping<S: Runtime, C: Runtime>() {
    const BURST: u64 = 3 * chinwag_gateway::bus::OUTBOX_CAPACITY as u64;
    let cluster = Cluster::start::<S>(vec![Authenticator::DevelopmentUsernames]);
    let node = &cluster.nodes[0];
    let mut ws = join::<C>(node, "alex", "acme").await;
    for n in 0..BURST {
        ws.feed(&Message::text(json!({"type": "burst", "payload": n}).to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let burst = || {
        cluster
            .observer
            .seen()
            .into_iter()
            .filter(|(t, e)| t == "socket:generalMessage" && e["message"]["type"] == "burst")
    };
    while (burst().count() as u64) < BURST {
        assert!(Instant::now() < deadline, "{} of {BURST} events reached Redis", burst().count());
        C::sleep(Duration::from_millis(20)).await;
    }
    let order: Vec<u64> = burst().map(|(_, e)| e["message"]["payload"].as_u64().unwrap()).collect();
    assert_eq!(order, (0..BURST).collect::<Vec<_>>(), "each once, in order");
    let status = node.handle.bus_status().unwrap();
    assert_eq!((status.dropped, status.lost), (0, 0));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

/// A token signed with `key` for `claims`, as the ID_TOKEN cookie.
fn token_cookie(algorithm: jsonwebtoken::Algorithm, key: &[u8], claims: Value) -> String {
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap();
    format!("theme=dark; ID_TOKEN={token}")
}

async fn jwt_identities_at_the_handshake<S: Runtime, C: Runtime>() {
    let verifier = Verifier::new(
        chinwag_gateway::config::Algorithm::HS256,
        jsonwebtoken::DecodingKey::from_secret(SECRET),
        "ID_TOKEN",
    );
    let verifier = verifier.namespaces(chinwag_core::gateway::NamespacePolicy::Any);
    let cluster = Cluster::start::<S>(vec![Authenticator::Jwt(Box::new(verifier))]);
    let node = &cluster.nodes[0];
    let now = chinwag_gateway::auth::unix_now();
    let hs256 = jsonwebtoken::Algorithm::HS256;

    // Valid: the username is the token's, whatever the query says.
    let cookie = token_cookie(hs256, SECRET, json!({"preferred_username": "jo", "exp": now + 300}));
    let url = parse_url(&format!("ws://{}/connect?namespace=acme&username=mallory", node.addr))
        .unwrap()
        .with_header(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
    let mut jo = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut jo).await, json!({"type": "onconnect", "payload": {"hello": "jo"}}));
    let event = cluster.event::<C>("socket:connection", |e| e["context"]["username"] == "jo").await;
    assert_eq!(event["context"]["namespace"], "acme");

    // Each refusal: 401 at the handshake, with the README's reason as the whole
    // body, and no event.
    let wrong_algorithm = "the token is signed with an algorithm this server does not accept";
    // The unsigned `none`: a valid token's claims under {"alg":"none","typ":"JWT"}.
    let unsigned = {
        let valid = token_cookie(hs256, SECRET, json!({"preferred_username": "x", "exp": now + 300}));
        let claims = valid.split('.').nth(1).unwrap().to_owned();
        format!("theme=dark; ID_TOKEN=eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.")
    };
    let refusals = [
        (
            token_cookie(hs256, SECRET, json!({"preferred_username": "x", "exp": now - 10})),
            "the token has expired (or has no exp)",
        ),
        (
            token_cookie(
                hs256,
                b"another secret of at least thirty-two bytes",
                json!({"preferred_username": "x", "exp": now + 300}),
            ),
            "the token's signature is not valid",
        ),
        (
            token_cookie(jsonwebtoken::Algorithm::HS384, SECRET, json!({"preferred_username": "x", "exp": now + 300})),
            wrong_algorithm,
        ),
        (unsigned, wrong_algorithm),
        (token_cookie(hs256, SECRET, json!({"exp": now + 300})), "the token has no preferred_username"),
        (
            token_cookie(hs256, SECRET, json!({"preferred_username": "x", "exp": now + 300, "nbf": now + 300})),
            "the token is not valid yet",
        ),
        ("ID_TOKEN=not.a.jwt".to_owned(), "the token is malformed: its header is not base64url-encoded JSON"),
        ("theme=dark".to_owned(), "no token: send it in the cookie or an Authorization: Bearer header"),
    ];
    for (cookie, reason) in refusals {
        let request = upgrade_request(node.addr, "/connect?namespace=acme&username=x")
            .replace("\r\n\r\n", &format!("\r\nCookie: {cookie}\r\n\r\n"));
        let response = raw_exchange::<C>(node.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{reason}: {response}");
        assert_eq!(response.split_once("\r\n\r\n").map(|(_, body)| body), Some(reason), "{response}");
    }
    jo.close(CloseCode::NORMAL, "").await.unwrap();
    cluster.event::<C>("socket:close", |e| e["context"]["username"] == "jo").await;
    let connects = cluster.observer.seen().iter().filter(|(t, _)| t == "socket:connection").count();
    assert_eq!(connects, 1, "refused handshakes publish nothing");
}

chinwag_tests::runtime_suite! {
    limit: Duration::from_secs(90);
    scenarios: [two_nodes_one_handler, heartbeat_and_a_redis_restart, jwt_identities_at_the_handshake, a_burst_waits_instead_of_dropping];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
}
