//! The event loop over real loopback sockets, against a client written here
//! frame by frame (so that what the server sends is checked byte for byte, not
//! through another WebSocket library's leniency).

use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, CloseCode, Config, Connection, Event, HttpResponse, Message};
use chinwag_mio::{Control, Handler, Stopped, serve};
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the test handler saw, shared with the test.
#[derive(Default)]
struct Seen {
    opened: AtomicUsize,
    closed: Mutex<Vec<CloseCode>>,
    /// The most bytes queued for one connection right after an echo was queued.
    max_buffered: AtomicUsize,
}

/// Echoes messages, answers plain requests with a page, records what happened.
struct Echo(Arc<Seen>);

impl Handler for Echo {
    fn on_event(&mut self, now: Instant, conn: &mut Connection, event: Event) {
        let _ = match event {
            Event::UpgradeRequest(_) => conn.accept(now, Accept::new()),
            Event::HttpRequest(_) => conn.respond(now, HttpResponse::new(StatusCode::OK, "text/plain", "page\n")),
            Event::Open(_) => {
                self.0.opened.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Event::Text(text) => conn.send(now, &Message::Text(text)),
            Event::Binary(data) => {
                let sent = conn.send(now, &Message::Binary(data));
                self.0.max_buffered.fetch_max(conn.buffered_amount(), Ordering::SeqCst);
                sent
            }
            Event::Closed(closed) => {
                self.0.closed.lock().unwrap().push(closed.code);
                Ok(())
            }
            _ => Ok(()),
        };
    }
}

/// A server on one loop, on a free loopback port.
struct Server {
    addr: SocketAddr,
    control: Control,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<std::io::Result<Stopped>>>,
}

impl Server {
    fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, seen) = (Control::new(), Arc::new(Seen::default()));
        let (c, s) = (control.clone(), seen.clone());
        let thread = std::thread::spawn(move || serve(listener, Arc::new(config), Echo(s), &c));
        Self { addr, control, seen, thread: Some(thread) }
    }

    /// Shuts it down with 1001 and waits for the loop to return.
    fn stop(mut self) -> Stopped {
        self.control.shutdown(CloseCode::GOING_AWAY, "bye").unwrap();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.control.shutdown(CloseCode::GOING_AWAY, "");
            let _ = thread.join();
        }
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads a response head; returns it.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the head ended early: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Opens a WebSocket connection.
fn open(addr: SocketAddr) -> TcpStream {
    let mut stream = tcp(addr);
    stream.write_all(UPGRADE.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    stream
}

/// A client frame: final, masked.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one server frame: its opcode and payload (servers do not mask).
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0; 2];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0; 2];
            stream.read_exact(&mut n).unwrap();
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0; 8];
            stream.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0; len as usize];
    stream.read_exact(&mut payload).unwrap();
    assert_eq!(head[0] & 0x80, 0x80, "unfragmented");
    (head[0] & 0x0f, payload)
}

/// Reads until the server closes the socket; fails after 10 s.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    rest
}

fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut payload = code.0.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[test]
fn echoes_text_and_binary_on_several_connections() {
    let server = Server::start(Config::default());
    let mut clients: Vec<TcpStream> = (0..5).map(|_| open(server.addr)).collect();
    for round in 0..20 {
        for (i, client) in clients.iter_mut().enumerate() {
            let text = format!("round {round} client {i} ✓");
            client.write_all(&frame(1, text.as_bytes())).unwrap();
            client.write_all(&frame(2, &vec![i as u8; 70_000])).unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(read_frame(client), (1, format!("round {round} client {i} ✓").into_bytes()));
            assert_eq!(read_frame(client), (2, vec![i as u8; 70_000]));
        }
    }
    for client in &mut clients {
        client.write_all(&frame(8, &close_payload(CloseCode::NORMAL, "done"))).unwrap();
        assert_eq!(read_frame(client), (8, close_payload(CloseCode::NORMAL, "")), "the code echoed");
        assert!(read_to_eof(client).is_empty(), "the server closes after the close handshake");
    }
    assert_eq!(server.seen.opened.load(Ordering::SeqCst), 5);
    assert_eq!(server.stop(), Stopped { abandoned: 0 });
}

