//! The chat server's limits and faults end to end, on every runtime: connection
//! counts (503, 429), the Origin check (403), the message rate (warning, then 1008),
//! a client that stops reading (1008 once its backlog is over the bound), a peer
//! that vanishes (keepalive), a reset connection, and shutdown under load; the
//! others keep chatting throughout. docs/limits.md documents each answer asserted
//! here.

use chinwag_core::handshake::OriginPolicy;
use chinwag_core::http::{HeaderValue, header};
use chinwag_core::limit::{FLOOD_REASON, RateLimit};
use chinwag_core::{CloseCode, Config, HandshakeError, Message, SLOW_CONSUMER_REASON};
use chinwag_driver::{Error, Runtime, WebSocket, connect, parse_url};
use chinwag_service::{Limits, Stats};
use chinwag_tests::{
    client_frame, connect_from, raw_exchange, raw_exchange_from, read_to_end, start_chat, timeout, upgrade_request,
    write_all,
};
use std::net::SocketAddr;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

async fn try_join<C: Runtime>(addr: SocketAddr, path: &str) -> Result<Client<C>, Error> {
    connect::<C>(&parse_url(&format!("ws://{addr}{path}")).unwrap(), Config::default()).await
}

async fn join<C: Runtime>(addr: SocketAddr, path: &str) -> Client<C> {
    let mut ws = try_join::<C>(addr, path).await.unwrap();
    // The greeting and the join line.
    next::<C>(&mut ws).await;
    next::<C>(&mut ws).await;
    ws
}

fn status(result: Result<impl Sized, Error>) -> u16 {
    match result {
        Ok(_) => 101,
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(s))) => s,
        Err(e) => panic!("{e}"),
    }
}

async fn next<C: Runtime>(ws: &mut Client<C>) -> String {
    match timeout::<C, _>(LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => t.to_string(),
        other => panic!("expected a line, got {other:?}"),
    }
}

/// The body of a raw HTTP response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// The raw response to an upgrade request with extra header lines (for refusals:
/// the server answers and closes).
async fn raw_response<C: Runtime>(addr: SocketAddr, path: &str, extra: &str) -> String {
    let request = upgrade_request(addr, path).replacen("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"), 1);
    raw_exchange::<C>(addr, request.as_bytes()).await
}

async fn connection_limits<S: Runtime, C: Runtime>() {
    let limits = Limits { max_connections: 3, max_connections_per_ip: Some(2), ..Limits::default() };
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), limits);
    // Each limit alone: from 127.0.0.1 the per-IP limit (2) is reached while the
    // server (3) is not full; from 127.0.0.3, with no connection of its own, only
    // the server-wide limit can refuse.
    let mut ann = join::<C>(addr, "/chat/ann").await;
    let _bob = join::<C>(addr, "/chat/bob").await;
    assert_eq!(next::<C>(&mut ann).await, "bob connected to chat");
    let response = raw_response::<C>(addr, "/chat/cy", "").await;
    assert!(response.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{response}");
    assert_eq!(body(&response), "too many connections from your address");
    assert_eq!(handle.stats(), Stats { refused_per_ip: 1, ..Stats::default() });
    // Another loopback address is another client: it takes the last place.
    let mut dee = connect_from([127, 0, 0, 2].into(), addr).expect("connecting from 127.0.0.2");
    std::io::Write::write_all(&mut dee, upgrade_request(addr, "/chat/dee").as_bytes()).unwrap();
    let mut head = [0; 12];
    std::io::Read::read_exact(&mut dee, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101", "dee is admitted");
    assert_eq!(next::<C>(&mut ann).await, "dee connected to chat");
    // The server is full: a third address, under its own per-IP limit, gets 503.
    let response = raw_exchange_from([127, 0, 0, 3].into(), addr, upgrade_request(addr, "/chat/eve").as_bytes());
    assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{response}");
    assert_eq!(body(&response), "the server is at its connection limit; try again later");
    assert_eq!(handle.stats(), Stats { refused_per_ip: 1, refused_server_full: 1, ..Stats::default() });
    // A place freed is a place taken.
    drop(ann);
    let mut freed = false;
    for _ in 0..100 {
        if status(try_join::<C>(addr, "/chat/fay").await) == 101 {
            freed = true;
            break;
        }
        C::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the closed connection's place was never given back");
}

async fn origin_check<S: Runtime, C: Runtime>() {
    let limits = Limits { origins: OriginPolicy::same_host().allow("https://friend.example"), ..Limits::default() };
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), limits);
    let response = raw_response::<C>(addr, "/chat/ann", "Origin: http://evil.example").await;
    assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
    assert!(response.ends_with("origin http://evil.example is not allowed to connect"), "{response}");
    assert_eq!(handle.stats().refused_origin, 1);
    for (name, origin) in [("own", format!("http://{addr}")), ("friend", "https://friend.example".to_owned())] {
        let request = parse_url(&format!("ws://{addr}/chat/{name}"))
            .unwrap()
            .with_header(header::ORIGIN, HeaderValue::from_str(&origin).unwrap());
        assert_eq!(status(connect::<C>(&request, Config::default()).await), 101, "{origin}");
    }
    // Programs that are not browsers send no Origin.
    assert_eq!(status(try_join::<C>(addr, "/chat/bot").await), 101);
}

