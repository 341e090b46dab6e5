//! The servers under test, each run in a process of its own by `chinwag-bench
//! server --kind K`. The peers are written the way their own examples and most users
//! write them.

use base64::Engine as _;
use chinwag_core::{Config, Message, Utf8Bytes};
use chinwag_driver::{Runtime, Timer, Transport};
use chinwag_service::{Context, Decision, Limits, Server, Service};
use futures_util::{SinkExt, StreamExt};
use sha1::Digest as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum Kind {
    /// chinwag echo on chinwag-tokio, tokio multi-thread runtime (one worker per core).
    ChinwagTokio,
    /// chinwag echo on chinwag-tokio, one current-thread runtime per core sharing the
    /// port through SO_REUSEPORT.
    ChinwagTokioPerCore,
    /// chinwag echo on chinwag-tokio, a single current-thread runtime.
    ChinwagTokioOneThread,
    /// The `chinwag echo` binary (built next to this one) with its defaults: an
    /// event loop per core (chinwag-mio), keepalive on. What users run; the
    /// in-process servers above leave keepalive off.
    ChinwagEcho,
    /// `chinwag echo` on one thread (`CHINWAG_THREADS=1`): like for like with the
    /// one-thread peers.
    ChinwagEchoOneThread,
    /// `chinwag echo --runtime tokio`: the binary on tokio, a runtime per core
    /// (its default before the event loops).
    ChinwagEchoTokio,
    /// `chinwag echo --runtime tokio` on one thread.
    ChinwagEchoTokioOneThread,
    /// `examples/event-loop-echo` (built next to this one): the core driven
    /// directly on one `mio` loop, with no runtime and no driver.
    ExampleEventLoop,
    /// `examples/blocking-echo` (built next to this one): the core driven directly
    /// on `std::net`, a thread per connection.
    ExampleBlocking,
    /// chinwag echo on chinwag-futures, async-std.
    ChinwagAsyncStd,
    /// chinwag echo on chinwag-futures, smol.
    ChinwagSmol,
    /// tokio-tungstenite echo (the crate's example: read a message, send it back),
    /// tokio multi-thread as `#[tokio::main]` builds it.
    Tungstenite,
    /// The same, on a single current-thread runtime.
    TungsteniteOneThread,
    /// fastwebsockets echo (the crate's example, with FragmentCollector), tokio
    /// multi-thread.
    Fastwebsockets,
    /// The same, on a single current-thread runtime.
    FastwebsocketsOneThread,
    /// Raw TCP echo on tokio multi-thread: no WebSocket at all.
    RawTcp,
    /// Raw TCP echo on a single current-thread runtime: the machine's limit for
    /// this load.
    RawTcpOneThread,
    /// Raw TCP echo on smol, through chinwag-futures' transport: what smol itself
    /// costs, for comparison with chinwag-smol.
    RawTcpSmol,
    /// The same on async-std.
    RawTcpAsyncStd,
    /// chinwag fan-out: chinwag-service, subscribers in one group, the publisher's
    /// messages pushed to the group (encoded once, shared); tokio multi-thread.
    ChinwagFanout,
    /// The same chinwag fan-out on a single current-thread tokio runtime.
    ChinwagFanoutOneThread,
    /// tokio-tungstenite fan-out written the common way: one unbounded channel per
    /// client, the publisher's task sends a copy of each message to every channel.
    TungsteniteFanout,
}

impl Kind {
    /// Whether clients talk WebSocket to it (all but raw TCP).
    pub(crate) fn is_websocket(self) -> bool {
        !matches!(self, Kind::RawTcp | Kind::RawTcpOneThread | Kind::RawTcpSmol | Kind::RawTcpAsyncStd)
    }

    /// The short name used in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::ChinwagTokio => "chinwag-tokio",
            Kind::ChinwagTokioPerCore => "chinwag-tokio-per-core",
            Kind::ChinwagTokioOneThread => "chinwag-tokio-1-thread",
            Kind::ChinwagEcho => "chinwag-echo",
            Kind::ChinwagEchoOneThread => "chinwag-echo-1-thread",
            Kind::ChinwagEchoTokio => "chinwag-echo-tokio",
            Kind::ChinwagEchoTokioOneThread => "chinwag-echo-tokio-1-thread",
            Kind::ExampleEventLoop => "example-event-loop",
            Kind::ExampleBlocking => "example-blocking",
            Kind::ChinwagAsyncStd => "chinwag-async-std",
            Kind::ChinwagSmol => "chinwag-smol",
            Kind::Tungstenite => "tokio-tungstenite",
            Kind::TungsteniteOneThread => "tokio-tungstenite-1-thread",
            Kind::Fastwebsockets => "fastwebsockets",
            Kind::FastwebsocketsOneThread => "fastwebsockets-1-thread",
            Kind::RawTcp => "raw-tcp",
            Kind::RawTcpOneThread => "raw-tcp-1-thread",
            Kind::RawTcpSmol => "raw-tcp-smol",
            Kind::RawTcpAsyncStd => "raw-tcp-async-std",
            Kind::ChinwagFanout => "chinwag",
            Kind::ChinwagFanoutOneThread => "chinwag-1-thread",
            Kind::TungsteniteFanout => "tokio-tungstenite",
        }
    }
}

