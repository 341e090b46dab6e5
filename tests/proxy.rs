//! Behind a reverse proxy, on every runtime: with the default limits a thousand
//! clients from one address (a proxy, an ingress, a NAT) all get in; the per-IP
//! limit counts the address a trusted proxy forwards (`X-Forwarded-For`,
//! `Forwarded`), right-most untrusted first, and gives a place back exactly once;
//! a peer that is not trusted cannot change its address with those headers; and
//! hooks see the resolved address. docs/limits.md documents what is asserted
//! here; the rules themselves are property-tested in
//! `chinwag_core::handshake::forwarded`.

use chinwag_core::handshake::TrustedProxies;
use chinwag_core::http::HeaderValue;
use chinwag_core::{Config, HandshakeError, Message};
use chinwag_driver::{Error, Runtime, WebSocket, connect, parse_url};
use chinwag_service::{Context, Handle, Limits, Server, Service, Stats};
use chinwag_tests::{connect_from, raise_file_limit, raw_exchange, start_chat, timeout, upgrade_request};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);
const TOO_MANY: &str = "too many connections from your address";

type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

/// Opens `path` from 127.0.0.1 with one extra header (if any); the status the
/// server answered (101 when open).
async fn open<C: Runtime>(addr: SocketAddr, path: &str, extra: Option<(&str, &str)>) -> Result<Client<C>, u16> {
    let mut request = parse_url(&format!("ws://{addr}{path}")).unwrap();
    if let Some((name, value)) = extra {
        request = request.with_header(name.parse().unwrap(), HeaderValue::from_str(value).unwrap());
    }
    match connect::<C>(&request, Config::default()).await {
        Ok(ws) => Ok(ws),
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(status))) => Err(status),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// Joins the chat (see [`open`]), past the greeting and the join line.
async fn join<C: Runtime>(addr: SocketAddr, path: &str, extra: Option<(&str, &str)>) -> Client<C> {
    let mut ws = open::<C>(addr, path, extra).await.unwrap_or_else(|status| panic!("{path}, {extra:?}: {status}"));
    next::<C>(&mut ws).await;
    next::<C>(&mut ws).await;
    ws
}

async fn next<C: Runtime>(ws: &mut Client<C>) -> String {
    match timeout::<C, _>(LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => t.to_string(),
        other => panic!("expected a line, got {other:?}"),
    }
}

/// The chat's refusal of `path` with an extra header line, from 127.0.0.1.
async fn refused<C: Runtime>(addr: SocketAddr, path: &str, extra: &str) -> String {
    let request = upgrade_request(addr, path).replacen("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"), 1);
    raw_exchange::<C>(addr, request.as_bytes()).await
}

fn assert_too_many(response: &str) {
    assert!(response.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{response}");
    assert!(response.ends_with(&format!("\r\n\r\n{TOO_MANY}")), "{response}");
}

/// An upgrade from the local address `source`, with an extra header line: the
/// open socket if the server answered 101, else the whole answer.
fn open_from(source: IpAddr, addr: SocketAddr, path: &str, extra: &str) -> Result<std::net::TcpStream, String> {
    use std::io::{Read, Write};
    let mut stream = connect_from(source, addr).unwrap_or_else(|e| panic!("connecting from {source}: {e}"));
    let request = upgrade_request(addr, path).replacen("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"), 1);
    stream.write_all(request.as_bytes()).unwrap();
    // The response head, byte by byte: what follows it is the service's.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    if head.starts_with(b"HTTP/1.1 101 ") {
        return Ok(stream);
    }
    stream.read_to_end(&mut head).unwrap();
    Err(String::from_utf8_lossy(&head).into_owned())
}

fn proxied(per_ip: usize) -> Limits {
    Limits {
        max_connections_per_ip: Some(per_ip),
        trusted_proxies: TrustedProxies::new(["127.0.0.1".parse().unwrap()]),
        ..Limits::default()
    }
}

/// Waits until the server has `n` connections open (closes are noticed by the
/// server's tasks a moment after the client's).
async fn wait_for_connections<C: Runtime>(handle: &Handle, n: usize) {
    for _ in 0..500 {
        if handle.connection_count() == n {
            return;
        }
        C::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} connections open, not {n}", handle.connection_count());
}

async fn a_thousand_clients_from_one_address<S: Runtime, C: Runtime>() {
    // A thousand sockets on each side, in this one process.
    raise_file_limit();
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), Limits::default());
    let mut clients = Vec::with_capacity(1000);
    for i in 0..1000 {
        match open::<C>(addr, &format!("/chat/c{i}"), None).await {
            Ok(ws) => clients.push(ws),
            Err(status) => panic!("client {i} from 127.0.0.1 got {status}"),
        }
    }
    assert_eq!(handle.connection_count(), 1000);
    assert_eq!(handle.stats(), Stats::default(), "nothing refused");
    // And they chat: the first hears the last.
    clients[999].send(&Message::text("last one in")).await.unwrap();
    loop {
        if next::<C>(&mut clients[0]).await == "c999: last one in" {
            break;
        }
    }
}