async fn a_flooding_client_is_warned_then_closed<S: Runtime, C: Runtime>() {
    let limits = Limits { message_rate: Some(RateLimit::new(5.0, 5)), ..Limits::default() };
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), limits);
    let mut ann = join::<C>(addr, "/chat/ann").await;
    let mut flood = join::<C>(addr, "/chat/flood").await;
    assert_eq!(next::<C>(&mut ann).await, "flood connected to chat");
    // Five messages fit the burst; the sixth is dropped with a warning.
    for i in 0..6 {
        flood.feed(&Message::text(format!("line {i}"))).await.unwrap();
    }
    flood.flush().await.unwrap();
    for i in 0..5 {
        assert_eq!(next::<C>(&mut flood).await, format!("flood: line {i}"));
        assert_eq!(next::<C>(&mut ann).await, format!("flood: line {i}"));
    }
    assert_eq!(next::<C>(&mut flood).await, chinwag::chat::RATE_WARNING);
    // Going on regardless: closed with 1008, and the room hears that flood left.
    for i in 6..20 {
        flood.feed(&Message::text(format!("line {i}"))).await.unwrap();
    }
    flood.flush().await.unwrap();
    // Nothing more arrives: the stream ends with the close.
    match timeout::<C, _>(LIMIT, flood.recv()).await {
        Some(None) => {}
        Some(Some(other)) => panic!("unexpected {other:?}"),
        None => panic!("the flooding client was never closed"),
    }
    let closed = flood.close_info().expect("closed");
    assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::POLICY_VIOLATION, FLOOD_REASON));
    assert_eq!(next::<C>(&mut ann).await, "flood left the chat");
    let stats = handle.stats();
    assert_eq!(stats.closed_flooding, 1);
    // The sixth line, then at least `burst` more (those that arrived before the close).
    assert!(stats.messages_dropped >= 6, "{stats:?}");
    // Everyone else chats on.
    ann.send(&Message::text("still here")).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "ann: still here");
}

async fn a_client_that_stops_reading_is_closed<S: Runtime, C: Runtime>() {
    let config = Config { max_backlog: 64 << 10, ..chinwag::chat::config() };
    let (addr, handle) = start_chat::<S>(config, Limits { message_rate: None, ..Limits::default() });
    let mut ann = join::<C>(addr, "/chat/ann").await;
    let mut bob = join::<C>(addr, "/chat/bob").await;
    next::<C>(&mut ann).await; // bob connected
    // A client that completes the handshake, then never reads.
    let mut slow = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut slow, upgrade_request(addr, "/chat/slow").as_bytes()).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "slow connected to chat");
    assert_eq!(next::<C>(&mut bob).await, "slow connected to chat");

    // Ann talks; Bob reads every line, in order; slow reads nothing. Lines of 4 KiB:
    // the kernel's buffers and the 64 KiB backlog fill within a few hundred.
    let line = "z".repeat(4000);
    let mut sent = 0;
    while handle.stats().closed_slow == 0 {
        assert!(sent < 5_000, "the slow client was never closed");
        ann.send(&Message::text(format!("{sent} {line}"))).await.unwrap();
        assert_eq!(next::<C>(&mut bob).await, format!("ann: {sent} {line}"));
        assert_eq!(next::<C>(&mut ann).await, format!("ann: {sent} {line}"));
        sent += 1;
    }
    // When the slow client reads at last (within the close timeout): what was
    // queued, then close 1008; and the server closes the TCP connection.
    let tail = read_to_end(&mut slow).await;
    let reason = SLOW_CONSUMER_REASON.as_bytes();
    let close_frame: Vec<u8> = [&[0x88, 2 + reason.len() as u8][..], &1008u16.to_be_bytes(), reason].concat();
    assert!(tail.ends_with(&close_frame), "the stream does not end with the 1008 close frame");
    assert_eq!(next::<C>(&mut bob).await, "slow left the chat");
    ann.send(&Message::text("after")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "ann: after");
}

