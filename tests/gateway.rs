//! The gateway with the in-process bus, end to end on every runtime: connect
//! replies, typed routing, replies and failures, bad input, sends to a user in a
//! namespace, broadcasts, close events, the heartbeat, the message rate, and the
//! client address behind a trusted proxy.
//! Identities come from the development mode (`?username=`); the JWT check has its
//! own tests. That a client got nothing is proved with a fence message, never by
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

chinwag_tests::runtime_suite! {
    limit: LIMIT * 3;
    scenarios: [messages_replies_and_failures, a_failed_connect_closes, sends_never_cross_namespaces, the_heartbeat_closes_silent_clients, answers_from_outside, floods_are_warned_then_closed, origins_from_the_config, the_context_names_the_client];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
}