async fn the_limit_counts_forwarded_addresses<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), proxied(2));
    let xff = |value| Some(("x-forwarded-for", value));
    // Two from 203.0.113.7, through the proxy at 127.0.0.1: the limit.
    let mut ann = join::<C>(addr, "/chat/ann", xff("203.0.113.7")).await;
    let bob = join::<C>(addr, "/chat/bob", Some(("forwarded", "for=\"203.0.113.7:4711\";proto=http"))).await;
    assert_eq!(next::<C>(&mut ann).await, "bob connected to chat");
    // A third from 203.0.113.7 is refused, however it is spelled, and whatever the
    // client wrote to the left of what the proxy appended.
    for extra in [
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-For: 198.51.100.1, 203.0.113.7",
        "X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.7, 127.0.0.1",
        "Forwarded: for=198.51.100.1, for=203.0.113.7",
        "Forwarded: for=\"[::ffff:203.0.113.7]\"",
    ] {
        assert_too_many(&refused::<C>(addr, "/chat/cy", extra).await);
    }
    assert_eq!(handle.stats(), Stats { refused_per_ip: 5, ..Stats::default() });
    // Another forwarded address is another client, through the same proxy: the
    // proxy's own address (four connections now) is not what is counted.
    let _dee = join::<C>(addr, "/chat/dee", xff("203.0.113.8")).await;
    let _eve = join::<C>(addr, "/chat/eve", xff("2001:db8::8")).await;
    assert_eq!(next::<C>(&mut ann).await, "dee connected to chat");
    assert_eq!(next::<C>(&mut ann).await, "eve connected to chat");
    // A header the proxy sent that names no usable address: the proxy is the
    // client (documented), and is under the limit of 2 itself.
    let _fay = join::<C>(addr, "/chat/fay", xff("unknown")).await;
    let _gus = join::<C>(addr, "/chat/gus", xff("not an address")).await;
    assert_too_many(&refused::<C>(addr, "/chat/hal", "X-Forwarded-For: _hidden").await);
    assert_too_many(&refused::<C>(addr, "/chat/hal", "X-Request-Id: 1").await);
    // The places of 203.0.113.7 come back when its connections close, each
    // exactly once: two new ones get in, and a third is refused again.
    drop((ann, bob));
    wait_for_connections::<C>(&handle, 4).await;
    let _ian = join::<C>(addr, "/chat/ian", xff("203.0.113.7")).await;
    let _joy = join::<C>(addr, "/chat/joy", xff("203.0.113.7")).await;
    assert_too_many(&refused::<C>(addr, "/chat/kim", "X-Forwarded-For: 203.0.113.7").await);
    assert_eq!(handle.stats().refused_per_ip, 8);
}

async fn forged_headers_from_an_untrusted_peer_are_ignored<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_chat::<S>(chinwag::chat::config(), proxied(2));
    let from = |source: [u8; 4], path: &str, extra: &str| open_from(source.into(), addr, path, extra);
    // 127.0.0.2 is not a trusted proxy: each of its connections is its own,
    // whatever address its headers claim.
    let _ann = from([127, 0, 0, 2], "/chat/ann", "X-Forwarded-For: 203.0.113.10").expect("ann");
    let _bob = from([127, 0, 0, 2], "/chat/bob", "Forwarded: for=203.0.113.11").expect("bob");
    assert_too_many(&from([127, 0, 0, 2], "/chat/cy", "X-Forwarded-For: 203.0.113.12").unwrap_err());
    assert_too_many(&from([127, 0, 0, 2], "/chat/cy", "Forwarded: for=203.0.113.12").unwrap_err());
    // ... nor did they count against the addresses they named.
    let _dee = join::<C>(addr, "/chat/dee", Some(("x-forwarded-for", "203.0.113.10"))).await;
    let _eve = join::<C>(addr, "/chat/eve", Some(("x-forwarded-for", "203.0.113.10"))).await;
    // And a forged header naming the trusted proxy does not make 127.0.0.3 one.
    let _fay = from([127, 0, 0, 3], "/chat/fay", "X-Forwarded-For: 127.0.0.1").expect("fay");
    let _gus = from([127, 0, 0, 3], "/chat/gus", "X-Forwarded-For: 127.0.0.1").expect("gus");
    assert_too_many(&from([127, 0, 0, 3], "/chat/hal", "X-Forwarded-For: 203.0.113.99").unwrap_err());
    assert_eq!(handle.stats(), Stats { refused_per_ip: 3, ..Stats::default() });
}

/// Tells each client, when it opens, the address the server resolved for it.
struct Where;

impl Service for Where {
    fn on_open(&self, cx: &mut Context<'_>) {
        let address = cx.client_address().to_string();
        cx.push_text(address);
    }
}

async fn hooks_see_the_client_address<S: Runtime, C: Runtime>() {
    let limits = Limits { trusted_proxies: TrustedProxies::new(["127.0.0.1".parse().unwrap()]), ..Limits::default() };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let server = Server::new(Where).limits(limits);
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send(S::local_addr(&listener).unwrap()).unwrap();
            server.serve::<S>(listener).await.unwrap();
        })
    });
    let addr: SocketAddr = rx.recv().unwrap();
    for (extra, expected) in [
        (None, "127.0.0.1"),
        (Some(("x-forwarded-for", "198.51.100.1, 203.0.113.7, 127.0.0.1")), "203.0.113.7"),
        (Some(("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")), "2001:db8:cafe::17"),
        (Some(("x-forwarded-for", "203.0.113.7:")), "127.0.0.1"),
    ] {
        let mut ws = open::<C>(addr, "/", extra).await.expect("open");
        assert_eq!(next::<C>(&mut ws).await, expected, "{extra:?}");
    }
    // From an untrusted peer, headers and all: its own address.
    let mut raw = open_from([127, 0, 0, 2].into(), addr, "/", "X-Forwarded-For: 203.0.113.7").expect("open");
    let mut frame = [0; 11];
    std::io::Read::read_exact(&mut raw, &mut frame).unwrap();
    assert_eq!(&frame, b"\x81\x09127.0.0.2");
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 6;
    scenarios: [a_thousand_clients_from_one_address, the_limit_counts_forwarded_addresses, forged_headers_from_an_untrusted_peer_are_ignored, hooks_see_the_client_address];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
    smol_client_on_async_std_server: chinwag_futures::AsyncStd => chinwag_futures::Smol;
}
