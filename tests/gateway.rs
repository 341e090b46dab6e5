//! The gateway with the in-process bus, end to end on every runtime: connect
//! replies, typed routing, replies and failures, bad input, sends to a user in a
//! namespace, broadcasts, close events, the heartbeat, the message rate, and the
//! client address behind a trusted proxy; approval by an in-process connect
//! handler (pending connections, late approval, the deadline); JWT tokens as
//! identity providers issue them (claims in `context.headers.jwt`, audience,
//! issuer, leeway, the namespaces claim, expiry while connected) and a JWKS key
//! file rotated while the gateway runs.
//! Identities come from the development mode (`?username=`) unless a test says
//! otherwise. That a client got nothing is proved with a fence message, never by
//! waiting for nothing to arrive.

use chinwag_core::{Config, Message};
use chinwag_driver::{Runtime, WebSocket, connect, parse_url};
use chinwag_gateway::{Authenticator, Command, Gateway, GatewayHandle, Handlers};
use chinwag_tests::{read_to_end, timeout, upgrade_request, write_all};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

type Events = Arc<Mutex<Vec<(String, Value)>>>;

fn start<S: Runtime>() -> (SocketAddr, GatewayHandle, Events) {
    start_with::<S>("")
}

/// A gateway whose `limits` also have `more_limits` (YAML flow-map entries, each
/// starting with a comma).
fn start_with<S: Runtime>(more_limits: &str) -> (SocketAddr, GatewayHandle, Events) {
    let events: Events = Arc::default();
    let record = |topic: &'static str, events: &Events| {
        let events = events.clone();
        move |body: &Value| {
            events.lock().unwrap().push((topic.to_owned(), body.clone()));
            Vec::new()
        }
    };
    let handlers = Handlers::new()
        .on("socket:connection", |body| {
            let user = body["context"]["username"].as_str().unwrap_or_default().to_owned();
            if user == "mallory" {
                vec![Command::Fail(json!({"message": "not you"}))]
            } else {
                vec![Command::Reply(json!({"hello": user}))]
            }
        })
        .on("socket:type_one", |body| vec![Command::Reply(json!({"echo": body["message"]["payload"]}))])
        .on("socket:type_two", |_| vec![Command::Fail(json!({"message": "nope"}))])
        .on("socket:generalMessage", record("socket:generalMessage", &events))
        .on("socket:close", record("socket:close", &events));
    let config = chinwag_tests::gateway_config(&format!(
        "  limits: {{ max_message_size: 1024, allowed_origins: [\"https://app.example\"]{more_limits} }}\n"
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let gateway = Gateway::new(config, Authenticator::DevelopmentUsernames, handlers).unwrap();
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send((S::local_addr(&listener).unwrap(), gateway.handle())).unwrap();
            gateway.serve::<S>(listener).await.unwrap();
        })
    });
    let (addr, handle) = rx.recv().unwrap();
    (addr, handle, events)
}

type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

async fn join<C: Runtime>(addr: SocketAddr, user: &str, namespace: Option<&str>) -> Client<C> {
    let ns = namespace.map_or(String::new(), |n| format!("&namespace={n}"));
    let url = parse_url(&format!("ws://{addr}/connect?username={user}{ns}")).unwrap();
    let mut ws = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut ws).await, json!({"type": "onconnect", "payload": {"hello": user}}));
    ws
}