/// The echo servers accept messages up to 64 MiB, like `chinwag echo`.
fn echo_config() -> Config {
    Config { max_frame_size: 64 << 20, max_message_size: 64 << 20, keepalive_interval: None, ..Config::default() }
}

/// Runs a server of `kind` on `addr` until the process is killed.
pub(crate) fn run(kind: Kind, addr: SocketAddr) -> std::io::Result<()> {
    crate::raise_file_limit();
    match kind {
        Kind::ChinwagTokio => chinwag_tokio::Tokio::block_on(chinwag_echo::<chinwag_tokio::Tokio>(addr)),
        Kind::ChinwagTokioPerCore => per_core(addr, std::thread::available_parallelism().map_or(1, |n| n.get())),
        Kind::ChinwagTokioOneThread => per_core(addr, 1),
        Kind::ChinwagEcho
        | Kind::ChinwagEchoOneThread
        | Kind::ChinwagEchoTokio
        | Kind::ChinwagEchoTokioOneThread
        | Kind::ExampleEventLoop
        | Kind::ExampleBlocking => {
            Err(std::io::Error::other(format!("{} is a binary of its own, not a server of this one", kind.label())))
        }
        Kind::ChinwagAsyncStd => chinwag_futures::AsyncStd::block_on(chinwag_echo::<chinwag_futures::AsyncStd>(addr)),
        Kind::ChinwagSmol => chinwag_futures::Smol::block_on(chinwag_echo::<chinwag_futures::Smol>(addr)),
        Kind::Tungstenite => multi_thread().block_on(tungstenite_echo(addr)),
        Kind::TungsteniteOneThread => one_thread().block_on(tungstenite_echo(addr)),
        Kind::Fastwebsockets => multi_thread().block_on(fastwebsockets_echo(addr)),
        Kind::FastwebsocketsOneThread => one_thread().block_on(fastwebsockets_echo(addr)),
        Kind::RawTcp => multi_thread().block_on(raw_echo(addr)),
        Kind::RawTcpOneThread => one_thread().block_on(raw_echo(addr)),
        Kind::RawTcpSmol => chinwag_futures::Smol::block_on(raw_echo_on::<chinwag_futures::Smol>(addr)),
        Kind::RawTcpAsyncStd => chinwag_futures::AsyncStd::block_on(raw_echo_on::<chinwag_futures::AsyncStd>(addr)),
        Kind::ChinwagFanout => chinwag_tokio::Tokio::block_on(chinwag_fanout(addr)),
        Kind::ChinwagFanoutOneThread => one_thread().block_on(chinwag_fanout(addr)),
        Kind::TungsteniteFanout => multi_thread().block_on(tungstenite_fanout(addr)),
    }
}

/// What `#[tokio::main]` builds: one worker per core.
fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

/// A single current-thread runtime.
fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

async fn chinwag_echo<R: Runtime>(addr: SocketAddr) -> std::io::Result<()> {
    let listener = R::bind(addr).await?;
    // One copy of the settings, shared by every connection.
    let config = Arc::new(echo_config());
    loop {
        let (io, _) = R::accept(&listener).await?;
        R::spawn(chinwag_driver::Clocked::new(chinwag_echo_connection(chinwag_driver::accept::<_, R::Timer>(
            io,
            config.clone(),
        ))));
    }
}

/// Echoes on the connection `opening` opens. The handshake future is built by the
/// caller (it is boxed, and freed once the connection is open): a task keeps what
/// it captured for its whole life, so it should not capture the transport.
async fn chinwag_echo_connection<T: Transport, Tm: Timer>(
    opening: impl Future<Output = Result<chinwag_driver::WebSocket<T, Tm>, chinwag_driver::Error>>,
) {
    let Ok(mut ws) = opening.await else { return };
    while let Some(message) = ws.recv().await {
        if ws.feed(&message).await.is_err() {
            break;
        }
    }
}

