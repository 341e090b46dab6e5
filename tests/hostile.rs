//! Hostile input against the chat server, end to end on every runtime: malformed
//! handshakes, malformed and abusive frames, abusive chat use. Each gets the answer
//! docs/limits.md documents (an HTTP status, a close code, an `error:` line), and
//! two other clients keep chatting throughout: after every case they exchange a
//! line.

use chinwag_core::frame::FrameHeader;
use chinwag_core::{Config, Message, SLOW_CONSUMER_REASON};
use chinwag_driver::{Runtime, Transport, WebSocket, connect, parse_url};
use chinwag_service::{Handle, Limits};
use chinwag_tests::{
    client_frame, raw_answer, read_some, read_to_end, server_frames, timeout, upgrade_request, write_all,
};
use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);
/// A flooder's write that makes no progress for this long has been pushed back.
const STALL: Duration = Duration::from_secs(2);
/// Far more than the kernel's buffers and a 1 MiB backlog hold: a flooder that
/// gets this much in was never pushed back.
const FLOOD_CAP: usize = 64 << 20;
/// The handshake timeout of the server under test (short, for the slow-loris case).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The chat with its defaults, but a short handshake timeout (for the slow loris).
fn start_chat<S: Runtime>() -> (SocketAddr, Handle) {
    let config = Config { handshake_timeout: Some(HANDSHAKE_TIMEOUT), ..chinwag::chat::config() };
    chinwag_tests::start_chat::<S>(config, Limits::default())
}

type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

async fn next<C: Runtime>(ws: &mut Client<C>) -> String {
    match timeout::<C, _>(LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => t.to_string(),
        other => panic!("expected a line, got {other:?}"),
    }
}

/// Two clients who keep chatting while the others misbehave.
struct Bystanders<C: Runtime> {
    ann: Client<C>,
    bob: Client<C>,
    said: usize,
}

impl<C: Runtime> Bystanders<C> {
    async fn join(addr: SocketAddr) -> Self {
        let url = |name: &str| parse_url(&format!("ws://{addr}/chat/{name}")).unwrap();
        let mut ann = connect::<C>(&url("ann"), Config::default()).await.unwrap();
        let mut bob = connect::<C>(&url("bob"), Config::default()).await.unwrap();
        for _ in 0..3 {
            next::<C>(&mut ann).await;
        }
        for _ in 0..2 {
            next::<C>(&mut bob).await;
        }
        Self { ann, bob, said: 0 }
    }

    /// Ann says a line; both get exactly it (skipping join and leave lines of the
    /// misbehaving clients, which are part of the chat).
    async fn still_chatting(&mut self, case: &str) -> String {
        self.said += 1;
        let line = format!("ann: still here after {case} ({})", self.said);
        self.ann.send(&Message::text(&line[5..])).await.unwrap();
        for ws in [&mut self.ann, &mut self.bob] {
            loop {
                let got = next::<C>(ws).await;
                if got == line {
                    break;
                }
                assert!(
                    got.ends_with(" connected to chat") || got.ends_with(" left the chat"),
                    "after {case}: unexpected {got:?}"
                );
            }
        }
        line
    }
}

/// Joins the chat as `name` over a raw transport; returns it after the 101 head.
async fn raw_join<C: Runtime>(addr: SocketAddr, name: &str) -> (C::Io, Vec<u8>) {
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, upgrade_request(addr, &format!("/chat/{name}")).as_bytes()).await.unwrap();
    let mut got = Vec::new();
    loop {
        got.extend(read_some(&mut raw).await.unwrap());
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
            return (raw, got.split_off(end + 4));
        }
        assert!(!got.is_empty(), "closed during the handshake");
    }
}

/// Sends `bytes` after joining, then reads to the end: the close code the server
/// sent (`None`: no close frame), and the text lines before it.
async fn close_code_for<C: Runtime>(addr: SocketAddr, name: &str, bytes: &[u8]) -> (Option<u16>, Vec<String>) {
    let (mut raw, mut got) = raw_join::<C>(addr, name).await;
    // The server may close before it has read everything: a failed write is fine.
    let _ = write_all(&mut raw, bytes).await;
    got.extend(read_to_end(&mut raw).await);
    let frames = server_frames(&got);
    let lines = frames.iter().filter(|f| f.0 == 1).map(|f| String::from_utf8_lossy(&f.1).into_owned()).collect();
    let code = frames.iter().find(|f| f.0 == 8).map(|f| u16::from_be_bytes([f.1[0], f.1[1]]));
    (code, lines)
}

