//! The load generator: one lean single-threaded client shared by every server
//! under test, so that differences come from the servers.
//!
//! Client frames are masked and encoded once up front; responses are counted by
//! length (an echoed frame of S bytes is a server header plus S bytes), and the
//! first response of every connection is checked byte for byte.

use chinwag_core::frame::{FrameHeader, OpCode, encode_frame};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A masked client frame carrying `payload` (encoded by the core: the peers under
/// test check it, so the harness needs no codec of its own).
pub(crate) fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = bytes::BytesMut::new();
    encode_frame(&mut frame, true, OpCode::Binary, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
    frame.to_vec()
}

/// An unmasked server frame carrying `payload`: what an echo must send back.
pub(crate) fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = bytes::BytesMut::new();
    encode_frame(&mut frame, true, OpCode::Binary, payload, None);
    frame.to_vec()
}

/// The `q` quantile (0 to 1) of sorted values; `None` when there are none.
pub(crate) fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied()
}

/// Opens a TCP connection (from `source`, if given) and, for a WebSocket server,
/// performs the opening handshake for `path`.
pub(crate) async fn open(
    addr: SocketAddr,
    websocket: bool,
    path: &str,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let mut stream = tcp_connect(addr, source).await?;
    if websocket {
        handshake(&mut stream, addr, path).await?;
    }
    Ok(stream)
}

/// Opens a TCP connection from `source` (any loopback address; 127.0.0.1 by
/// default) with `TCP_NODELAY`.
pub(crate) async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = source.filter(|ip| !ip.is_loopback() || *ip != IpAddr::V4(Ipv4Addr::LOCALHOST)) {
        // Choose the port at connect time, per destination (IP_BIND_ADDRESS_NO_PORT):
        // bind() alone would need a port free for every destination, and a few runs'
        // worth of TIME_WAIT sockets use those up.
        use std::os::fd::AsRawFd as _;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the duration of the call.
        #[allow(unsafe_code)]
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The client's opening handshake for `path`, read byte by byte so that nothing
/// after the response head is consumed.
pub(crate) async fn handshake(stream: &mut TcpStream, addr: SocketAddr, path: &str) -> std::io::Result<()> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("handshake refused: {}", String::from_utf8_lossy(&head))));
    }
    Ok(())
}

/// The result of one echo run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Echo {
    /// Messages echoed per second.
    pub(crate) rate: f64,
    /// Server CPU time (user + system) per message, in microseconds.
    pub(crate) cpu_us: f64,
    /// Messages echoed in all, the warm-up included: the server's whole work, for
    /// dividing its instruction count.
    pub(crate) total: u64,
}

/// One echo run: `connections` clients, each with `in_flight` messages of `size`
/// bytes outstanding (1 = lock-step), measured over `measure` after `warmup`.
/// `server_cpu` reads the server's CPU time so far.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn echo(
    addr: SocketAddr,
    websocket: bool,
    connections: usize,
    size: usize,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
    server_cpu: &dyn Fn() -> Duration,
) -> std::io::Result<Echo> {
    let payload: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let (request, response) =
        if websocket { (client_frame(&payload), server_frame(&payload)) } else { (payload.clone(), payload.clone()) };
    let request: Rc<[u8]> = request.repeat(in_flight).into();
    let (request_one, expected) = (Rc::<[u8]>::from(&request[..request.len() / in_flight]), Rc::<[u8]>::from(response));
    let completed = Rc::new(Cell::new(0u64));
    let stop = Rc::new(Cell::new(false));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let stream = open(addr, websocket, "/", None).await?;
                let (request, request_one, expected, completed, stop) =
                    (request.clone(), request_one.clone(), expected.clone(), completed.clone(), stop.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    echo_connection(stream, &request, &request_one, &expected, &completed, &stop).await
                }));
            }
            tokio::time::sleep(warmup).await;
            let (start, before, cpu_before) = (Instant::now(), completed.get(), server_cpu());
            tokio::time::sleep(measure).await;
            let (elapsed, after, cpu_after) = (start.elapsed(), completed.get(), server_cpu());
            stop.set(true);
            for task in tasks {
                task.await.expect("client task")?;
            }
            let messages = (after - before) as f64;
            Ok(Echo {
                rate: messages / elapsed.as_secs_f64(),
                cpu_us: (cpu_after - cpu_before).as_secs_f64() * 1e6 / messages.max(1.0),
                total: completed.get(),
            })
        })
        .await
}

async fn echo_connection(
    mut stream: TcpStream,
    burst: &[u8],
    one: &[u8],
    expected: &[u8],
    completed: &Cell<u64>,
    stop: &Cell<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; (64 << 10).max(expected.len() * 2)];
    stream.write_all(burst).await?;
    // The first response is checked in full; after that, whole responses are counted.
    let mut first = Vec::new();
    while first.len() < expected.len() {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        first.extend_from_slice(&buf[..n]);
    }
    if first[..expected.len()] != *expected {
        return Err(std::io::Error::other("the server's echo differs from the message sent"));
    }
    let mut pending = first.len() - expected.len();
    let mut owed = 1usize;
    completed.set(completed.get() + 1);
    loop {
        // Send one message for each response received (lock-step: exactly one).
        if owed > 0 && !stop.get() {
            if owed == 1 {
                stream.write_all(one).await?;
            } else {
                let mut batch = Vec::with_capacity(one.len() * owed);
                for _ in 0..owed {
                    batch.extend_from_slice(one);
                }
                stream.write_all(&batch).await?;
            }
            owed = 0;
        }
        if stop.get() {
            return Ok(());
        }
        while pending >= expected.len() {
            pending -= expected.len();
            owed += 1;
            completed.set(completed.get() + 1);
        }
        if owed > 0 {
            continue;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        pending += n;
    }
}

