//! One behavioural suite for every runtime adapter. Each scenario is written once
//! against the `Runtime` trait and runs with the server on one runtime and the client
//! on another: tokio, async-std and smol on their own, and mixed pairs.

use bytes::Bytes;
use chinwag_core::http::StatusCode;
use chinwag_core::{
    Accept, CloseCode, Config, ConnectionError, HandshakeError, HttpResponse, Initiator, Message, Rejection,
    RequestKind, SharedFrame,
};
use chinwag_driver::{Error, Runtime, connect, parse_url};
use chinwag_tests::{
    Pending, client_frame, read_some, read_to_end, server_frames, start_server, timeout, upgrade_request, write_all,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn big_config() -> Config {
    Config { max_message_size: 4 << 20, max_frame_size: 4 << 20, ..Config::default() }
}

/// A server that echoes every message on every connection.
fn echo_server<S: Runtime>(config: Config) -> SocketAddr {
    start_server::<S, _, _>(config, |pending: Pending<S>| async move {
        let Ok(mut ws) = pending.accept(Accept::new()).await else { return };
        while let Some(message) = ws.recv().await {
            if ws.send(&message).await.is_err() {
                break;
            }
        }
    })
}

async fn echo_round_trips<S: Runtime, C: Runtime>() {
    let addr = echo_server::<S>(big_config());
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}/echo")).unwrap(), big_config()).await.unwrap();
    for size in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20, 3 << 20] {
        let text = Message::text("é".repeat(size / 2));
        let binary = Message::binary((0..size).map(|i| i as u8).collect::<Vec<u8>>());
        for message in [text, binary] {
            ws.send(&message).await.unwrap();
            assert_eq!(ws.recv().await.as_ref(), Some(&message), "size {size}");
        }
    }
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    let closed = ws.close_info().unwrap();
    assert!(closed.is_clean(), "{closed:?}");
    assert_eq!((closed.code, closed.initiator), (CloseCode::NORMAL, Initiator::Local));
}

async fn split_halves_in_two_tasks<S: Runtime, C: Runtime>() {
    const N: usize = 2000;
    let addr = echo_server::<S>(Config::default());
    let ws = connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), Config::default()).await.unwrap();
    let (sender, mut receiver) = ws.split();
    let (done_tx, done_rx) = async_channel::bounded(1);
    C::spawn(async move {
        for i in 0..N {
            sender.send(&Message::text(format!("message {i}"))).await.unwrap();
        }
        sender.close(CloseCode::NORMAL, "").await.unwrap();
        done_tx.send(()).await.unwrap();
    });
    for i in 0..N {
        match receiver.recv().await {
            Some(Message::Text(t)) => assert_eq!(t, format!("message {i}").as_str()),
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert_eq!(receiver.recv().await, None, "the close handshake ends the stream");
    assert!(receiver.close_info().unwrap().is_clean());
    done_rx.recv().await.unwrap();
}

async fn send_waits_while_the_peer_does_not_read<S: Runtime, C: Runtime>() {
    const SIZE: usize = 1 << 20;
    const COUNT: usize = 200;
    let (go_tx, go_rx) = async_channel::bounded::<()>(1);
    let (got_tx, got_rx) = async_channel::unbounded::<usize>();
    let addr = start_server::<S, _, _>(big_config(), move |pending: Pending<S>| {
        let (go_rx, got_tx) = (go_rx.clone(), got_tx.clone());
        async move {
            let mut ws = pending.accept(Accept::new()).await.unwrap();
            go_rx.recv().await.unwrap(); // do not read until told
            let mut n = 0;
            while let Some(Message::Binary(b)) = ws.recv().await {
                assert_eq!(b.len(), SIZE);
                n += 1;
                if n == COUNT {
                    break;
                }
            }
            got_tx.send(n).await.unwrap();
        }
    });
    let config = Config { backlog_high_water: 256 << 10, ..big_config() };
    let ws = connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), config).await.unwrap();
    let sender = ws.sender();
    let (progress_tx, progress_rx) = async_channel::unbounded::<usize>();
    C::spawn(async move {
        let payload = Bytes::from(vec![7u8; SIZE]);
        for i in 1..=COUNT {
            sender.send(&Message::Binary(payload.clone())).await.unwrap();
            let _ = progress_tx.send(i).await;
        }
    });
    // Let the sender run into the full socket buffers.
    C::sleep(Duration::from_millis(500)).await;
    let mut sent = 0;
    while let Ok(i) = progress_rx.try_recv() {
        sent = i;
    }
    assert!(sent < COUNT / 2, "send must wait for the reader: {sent} of {COUNT} MiB sent without one read");
    go_tx.send(()).await.unwrap();
    let received = timeout::<C, _>(LIMIT, got_rx.recv()).await.expect("all messages arrive").unwrap();
    assert_eq!(received, COUNT);
    drop(ws);
}