/// `threads` current-thread tokio runtimes, each with its own listener on the same
/// port (SO_REUSEPORT): the kernel spreads connections over them, and no task ever
/// moves between threads.
fn per_core(addr: SocketAddr, threads: usize) -> std::io::Result<()> {
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.set_reuseport(true)?;
                    socket.set_reuseaddr(true)?;
                    socket.bind(addr)?;
                    let listener = socket.listen(1024)?;
                    let config = Arc::new(echo_config());
                    loop {
                        let (stream, _) = listener.accept().await?;
                        stream.set_nodelay(true)?;
                        tokio::spawn(chinwag_driver::Clocked::new(chinwag_echo_connection(chinwag_driver::accept::<
                            _,
                            chinwag_tokio::TokioTimer,
                        >(
                            chinwag_tokio::TokioIo(stream),
                            config.clone(),
                        ))));
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().expect("server thread")?;
    }
    Ok(())
}

async fn accept_loop<F, Fut>(addr: SocketAddr, handle: F) -> std::io::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(handle(stream));
    }
}

async fn tungstenite_echo(addr: SocketAddr) -> std::io::Result<()> {
    accept_loop(addr, |stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    })
    .await
}

async fn fastwebsockets_echo(addr: SocketAddr) -> std::io::Result<()> {
    accept_loop(addr, |mut stream| async move {
        if server_handshake(&mut stream).await.is_err() {
            return;
        }
        let ws = fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Server);
        let mut ws = fastwebsockets::FragmentCollector::new(ws);
        loop {
            let Ok(frame) = ws.read_frame().await else { break };
            if matches!(frame.opcode, fastwebsockets::OpCode::Close) {
                break;
            }
            let data = matches!(frame.opcode, fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary);
            if data && ws.write_frame(frame).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A minimal server handshake for fastwebsockets, which leaves the HTTP part to the
/// application (its examples use hyper; this keeps the steady state identical).
async fn server_handshake(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&head).map_err(std::io::Error::other)?;
    let key = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .ok_or_else(|| std::io::Error::other("no key"))?
        .value;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await
}

async fn raw_echo(addr: SocketAddr) -> std::io::Result<()> {
    accept_loop(addr, |mut stream| async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if stream.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A raw TCP echo on runtime `R`, through the same transport chinwag's driver
/// uses on it: the difference to chinwag's echo on `R` is chinwag's own work.
async fn raw_echo_on<R: Runtime>(addr: SocketAddr) -> std::io::Result<()> {
    let listener = R::bind(addr).await?;
    loop {
        let (mut io, _) = R::accept(&listener).await?;
        R::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match std::future::poll_fn(|cx| io.poll_read(cx, &mut buf)).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut written = 0;
                while written < n {
                    let slice = [std::io::IoSlice::new(&buf[written..n])];
                    match std::future::poll_fn(|cx| io.poll_write_vectored(cx, &slice)).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => written += k,
                    }
                }
            }
        });
    }
}

/// chinwag fan-out: `/sub` joins the room, `/pub` publishes to it.
struct Fanout;

impl Service for Fanout {
    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        if cx.request().map(|r| r.path()) == Some("/sub") {
            cx.add_to_group("room");
        }
        Decision::accept()
    }

    fn on_binary(&self, cx: &mut Context<'_>, data: &bytes::Bytes) {
        let _ = cx.push_to_group("room", &Message::Binary(data.clone()));
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        let _ = cx.push_to_group("room", &Message::Text(text.clone()));
    }
}

async fn chinwag_fanout(addr: SocketAddr) -> std::io::Result<()> {
    let listener = chinwag_tokio::Tokio::bind(addr).await?;
    let config = Config { keepalive_interval: None, ..Config::default() };
    // The peer has no limits either: 10,000 subscribers from one address, and a
    // publisher at full speed.
    Server::new(Fanout).config(config).limits(Limits::unlimited()).serve::<chinwag_tokio::Tokio>(listener).await
}

// The handshake callback's signature, large error type included, is tokio-tungstenite's.
#[allow(clippy::result_large_err)]
async fn tungstenite_fanout(addr: SocketAddr) -> std::io::Result<()> {
    type Subscribers =
        Arc<Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<tokio_tungstenite::tungstenite::Message>>>>;
    let subscribers: Subscribers = Arc::default();
    let next_id = Arc::new(AtomicU64::new(0));
    accept_loop(addr, move |stream| {
        let subscribers = subscribers.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut path = String::new();
            let callback =
                |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                 response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    path = request.uri().path().to_owned();
                    Ok(response)
                };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
            let (mut sink, mut stream) = ws.split();
            if path == "/sub" {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                subscribers.lock().unwrap().insert(id, tx);
                tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        if sink.send(message).await.is_err() {
                            break;
                        }
                    }
                });
                while let Some(Ok(_)) = stream.next().await {}
                subscribers.lock().unwrap().remove(&id);
            } else {
                while let Some(Ok(message)) = stream.next().await {
                    if message.is_binary() || message.is_text() {
                        for tx in subscribers.lock().unwrap().values() {
                            let _ = tx.send(message.clone());
                        }
                    }
                }
            }
        }
    })
    .await
}