async fn next<C: Runtime>(ws: &mut Client<C>) -> Value {
    match timeout::<C, _>(LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Proves that `clients` got nothing unread before now, without waiting for
/// nothing to arrive: a broadcast, pushed after whatever they must not get, is
/// the next message each receives (a connection's messages arrive in the order
/// they were pushed). `clients` must be every open connection, so that no fence
/// is left unread.
async fn fence<C: Runtime>(handle: &GatewayHandle, n: u32, clients: &mut [&mut Client<C>]) {
    let fence = Command::Broadcast { namespace: None, message_type: "fence".into(), payload: json!(n) };
    assert_eq!(handle.command(fence), clients.len(), "every open connection is fenced");
    for ws in clients.iter_mut() {
        assert_eq!(next::<C>(ws).await, json!({"type": "fence", "payload": n}));
    }
}

async fn send<C: Runtime>(ws: &Client<C>, value: Value) {
    ws.send(&Message::text(value.to_string())).await.unwrap();
}

async fn wait_for<C: Runtime>(events: &Events, what: impl Fn(&[(String, Value)]) -> bool) {
    for _ in 0..300 {
        if what(&events.lock().unwrap()) {
            return;
        }
        C::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened; events: {:?}", events.lock().unwrap());
}

/// The close event of `username`'s connection (the first, if several closed).
fn close_event(events: &Events, username: &str) -> Value {
    let events = events.lock().unwrap();
    let found = events.iter().find(|(t, b)| t == "socket:close" && b["context"]["username"] == username);
    found.map(|(_, body)| body.clone()).unwrap_or_else(|| panic!("no close event for {username}: {events:?}"))
}

async fn messages_replies_and_failures<S: Runtime, C: Runtime>() {
    let (addr, handle, events) = start::<S>();
    let mut alex = join::<C>(addr, "alex", Some("acme")).await;
    send::<C>(&alex, json!({"type": "message_type_one", "payload": {"x": 1}})).await;
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "socket:type_one", "payload": {"echo": {"x": 1}}}));
    wait_for::<C>(&events, |e| {
        e.iter().any(|(t, b)| t == "socket:generalMessage" && b["message"]["payload"]["x"] == 1)
    })
    .await;
    {
        let events = events.lock().unwrap();
        let (_, body) = events.iter().find(|(t, _)| t == "socket:generalMessage").unwrap();
        assert_eq!(body["context"]["username"], "alex");
        assert_eq!(body["context"]["namespace"], "acme");
        assert_eq!(body["context"]["params"]["namespace"], "acme");
        assert_eq!(body["context"]["query"]["username"], "alex");
    }
    // A failure on a message: an error, and the connection stays open.
    send::<C>(&alex, json!({"type": "message_type_two"})).await;
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "error", "payload": {"message": "nope"}}));
    // Bad input: errors, the connection stays open.
    for bad in ["not json", "{\"payload\": 1}", "[1]"] {
        alex.send(&Message::text(bad)).await.unwrap();
        let answer = next::<C>(&mut alex).await;
        assert_eq!(answer["type"], "error", "{bad}");
    }
    alex.send(&Message::binary(vec![1, 2])).await.unwrap();
    assert_eq!(next::<C>(&mut alex).await["type"], "error");
    // Over the size limit: an error, the connection stays open, and the message
    // went nowhere.
    let big = json!({"type": "message_type_one", "payload": "x".repeat(5000)}).to_string();
    alex.send(&Message::text(big.clone())).await.unwrap();
    let expected = format!("the message is {} bytes; the limit is 1024 bytes; it was not delivered", big.len());
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "error", "payload": {"message": expected}}));
    let limit = json!({"type": "message_type_one", "payload": "y".repeat(1024 - 40)}).to_string();
    assert_eq!(limit.len(), 1024);
    alex.send(&Message::text(limit)).await.unwrap();
    assert_eq!(next::<C>(&mut alex).await["payload"]["echo"], "y".repeat(1024 - 40), "a message at the limit passes");
    // An unconfigured type still reaches the general topic (no reply from it: a
    // reply would have been pushed with the event, before the fence).
    send::<C>(&alex, json!({"type": "other", "payload": 7})).await;
    wait_for::<C>(&events, |e| e.iter().any(|(_, b)| b["message"]["type"] == "other")).await;
    fence::<C>(&handle, 1, &mut [&mut alex]).await;
    send::<C>(&alex, json!({"type": "message_type_one", "payload": "still open"})).await;
    assert_eq!(next::<C>(&mut alex).await["payload"]["echo"], "still open");
}

async fn a_failed_connect_closes<S: Runtime, C: Runtime>() {
    let (addr, _handle, events) = start::<S>();
    let url = parse_url(&format!("ws://{addr}/connect?username=mallory&namespace=acme")).unwrap();
    let mut ws = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut ws).await, json!({"type": "error", "payload": {"message": "not you"}}));
    assert!(timeout::<C, _>(LIMIT, ws.recv()).await.expect("closed in time").is_none());
    assert_eq!(ws.close_info().unwrap().code, chinwag_core::CloseCode::POLICY_VIOLATION);
    wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == "mallory"))
        .await;
    // The close event says who closed, with what code and why.
    assert_eq!(
        close_event(&events, "mallory")["closed"],
        json!({"code": 1008, "reason": "refused by the connect handler", "initiator": "server"})
    );
    // No username at all: 401 at the handshake, with the reason.
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, upgrade_request(addr, "/connect?namespace=acme").as_bytes()).await.unwrap();
    let response = String::from_utf8(read_to_end(&mut raw).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{response}");
    assert!(response.ends_with("development mode: add ?username=NAME"), "{response}");
}