async fn recv_is_cancel_safe<S: Runtime, C: Runtime>() {
    const N: usize = 300;
    let addr = start_server::<S, _, _>(Config::default(), |pending: Pending<S>| async move {
        let ws = pending.accept(Accept::new()).await.unwrap();
        for i in 0..N {
            ws.send(&Message::text(format!("{i}"))).await.unwrap();
            if i % 10 == 9 {
                // Gaps far longer than the client's receive timeout: receives get
                // cancelled while waiting.
                S::sleep(Duration::from_millis(5)).await;
            }
        }
        S::sleep(Duration::from_secs(5)).await;
    });
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), Config::default()).await.unwrap();
    let mut next = 0;
    let mut cancelled = 0;
    let start = Instant::now();
    while next < N && start.elapsed() < LIMIT {
        // A very short timeout cancels many receives half way.
        match timeout::<C, _>(Duration::from_micros(500), ws.recv()).await {
            Some(Some(Message::Text(t))) => {
                assert_eq!(t, next.to_string().as_str(), "in order, none lost");
                next += 1;
            }
            Some(other) => {
                panic!("after {next} messages and {cancelled} cancellations: {other:?} {:?}", ws.close_info())
            }
            None => cancelled += 1,
        }
    }
    assert_eq!(next, N);
    assert!(cancelled > 0, "the test cancelled no receive");
}

async fn keepalive_closes_a_silent_peer<S: Runtime, C: Runtime>() {
    let (tx, rx) = async_channel::bounded(1);
    let config = Config {
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(150),
        ..Config::default()
    };
    let addr = start_server::<S, _, _>(config, move |pending: Pending<S>| {
        let tx = tx.clone();
        async move {
            let mut ws = pending.accept(Accept::new()).await.unwrap();
            let start = Instant::now();
            while ws.recv().await.is_some() {}
            tx.send((start.elapsed(), ws.close_info())).await.unwrap();
        }
    });
    // A peer that completes the handshake, then never answers (a hung process).
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, upgrade_request(addr, "/").as_bytes()).await.unwrap();
    let (elapsed, closed) = timeout::<C, _>(LIMIT, rx.recv()).await.expect("server gave up").unwrap();
    let closed = closed.unwrap();
    assert_eq!(closed.error, Some(ConnectionError::KeepaliveTimeout));
    assert!(elapsed >= Duration::from_millis(240), "not before interval + timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "promptly after: {elapsed:?}");
    // The server pinged before giving up.
    let bytes = read_to_end(&mut raw).await;
    let after_head = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&bytes[after_head..after_head + 2], &[0x89, 0x00], "an empty ping");
}

async fn live_peers_survive_keepalive<S: Runtime, C: Runtime>() {
    // A ping every 50 ms, and half a second for its pong: a peer that did not
    // answer would be closed within the idle time below, while a test machine
    // busy enough to delay one pong by 100 ms (CI, two cores) is not mistaken
    // for a dead peer.
    let config = Config {
        keepalive_interval: Some(Duration::from_millis(50)),
        keepalive_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let addr = echo_server::<S>(config.clone());
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), config).await.unwrap();
    // Idle for 40 keepalive intervals while receiving: pings are answered.
    assert!(timeout::<C, _>(Duration::from_secs(2), ws.recv()).await.is_none());
    ws.send(&Message::text("still here")).await.unwrap();
    assert_eq!(ws.recv().await, Some(Message::text("still here")));
}

async fn server_close_reaches_the_client<S: Runtime, C: Runtime>() {
    let addr = start_server::<S, _, _>(Config::default(), |pending: Pending<S>| async move {
        let mut ws = pending.accept(Accept::new()).await.unwrap();
        ws.close(CloseCode::GOING_AWAY, "shutting down").await.unwrap();
    });
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), Config::default()).await.unwrap();
    assert_eq!(timeout::<C, _>(LIMIT, ws.recv()).await, Some(None));
    let closed = ws.close_info().unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.initiator),
        (CloseCode::GOING_AWAY, "shutting down", Initiator::Peer)
    );
    assert!(ws.send(&Message::text("late")).await.is_err());
}