#[test]
fn a_plain_request_gets_the_handlers_answer_and_a_bad_one_400() {
    let server = Server::start(Config::default());
    let mut page = tcp(server.addr);
    page.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let head = read_head(&mut page);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_to_eof(&mut page), b"page\n");

    let mut bad = tcp(server.addr);
    bad.write_all(b"NONSENSE\r\n\r\n").unwrap();
    let head = read_head(&mut bad);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    read_to_eof(&mut bad);

    // A protocol violation on an open connection: 1002, then the end.
    let mut client = open(server.addr);
    client.write_all(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']).unwrap(); // not masked
    let (opcode, payload) = read_frame(&mut client);
    assert_eq!((opcode, &payload[..2]), (8, &CloseCode::PROTOCOL_ERROR.0.to_be_bytes()[..]));
    read_to_eof(&mut client);
    let closed = server.seen.closed.lock().unwrap().clone();
    assert_eq!(closed, [CloseCode::ABNORMAL], "the handler saw the connection's end");
}

#[test]
fn shutdown_closes_open_connections_with_its_frame_and_stops_accepting() {
    let server = Server::start(Config::default());
    let mut a = open(server.addr);
    let mut b = open(server.addr);
    let addr = server.addr;
    let control = server.control.clone();
    let stopping = std::thread::spawn(move || server.stop());
    for client in [&mut a, &mut b] {
        assert_eq!(read_frame(client), (8, close_payload(CloseCode::GOING_AWAY, "bye")));
        client.write_all(&frame(8, &close_payload(CloseCode::GOING_AWAY, ""))).unwrap();
        assert!(read_to_eof(client).is_empty());
    }
    assert_eq!(stopping.join().unwrap(), Stopped { abandoned: 0 });
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    assert!(control.is_stopping());
    assert_eq!(control.shutdown(CloseCode::NORMAL, "again"), Ok(()), "a second call changes nothing");
}

#[test]
fn a_connection_that_opens_during_the_shutdown_is_closed_as_it_opens() {
    let server = Server::start(Config { close_timeout: Duration::from_secs(3), ..Config::default() });
    let mut late = tcp(server.addr);
    late.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // half a request
    std::thread::sleep(Duration::from_millis(100));
    server.control.shutdown(CloseCode::GOING_AWAY, "bye").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    late.write_all(&UPGRADE.as_bytes()["GET / HTTP/1.1\r\n".len()..]).unwrap();
    assert!(read_head(&mut late).starts_with("HTTP/1.1 101"));
    assert_eq!(read_frame(&mut late), (8, close_payload(CloseCode::GOING_AWAY, "bye")));
    late.write_all(&frame(8, &close_payload(CloseCode::GOING_AWAY, ""))).unwrap();
    read_to_eof(&mut late);
    assert_eq!(server.stop(), Stopped { abandoned: 0 });
}

#[test]
fn shutdown_gives_up_on_handshakes_after_the_close_timeout_and_a_second() {
    let server = Server::start(Config { close_timeout: Duration::from_millis(200), ..Config::default() });
    let mut silent = tcp(server.addr);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(server.stop(), Stopped { abandoned: 1 });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1200) && took < Duration::from_secs(5), "{took:?}");
    assert!(read_to_eof(&mut silent).is_empty(), "its socket was closed");
}

#[test]
fn a_silent_socket_is_closed_at_the_handshake_timeout() {
    let server = Server::start(Config { handshake_timeout: Some(Duration::from_millis(300)), ..Config::default() });
    let mut silent = tcp(server.addr);
    let started = Instant::now();
    assert!(read_to_eof(&mut silent).is_empty());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(server.stop(), Stopped { abandoned: 0 });
}