async fn a_vanished_peer_is_cleaned_up_by_keepalive<S: Runtime, C: Runtime>() {
    let config = Config {
        keepalive_interval: Some(Duration::from_millis(300)),
        keepalive_timeout: Duration::from_millis(300),
        ..chinwag::chat::config()
    };
    let (addr, handle) = start_chat::<S>(config, Limits::default());
    let mut ann = join::<C>(addr, "/chat/ann").await;
    // A peer that joins a room, then goes silent: its kernel still acknowledges
    // bytes, but it never answers a ping (a hung process, a half-open connection).
    let mut ghost = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut ghost, upgrade_request(addr, "/chat/ghost").as_bytes()).await.unwrap();
    let join_room = client_frame(0x81, b"/join attic", true);
    write_all(&mut ghost, &join_room).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "ghost connected to chat");
    for _ in 0..100 {
        if handle.with_hub(|hub| hub.group_members("attic").count()) == 1 {
            break;
        }
        C::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.with_hub(|hub| hub.group_members("attic").count()), 1, "the ghost's room exists");
    // Ann keeps talking (so she stays alive); within interval + timeout the ghost is
    // gone: its line, its name and its room.
    let started = std::time::Instant::now();
    loop {
        ann.send(&Message::text("anyone?")).await.unwrap();
        let line = next::<C>(&mut ann).await;
        if line == "ghost left the chat" {
            break;
        }
        assert_eq!(line, "ann: anyone?");
        assert!(started.elapsed() < Duration::from_secs(5), "the ghost was never detected");
        C::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "detected after {:?}", started.elapsed());
    // Left: ann alone in the main chat (a group of its own); the attic is gone.
    let left =
        handle.with_hub(|hub| (hub.len(), hub.name_count(), hub.group_count(), hub.group_members("attic").count()));
    assert_eq!(left, (1, 1, 1, 0));
    // The name is free again.
    let _ghost_again = join::<C>(addr, "/chat/ghost").await;
    drop(ghost);
}

async fn a_reset_connection_harms_no_one<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), Limits::default());
    let mut ann = join::<C>(addr, "/chat/ann").await;
    for round in 0..20 {
        // Joins, says something, and resets the connection (RST, not FIN).
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut stream = std::io::BufWriter::new(stream);
        std::io::Write::write_all(&mut stream, upgrade_request(addr, &format!("/chat/r{round}")).as_bytes()).unwrap();
        std::io::Write::write_all(&mut stream, &client_frame(0x81, b"bye", true)).unwrap();
        let stream = stream.into_inner().unwrap();
        assert_eq!(next::<C>(&mut ann).await, format!("r{round} connected to chat"));
        assert_eq!(next::<C>(&mut ann).await, format!("r{round}: bye"));
        // Closing with unread data in the receive buffer (the 101 response and the
        // chat lines) makes Linux send RST, not FIN.
        drop(stream);
        assert_eq!(next::<C>(&mut ann).await, format!("r{round} left the chat"));
        ann.send(&Message::text(format!("still here {round}"))).await.unwrap();
        assert_eq!(next::<C>(&mut ann).await, format!("ann: still here {round}"));
    }
    assert_eq!(handle.connection_count(), 1);
}

async fn shutdown_under_load_writes_what_was_accepted<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), Limits { message_rate: None, ..Limits::default() });
    let mut ann = join::<C>(addr, "/chat/ann").await;
    let mut bob = join::<C>(addr, "/chat/bob").await;
    assert_eq!(next::<C>(&mut ann).await, "bob connected to chat");
    for i in 0..2_000 {
        ann.feed(&Message::text(format!("{i}"))).await.unwrap();
    }
    ann.flush().await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "ann: 0");
    handle.shutdown();
    // Bob gets an unbroken run of lines, then 1001: whatever the hub accepted
    // before the shutdown was written ahead of the close frame.
    let mut expected = 1;
    loop {
        match timeout::<C, _>(LIMIT, bob.recv()).await {
            Some(Some(Message::Text(t))) => {
                if t.as_str() == "ann left the chat" {
                    continue;
                }
                assert_eq!(t.as_str(), format!("ann: {expected}"));
                expected += 1;
            }
            Some(None) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let closed = bob.close_info().expect("closed");
    assert_eq!(closed.code, CloseCode::GOING_AWAY);
    assert!(closed.is_clean(), "{closed:?}");
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 6;
    scenarios: [connection_limits, origin_check, a_flooding_client_is_warned_then_closed, a_client_that_stops_reading_is_closed, a_vanished_peer_is_cleaned_up_by_keepalive, a_reset_connection_harms_no_one, shutdown_under_load_writes_what_was_accepted];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
    smol_client_on_async_std_server: chinwag_futures::AsyncStd => chinwag_futures::Smol;
}