async fn sends_never_cross_namespaces<S: Runtime, C: Runtime>() {
    let (addr, handle, events) = start::<S>();
    let mut alex_acme_1 = join::<C>(addr, "alex", Some("acme")).await;
    let mut alex_acme_2 = join::<C>(addr, "alex", Some("acme")).await;
    let mut alex_other = join::<C>(addr, "alex", Some("other")).await;
    let mut bob_acme = join::<C>(addr, "bob", Some("acme")).await;
    let send = |username: &str, namespace: Option<&str>, n: u32| Command::Send {
        username: username.into(),
        namespace: namespace.map(str::to_owned),
        message_type: "note".into(),
        payload: json!(n),
    };
    assert_eq!(handle.command(send("alex", Some("acme"), 1)), 2);
    for ws in [&mut alex_acme_1, &mut alex_acme_2] {
        assert_eq!(next::<C>(ws).await, json!({"type": "note", "payload": 1}));
    }
    // Nothing for alex in another namespace, nor for bob (nor a second copy).
    fence::<C>(&handle, 1, &mut [&mut alex_acme_1, &mut alex_acme_2, &mut alex_other, &mut bob_acme]).await;
    assert_eq!(handle.command(send("alex", None, 2)), 3, "no namespace: all of alex's connections");
    for ws in [&mut alex_acme_1, &mut alex_acme_2, &mut alex_other] {
        assert_eq!(next::<C>(ws).await["payload"], 2);
    }
    fence::<C>(&handle, 2, &mut [&mut alex_acme_1, &mut alex_acme_2, &mut alex_other, &mut bob_acme]).await;
    assert_eq!(handle.command(send("alex", Some("nowhere"), 3)), 0);
    let broadcast = |namespace: Option<&str>| Command::Broadcast {
        namespace: namespace.map(str::to_owned),
        message_type: "news".into(),
        payload: json!(namespace),
    };
    assert_eq!(handle.command(broadcast(Some("acme"))), 3);
    for ws in [&mut alex_acme_1, &mut alex_acme_2, &mut bob_acme] {
        assert_eq!(next::<C>(ws).await, json!({"type": "news", "payload": "acme"}));
    }
    fence::<C>(&handle, 3, &mut [&mut alex_acme_1, &mut alex_acme_2, &mut alex_other, &mut bob_acme]).await;
    assert_eq!(handle.command(broadcast(None)), 4);
    for ws in [&mut alex_acme_1, &mut alex_acme_2, &mut alex_other, &mut bob_acme] {
        assert_eq!(next::<C>(ws).await["type"], "news");
    }
    // Closing publishes the close event with the connection's context, and the
    // client's code and reason.
    bob_acme.close(chinwag_core::CloseCode::NORMAL, "bye").await.unwrap();
    wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == "bob")).await;
    let closed = close_event(&events, "bob");
    assert_eq!(closed["closed"], json!({"code": 1000, "reason": "bye", "initiator": "client"}));
    assert_eq!(closed["context"]["namespace"], "acme");
    assert_eq!(handle.command(broadcast(Some("acme"))), 2, "bob is gone");
}

async fn the_heartbeat_closes_silent_clients<S: Runtime, C: Runtime>() {
    let (addr, _handle, events) = start::<S>();
    // A client that never answers pings (it reads nothing, writes nothing).
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, upgrade_request(addr, "/connect?username=ghost&namespace=acme").as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == "ghost")).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(5), "closed after {waited:?}");
    // No close frame from anyone: 1006, and what happened as the reason.
    let reason = chinwag_core::ConnectionError::KeepaliveTimeout.to_string();
    assert_eq!(close_event(&events, "ghost")["closed"], json!({"code": 1006, "reason": reason, "initiator": "server"}));
    drop(raw);
}