#[test]
fn an_idle_connection_is_pinged_and_dropped_when_it_does_not_answer() {
    let server = Server::start(Config {
        keepalive_interval: Some(Duration::from_millis(200)),
        keepalive_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let mut client = open(server.addr);
    assert_eq!(read_frame(&mut client).0, 9, "a ping after the interval");
    let started = Instant::now();
    read_to_eof(&mut client);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.seen.closed.lock().unwrap().clone(), [CloseCode::ABNORMAL]);
}

/// A client that sends without reading is not read either once the echoes queued
/// for it pass the high-water mark: the server's memory for it stays bounded,
/// and nothing is lost when the client reads again.
#[test]
fn a_client_that_does_not_read_is_not_read_either() {
    const MESSAGE: usize = 16 << 10;
    const COUNT: usize = 2_000; // 32 MiB: far more than the socket buffers hold
    let server = Server::start(Config { backlog_high_water: 64 << 10, ..Config::default() });
    let client = open(server.addr);
    let mut writer = client.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let sending = std::thread::spawn(move || {
        for i in 0..COUNT {
            writer.write_all(&frame(2, &vec![i as u8; MESSAGE])).unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let stalled = written.load(Ordering::SeqCst);
    assert!(stalled < COUNT, "the writes stall once the server stops reading");
    let max = server.seen.max_buffered.load(Ordering::SeqCst);
    assert!(max <= (64 << 10) + MESSAGE + 14, "at most the high-water mark and one echo queued: {max}");
    let mut reader = client;
    for i in 0..COUNT {
        let (opcode, payload) = read_frame(&mut reader);
        assert_eq!((opcode, payload.len(), payload[0]), (2, MESSAGE, i as u8), "echo {i}");
    }
    sending.join().unwrap();
}

/// Stops every loop of a server whose loops share one control.
#[test]
fn one_control_stops_every_loop() {
    let control = Control::new();
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let c = control.clone();
            let seen = Arc::new(Seen::default());
            (addr, std::thread::spawn(move || serve(listener, Arc::new(Config::default()), Echo(seen), &c)))
        })
        .collect();
    let mut clients: Vec<TcpStream> = loops.iter().map(|(addr, _)| open(*addr)).collect();
    control.shutdown(CloseCode::GOING_AWAY, "bye").unwrap();
    for client in &mut clients {
        assert_eq!(read_frame(client), (8, close_payload(CloseCode::GOING_AWAY, "bye")));
        client.write_all(&frame(8, &[])).unwrap();
    }
    for (_, thread) in loops {
        assert_eq!(thread.join().unwrap().unwrap(), Stopped { abandoned: 0 });
    }
    // A loop that starts after the shutdown returns at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handler = Echo(Arc::new(Seen::default()));
    assert_eq!(serve(listener, Arc::new(Config::default()), handler, &control).unwrap(), Stopped { abandoned: 0 });
}

#[test]
fn shutdown_refuses_a_frame_no_connection_could_send() {
    let control = Control::new();
    assert!(control.shutdown(CloseCode::ABNORMAL, "").is_err(), "1006 is never sent");
    assert!(control.shutdown(CloseCode::GOING_AWAY, &"x".repeat(124)).is_err(), "over 123 bytes");
    assert!(!control.is_stopping(), "a refused shutdown stops nothing");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever way the client's bytes are cut into writes (a byte at a time, whole
    /// bursts of pipelined frames), every message comes back whole and in order.
    #[test]
    fn every_message_comes_back_in_order_however_the_bytes_arrive(
        messages in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..3000)), 1..20),
        cuts in prop::collection::vec(1usize..4000, 1..40),
    ) {
        let server = Server::start(Config::default());
        let mut client = open(server.addr);
        client.set_nodelay(true).unwrap();
        let messages: Vec<(u8, Vec<u8>)> = messages
            .into_iter()
            .map(|(text, bytes)| if text { (1, String::from_utf8_lossy(&bytes).into_owned().into_bytes()) } else { (2, bytes) })
            .collect();
        let stream: Vec<u8> = messages.iter().flat_map(|(opcode, payload)| frame(*opcode, payload)).collect();
        let mut writer = client.try_clone().unwrap();
        let sending = std::thread::spawn(move || {
            let mut rest = &stream[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*cut).min(rest.len()));
                writer.write_all(now).unwrap();
                rest = later;
                if cut % 3 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        for expected in &messages {
            prop_assert_eq!(&read_frame(&mut client), expected);
        }
        sending.join().unwrap();
        client.write_all(&frame(8, &[])).unwrap();
        let (opcode, _) = read_frame(&mut client);
        prop_assert_eq!(opcode, 8);
        prop_assert!(read_to_eof(&mut client).is_empty());
    }
}
