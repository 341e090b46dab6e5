//! Graceful shutdown of the `chinwag` binary, as an operator does it: SIGTERM.
//! Every client gets close 1001 (going away), also clients that have been idle for
//! longer than the close timeout or the keepalive interval, and the process exits
//! within the close timeout plus a second. Clients are an independent
//! implementation (tokio-tungstenite) that answer pings and close frames as browsers
//! do.
//!
//! These tests wait for real time (idle clients): each runs in its own thread, so
//! the file takes about as long as its slowest test.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use support::Server;
use tokio_tungstenite::tungstenite::Message;

/// The server's close timeout (chinwag_core::Config's default).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENTS: usize = 20;

/// What one client saw until its connection ended.
#[derive(Debug, Default)]
struct Seen {
    texts: usize,
    pings: usize,
    close: Option<(u16, String)>,
}

/// Connects `CLIENTS` clients to `url(i)`, lets them sit idle (reading, so pings
/// are answered, but sending nothing) for `idle`, then sends SIGTERM and checks that
/// every client got 1001 and the server exited in time. Returns what each saw.
fn idle_then_terminate(server: &mut Server, url: impl Fn(usize) -> String, idle: Duration) -> Vec<Seen> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = url(i);
            rt.spawn(async move {
                let (ws, response) = tokio_tungstenite::connect_async(url).await.expect("connects");
                assert_eq!(response.status(), 101);
                let (mut sink, mut stream) = ws.split();
                let mut seen = Seen::default();
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(Message::Text(_)) => seen.texts += 1,
                        Ok(Message::Ping(_)) => seen.pings += 1,
                        Ok(Message::Close(frame)) => {
                            seen.close = Some(
                                frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string())),
                            );
                            // tungstenite queued the echo; make sure it is written.
                            let _ = sink.flush().await;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(idle);
    let signalled = Instant::now();
    server.signal("TERM");
    let (status, took) = server.wait_exit(signalled, CLOSE_TIMEOUT + Duration::from_secs(1));
    assert!(status.success(), "exit status {status}");
    let seen: Vec<Seen> = rt.block_on(async {
        let mut all = Vec::new();
        for client in clients {
            let seen = tokio::time::timeout(Duration::from_secs(5), client)
                .await
                .expect("the client's connection ended")
                .expect("the client task did not panic");
            all.push(seen);
        }
        all
    });
    let going_away = seen.iter().filter(|s| s.close.as_ref().is_some_and(|(code, _)| *code == 1001)).count();
    assert_eq!(going_away, CLIENTS, "clients that got 1001 after {idle:?} idle: {seen:?}");
    for s in &seen {
        assert_eq!(s.close.as_ref().map(|(_, reason)| reason.as_str()), Some("server shutting down"));
    }
    eprintln!("{CLIENTS} of {CLIENTS} clients got 1001 after {idle:?} idle; the server exited {took:?} after SIGTERM");
    seen
}

/// The chat, with the default keepalive or a short one (so that pings flow while
/// the clients are idle).
fn chat(runtime: &str, keepalive_secs: Option<u64>, idle: Duration) -> Vec<Seen> {
    let keepalive = keepalive_secs.map(|secs| secs.to_string());
    let mut args = vec!["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--runtime", runtime];
    if let Some(secs) = &keepalive {
        args.extend(["--keepalive", secs]);
    }
    let mut server = Server::start(&args, &[], true);
    let port = server.addr.port();
    idle_then_terminate(&mut server, |i| format!("ws://127.0.0.1:{port}/chat/idler{i}?age=3"), idle)
}

/// Idle for longer than the close timeout: the case that used to lose every
/// client (the close timeout was armed from the receiving task's last wake-up, so
/// it fired at once and the close frame was dropped).
fn chat_tokio_idle_clients_get_1001() {
    let seen = chat("tokio", None, CLOSE_TIMEOUT + Duration::from_secs(2));
    assert!(seen.iter().all(|s| s.texts >= 1), "each got at least its greeting");
}

fn chat_async_std_idle_clients_get_1001() {
    chat("async-std", None, CLOSE_TIMEOUT + Duration::from_secs(2));
}

/// Idle for longer than the keepalive interval (2 s here, `--keepalive 2`), with
/// the server's keepalive pings flowing and answered.
fn chat_tokio_clients_idle_past_keepalive_get_1001() {
    let seen = chat("tokio", Some(2), CLOSE_TIMEOUT + Duration::from_secs(2));
    assert!(seen.iter().all(|s| s.pings >= 1), "keepalive pings flowed: {seen:?}");
}