async fn answers_from_outside<S: Runtime, C: Runtime>() {
    let (addr, handle, events) = start::<S>();
    let mut alex = join::<C>(addr, "alex", Some("acme")).await;
    send::<C>(&alex, json!({"type": "other"})).await;
    wait_for::<C>(&events, |e| e.iter().any(|(_, b)| b["message"]["type"] == "other")).await;
    let conn = events.lock().unwrap().iter().find_map(|(_, b)| b["context"]["connection"].as_u64()).unwrap();
    // What a handler elsewhere would answer, by the connection id in the context.
    assert!(handle.answer(conn, "socket:generalMessage", false, Command::Reply(json!("later"))));
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "socket:generalMessage", "payload": "later"}));
    assert!(handle.answer(conn, "socket:generalMessage", false, Command::Fail(json!("no"))));
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "error", "payload": "no"}));
    assert!(!handle.answer(conn + 1000, "x", false, Command::Reply(json!(1))), "no such connection");
    // A late failure of the connect event closes the connection.
    assert!(handle.answer(conn, "onconnect", true, Command::Fail(json!("revoked"))));
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "error", "payload": "revoked"}));
    assert!(timeout::<C, _>(LIMIT, alex.recv()).await.expect("closed in time").is_none());
    assert!(!handle.answer(conn, "x", false, Command::Reply(json!(1))), "gone");
}

/// A client over the message rate: its messages are dropped, it is told so once
/// (an error envelope), and if it keeps on it is closed with 1008.
async fn floods_are_warned_then_closed<S: Runtime, C: Runtime>() {
    // Two messages at once, then one every ten seconds: the test's messages all
    // come well within the ten seconds.
    let (addr, _handle, events) = start_with::<S>(", message_rate: 0.1, message_burst: 2");
    let mut alex = join::<C>(addr, "alex", Some("acme")).await;
    for n in 1..=5 {
        send::<C>(&alex, json!({"type": "message_type_one", "payload": n})).await;
    }
    for n in 1..=2 {
        assert_eq!(next::<C>(&mut alex).await["payload"]["echo"], n, "within the burst");
    }
    // The third is dropped, with a warning; the fourth is dropped silently; the
    // fifth is one more than the burst after the warning: closed. The close is the
    // fence: an echo, or a second warning, would have come before it.
    let warning = "you are sending too fast, so your messages are being dropped; slow down or you will be disconnected";
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "error", "payload": {"message": warning}}));
    assert!(timeout::<C, _>(LIMIT, alex.recv()).await.expect("closed in time").is_none());
    let close = alex.close_info().unwrap();
    assert_eq!((close.code, close.reason.as_str()), (chinwag_core::CloseCode::POLICY_VIOLATION, "too many messages"));
    wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == "alex")).await;
    assert_eq!(
        close_event(&events, "alex")["closed"],
        json!({"code": 1008, "reason": "too many messages", "initiator": "server"})
    );
    let published: Vec<Value> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "socket:generalMessage")
        .map(|(_, b)| b["message"]["payload"].clone())
        .collect();
    assert_eq!(published, [json!(1), json!(2)], "dropped messages are not published");
}

async fn origins_from_the_config<S: Runtime, C: Runtime>() {
    let (addr, _handle, _events) = start::<S>();
    let with_origin = |origin: &str| {
        upgrade_request(addr, "/connect?username=alex&namespace=acme")
            .replace("\r\n\r\n", &format!("\r\nOrigin: {origin}\r\n\r\n"))
    };
    let refused = chinwag_tests::raw_exchange::<C>(addr, with_origin("https://evil.example").as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{refused}");
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, with_origin("https://app.example").as_bytes()).await.unwrap();
    let accepted = String::from_utf8_lossy(&chinwag_tests::read_some(&mut raw).await.unwrap()).into_owned();
    assert!(accepted.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{accepted}");
}

async fn the_context_names_the_client<S: Runtime, C: Runtime>() {
    let (addr, _handle, events) =
        start_with::<S>(", trusted_proxies: [\"127.0.0.1\", \"10.0.0.0/8\"], max_connections_per_ip: 1");
    let through_proxy = |user: &str, chain: &str| {
        parse_url(&format!("ws://{addr}/connect?username={user}&namespace=acme"))
            .unwrap()
            .with_header("x-forwarded-for".parse().unwrap(), chain.parse().unwrap())
    };
    // Through the trusted proxy (127.0.0.1, behind another at 10.0.0.2): the
    // right-most address that is not a trusted proxy.
    let mut alex =
        connect::<C>(&through_proxy("alex", "198.51.100.1, 203.0.113.7, 10.0.0.2"), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "onconnect", "payload": {"hello": "alex"}}));
    send::<C>(&alex, json!({"type": "other", "payload": "where am I"})).await;
    wait_for::<C>(&events, |e| e.iter().any(|(_, b)| b["message"]["payload"] == "where am I")).await;
    {
        let events = events.lock().unwrap();
        let (_, body) = events.iter().find(|(_, b)| b["message"]["payload"] == "where am I").unwrap();
        assert_eq!(body["context"]["client_address"], "203.0.113.7");
        assert_eq!(body["context"]["headers"]["x-forwarded-for"], "198.51.100.1, 203.0.113.7, 10.0.0.2");
    }
    // The per-IP limit (1) counts that address too.
    let refused = connect::<C>(&through_proxy("alexis", "203.0.113.7"), Config::default()).await;
    assert!(
        matches!(refused, Err(chinwag_driver::Error::Handshake(chinwag_core::HandshakeError::UnexpectedStatus(429)))),
        "{:?}",
        refused.map(drop)
    );
    // The proxy's own request, and a peer that is not trusted, whatever it
    // claims: their own addresses.
    let bob = join::<C>(addr, "bob", Some("acme")).await;
    drop(bob);
    let request = upgrade_request(addr, "/connect?username=carol&namespace=acme").replacen(
        "\r\n\r\n",
        "\r\nX-Forwarded-For: 203.0.113.99\r\n\r\n",
        1,
    );
    let mut carol = chinwag_tests::connect_from([127, 0, 0, 2].into(), addr).unwrap();
    std::io::Write::write_all(&mut carol, request.as_bytes()).unwrap();
    let mut head = [0; 12];
    std::io::Read::read_exact(&mut carol, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    drop(carol);
    for (user, address) in [("bob", "127.0.0.1"), ("carol", "127.0.0.2")] {
        wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == user))
            .await;
        assert_eq!(close_event(&events, user)["context"]["client_address"], address, "{user}");
    }
}

