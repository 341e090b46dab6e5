//! The gateway across processes, against a real `redis-server` on a free loopback
//! port: two gateway nodes on one Redis, and the Python example handler
//! (examples/gateway-handler/handler.py) answering their events from its own
//! process. Connect replies and failures, typed routing, sends to a user in a
//! namespace on any node, broadcasts, close events, the heartbeat, JWT identities
//! at the handshake, and a Redis restart; and tenancy under both namespace
//! policies (the token's claim, the connect handler's approval): a user cannot
//! receive another tenant's broadcasts nor publish into its namespace; on every
//! runtime.
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
    /// A node; `approve`: seconds a new connection may wait for its connect
    /// handler's approval (`None`: admitted at once).
    fn start<S: Runtime>(redis_url: &str, authenticator: Authenticator, approve: Option<u64>) -> Self {
        let mut config =
            chinwag_tests::gateway_config(&format!("  bus: \"{redis_url}\"\n  limits: {{ message_rate: 0 }}\n"));
        config.approve_timeout_secs = approve;
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
        Self::start_with::<S>(authenticators, None, &[])
    }

    /// Nodes with `authenticators` and `approve` (see [`Node::start`]), and the
    /// handler with `handler_args`.
    fn start_with<S: Runtime>(authenticators: Vec<Authenticator>, approve: Option<u64>, handler_args: &[&str]) -> Self {
        let redis = RedisServer::start();
        let handler = PythonHandler::start_with(&redis.url(), handler_args);
        let observer = BusObserver::start(&redis.url(), &EVENT_TOPICS);
        let nodes: Vec<Node> = authenticators.into_iter().map(|a| Node::start::<S>(&redis.url(), a, approve)).collect();
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

/// The tests' HS256 verifier, with no namespace policy of its own.
fn hs256() -> Verifier {
    Verifier::new(chinwag_gateway::config::Algorithm::HS256, jsonwebtoken::DecodingKey::from_secret(SECRET), "ID_TOKEN")
}

/// Connects to `node` in `namespace` with `cookie`, and takes the handler's hello.
async fn join_with<C: Runtime>(node: &Node, namespace: &str, cookie: &str, user: &str) -> Client<C> {
    let url = parse_url(&format!("ws://{}/connect?namespace={namespace}", node.addr))
        .unwrap()
        .with_header(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
    let mut ws = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut ws).await, json!({"type": "onconnect", "payload": {"hello": user}}));
    ws
}

