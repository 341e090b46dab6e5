//! Helpers for the cross-runtime tests: servers on one runtime in a thread of their
//! own, timeouts and raw transport I/O that work on every runtime, raw frames, and
//! the macro that runs a scenario on every pair of runtimes.

pub mod chat_client;
pub mod processes;

use chinwag_core::Config;
use chinwag_core::frame::FrameHeader;
pub use chinwag_driver::Runtime;
use chinwag_driver::{PendingRequest, Transport, read_request};
use chinwag_service::{Handle, Limits};
use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// The pending request type of runtime `R`.
pub type Pending<R> = PendingRequest<<R as Runtime>::Io, <R as Runtime>::Timer>;

/// Starts a server on runtime `S` in a thread of its own; every connection's request
/// goes to `handler` in a task of its own. Returns the address it listens on.
pub fn start_server<S, F, Fut>(config: Config, handler: F) -> SocketAddr
where
    S: Runtime,
    F: Fn(Pending<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
            tx.send(S::local_addr(&listener).unwrap()).unwrap();
            let handler = Arc::new(handler);
            loop {
                let Ok((io, _)) = S::accept(&listener).await else { continue };
                let handler = handler.clone();
                let config = config.clone();
                S::spawn(async move {
                    if let Ok(pending) = read_request::<_, S::Timer>(io, config).await {
                        handler(pending).await;
                    }
                });
            }
        })
    });
    rx.recv().expect("server address")
}

/// `Some(output)` if `future` finishes within `limit` on runtime `R`.
pub async fn timeout<R: Runtime, T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let mut future = pin!(future);
    let mut sleep = pin!(R::sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Writes all of `bytes` to a raw transport.
pub async fn write_all<T: Transport>(io: &mut T, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| io.poll_write_vectored(cx, &[IoSlice::new(bytes)])).await?;
        bytes = &bytes[n..];
    }
    poll_fn(|cx| io.poll_flush(cx)).await
}

/// Reads whatever arrives next from a raw transport (empty at EOF).
pub async fn read_some<T: Transport>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; 64 << 10];
    let n = poll_fn(|cx| io.poll_read(cx, &mut buf)).await?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads until EOF from a raw transport.
pub async fn read_to_end<T: Transport>(io: &mut T) -> Vec<u8> {
    let mut all = Vec::new();
    while let Ok(chunk) = read_some(io).await {
        if chunk.is_empty() {
            break;
        }
        all.extend_from_slice(&chunk);
    }
    all
}

/// A valid upgrade request for `path` on `addr`.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// One frame as a client sends it, built byte by byte so that tests can break the
/// rules: `first` is the whole first header byte (FIN, RSV bits, opcode), and the
/// payload is masked or not.
pub fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The complete frames at the start of `bytes` (a server's output after its 101
/// head), as (opcode, payload).
pub fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Ok(Some((header, header_len))) = FrameHeader::decode(bytes) {
        let Some(payload) =
            usize::try_from(header.payload_len).ok().and_then(|n| bytes.get(header_len..header_len + n))
        else {
            break;
        };
        frames.push((header.opcode, payload.to_vec()));
        bytes = &bytes[header_len + payload.len()..];
    }
    frames
}

/// Sends `request` over a new raw connection to `addr` and reads the whole answer
/// (for requests the server answers and then closes: refusals, plain HTTP).
pub async fn raw_exchange<C: Runtime>(addr: SocketAddr, request: &[u8]) -> String {
    let mut raw = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut raw, request).await.unwrap();
    String::from_utf8_lossy(&read_to_end(&mut raw).await).into_owned()
}

/// The status line and body of the server's answer to `request`, sent over a new
/// raw connection (see [`raw_exchange`]).
pub async fn raw_answer<C: Runtime>(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let response = raw_exchange::<C>(addr, request).await;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// A blocking TCP connection to `to` from the local address `source`, with a 10 s
/// read timeout. Every 127.x.y.z address is a loopback address of its own, so
/// connecting from 127.0.0.2 or 127.0.0.3 to a server on 127.0.0.1 makes another
/// client as far as the server's per-IP limit can tell. (The runtimes connect only
/// from the address the kernel picks, hence a plain socket bound before connecting;
/// blocking is fine here, the servers under test run on threads of their own.)
pub fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&to.into())?;
    let stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends `request` to `addr` from the local address `source` and reads the whole