/// The tests' configuration with a heartbeat of 30 s: for tests whose clients
/// wait seconds without reading (a client answers pings only while it reads).
fn quiet_config() -> chinwag_gateway::Config {
    let mut config = chinwag_tests::gateway_config("");
    (config.heartbeat_interval_secs, config.heartbeat_timeout_secs) = (30, 30);
    config
}

/// A gateway of `config`, `authenticator` and `handlers` on runtime `S`.
fn serve<S: Runtime>(
    config: chinwag_gateway::Config,
    authenticator: Authenticator,
    handlers: Handlers,
) -> (SocketAddr, GatewayHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let gateway = Gateway::new(config, authenticator, handlers).unwrap();
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send((S::local_addr(&listener).unwrap(), gateway.handle())).unwrap();
            gateway.serve::<S>(listener).await.unwrap();
        })
    });
    rx.recv().unwrap()
}

/// Handlers that record every event, greet users at connect but for "mallory"
/// (failed) and "slow" and "late" (no answer: they wait for approval).
fn approving_handlers(events: &Events) -> Handlers {
    let record = |topic: &'static str| {
        let events = events.clone();
        move |body: &Value| {
            events.lock().unwrap().push((topic.to_owned(), body.clone()));
            Vec::new()
        }
    };
    let connects = events.clone();
    Handlers::new()
        .on("socket:connection", move |body| {
            connects.lock().unwrap().push(("socket:connection".to_owned(), body.clone()));
            // The gateway document's style: the user from the verified token.
            match body["context"]["headers"]["jwt"]["preferred_username"].as_str().unwrap_or_default() {
                "mallory" => vec![Command::Fail(json!({"message": "not you"}))],
                "slow" | "late" => Vec::new(),
                user => vec![Command::Reply(json!({"hello": user}))],
            }
        })
        .on("socket:generalMessage", record("socket:generalMessage"))
        .on("socket:close", record("socket:close"))
}