async fn malformed_handshakes<S: Runtime, C: Runtime>() {
    let (addr, _) = start_chat::<S>();
    let mut chat = Bystanders::<C>::join(addr).await;
    let good = upgrade_request(addr, "/chat/eve");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "missing key",
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            "400",
            "Sec-WebSocket-Key",
        ),
        ("bad key", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), "400", "Sec-WebSocket-Key"),
        ("wrong version", good.replace("Version: 13", "Version: 8"), "426", "version 13"),
        ("not GET", good.replace("GET ", "POST "), "400", "GET"),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), "400", "HTTP/1.1"),
        ("no Host", good.replace(&format!("Host: {addr}\r\n"), ""), "400", "Host"),
        ("no Upgrade", good.replace("Upgrade: websocket\r\n", ""), "400", "Upgrade"),
        (
            "oversized header",
            good.replace("\r\n\r\n", &format!("\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000))),
            "431",
            "too large",
        ),
        (
            "too many headers",
            good.replace("\r\n\r\n", &format!("\r\n{}\r\n", "X-A: b\r\n".repeat(100))),
            "431",
            "header lines",
        ),
        ("garbage", "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\u{3}\u{3}\r\n\r\n".to_owned(), "400", ""),
        ("binary garbage line", "\u{0}\u{0}\u{0}\u{0}\r\n\r\n".to_owned(), "400", ""),
        ("a bad name", upgrade_request(addr, &format!("/chat/{}", "n".repeat(1000))), "400", "name"),
        ("a taken name", upgrade_request(addr, "/chat/ann"), "409", "already in the chat"),
        ("no such path", upgrade_request(addr, "/nowhere"), "404", ""),
    ];
    for (case, request, status, reason) in cases {
        let (line, body) = raw_answer::<C>(addr, request.as_bytes()).await;
        assert!(line.starts_with(&format!("HTTP/1.1 {status} ")), "{case}: {line}");
        assert!(body.contains(reason), "{case}: {body:?} lacks {reason:?}");
        chat.still_chatting(case).await;
    }

    // A request sent one byte at a time is still a request.
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    for byte in good.as_bytes() {
        write_all(&mut raw, std::slice::from_ref(byte)).await.unwrap();
    }
    let head = String::from_utf8_lossy(&read_some(&mut raw).await.unwrap()).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    drop(raw);
    chat.still_chatting("a byte-by-byte request").await;

    // Slow loris: a request that never ends is dropped at the handshake timeout.
    let started = Instant::now();
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, b"GET /chat/loris HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let rest = timeout::<C, _>(LIMIT, read_to_end(&mut raw)).await.expect("never dropped");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let waited = started.elapsed();
    assert!(waited >= HANDSHAKE_TIMEOUT && waited < HANDSHAKE_TIMEOUT * 4, "dropped after {waited:?}");
    chat.still_chatting("slow loris").await;
}