/// The status line and body of the answer to an upgrade to `namespace` with `cookie`.
async fn refusal<C: Runtime>(node: &Node, namespace: &str, cookie: &str) -> (String, String) {
    let request = upgrade_request(node.addr, &format!("/connect?namespace={namespace}"))
        .replace("\r\n\r\n", &format!("\r\nCookie: {cookie}\r\n\r\n"));
    let response = raw_exchange::<C>(node.addr, request.as_bytes()).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Whatever `ws` receives until it is closed: every message, then the close.
async fn until_closed<C: Runtime>(ws: &mut Client<C>) -> (Vec<Value>, chinwag_core::Closed) {
    let mut got = Vec::new();
    loop {
        match timeout::<C, _>(LIMIT, ws.recv()).await.expect("closed in time") {
            Some(Message::Text(text)) => got.push(serde_json::from_str(&text).unwrap()),
            Some(other) => panic!("unexpected {other:?}"),
            None => return (got, ws.close_info().expect("a close frame")),
        }
    }
}

/// The namespaces claim: a user joins only the namespaces its token lists (403
/// for another, before anything is published), gets nothing of another tenant's
/// broadcasts, and what it says is published as its own namespace's.
async fn tenancy_by_the_token_claim<S: Runtime, C: Runtime>() {
    let claim = || {
        let policy = chinwag_core::gateway::NamespacePolicy::Claim("namespaces".into());
        Authenticator::Jwt(Box::new(hs256().namespaces(policy)))
    };
    let cluster = Cluster::start::<S>(vec![claim(), claim()]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let now = chinwag_gateway::auth::unix_now();
    let hs256 = jsonwebtoken::Algorithm::HS256;
    let token = |user: &str, namespaces: Value| {
        let claims = json!({"preferred_username": user, "exp": now + 300, "email": format!("{user}@example.com"), "namespaces": namespaces});
        token_cookie(hs256, SECRET, claims)
    };
    let mut alex = join_with::<C>(a, "acme", &token("alex", json!(["acme"])), "alex").await;
    let mut bob = join_with::<C>(b, "acme", &token("bob", json!(["globex", "acme"])), "bob").await;
    let eve_token = token("eve", json!(["globex"]));
    let mut eve = join_with::<C>(b, "globex", &eve_token, "eve").await;

    // eve asks for acme, on either node: 403 with the reason, and nothing published.
    for node in [a, b] {
        let (status, body) = refusal::<C>(node, "acme", &eve_token).await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden");
        assert_eq!(body, "the token's namespaces claim does not allow the namespace \"acme\"");
    }
    let (status, body) =
        refusal::<C>(a, "acme", &token_cookie(hs256, SECRET, json!({"preferred_username": "x", "exp": now + 300})))
            .await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 403 Forbidden", "the token has no namespaces claim, so it may join no namespace")
    );
    let (status, body) = refusal::<C>(a, "acme", &token("x", json!("acme"))).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(body.contains("is not a list of namespace names"), "{body}");
    // "*" allows any namespace.
    let mut root = join_with::<C>(a, "initech", &token("root", json!(["*"])), "root").await;

    // The connect event carries the verified claims in headers.jwt, as the
    // document's handler reads them (the Python handler greeted each by that name).
    let connect = cluster.event::<C>("socket:connection", |e| e["context"]["username"] == "eve").await;
    assert_eq!(connect["context"]["headers"]["jwt"]["preferred_username"], "eve");
    assert_eq!(connect["context"]["headers"]["jwt"]["email"], "eve@example.com");
    assert_eq!(connect["context"]["headers"]["jwt"]["namespaces"], json!(["globex"]));
    assert_eq!(connect["context"]["params"]["namespace"], "globex");

    // acme's broadcast (bob announces in acme) reaches acme only.
    send::<C>(&bob, json!({"type": "announce", "payload": {"text": "acme only"}})).await;
    let announcement = json!({"type": "announcement", "payload": {"from": "bob", "text": "acme only"}});
    assert_eq!(next::<C>(&mut alex).await, announcement);
    assert_eq!(next::<C>(&mut bob).await, announcement);
    fence::<C>(&cluster, 1, &mut [&mut eve, &mut root, &mut alex, &mut bob]).await;
    // eve's messages are globex's: her "tell" to alex is a send to alex in globex,
    // where alex is not; and nothing from her is ever published as acme's.
    send::<C>(&eve, json!({"type": "tell", "payload": {"to": "alex", "text": "psst"}})).await;
    let told = cluster.event::<C>("socket:generalMessage", |e| e["context"]["username"] == "eve").await;
    assert_eq!(told["context"]["namespace"], "globex");
    fence::<C>(&cluster, 2, &mut [&mut alex, &mut bob, &mut eve, &mut root]).await;
    let seen = cluster.observer.seen();
    assert!(
        !seen.iter().any(|(_, e)| e["context"]["username"] == "eve" && e["context"]["namespace"] != "globex"),
        "eve published outside globex: {seen:#?}"
    );
}

/// Approval by the connect handler: the Python handler admits the members of
/// acme; anyone else is refused (1008) and gets nothing of acme meanwhile. With no
/// handler answering, a new connection is pending: no send or broadcast reaches
/// it, its messages are not published, a reply admits it, and no reply closes
/// it at the deadline.
async fn tenancy_by_approval<S: Runtime, C: Runtime>() {
    let approval = || Authenticator::Jwt(Box::new(hs256()));
    let mut cluster =
        Cluster::start_with::<S>(vec![approval(), approval()], Some(2), &["--members", "acme=alex,bob,carol,dave"]);
    let now = chinwag_gateway::auth::unix_now();
    let token = |user: &str| {
        token_cookie(jsonwebtoken::Algorithm::HS256, SECRET, json!({"preferred_username": user, "exp": now + 300}))
    };
    let mut alex = join_with::<C>(&cluster.nodes[0], "acme", &token("alex"), "alex").await;
    let mut bob = join_with::<C>(&cluster.nodes[1], "acme", &token("bob"), "bob").await;

    // eve is no member of acme: refused by the handler, then closed; a message she
    // sends at once is not published, and nothing but errors reaches her.
    let url = parse_url(&format!("ws://{}/connect?namespace=acme", cluster.nodes[0].addr))
        .unwrap()
        .with_header(header::COOKIE, HeaderValue::from_str(&token("eve")).unwrap());
    let mut eve = connect::<C>(&url, Config::default()).await.unwrap();
    send::<C>(&eve, json!({"type": "message_type_one", "payload": "let me in"})).await;
    cluster.publish("socket:broadcast", json!({"namespace": "acme", "type": "news", "payload": "for acme"}));
    let (got, close) = until_closed::<C>(&mut eve).await;
    assert!(got.iter().all(|m| m["type"] == "error"), "eve got {got:?}");
    assert!(got.contains(&json!({"type": "error", "payload": {"message": "eve is not a member of acme"}})), "{got:?}");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::POLICY_VIOLATION, "refused by the connect handler"));
    for ws in [&mut alex, &mut bob] {
        assert_eq!(next::<C>(ws).await, json!({"type": "news", "payload": "for acme"}));
    }

    // No handler: new connections wait.
    cluster.handler.stop();
    let pending = |node: &Node, user: &str| {
        let url = parse_url(&format!("ws://{}/connect?namespace=acme", node.addr))
            .unwrap()
            .with_header(header::COOKIE, HeaderValue::from_str(&token(user)).unwrap());
        async move { connect::<C>(&url, Config::default()).await.unwrap() }
    };
    let mut carol = pending(&cluster.nodes[1], "carol").await;
    let mut dave = pending(&cluster.nodes[0], "dave").await;
    let carol_connect = cluster.event::<C>("socket:connection", |e| e["context"]["username"] == "carol").await;
    cluster.event::<C>("socket:connection", |e| e["context"]["username"] == "dave").await;
    // Everything that would reach them if they were admitted.
    cluster.publish("socket:broadcast", json!({"namespace": "acme", "type": "news", "payload": 1}));
    cluster.publish("socket:broadcast", json!({"type": "news", "payload": 2}));
    cluster.publish("socket:send", json!({"username": "carol", "namespace": "acme", "type": "note", "payload": 3}));
    cluster.publish("socket:send", json!({"username": "carol", "type": "note", "payload": 4}));
    cluster.publish("socket:send", json!({"username": "dave", "type": "note", "payload": 5}));
    for ws in [&mut alex, &mut bob] {
        assert_eq!(next::<C>(ws).await["payload"], 1);
        assert_eq!(next::<C>(ws).await["payload"], 2);
    }
    fence::<C>(&cluster, 1, &mut [&mut alex, &mut bob]).await;
    // carol speaks while pending: she is told it went nowhere, and nothing is published.
    send::<C>(&carol, json!({"type": "message_type_one", "payload": "hello?"})).await;
    let not_admitted = json!({"type": "error", "payload": {"message": chinwag_core::gateway::NOT_ADMITTED}});
    assert_eq!(next::<C>(&mut carol).await, not_admitted, "the first thing carol gets: nothing reached her before");
    // A reply to her connect event admits her: it is the next thing she gets.
    let reply = json!({"reply_to": carol_connect["reply_to"], "reply": {"hello": "carol, by hand"}});
    cluster
        .publish(&chinwag_gateway::envelope::reply_channel(carol_connect["reply_to"]["node"].as_str().unwrap()), reply);
    assert_eq!(next::<C>(&mut carol).await, json!({"type": "onconnect", "payload": {"hello": "carol, by hand"}}));
    // From now on she is reached like anyone.
    fence::<C>(&cluster, 2, &mut [&mut alex, &mut bob, &mut carol]).await;
    // dave is never answered: closed at the deadline, with the reason, and his
    // close event says so. Before it, he got nothing.
    let (got, close) = until_closed::<C>(&mut dave).await;
    assert_eq!(got, Vec::<Value>::new());
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode::POLICY_VIOLATION, chinwag_core::gateway::APPROVAL_TIMEOUT_REASON)
    );
    let closed = cluster.event::<C>("socket:close", |e| e["context"]["username"] == "dave").await;
    assert_eq!(
        closed["closed"],
        json!({"code": 1008, "reason": chinwag_core::gateway::APPROVAL_TIMEOUT_REASON, "initiator": "server"})
    );
    let seen = cluster.observer.seen();
    assert!(
        !seen.iter().any(|(t, e)| t != "socket:connection"
            && t != "socket:close"
            && ["eve", "carol", "dave"].contains(&e["context"]["username"].as_str().unwrap_or_default())),
        "a pending or refused connection published: {seen:#?}"
    );
}

chinwag_tests::runtime_suite! {
    limit: Duration::from_secs(90);
    scenarios: [two_nodes_one_handler, heartbeat_and_a_redis_restart, jwt_identities_at_the_handshake, a_burst_waits_instead_of_dropping, tenancy_by_the_token_claim, tenancy_by_approval];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
}