/// Approval by an in-process connect handler: admitted at once when it replies;
/// a connection it does not answer is pending (reached by no send or broadcast,
/// its messages unpublished and answered with an error) until a reply from
/// elsewhere admits it, or the deadline closes it with 1008.
async fn approval_in_process<S: Runtime, C: Runtime>() {
    let events: Events = Arc::default();
    let mut config = quiet_config();
    config.approve_timeout_secs = Some(2);
    let (addr, handle) = serve::<S>(config, Authenticator::DevelopmentUsernames, approving_handlers(&events));
    let mut alex = join::<C>(addr, "alex", Some("acme")).await;
    let open = |user: &str| {
        let url = parse_url(&format!("ws://{addr}/connect?username={user}&namespace=acme")).unwrap();
        async move { connect::<C>(&url, Config::default()).await.unwrap() }
    };
    let (mut slow, mut late) = (open("slow").await, open("late").await);
    wait_for::<C>(&events, |e| e.iter().filter(|(t, _)| t == "socket:connection").count() == 3).await;
    // Nothing reaches them: only alex is counted.
    let broadcast = |ns: Option<&str>, n: u32| Command::Broadcast {
        namespace: ns.map(str::to_owned),
        message_type: "news".into(),
        payload: json!(n),
    };
    assert_eq!(handle.command(broadcast(Some("acme"), 1)), 1);
    assert_eq!(handle.command(broadcast(None, 2)), 1);
    let send = |user: &str| Command::Send {
        username: user.into(),
        namespace: None,
        message_type: "note".into(),
        payload: json!(3),
    };
    assert_eq!(handle.command(send("late")), 0);
    assert_eq!(next::<C>(&mut alex).await["payload"], 1);
    assert_eq!(next::<C>(&mut alex).await["payload"], 2);
    // What a pending connection says is not published; it is told.
    self::send::<C>(&late, json!({"type": "other", "payload": "anyone?"})).await;
    let not_admitted = json!({"type": "error", "payload": {"message": chinwag_core::gateway::NOT_ADMITTED}});
    assert_eq!(next::<C>(&mut late).await, not_admitted);
    // An answer from outside (a handler elsewhere) admits late: the reply is the
    // next thing it gets, then everything addressed to it.
    let conn = {
        let events = events.lock().unwrap();
        let (_, body) =
            events.iter().find(|(t, b)| t == "socket:connection" && b["context"]["username"] == "late").unwrap();
        body["context"]["connection"].as_u64().unwrap()
    };
    assert!(handle.answer(conn, "onconnect", true, Command::Reply(json!("welcome"))));
    assert_eq!(next::<C>(&mut late).await, json!({"type": "onconnect", "payload": "welcome"}));
    assert_eq!(handle.command(send("late")), 1);
    assert_eq!(next::<C>(&mut late).await["payload"], 3);
    // slow is never answered: closed at the deadline with the reason, having got nothing.
    assert!(timeout::<C, _>(LIMIT, slow.recv()).await.expect("closed in time").is_none());
    let close = slow.close_info().unwrap();
    assert_eq!(
        (close.code, close.reason.as_str()),
        (chinwag_core::CloseCode::POLICY_VIOLATION, chinwag_core::gateway::APPROVAL_TIMEOUT_REASON)
    );
    wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == "slow")).await;
    assert_eq!(close_event(&events, "slow")["closed"]["code"], 1008);
    // mallory is refused at once.
    let mut mallory = open("mallory").await;
    assert_eq!(next::<C>(&mut mallory).await, json!({"type": "error", "payload": {"message": "not you"}}));
    assert!(timeout::<C, _>(LIMIT, mallory.recv()).await.expect("closed in time").is_none());
    let published = events.lock().unwrap().iter().filter(|(t, _)| t == "socket:generalMessage").count();
    assert_eq!(published, 0, "nothing a pending connection said was published");
    fence::<C>(&handle, 9, &mut [&mut alex, &mut late]).await;
}

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

fn cookie_url(addr: SocketAddr, namespace: &str, token: &str) -> chinwag_core::ClientRequest {
    parse_url(&format!("ws://{addr}/connect?namespace={namespace}"))
        .unwrap()
        .with_header("cookie".parse().unwrap(), format!("ID_TOKEN={token}").parse().unwrap())
}