async fn malformed_frames<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_chat::<S>();
    let mut chat = Bystanders::<C>::join(addr).await;
    let mut invalid_close = vec![0x03, 0xE7]; // 999
    invalid_close.extend_from_slice(b"x");
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(&[0xC3, 0x28]);
    let mut tiny_fragments = client_frame(0x01, b"a", true);
    for _ in 0..70_000 {
        tiny_fragments.extend(client_frame(0x00, b"a", true));
    }
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("reserved bits", client_frame(0x81 | 0x40, b"hi", true), 1002),
        ("reserved opcode", client_frame(0x83, b"hi", true), 1002),
        ("reserved control opcode", client_frame(0x8B, b"", true), 1002),
        ("unmasked client frame", client_frame(0x81, b"hi", false), 1002),
        ("control frame over 125 bytes", client_frame(0x89, &[b'p'; 126], true), 1002),
        ("fragmented control frame", client_frame(0x09, b"p", true), 1002),
        ("continuation without a message", client_frame(0x80, b"x", true), 1002),
        (
            "new message inside a fragmented one",
            [client_frame(0x01, b"a", true), client_frame(0x81, b"b", true)].concat(),
            1002,
        ),
        ("64-bit length with the top bit", vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4], 1002),
        ("length far over the limit", vec![0x82, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4], 1009),
        ("message over 64 KiB", client_frame(0x81, &[b'a'; 70_000], true), 1009),
        ("endless tiny fragments", tiny_fragments, 1009),
        ("invalid UTF-8 text", client_frame(0x81, &[0xC3, 0x28], true), 1007),
        ("invalid UTF-8 in a close reason", client_frame(0x88, &bad_reason, true), 1007),
        ("invalid close code", client_frame(0x88, &invalid_close, true), 1002),
        ("one-byte close payload", client_frame(0x88, &[3], true), 1002),
    ];
    for (i, (case, bytes, expected)) in cases.into_iter().enumerate() {
        let (code, _) = close_code_for::<C>(addr, &format!("mallory{i}"), &bytes).await;
        assert_eq!(code, Some(expected), "{case}");
        chat.still_chatting(case).await;
    }

    // Data after a close frame is ignored; the close is answered (1000 echoed).
    let bytes = [client_frame(0x88, &1000u16.to_be_bytes(), true), client_frame(0x81, b"after close", true)].concat();
    let (code, lines) = close_code_for::<C>(addr, "late", &bytes).await;
    assert_eq!(code, Some(1000));
    assert!(!lines.iter().any(|l| l.contains("after close")), "{lines:?}");
    chat.still_chatting("data after close").await;

    // A ping flood from a client that never reads its pongs. Pongs are never
    // dropped, but once the flooder's backlog is over `backlog_high_water` the
    // server stops reading it: TCP pushes back and the flooder's writes stall, so
    // the server holds a bounded amount for it (docs/limits.md).
    // The clients above may still be finishing their close handshakes, and each
    // one's "left the chat" would reach the flooder: let them all leave first, so
    // that what it gets is exactly its greeting, its join line and pongs.
    for _ in 0..500 {
        if handle.connection_count() == 2 {
            break;
        }
        C::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.connection_count(), 2, "only the bystanders are left");
    let (mut raw, mut pending) = raw_join::<C>(addr, "pinger").await;
    let ping = client_frame(0x89, &ping_payload(), true);
    let pings = ping.repeat(2_000);
    let mut written = 0; // bytes of an endless stream of pings
    loop {
        assert!(written < FLOOD_CAP, "the server kept reading a flooder that reads nothing: {written} bytes");
        let rest = &pings[written % pings.len()..];
        match timeout::<C, _>(STALL, poll_fn(|cx| raw.poll_write_vectored(cx, &[IoSlice::new(rest)]))).await {
            Some(Ok(n)) => written += n,
            Some(Err(e)) => panic!("the flood failed after {written} bytes: {e}"),
            None => break, // a pending write writes nothing: `written` is exact
        }
    }
    // Its backlog is over the bound, so the next line for it (this one is for
    // everyone) closes it as too slow, after what was queued; the others chat on.
    chat.still_chatting("a ping flood").await;
    assert_eq!(handle.stats().closed_slow, 1);
    // Reading at last, the flooder gets its greeting and join line, then pongs
    // (for pings the server read), then the end of the stream, which comes from
    // the server's side. The server closes with the flooder's pings unread in its
    // receive buffer, so the kernel may reset the connection, discarding what was
    // still in transit (the close frame 1008 among it); when it does arrive, it
    // is the last frame.
    let reset = loop {
        match timeout::<C, _>(LIMIT, read_some(&mut raw)).await.expect("the flooder was never closed") {
            Ok(more) if more.is_empty() => break false,
            Ok(more) => pending.extend(more),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("the flooder's stream failed: {e}"),
        }
    };
    let (mut frames, used) = parse_frames(&pending);
    assert!(reset || used == pending.len(), "a partial frame before EOF");
    let lines: Vec<String> = frames.drain(..2).map(|f| String::from_utf8_lossy(&f.1).into_owned()).collect();
    assert_eq!(lines, ["Hi pinger! You have successfully connected to the chat", "pinger connected to chat"]);
    let close_payload = [&1008u16.to_be_bytes()[..], SLOW_CONSUMER_REASON.as_bytes()].concat();
    if frames.last().is_some_and(|f| f.0 == 0x8) {
        assert_eq!(frames.pop().unwrap().1, close_payload, "the close frame");
    } else {
        assert!(reset, "the stream ended without a close frame, and without a reset");
    }
    let pongs = frames;
    let others: Vec<(u8, String)> = pongs
        .iter()
        .filter(|(opcode, payload)| *opcode != 0xA || payload != &ping_payload())
        .map(|(opcode, payload)| (*opcode, String::from_utf8_lossy(payload).into_owned()))
        .collect();
    assert!(others.is_empty(), "only pongs, but also {others:?}");
    assert!(!pongs.is_empty() && pongs.len() <= written / ping.len(), "{} pongs for {written} bytes", pongs.len());
    // It left the chat; everyone else carries on.
    assert_eq!(next::<C>(&mut chat.ann).await, "pinger left the chat");
    assert_eq!(next::<C>(&mut chat.bob).await, "pinger left the chat");
    drop(raw);
    chat.still_chatting("the ping flood's end").await;
}