fn chat_async_std_clients_idle_past_keepalive_get_1001() {
    let seen = chat("async-std", Some(2), CLOSE_TIMEOUT + Duration::from_secs(2));
    assert!(seen.iter().all(|s| s.pings >= 1), "keepalive pings flowed: {seen:?}");
}

/// The gateway (in-process bus, development usernames), with the default
/// heartbeat or a short one (so that pings flow while the clients are idle).
fn gateway(runtime: &str, heartbeat_secs: Option<u64>, idle: Duration) -> Vec<Seen> {
    let name = format!("chinwag-shutdown-{}-{runtime}-{heartbeat_secs:?}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    let heartbeat = heartbeat_secs
        .map(|secs| format!("  heartbeat:\n    interval_secs: {secs}\n    timeout_secs: 5\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "gateway:\n  listen: \"127.0.0.1:0\"\n  socket:\n    path: \"/connect\"\n    onconnect:\n      \
             publish: \"socket:connection\"\n    onmessage:\n      publish: \"socket:message\"\n    onclose:\n      \
             publish: \"socket:close\"\n    send:\n      subscribe: \"socket:send\"\n    broadcast:\n      \
             subscribe: \"socket:broadcast\"\n{heartbeat}  auth:\n    development_usernames: true\n  \
             bus: \"in-process\"\n"
        ),
    )
    .unwrap();
    let mut server = Server::start(
        &["gateway", "--config", config.to_str().unwrap(), "--admin-addr", "off", "--runtime", runtime],
        &[],
        false,
    );
    let port = server.addr.port();
    let seen = idle_then_terminate(
        &mut server,
        |i| format!("ws://127.0.0.1:{port}/connect?namespace=ns&username=idler{i}"),
        idle,
    );
    let _ = std::fs::remove_dir_all(&dir);
    seen
}

fn gateway_tokio_idle_clients_get_1001() {
    gateway("tokio", None, CLOSE_TIMEOUT + Duration::from_secs(2));
}

fn gateway_async_std_idle_clients_get_1001() {
    gateway("async-std", None, CLOSE_TIMEOUT + Duration::from_secs(2));
}

fn gateway_tokio_clients_idle_past_heartbeat_get_1001() {
    let seen = gateway("tokio", Some(2), CLOSE_TIMEOUT + Duration::from_secs(2));
    assert!(seen.iter().all(|s| s.pings >= 1), "heartbeat pings flowed: {seen:?}");
}

fn gateway_async_std_clients_idle_past_heartbeat_get_1001() {
    let seen = gateway("async-std", Some(2), CLOSE_TIMEOUT + Duration::from_secs(2));
    assert!(seen.iter().all(|s| s.pings >= 1), "heartbeat pings flowed: {seen:?}");
}

/// Every scenario above at once, each in a thread of its own: they wait for real
/// time (idle clients), so together they take about as long as one, where the
/// test harness would run them two at a time on a 2-core machine (28 s).
#[test]
fn every_client_gets_1001_at_sigterm() {
    let scenarios: [(&str, fn()); 8] = [
        ("chat_tokio_idle_clients_get_1001", chat_tokio_idle_clients_get_1001),
        ("chat_async_std_idle_clients_get_1001", chat_async_std_idle_clients_get_1001),
        ("chat_tokio_clients_idle_past_keepalive_get_1001", chat_tokio_clients_idle_past_keepalive_get_1001),
        ("chat_async_std_clients_idle_past_keepalive_get_1001", chat_async_std_clients_idle_past_keepalive_get_1001),
        ("gateway_tokio_idle_clients_get_1001", gateway_tokio_idle_clients_get_1001),
        ("gateway_async_std_idle_clients_get_1001", gateway_async_std_idle_clients_get_1001),
        ("gateway_tokio_clients_idle_past_heartbeat_get_1001", gateway_tokio_clients_idle_past_heartbeat_get_1001),
        (
            "gateway_async_std_clients_idle_past_heartbeat_get_1001",
            gateway_async_std_clients_idle_past_heartbeat_get_1001,
        ),
    ];
    let running: Vec<_> = scenarios
        .into_iter()
        .map(|(name, scenario)| (name, std::thread::Builder::new().name(name.into()).spawn(scenario).unwrap()))
        .collect();
    let failed: Vec<&str> = running.into_iter().filter_map(|(name, run)| run.join().is_err().then_some(name)).collect();
    assert!(failed.is_empty(), "scenarios that failed (their panics are above): {failed:?}");
}