/// answer (see [`connect_from`] and [`raw_exchange`]).
pub fn raw_exchange_from(source: IpAddr, addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = connect_from(source, addr).unwrap_or_else(|e| panic!("connecting from {source}: {e}"));
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Raises this process's open-file limit to its hard limit, for tests that hold
/// thousands of sockets (a thousand clients and the server's side of each).
pub fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by
    // pointer, which lives across both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Starts the chat server on runtime `S` with `config` and `limits`, in a thread of
/// its own.
pub fn start_chat<S: Runtime>(config: Config, limits: Limits) -> (SocketAddr, Handle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let server = chinwag::chat::server_with(config, limits);
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send((S::local_addr(&listener).unwrap(), server.handle())).unwrap();
            server.serve::<S>(listener).await.unwrap();
        })
    });
    rx.recv().unwrap()
}

/// Starts a chat node of the cluster on the Redis at `redis_url`, on runtime
/// `S` in a thread of its own, and waits until it admits clients (connected to
/// Redis, who is in the chat loaded).
pub fn start_chat_node<S: Runtime>(redis_url: &str) -> (SocketAddr, Handle, std::sync::Arc<chinwag::cluster::Cluster>) {
    let cluster = chinwag::cluster::Cluster::new(redis_url).expect("a valid Redis URL");
    let (tx, rx) = std::sync::mpsc::channel();
    let node = cluster.clone();
    std::thread::spawn(move || {
        S::block_on(async move {
            let server = chinwag::chat::clustered_server_with(chinwag::chat::config(), Limits::default(), node.clone());
            node.start::<S>(server.handle());
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send((S::local_addr(&listener).unwrap(), server.handle())).unwrap();
            server.serve::<S>(listener).await.unwrap();
            node.flush_queue::<S>(Duration::from_secs(5)).await;
        })
    });
    let (addr, handle) = rx.recv().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cluster.readiness().ready {
        assert!(std::time::Instant::now() < deadline, "the node did not get ready: {:?}", cluster.readiness());
        std::thread::sleep(Duration::from_millis(10));
    }
    (addr, handle, cluster)
}

/// Runs each scenario, an `async fn name<S: Runtime, C: Runtime>()` of the calling
/// file, as a test for each pair of server and client runtimes, within `limit`:
///
/// ```ignore
/// runtime_suite! {
///     limit: LIMIT * 3;
///     scenarios: [guide_scenario, refusals];
///     tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
/// }
/// ```
#[macro_export]
macro_rules! runtime_suite {
    (limit: $limit:expr; scenarios: $scenarios:tt; $($module:ident: $server:ty => $client:ty;)*) => {$(
        $crate::runtime_suite!(@module $module, $server, $client, $limit, $scenarios);
    )*};
    (@module $module:ident, $server:ty, $client:ty, $limit:expr, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    <$client as $crate::Runtime>::block_on(async {
                        $crate::timeout::<$client, _>($limit, super::$scenario::<$server, $client>())
                            .await
                            .expect("scenario timed out")
                    })
                }
            )*
        }
    };
}

/// The gateway tests' configuration: the gateway document's topics, development
/// usernames and a 1 s heartbeat.
const GATEWAY_CONFIG: &str = r#"
gateway:
  socket:
    path: "/connect"
    onconnect: { publish: "socket:connection" }
    onmessage:
      publish: "socket:generalMessage"
      types:
        - { type: "message_type_one", publish: "socket:type_one" }
        - { type: "message_type_two", publish: "socket:type_two" }
    onclose: { publish: "socket:close" }
    send: { subscribe: "socket:send" }
    broadcast: { subscribe: "socket:broadcast" }
  auth:
    development_usernames: true
  heartbeat: { interval_secs: 1, timeout_secs: 1 }
"#;

/// The gateway tests' configuration (`GATEWAY_CONFIG`) plus `extra`: more keys of its `gateway` section, as YAML
/// lines indented by two spaces.
pub fn gateway_config(extra: &str) -> chinwag_gateway::Config {
    let text = format!("{GATEWAY_CONFIG}{extra}");
    chinwag_gateway::Config::parse(&text, std::path::Path::new(".")).expect("a valid test configuration")
}