fn hs256(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

/// The status line and body of the answer to an upgrade with `token`.
async fn refused<C: Runtime>(addr: SocketAddr, namespace: &str, token: &str) -> (String, String) {
    let request = upgrade_request(addr, &format!("/connect?namespace={namespace}"))
        .replace("\r\n\r\n", &format!("\r\nCookie: ID_TOKEN={token}\r\n\r\n"));
    let response = chinwag_tests::raw_exchange::<C>(addr, request.as_bytes()).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Tokens as an identity provider issues them: the audience and issuer checked
/// (401 with the reason), the leeway, the namespaces claim (403), every verified
/// claim in the events' `context.headers.jwt`, and a connection closed with 4001
/// when its token expires; with `close_on_expiry` off, it stays.
async fn tokens_from_an_identity_provider<S: Runtime, C: Runtime>() {
    let verifier = |close_on_expiry: bool| {
        let verifier = chinwag_gateway::Verifier::new(
            chinwag_gateway::config::Algorithm::HS256,
            jsonwebtoken::DecodingKey::from_secret(SECRET),
            "ID_TOKEN",
        )
        .audiences(vec!["chinwag".into()])
        .issuers(vec!["https://idp.example".into()])
        .leeway(30)
        .namespaces(chinwag_core::gateway::NamespacePolicy::Claim("tenants".into()))
        .close_on_expiry(close_on_expiry);
        Authenticator::Jwt(Box::new(verifier))
    };
    let events: Events = Arc::default();
    let (addr, handle) = serve::<S>(quiet_config(), verifier(true), approving_handlers(&events));
    let now = chinwag_gateway::auth::unix_now();
    let claims = |user: &str, exp: u64| {
        json!({"preferred_username": user, "exp": exp, "aud": ["chinwag", "other"], "iss": "https://idp.example",
               "tenants": ["acme"], "email": format!("{user}@example.com"), "roles": ["admin"]})
    };
    let with = |user: &str, key: &str, value: Value| {
        let mut claims = claims(user, now + 300);
        claims[key] = value;
        hs256(claims)
    };
    let mut alex =
        connect::<C>(&cookie_url(addr, "acme", &hs256(claims("alex", now + 300))), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut alex).await, json!({"type": "onconnect", "payload": {"hello": "alex"}}));
    // Every verified claim, as the gateway document's handlers read them.
    let connected = {
        let events = events.lock().unwrap();
        events.iter().find(|(t, b)| t == "socket:connection" && b["context"]["username"] == "alex").unwrap().1.clone()
    };
    assert_eq!(connected["context"]["headers"]["jwt"], claims("alex", now + 300));
    assert_eq!(connected["context"]["params"]["namespace"], "acme");
    // Refusals, each with its sentence.
    let cases = [
        (
            with("x", "aud", json!("elsewhere")),
            "acme",
            "401",
            "the token is meant for another audience (its aud does not name this server)",
        ),
        (
            with("x", "iss", json!("https://evil.example")),
            "acme",
            "401",
            "the token is from an issuer (iss) this server does not accept",
        ),
        (hs256(claims("x", now - 31)), "acme", "401", "the token has expired (or has no exp)"),
        (
            hs256(claims("x", now + 300)),
            "globex",
            "403",
            "the token's tenants claim does not allow the namespace \"globex\"",
        ),
    ];
    for (token, namespace, status, reason) in cases {
        let (line, body) = refused::<C>(addr, namespace, &token).await;
        assert!(line.contains(status), "{reason}: {line}");
        assert_eq!(body, reason);
    }
    // Within the leeway: expired 20 s ago, still accepted (and closed 10 s from now).
    let mut lenient =
        connect::<C>(&cookie_url(addr, "acme", &hs256(claims("lenient", now - 20))), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut lenient).await["payload"]["hello"], "lenient");
    // A token that expires in 2 s (with the leeway: exp 28 s ago): closed with 4001.
    let now = chinwag_gateway::auth::unix_now();
    let started = std::time::Instant::now();
    let mut brief =
        connect::<C>(&cookie_url(addr, "acme", &hs256(claims("brief", now - 28))), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut brief).await["payload"]["hello"], "brief");
    assert!(timeout::<C, _>(LIMIT, brief.recv()).await.expect("closed in time").is_none());
    let waited = started.elapsed();
    assert!(waited > Duration::from_millis(500) && waited < Duration::from_secs(4), "closed after {waited:?}");
    let close = brief.close_info().unwrap();
    assert_eq!((close.code.0, close.reason.as_str()), (4001, chinwag_core::gateway::TOKEN_EXPIRED_REASON));
    wait_for::<C>(&events, |e| e.iter().any(|(t, b)| t == "socket:close" && b["context"]["username"] == "brief")).await;
    assert_eq!(
        close_event(&events, "brief")["closed"],
        json!({"code": 4001, "reason": chinwag_core::gateway::TOKEN_EXPIRED_REASON, "initiator": "server"})
    );
    fence::<C>(&handle, 1, &mut [&mut alex, &mut lenient]).await;

    // close_on_expiry off: the connection outlives its token.
    let (addr, handle) = serve::<S>(quiet_config(), verifier(false), approving_handlers(&events));
    let now = chinwag_gateway::auth::unix_now();
    let mut kept =
        connect::<C>(&cookie_url(addr, "acme", &hs256(claims("kept", now - 29))), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut kept).await["payload"]["hello"], "kept");
    C::sleep(Duration::from_millis(2500)).await;
    fence::<C>(&handle, 2, &mut [&mut kept]).await;
}