/// The payload of the flood's pings, which their pongs carry back.
fn ping_payload() -> Vec<u8> {
    vec![b'p'; 125]
}

/// The complete frames at the start of `bytes`, as (opcode, payload), and how many
/// bytes they took.
fn parse_frames(bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let (mut frames, mut used) = (Vec::new(), 0);
    while let Ok(Some((header, header_len))) = FrameHeader::decode(&bytes[used..]) {
        let end = used + header_len + header.payload_len as usize;
        let Some(payload) = bytes.get(used + header_len..end) else { break };
        frames.push((header.opcode, payload.to_vec()));
        used = end;
    }
    (frames, used)
}

async fn abusive_chat_use<S: Runtime, C: Runtime>() {
    let (addr, _) = start_chat::<S>();
    let mut chat = Bystanders::<C>::join(addr).await;
    let url = parse_url(&format!("ws://{addr}/chat/%3Cscript%3Ealert(1)%3C%2Fscript%3E")).unwrap();
    let mut markup = connect::<C>(&url, Config::default()).await.unwrap();
    assert_eq!(
        next::<C>(&mut markup).await,
        "Hi <script>alert(1)</script>! You have successfully connected to the chat"
    );
    assert_eq!(next::<C>(&mut markup).await, "<script>alert(1)</script> connected to chat");
    let line = chat.still_chatting("a name with markup").await; // its join line is skipped there
    assert_eq!(next::<C>(&mut markup).await, line);
    for (command, answer) in [
        ("/msg", "error: usage: /msg NAME TEXT"),
        ("/msg ann", "error: usage: /msg NAME TEXT"),
        ("/msg nobody hi", "error: no one named nobody is online"),
        ("/join", "error: usage: /join ROOM"),
        ("/say", "error: usage: /say ROOM TEXT"),
        ("/say nowhere hi", "error: you are not in #nowhere (try /join nowhere)"),
        ("/leave nowhere", "error: you are not in #nowhere (try /join nowhere)"),
        ("/nosuchcommand", "error: unknown command /nosuchcommand (try /help)"),
        (&*format!("/join {}", "r".repeat(1000)), "error: a room name is 1 to 32 characters without spaces"),
    ] {
        markup.send(&Message::text(command)).await.unwrap();
        assert_eq!(next::<C>(&mut markup).await, answer, "{command}");
        let line = chat.still_chatting(command).await;
        assert_eq!(next::<C>(&mut markup).await, line, "only the sender sees the error");
    }
    markup.send(&Message::text("<b>bold</b> & 'quotes'")).await.unwrap();
    assert_eq!(next::<C>(&mut markup).await, "<script>alert(1)</script>: <b>bold</b> & 'quotes'");
    assert_eq!(next::<C>(&mut chat.ann).await, "<script>alert(1)</script>: <b>bold</b> & 'quotes'");
    assert_eq!(next::<C>(&mut chat.bob).await, "<script>alert(1)</script>: <b>bold</b> & 'quotes'");
    markup.send(&Message::binary(vec![0xFF; 10])).await.unwrap();
    assert_eq!(next::<C>(&mut markup).await, "error: the chat only takes text messages");
    chat.still_chatting("binary").await;
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 6;
    scenarios: [malformed_handshakes, malformed_frames, abusive_chat_use];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
}
