//! The binary as operators run it: the admin listener (metrics that agree with
//! the traffic, health, readiness), a drain a load balancer can follow, the
//! configuration from the environment, JSON logs, SIGHUP reloading the gateway's
//! keys; for the chat, the gateway and the echo server, on tokio and async-std.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use support::{Server, Ws, metric_in, next_text};
use tokio_tungstenite::tungstenite::Message;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn join(server: &Server, path: &str) -> Ws {
    let (ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr)).await.expect("connects");
    assert_eq!(response.status(), 101);
    ws
}

/// The frame a server sends for a short text: two header bytes and the text.
fn frame_len(text: &str) -> u64 {
    assert!(text.len() < 126);
    2 + text.len() as u64
}

fn chat(runtime_name: &str) -> Server {
    Server::start(&["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--runtime", runtime_name], &[], true)
}

/// Known traffic through the chat; every counter must say exactly what happened.
fn counters_agree_with_traffic(runtime_name: &str) {
    let server = chat(runtime_name);
    assert_eq!(server.admin_get("/health"), (200, "ok\n".to_owned()));
    assert_eq!(server.admin_get("/ready"), (200, "ready: serving\n".to_owned()));
    runtime().block_on(async {
        let mut ann = join(&server, "/chat/ann").await;
        assert_eq!(next_text(&mut ann).await, "Hi ann! You have successfully connected to the chat");
        assert_eq!(next_text(&mut ann).await, "ann connected to chat");
        let mut bob = join(&server, "/chat/bob?age=7").await;
        assert_eq!(next_text(&mut bob).await, "Hi bob! You have successfully connected to the chat");
        assert_eq!(next_text(&mut bob).await, "bob with age 7 connected to chat");
        assert_eq!(next_text(&mut ann).await, "bob with age 7 connected to chat");
        // Two refusals: a name in use (409) and no endpoint (404).
        for path in ["/chat/ann", "/nowhere"] {
            assert!(tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr)).await.is_err());
        }
        assert_eq!(server.metric("chinwag_chat_users"), 2.0);
        assert_eq!(server.metric("chinwag_connections"), 2.0);
        // One line at a time: two clients' lines sent at once may be relayed in
        // either order (on a multi-threaded runtime their tasks race).
        ann.send(Message::text("hello")).await.unwrap();
        for ws in [&mut ann, &mut bob] {
            assert_eq!(next_text(ws).await, "ann: hello");
        }
        bob.send(Message::text("hi")).await.unwrap();
        for ws in [&mut ann, &mut bob] {
            assert_eq!(next_text(ws).await, "bob: hi");
        }
        ann.send(Message::text("/join ops")).await.unwrap();
        assert_eq!(next_text(&mut ann).await, "ann joined #ops");
        assert_eq!(server.metric("chinwag_chat_rooms"), 1.0);
        ann.close(None).await.unwrap();
        while ann.next().await.is_some() {}
        assert_eq!(next_text(&mut bob).await, "ann left the chat");
        bob.close(None).await.unwrap();
        while bob.next().await.is_some() {}
    });
    // The server counts a connection as ended after its own task is done.
    for _ in 0..200 {
        if server.metric("chinwag_connections") == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, metrics) = server.admin_get("/metrics");
    assert_eq!(status, 200);
    let get = |series: &str| metric_in(&metrics, series).unwrap_or_else(|| panic!("no {series}"));
    // What each client was sent, one entry per recipient.
    let sent = [
        ("Hi ann! You have successfully connected to the chat", 1),
        ("ann connected to chat", 1),
        ("Hi bob! You have successfully connected to the chat", 1),
        ("bob with age 7 connected to chat", 2),
        ("ann: hello", 2),
        ("bob: hi", 2),
        ("ann joined #ops", 1),
        ("ann left the chat", 1),
    ];
    let messages: u64 = sent.iter().map(|(_, n)| n).sum();
    let bytes: u64 = sent.iter().map(|(text, n)| n * frame_len(text)).sum();
    assert_eq!(get("chinwag_connections"), 0.0);
    assert_eq!(get("chinwag_connections_opened_total"), 2.0);
    assert_eq!(get("chinwag_messages_received_total"), 3.0);
    assert_eq!(get("chinwag_received_bytes_total"), (5 + 2 + "/join ops".len()) as f64);
    assert_eq!(get("chinwag_messages_sent_total"), messages as f64);
    assert_eq!(get("chinwag_sent_bytes_total"), bytes as f64);
    assert_eq!(get("chinwag_handshakes_refused_total{reason=\"conflict\"}"), 1.0);
    assert_eq!(get("chinwag_handshakes_refused_total{reason=\"not_found\"}"), 1.0);
    assert_eq!(get("chinwag_disconnects_total{reason=\"normal\"}"), 2.0);
    // The lines for both members (bob's join, two chat lines) were broadcasts.
    assert_eq!(get("chinwag_broadcast_delivery_seconds_count"), 3.0);
    assert_eq!(get("chinwag_chat_users"), 0.0);
    assert!(get("process_resident_memory_bytes") > 1e6);
    assert!(get("process_open_fds") >= 3.0);
}