async fn a_vanished_peer_is_reported<S: Runtime, C: Runtime>() {
    let (tx, rx) = async_channel::bounded(1);
    let addr = start_server::<S, _, _>(Config::default(), move |pending: Pending<S>| {
        let tx = tx.clone();
        async move {
            let mut ws = pending.accept(Accept::new()).await.unwrap();
            while ws.recv().await.is_some() {}
            tx.send(ws.close_info()).await.unwrap();
        }
    });
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, upgrade_request(addr, "/").as_bytes()).await.unwrap();
    read_some(&mut raw).await.unwrap();
    // Half a frame, then the process dies.
    write_all(&mut raw, &[0x81, 0x85, 1, 2, 3, 4, b'a']).await.unwrap();
    drop(raw);
    let closed = timeout::<C, _>(LIMIT, rx.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!((closed.code, closed.error), (CloseCode::ABNORMAL, Some(ConnectionError::TransportClosed)));
}

async fn push_shared_to_many_connections<S: Runtime, C: Runtime>() {
    const CLIENTS: usize = 20;
    let (tx, rx) = async_channel::unbounded();
    let addr = start_server::<S, _, _>(Config::default(), move |pending: Pending<S>| {
        let tx = tx.clone();
        async move {
            let mut ws = pending.accept(Accept::new()).await.unwrap();
            tx.send(ws.sender()).await.unwrap();
            while ws.recv().await.is_some() {}
        }
    });
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), Config::default()).await.unwrap());
    }
    let mut senders = Vec::new();
    for _ in 0..CLIENTS {
        senders.push(rx.recv().await.unwrap());
    }
    let frames: Vec<SharedFrame> = (0..50).map(|i| SharedFrame::text(&format!("news {i}"))).collect();
    for frame in &frames {
        for sender in &senders {
            sender.push_shared(frame).unwrap();
        }
    }
    for ws in &mut clients {
        for i in 0..50 {
            assert_eq!(ws.recv().await, Some(Message::text(format!("news {i}"))));
        }
    }
}