/// A folder of its own for a test's key files, removed at the end.
struct Folder(std::path::PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("chinwag-gw-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// Writes `name` atomically, as a deployment replaces a key file.
    fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(self.0.join(".next"), contents).unwrap();
        std::fs::rename(self.0.join(".next"), &path).unwrap();
        path
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_key(name: &str) -> Vec<u8> {
    std::fs::read(chinwag_tests::processes::repository().join("gateway/tests/keys").join(name)).unwrap()
}

/// A JWKS of the test keys: (file name of the JWK, kid).
fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(file, kid)| {
            let mut key: Value = serde_json::from_slice(&test_key(file)).unwrap();
            key["kid"] = json!(kid);
            key["use"] = json!("sig");
            key
        })
        .collect();
    json!({"keys": keys}).to_string()
}

/// Keys rotated while the gateway runs: the JWKS file changes and the gateway
/// notices on its own (no restart, no signal); tokens with the new kid are
/// accepted, tokens whose kid left get 401 with the reason.
async fn jwks_rotation_by_file_change<S: Runtime, C: Runtime>() {
    let folder = Folder::new(&format!("rotation-{}", std::any::type_name::<S>().len()));
    let path = folder.write("jwks.json", &jwks(&[("rs256-public.jwk.json", "2025")]));
    let config = chinwag_gateway::config::JwtConfig {
        algorithm: chinwag_gateway::config::Algorithm::RS256,
        key: chinwag_gateway::config::KeySource::JwksFile(path),
        cookie: "ID_TOKEN".into(),
        audiences: Vec::new(),
        issuers: Vec::new(),
        leeway_secs: 0,
        namespaces: Some(chinwag_core::gateway::NamespacePolicy::Any),
        close_on_expiry: true,
    };
    let verifier = chinwag_gateway::Verifier::from_config(&config).unwrap();
    let events: Events = Arc::default();
    let (addr, _handle) = serve::<S>(
        chinwag_tests::gateway_config(""),
        Authenticator::Jwt(Box::new(verifier)),
        approving_handlers(&events),
    );
    let now = chinwag_gateway::auth::unix_now();
    let token = |private: &str, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&test_key(private)).unwrap();
        jsonwebtoken::encode(&header, &json!({"preferred_username": "alex", "exp": now + 300}), &key).unwrap()
    };
    let (old, new) = (token("rs256-private.pem", "2025"), token("rs256-other-private.pem", "2026"));
    let mut first = connect::<C>(&cookie_url(addr, "acme", &old), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut first).await["payload"]["hello"], "alex");
    let unknown = "the token's key id (kid) is not one of this server's keys";
    assert_eq!(refused::<C>(addr, "acme", &new).await, ("HTTP/1.1 401 Unauthorized".to_owned(), unknown.to_owned()));
    // The identity provider publishes its new key beside the old one.
    folder.write("jwks.json", &jwks(&[("rs256-public.jwk.json", "2025"), ("rs256-other-public.jwk.json", "2026")]));
    let started = std::time::Instant::now();
    let mut second = loop {
        match connect::<C>(&cookie_url(addr, "acme", &new), Config::default()).await {
            Ok(ws) => break ws,
            Err(_) if started.elapsed() < Duration::from_secs(5) => C::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("the new key was never taken: {e}"),
        }
    };
    assert_eq!(next::<C>(&mut second).await["payload"]["hello"], "alex");
    // Then retires the old one.
    folder.write("jwks.json", &jwks(&[("rs256-other-public.jwk.json", "2026")]));
    let started = std::time::Instant::now();
    while refused::<C>(addr, "acme", &old).await.1 != unknown {
        assert!(started.elapsed() < Duration::from_secs(5), "the old key was never retired");
        C::sleep(Duration::from_millis(100)).await;
    }
    // A broken file leaves the keys in use.
    folder.write("jwks.json", "{\"keys\": [");
    C::sleep(Duration::from_millis(1500)).await;
    let mut third = connect::<C>(&cookie_url(addr, "acme", &new), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut third).await["payload"]["hello"], "alex");
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 3;
    scenarios: [approval_in_process, tokens_from_an_identity_provider, jwks_rotation_by_file_change, messages_replies_and_failures, a_failed_connect_closes, sends_never_cross_namespaces, the_heartbeat_closes_silent_clients, answers_from_outside, floods_are_warned_then_closed, origins_from_the_config, the_context_names_the_client];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
}