/// The result of a fan-out run.
#[derive(Debug, Clone)]
pub(crate) struct Fanout {
    /// Deliveries (messages received by subscribers) per second, from the first
    /// send to the last delivery.
    pub(crate) deliveries_per_sec: f64,
    /// Delivery latency percentiles and maximum, in microseconds.
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// Maximum.
    pub(crate) max_us: f64,
    /// Deliveries missing or out of order (must be 0).
    pub(crate) lost_or_reordered: u64,
    /// Server CPU time per delivery, in microseconds.
    pub(crate) cpu_us: f64,
}

/// One fan-out run: `subscribers` clients in one room, one publisher sending
/// `messages` messages of `size` bytes, at `rate` per second (or as fast as it can).
pub(crate) async fn fanout(
    addr: SocketAddr,
    subscribers: usize,
    messages: u64,
    size: usize,
    rate: Option<f64>,
    limit: Duration,
    server_cpu: &dyn Fn() -> Duration,
) -> std::io::Result<Fanout> {
    let base = Instant::now();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut subs = Vec::new();
            for i in 0..subscribers {
                // Beyond one address's ports, spread over 127.0.0.x.
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / 25_000) as u8));
                subs.push(open(addr, true, "/sub", Some(source)).await?);
            }
            let done = Rc::new(Cell::new(0usize));
            let last_delivery = Rc::new(Cell::new(base));
            let mut tasks = Vec::new();
            for stream in subs {
                let (done, last) = (done.clone(), last_delivery.clone());
                tasks.push(tokio::task::spawn_local(
                    async move { subscriber(stream, messages, base, &done, &last).await },
                ));
            }
            // Let the server settle every subscription before publishing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut publisher = open(addr, true, "/pub", None).await?;
            let cpu_before = server_cpu();
            let start = Instant::now();
            let mut payload = vec![0u8; size.max(16)];
            for seq in 0..messages {
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                payload[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
                publisher.write_all(&client_frame(&payload)).await?;
            }
            // Wait for every subscriber to get everything (or give up at the limit).
            let deadline = Instant::now() + limit;
            while done.get() < subscribers && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cpu = server_cpu().saturating_sub(cpu_before);
            let elapsed = last_delivery.get().saturating_duration_since(start).max(Duration::from_micros(1));
            let mut latencies = Vec::new();
            let mut lost_or_reordered = 0;
            for task in tasks {
                task.abort();
                match task.await {
                    Ok(Ok((mut lat, bad))) => {
                        latencies.append(&mut lat);
                        lost_or_reordered += bad;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => lost_or_reordered += messages, // still waiting at the limit
                }
            }
            let delivered = latencies.len() as f64;
            latencies.sort_unstable();
            let pct = |q: f64| percentile(&latencies, q).map_or(f64::NAN, |ns| ns as f64 / 1e3);
            Ok(Fanout {
                deliveries_per_sec: delivered / elapsed.as_secs_f64(),
                p50_us: pct(0.50),
                p99_us: pct(0.99),
                max_us: latencies.last().map_or(f64::NAN, |&ns| ns as f64 / 1e3),
                lost_or_reordered,
                cpu_us: cpu.as_secs_f64() * 1e6 / delivered.max(1.0),
            })
        })
        .await
}

/// Reads `messages` server frames, checking their sequence numbers; returns the
/// latencies (ns) and how many were out of order. Frames are parsed where they
/// were read; only a frame split across reads is carried over.
async fn subscriber(
    mut stream: TcpStream,
    messages: u64,
    base: Instant,
    done: &Cell<usize>,
    last: &Cell<Instant>,
) -> std::io::Result<(Vec<u64>, u64)> {
    let mut buf = vec![0u8; 64 << 10];
    let mut carry: Vec<u8> = Vec::new();
    let mut latencies = Vec::with_capacity(messages as usize);
    let (mut next, mut bad) = (0u64, 0u64);
    while next < messages {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let now = base.elapsed().as_nanos() as u64;
        let data: &[u8] = if carry.is_empty() {
            &buf[..n]
        } else {
            carry.extend_from_slice(&buf[..n]);
            &carry
        };
        let mut at = 0;
        while let Some((header_len, len)) = server_frame_len(&data[at..]) {
            if data.len() - at < header_len + len {
                break;
            }
            let payload = &data[at + header_len..at + header_len + len];
            let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
            let sent = u64::from_le_bytes(payload[8..16].try_into().unwrap());
            latencies.push(now.saturating_sub(sent));
            if seq != next {
                bad += 1;
            }
            next += 1;
            at += header_len + len;
        }
        let rest = data[at..].to_vec();
        carry = rest;
    }
    done.set(done.get() + 1);
    last.set(last.get().max(Instant::now()));
    Ok((latencies, bad))
}

/// The header length and payload length of the frame at the start of `data`, if
/// its header is complete.
fn server_frame_len(data: &[u8]) -> Option<(usize, usize)> {
    let (header, header_len) = FrameHeader::decode(data).ok()??;
    Some((header_len, header.payload_len as usize))
}

/// Opens `count` idle connections (completing the handshake for WebSocket servers)
/// and keeps them open while `measure` runs.
pub(crate) async fn idle<T>(
    addr: SocketAddr,
    websocket: bool,
    count: usize,
    measure: impl std::future::Future<Output = T>,
) -> std::io::Result<T> {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / 25_000) as u8));
        streams.push(open(addr, websocket, "/", Some(source)).await?);
    }
    let out = measure.await;
    drop(streams);
    Ok(out)
}