async fn requests_can_be_rejected_or_answered<S: Runtime, C: Runtime>() {
    let addr = start_server::<S, _, _>(Config::default(), |pending: Pending<S>| async move {
        let request = pending.request();
        if *request.kind() == RequestKind::Http {
            let page = HttpResponse::new(StatusCode::OK, "text/html; charset=utf-8", "<h1>hello</h1>");
            pending.respond(page).await.unwrap();
        } else if request.path() != "/ok" {
            pending.reject(Rejection::new(StatusCode::NOT_FOUND, "no such room")).await.unwrap();
        } else {
            let mut ws = pending.accept(Accept::new()).await.unwrap();
            while ws.recv().await.is_some() {}
        }
    });
    let result = connect::<C>(&parse_url(&format!("ws://{addr}/nope")).unwrap(), Config::default()).await;
    assert!(matches!(result, Err(Error::Handshake(HandshakeError::UnexpectedStatus(404)))), "{:?}", result.err());
    assert!(connect::<C>(&parse_url(&format!("ws://{addr}/ok")).unwrap(), Config::default()).await.is_ok());

    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let page = String::from_utf8(read_to_end(&mut raw).await).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n") && page.ends_with("\r\n\r\n<h1>hello</h1>"), "{page}");

    // A broken upgrade is answered by the core, before the application sees it.
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    let bad = upgrade_request(addr, "/ok").replace("Version: 13", "Version: 7");
    write_all(&mut raw, bad.as_bytes()).await.unwrap();
    let response = String::from_utf8(read_to_end(&mut raw).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{response}");
}

/// While the application takes its time over a request, `closed` tells it that
/// the client left; a client that stays and sends a message before the 101 has it
/// kept, and read once the connection is open.
async fn a_waiting_request_watches_its_client<S: Runtime, C: Runtime>() {
    let (closed_tx, closed_rx) = async_channel::bounded(1);
    let addr = start_server::<S, _, _>(Config::default(), move |mut pending: Pending<S>| {
        let closed_tx = closed_tx.clone();
        async move {
            // A decision that takes 300 ms, unless the client leaves first.
            match timeout::<S, _>(Duration::from_millis(300), pending.closed()).await {
                Some(failed) => closed_tx.send(failed).await.unwrap(),
                None => {
                    let mut ws = pending.accept(Accept::new()).await.unwrap();
                    while let Some(message) = ws.recv().await {
                        if ws.send(&message).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });

    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, upgrade_request(addr, "/").as_bytes()).await.unwrap();
    drop(raw);
    let failed = timeout::<C, _>(LIMIT, closed_rx.recv()).await.expect("noticed").unwrap();
    assert!(matches!(failed, HandshakeError::TransportClosed), "{failed:?}");

    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    let mut early = upgrade_request(addr, "/").into_bytes();
    early.extend_from_slice(&client_frame(0x81, b"early", true));
    write_all(&mut raw, &early).await.unwrap();
    let mut answer = Vec::new();
    let frames = loop {
        let more = timeout::<C, _>(LIMIT, read_some(&mut raw)).await.expect("answered").unwrap();
        assert!(!more.is_empty(), "closed: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&more);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(answer.starts_with(b"HTTP/1.1 101 "), "{:?}", String::from_utf8_lossy(&answer));
            let frames = server_frames(&answer[end + 4..]);
            if !frames.is_empty() {
                break frames;
            }
        }
    };
    assert_eq!(frames, [(1, b"early".to_vec())]);
}

/// A close pushed from another task after a long silence (longer than the close
/// timeout) still goes out and completes: the close timeout runs from the call,
/// not from the receiving task's last wake-up (which is 3 s old here, three
/// close timeouts: keepalive is 30 s by default, so nothing woke it).
async fn push_close_after_a_long_silence<S: Runtime, C: Runtime>() {
    let (sender_tx, sender_rx) = async_channel::bounded(1);
    let (done_tx, done_rx) = async_channel::bounded(1);
    let config = Config { close_timeout: Duration::from_secs(1), ..Config::default() };
    let addr = start_server::<S, _, _>(config, move |pending: Pending<S>| {
        let (sender_tx, done_tx) = (sender_tx.clone(), done_tx.clone());
        async move {
            let ws = pending.accept(Accept::new()).await.unwrap();
            let (sender, mut receiver) = ws.split();
            sender_tx.send(sender).await.unwrap();
            while receiver.recv().await.is_some() {}
            done_tx.send(receiver.close_info()).await.unwrap();
        }
    });
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}/")).unwrap(), Config::default()).await.unwrap();
    let sender = sender_rx.recv().await.unwrap();
    let (read_tx, read_rx) = async_channel::bounded(1);
    C::spawn(async move {
        let next = ws.recv().await;
        read_tx.send((next, ws.close_info())).await.unwrap();
    });
    C::sleep(Duration::from_secs(3)).await;
    sender.push_close(CloseCode::GOING_AWAY, "bye").unwrap();
    let (next, client) =
        timeout::<C, _>(Duration::from_secs(4), read_rx.recv()).await.expect("the close arrived").unwrap();
    assert_eq!(next, None);
    let client = client.unwrap();
    assert_eq!((client.code, client.reason.as_str(), client.error), (CloseCode::GOING_AWAY, "bye", None));
    let server = timeout::<C, _>(Duration::from_secs(4), done_rx.recv()).await.unwrap().unwrap().unwrap();
    assert!(server.is_clean(), "{server:?}");
    assert_eq!((server.code, server.initiator), (CloseCode::GOING_AWAY, Initiator::Local), "the echo of our code");
}

async fn slow_loris_is_dropped<S: Runtime, C: Runtime>() {
    let config = Config { handshake_timeout: Some(Duration::from_millis(200)), ..Config::default() };
    let addr = start_server::<S, _, _>(config, |_pending: Pending<S>| async {});
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let start = Instant::now();
    let rest = timeout::<C, _>(LIMIT, read_to_end(&mut raw)).await.expect("the server closes");
    assert!(rest.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 2;
    scenarios: [echo_round_trips, split_halves_in_two_tasks, send_waits_while_the_peer_does_not_read, recv_is_cancel_safe, keepalive_closes_a_silent_peer, live_peers_survive_keepalive, server_close_reaches_the_client, a_vanished_peer_is_reported, push_shared_to_many_connections, requests_can_be_rejected_or_answered, a_waiting_request_watches_its_client, slow_loris_is_dropped, push_close_after_a_long_silence];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
    smol: chinwag_futures::Smol => chinwag_futures::Smol;
    tokio_server_smol_client: chinwag_tokio::Tokio => chinwag_futures::Smol;
    async_std_server_tokio_client: chinwag_futures::AsyncStd => chinwag_tokio::Tokio;
}