#[test]
fn tokio_counters_agree_with_traffic() {
    counters_agree_with_traffic("tokio");
}

#[test]
fn async_std_counters_agree_with_traffic() {
    counters_agree_with_traffic("async-std");
}

/// SIGTERM with a drain delay: `/ready` turns 503 at once, clients are still served
/// (new ones too) for the delay, then every one gets 1001 and the process exits 0.
fn drain(runtime_name: &str) {
    let delay = Duration::from_secs(2);
    let mut server = Server::start(
        &["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--drain-delay", "2", "--runtime", runtime_name],
        &[],
        true,
    );
    runtime().block_on(async {
        let mut ann = join(&server, "/chat/ann").await;
        next_text(&mut ann).await;
        next_text(&mut ann).await;
        let signalled = Instant::now();
        server.signal("TERM");
        let mut flipped = None;
        for _ in 0..100 {
            if server.admin_get("/ready").0 == 503 {
                flipped = Some(signalled.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let flipped = flipped.expect("/ready turned 503");
        assert!(flipped < Duration::from_millis(500), "/ready turned 503 after {flipped:?}");
        assert_eq!(server.admin_get("/ready").1, "not ready: draining before shutting down\n");
        assert_eq!(server.metric("chinwag_draining"), 1.0);
        // Still serving: a new client joins and talks.
        let mut bob = join(&server, "/chat/bob").await;
        next_text(&mut bob).await;
        next_text(&mut bob).await;
        bob.send(Message::text("still open?")).await.unwrap();
        assert_eq!(next_text(&mut bob).await, "bob: still open?");
        // Then 1001 for both, after the delay.
        for ws in [&mut ann, &mut bob] {
            let close = loop {
                match tokio::time::timeout(delay + Duration::from_secs(3), ws.next()).await.expect("closed in time") {
                    Some(Ok(Message::Close(frame))) => break frame,
                    Some(Ok(_)) => {}
                    other => panic!("expected a close, got {other:?}"),
                }
            };
            let frame = close.expect("a close code");
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1001, "server shutting down"));
            while ws.next().await.is_some() {}
        }
        let closed_after = signalled.elapsed();
        assert!(closed_after >= delay, "closed after {closed_after:?}, before the drain delay");
        let (status, took) = server.wait_exit(signalled, delay + CLOSE_TIMEOUT + Duration::from_secs(1));
        assert!(status.success(), "exit status {status}");
        eprintln!("{runtime_name}: /ready 503 after {flipped:?}; 1001 after {closed_after:?}; exit after {took:?}");
    });
}

#[test]
fn tokio_drain() {
    drain("tokio");
}

#[test]
fn async_std_drain() {
    drain("async-std");
}

/// A second SIGTERM (or Ctrl-C) does not wait for the drain.
#[test]
fn a_second_signal_exits_at_once() {
    let mut server =
        Server::start(&["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--drain-delay", "60"], &[], true);
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.admin_get("/ready").0, 503);
    let second = Instant::now();
    server.signal("INT");
    let (status, took) = server.wait_exit(second, Duration::from_secs(2));
    assert_eq!(status.code(), Some(1), "a forced exit is not a clean one");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// An admin address that cannot be bound stops the server at start, naming the flag.
#[test]
fn an_admin_address_in_use_stops_the_server() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chinwag"))
        .args(["--addr", "127.0.0.1:0", "--admin-addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("--admin-addr {addr}")), "{stderr}");
}

/// A keepalive outside 0 s to a day (its timeout: 1 s to a day), from a flag or the
/// environment, stops the server at start with the range, before it listens: a
/// larger value is a mistake (milliseconds typed as seconds, say), and at the
/// extreme would turn the keepalive off without a word.
#[test]
fn a_keepalive_out_of_range_is_refused() {
    let refused = |args: &[&str], env: &[(&str, &str)]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chinwag"))
            .args(["--addr", "127.0.0.1:0", "--admin-addr", "off"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that took the value runs until stopped: give it 10 s to exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server started with {args:?} {env:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&["--keepalive", "86401"], &[]);
    assert!(stderr.contains("86401 is not in 0..=86400"), "{stderr}");
    let stderr = refused(&["--keepalive-timeout", "0"], &[]);
    assert!(stderr.contains("0 is not in 1..=86400"), "{stderr}");
    let stderr = refused(&[], &[("CHINWAG_KEEPALIVE", "18446744073709551615")]);
    assert!(stderr.contains("is not in 0..=86400"), "{stderr}");
}

/// Every flag also comes from the environment; `--help` shows the variables; JSON
/// logs carry the connection and the client's address on its lines.
#[test]
fn configuration_from_the_environment_and_json_logs() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_chinwag")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in ["CHINWAG_ADDR", "CHINWAG_ADMIN_ADDR", "CHINWAG_DRAIN_DELAY", "CHINWAG_LOG_FORMAT", "CHINWAG_RUNTIME"] {
        assert!(help.contains(&format!("[env: {var}=")), "--help does not show {var}:\n{help}");
    }
    let server = Server::start(
        &[],
        &[
            ("CHINWAG_ADDR", "127.0.0.1:0"),
            ("CHINWAG_ADMIN_ADDR", "127.0.0.1:0"),
            ("CHINWAG_LOG_FORMAT", "json"),
            ("CHINWAG_RUNTIME", "async-std"),
        ],
        true,
    );
    assert_eq!(server.admin_get("/ready").0, 200);
    runtime().block_on(async {
        let mut ws = join(&server, "/chat/jay").await;
        next_text(&mut ws).await;
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log.lock().unwrap().clone();
    let mut joined = None;
    for line in &log {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        if value["fields"]["message"] == "jay connected to chat" {
            joined = Some(value);
        }
    }
    let joined = joined.expect("the join line was logged");
    assert!(joined["span"]["conn"].is_string(), "the connection's id: {joined}");
    assert!(joined["span"]["client"].as_str().unwrap().starts_with("127.0.0.1:"), "the client's address: {joined}");
}

/// The gateway's admin listener: readiness says the bus's state; its own metrics.
fn gateway_admin(runtime_name: &str) {
    let dir = std::env::temp_dir().join(format!("chinwag-ops-{}-{runtime_name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/socket.dev.yaml"))
        .unwrap()
        .replace("listen: \"127.0.0.1:4000\"", "listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"");
    std::fs::write(&config, yaml).unwrap();
    let server =
        Server::start(&["gateway", "--config", config.to_str().unwrap(), "--runtime", runtime_name], &[], true);
    assert_eq!(server.admin_get("/ready"), (200, "ready: serving; bus: in-process\n".to_owned()));
    runtime().block_on(async {
        let mut ws = join(&server, "/connect?namespace=acme&username=alex").await;
        ws.send(Message::text(r#"{"type":"message_type_one","payload":1}"#)).await.unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    std::thread::sleep(Duration::from_millis(200));
    let (_, metrics) = server.admin_get("/metrics");
    let get = |series: &str| metric_in(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
    assert_eq!(get("chinwag_gateway_events_published_total{topic=\"socket:connection\"}"), 1.0);
    assert_eq!(get("chinwag_gateway_events_published_total{topic=\"socket:generalMessage\"}"), 1.0);
    assert_eq!(get("chinwag_gateway_events_published_total{topic=\"socket:type_one\"}"), 1.0);
    assert_eq!(get("chinwag_gateway_events_published_total{topic=\"socket:close\"}"), 1.0);
    assert_eq!(get("chinwag_gateway_bus_connected"), 1.0);
    assert_eq!(get("chinwag_messages_received_total"), 1.0);
    assert_eq!(get("chinwag_connections_opened_total"), 1.0);
    // The events' bodies hold what users send: not logged at info.
    let log = server.log.lock().unwrap().clone();
    assert!(!log.iter().any(|line| line.contains("message_type_one")), "{log:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokio_gateway_admin() {
    gateway_admin("tokio");
}

#[test]
fn async_std_gateway_admin() {
    gateway_admin("async-std");
}

/// The echo server: no admin listener by default; with one, its connections and
/// readiness; SIGTERM closes its clients with 1001.
fn echo_admin_and_shutdown(runtime_name: &str) {
    let mut server = Server::start(
        &["echo", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--runtime", runtime_name],
        &[],
        true,
    );
    runtime().block_on(async {
        let mut ws = join(&server, "/").await;
        ws.send(Message::text("ping?")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "ping?");
        assert_eq!(server.metric("chinwag_connections"), 1.0);
        assert_eq!(server.admin_get("/ready").0, 200);
        let signalled = Instant::now();
        server.signal("TERM");
        let frame = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.expect("a code"),
                Some(Ok(_)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        };
        assert_eq!(u16::from(frame.code), 1001);
        while ws.next().await.is_some() {}
        let (status, _) = server.wait_exit(signalled, CLOSE_TIMEOUT + Duration::from_secs(1));
        assert!(status.success());
    });
    // Without the flag, nothing listens besides the echo port.
    let plain = Server::start(&["echo", "--addr", "127.0.0.1:0", "--runtime", runtime_name], &[], false);
    assert!(plain.admin.is_none());
    assert!(!plain.log.lock().unwrap().iter().any(|l| l.contains("admin on")));
}

#[test]
fn tokio_echo_admin_and_shutdown() {
    echo_admin_and_shutdown("tokio");
}

#[test]
fn async_std_echo_admin_and_shutdown() {
    echo_admin_and_shutdown("async-std");
}

#[test]
fn event_loop_echo_admin_and_shutdown() {
    echo_admin_and_shutdown("event-loop");
}

/// `chinwag echo` runs on the event loops unless told otherwise, and only the
/// echo does: the chat refuses `--runtime event-loop` with a clear message.
#[test]
fn the_echo_defaults_to_the_event_loops_and_only_it_runs_on_them() {
    let echo = Server::start(&["echo", "--addr", "127.0.0.1:0"], &[], false);
    assert!(echo.log.lock().unwrap().iter().any(|l| l.contains("echo server listening (event loops)")));
    drop(echo);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_chinwag"))
        .args(["--addr", "127.0.0.1:0", "--runtime", "event-loop"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--runtime event-loop runs `chinwag echo` only"), "{message}");
}

/// The gateway's test keys (gateway/tests/keys).
fn test_key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../gateway/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A JWKS of the test keys: (file name of the JWK, kid).
fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(file, kid)| {
            let mut key: serde_json::Value = serde_json::from_slice(&test_key(file)).unwrap();
            key["kid"] = (*kid).into();
            key
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// Connects to the gateway with an RS256 token signed by `private` under `kid`:
/// the handshake's status.
async fn connect_with_key(server: &Server, private: &str, kid: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&test_key(private)).unwrap();
    let token =
        jsonwebtoken::encode(&header, &serde_json::json!({"preferred_username": "alex", "exp": exp}), &key).unwrap();
    let mut request = format!("ws://{}/connect?namespace=acme", server.addr).into_client_request().unwrap();
    request.headers_mut().insert("cookie", format!("ID_TOKEN={token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

/// SIGHUP reads the gateway's JWKS again (counted and logged) and does not stop
/// it; a key added to the file is accepted after it; SIGTERM still shuts down.
fn gateway_keys_reload_on_sighup(runtime_name: &str) {
    let dir = std::env::temp_dir().join(format!("chinwag-ops-hup-{}-{runtime_name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("jwks.json"), jwks(&[("rs256-public.jwk.json", "2025")])).unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        "gateway:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\n  socket:\n    path: \"/connect\"\n  \
         auth:\n    jwt:\n      algorithm: RS256\n      public_keys_file: jwks.json\n      any_namespace: true\n",
    )
    .unwrap();
    let mut server =
        Server::start(&["gateway", "--config", config.to_str().unwrap(), "--runtime", runtime_name], &[], true);
    let reloads = |server: &Server| server.metric("chinwag_gateway_key_reloads_total{outcome=\"loaded\"}");
    assert_eq!(reloads(&server), 0.0);
    runtime().block_on(async {
        assert_eq!(connect_with_key(&server, "rs256-private.pem", "2025").await, 101);
        assert_eq!(connect_with_key(&server, "rs256-other-private.pem", "2026").await, 401);
    });
    // The file is unchanged, so only the signal can reload it.
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(&server) < 1.0 {
        assert!(Instant::now() < deadline, "SIGHUP reloaded nothing: {:?}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.admin_get("/ready").0, 200, "SIGHUP does not stop the gateway");
    assert!(server.child.try_wait().unwrap().is_none());
    // A new key, then SIGHUP: tokens signed with it are accepted.
    std::fs::write(
        dir.join("jwks.json"),
        jwks(&[("rs256-public.jwk.json", "2025"), ("rs256-other-public.jwk.json", "2026")]),
    )
    .unwrap();
    server.signal("HUP");
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while connect_with_key(&server, "rs256-other-private.pem", "2026").await != 101 {
            assert!(Instant::now() < deadline, "the new key was not taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let log = server.log.lock().unwrap().clone();
    assert!(log.iter().any(|line| line.contains("JWT keys loaded from") && line.contains("kid 2025, 2026")), "{log:?}");
    let signalled = Instant::now();
    server.signal("TERM");
    let (status, _) = server.wait_exit(signalled, CLOSE_TIMEOUT + Duration::from_secs(1));
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokio_gateway_keys_reload_on_sighup() {
    gateway_keys_reload_on_sighup("tokio");
}

#[test]
fn async_std_gateway_keys_reload_on_sighup() {
    gateway_keys_reload_on_sighup("async-std");
}
