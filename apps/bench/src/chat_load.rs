//! Load on the real chat server (the `chinwag` binary, default limits): the soak
//! test (many clients in rooms, sequence numbers, loss, order and memory, on one
//! node or several over Redis) and the slow-client test (one client stops
//! reading while the others chat).
//!
//! Every client is a chinwag WebSocket client on one current-thread runtime; lines
//! carry the sender's sequence number and the time they were sent, so each receiver
//! can count what it lost, what came out of order, and how long delivery took.

use chinwag_core::frame::FrameHeader;
use chinwag_core::{Config, Message};
use chinwag_driver::parse_url;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::load::{handshake, percentile, tcp_connect};

/// How long receivers keep reading after the last line was sent.
const DRAIN: Duration = Duration::from_secs(3);

type Ws = chinwag_tokio::WebSocket<TcpStream>;

/// Joins the chat as `name`; returns after the greeting and the join line. Every
/// client connects from 127.0.0.1, as clients behind a reverse proxy or a NAT
/// share one address: the chat's default limits must (and do) admit them all.
async fn join(addr: SocketAddr, name: &str) -> std::io::Result<Ws> {
    let stream = tcp_connect(addr, None).await?;
    let request = parse_url(&format!("ws://{addr}/chat/{name}")).map_err(std::io::Error::other)?;
    let mut ws = chinwag_tokio::client_handshake(stream, &request, Config::default())
        .await
        .map_err(|e| std::io::Error::other(format!("{name}: {e}")))?;
    for _ in 0..2 {
        next_line(&mut ws).await?;
    }
    Ok(ws)
}

async fn next_line(ws: &mut Ws) -> std::io::Result<String> {
    match tokio::time::timeout(Duration::from_secs(30), ws.recv()).await {
        Ok(Some(Message::Text(t))) => Ok(t.to_string()),
        Ok(other) => Err(std::io::Error::other(format!("expected a line, got {other:?}"))),
        Err(_) => Err(std::io::Error::other("no line within 30 s")),
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Lines this client sent.
    sent: u64,
    /// Lines received, per sender.
    received: HashMap<u32, u64>,
    /// The last sequence number received, per sender.
    last: HashMap<u32, u64>,
    /// Lines that arrived after a later one from the same sender (or twice).
    reordered: u64,
    /// Delivery times, in microseconds.
    latencies: Vec<u32>,
    /// The connection ended before the run did.
    dropped: bool,
    /// The line saying the slow client left arrived.
    slow_left: bool,
    /// Every line received, in order, as (sender, sequence number): all the
    /// members of a room must see its lines in one order.
    order: Vec<(u32, u64)>,
}

impl Seen {
    /// Records `c{sender}: {seq} {micros} ...` (the chat's line for a message).
    fn record(&mut self, body: &str, base: Instant) {
        let Some((name, text)) = body.split_once(": ") else { return };
        let Some(sender) = name.strip_prefix('c').and_then(|n| n.parse::<u32>().ok()) else { return };
        let mut fields = text.split(' ');
        let (Some(seq), Some(micros)) = (fields.next(), fields.next()) else { return };
        let (Ok(seq), Ok(micros)) = (seq.parse::<u64>(), micros.parse::<u64>()) else { return };
        *self.received.entry(sender).or_default() += 1;
        self.order.push((sender, seq));
        let last = self.last.entry(sender).or_insert(0);
        if seq <= *last {
            self.reordered += 1;
        } else {
            *last = seq;
        }
        let sent_at = base + Duration::from_micros(micros);
        self.latencies.push(Instant::now().saturating_duration_since(sent_at).as_micros().min(u32::MAX as u128) as u32);
    }
}

/// Runs one client: waits for everyone, then sends `command(seq, micros)` at
/// `rate` per second until `end`, reading all the while, and DRAIN after.
/// `stagger` in [0, 1) spreads the clients' ticks over the period.
async fn chat_client(
    mut ws: Ws,
    barrier: Arc<Barrier>,
    base: Instant,
    (rate, stagger): (f64, f64),
    end: Instant,
    command: impl Fn(u64, u64) -> String,
) -> Seen {
    let mut seen = Seen::default();
    barrier.wait().await;
    let period = Duration::from_secs_f64(1.0 / rate);
    let offset = period.mul_f64(stagger);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drain = tokio::time::sleep_until((end + DRAIN).into());
    tokio::pin!(drain);
    loop {
        tokio::select! {
            _ = tick.tick(), if Instant::now() < end => {
                let micros = base.elapsed().as_micros() as u64;
                seen.sent += 1;
                if ws.send(&Message::text(command(seen.sent, micros))).await.is_err() {
                    seen.dropped = true;
                    break;
                }
            }
            message = ws.recv() => match message {
                Some(Message::Text(line)) => {
                    if &*line == "slow left the chat" {
                        seen.slow_left = true;
                    }
                    let body = line.strip_prefix('#').and_then(|l| l.split_once(' ')).map_or(&*line, |(_, rest)| rest);
                    seen.record(body, base);
                }
                Some(_) => {}
                None => {
                    seen.dropped = true;
                    break;
                }
            },
            _ = &mut drain => break,
        }
    }
    seen
}

/// Loss, order and latency over all clients.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) reordered: u64,
    pub(crate) dropped_connections: usize,
    /// Receivers whose lines of their room came in another order than the
    /// room's first member saw them (comparing the lines both received).
    pub(crate) order_disagreements: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

/// Tallies what `clients` saw; `audience(i)` lists who should get client i's lines.
fn tally(seen: &[Seen], audience: impl Fn(usize) -> Vec<usize>) -> Tally {
    let (mut lost, mut delivered) = (0, 0);
    for (sender, s) in seen.iter().enumerate() {
        for receiver in audience(sender) {
            let got = seen[receiver].received.get(&(sender as u32)).copied().unwrap_or(0);
            delivered += got;
            lost += s.sent.saturating_sub(got);
        }
    }
    let mut latencies: Vec<u32> = seen.iter().flat_map(|s| s.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    let at = |q: f64| percentile(&latencies, q).unwrap_or(0);
    let micros = |m: u32| Duration::from_micros(u64::from(m));
    Tally {
        sent: seen.iter().map(|s| s.sent).sum(),
        delivered,
        lost,
        reordered: seen.iter().map(|s| s.reordered).sum(),
        dropped_connections: seen.iter().filter(|s| s.dropped).count(),
        order_disagreements: disagreements(seen, &audience),
        p50: micros(at(0.5)),
        p99: micros(at(0.99)),
        max: micros(latencies.last().copied().unwrap_or(0)),
    }
}

/// How many receivers saw their audience's lines in another order than the
/// first receiver of the same audience (over the lines both received).
fn disagreements(seen: &[Seen], audience: &impl Fn(usize) -> Vec<usize>) -> usize {
    let mut count = 0;
    let mut compared = HashSet::new();
    for sender in 0..seen.len() {
        let members = audience(sender);
        let Some(&first) = members.first() else { continue };
        if !compared.insert(first) {
            continue;
        }
        let reference = &seen[first].order;
        let in_reference: HashSet<&(u32, u64)> = reference.iter().collect();
        for &other in &members[1..] {
            let theirs = &seen[other].order;
            let in_theirs: HashSet<&(u32, u64)> = theirs.iter().collect();
            let a = reference.iter().filter(|l| in_theirs.contains(l));
            let b = theirs.iter().filter(|l| in_reference.contains(l));
            if !a.eq(b) {
                count += 1;
            }
        }
    }
    count
}

/// The soak test: `clients` in rooms of `room_size`, each saying a line in its room
/// `rate` times a second for `duration`. `rss` reads the server's memory: once
/// everyone has joined, every tenth of the run, and after the last line arrived.
pub(crate) async fn soak(
    nodes: &[SocketAddr],
    clients: usize,
    room_size: usize,
    rate: f64,
    duration: Duration,
    rss: &dyn Fn() -> u64,
) -> std::io::Result<(Tally, Vec<(Duration, u64)>)> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    // The start of the chatting, once everyone has joined.
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        // Round-robin over the nodes: a room has members on every node.
        let mut ws = join(nodes[i % nodes.len()], &format!("c{i}")).await?;
        let room = i / room_size;
        ws.send(&Message::text(format!("/join r{room}"))).await.map_err(std::io::Error::other)?;
        // Our own join line says we are in: the hub added us before sending it.
        let own = format!("c{i} joined #r{room}");
        while next_line(&mut ws).await? != own {}
        // From now on the client reads, as a real one does: the later clients'
        // join lines (n² of them in all) would otherwise pile up unread, and with
        // thousands of clients joining takes longer than the server's keepalive
        // allows a client that does not answer its pings.
        let (barrier, mut start) = (barrier.clone(), start_rx.clone());
        let pace = (rate, i as f64 / clients as f64);
        tasks.push(tokio::spawn(async move {
            let Some((base, end)) = read_until_start(&mut ws, &mut start).await else {
                barrier.wait().await;
                return Seen { dropped: true, ..Seen::default() };
            };
            chat_client(ws, barrier, base, pace, end, move |seq, micros| format!("/say r{room} {seq} {micros}")).await
        }));
    }
    let rss_joined = rss();
    let base = Instant::now();
    let end = base + duration;
    start_tx.send_replace(Some((base, end)));
    barrier.wait().await;
    // The server's memory every tenth of the run: flat once warm, or growing.
    let mut samples = vec![(Duration::ZERO, rss_joined)];
    for tenth in 1..=10 {
        tokio::time::sleep_until((base + duration * tenth / 10).into()).await;
        samples.push((base.elapsed(), rss()));
    }
    let mut seen = Vec::with_capacity(clients);
    for task in tasks {
        seen.push(task.await.map_err(std::io::Error::other)?);
    }
    samples.push((base.elapsed(), rss()));
    let room_of = |i: usize| i / room_size;
    let tally = tally(&seen, |sender| (0..clients).filter(|&r| room_of(r) == room_of(sender)).collect());
    Ok((tally, samples))
}

/// Reads (and drops) what arrives until `start` gives the run's start and end;
/// `None` if the connection ended first.
async fn read_until_start(
    ws: &mut Ws,
    start: &mut tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
) -> Option<(Instant, Instant)> {
    loop {
        if let Some(times) = *start.borrow_and_update() {
            return Some(times);
        }
        tokio::select! {
            changed = start.changed() => changed.ok()?,
            message = ws.recv() => { message?; }
        }
    }
}

/// What the slow client saw.
#[derive(Debug)]
pub(crate) struct SlowOutcome {
    /// Every other client heard that it left the chat, and the server closed its
    /// TCP connection.
    pub(crate) left: bool,
    /// Bytes it read once it started reading again.
    pub(crate) bytes_read: usize,
    /// The close code at the end of its stream, if the close frame reached it.
    pub(crate) close_code: Option<u16>,
}

/// The slow-client test: `clients` chat in the main room (every line to everyone),
/// each `rate` lines a second of about `size` bytes, for `duration`. With `slow`,
/// one more client joins and never reads (its receive buffer made small) until the
/// others hear it left. The chatting starts once everyone has joined and `start`
/// lets every run sharing it go (runs side by side start together).
#[allow(clippy::too_many_arguments)] // one load, described in full
pub(crate) async fn slow_client(
    addr: SocketAddr,
    clients: usize,
    rate: f64,
    size: usize,
    duration: Duration,
    slow: bool,
    start: &Barrier,
) -> std::io::Result<(Tally, Option<SlowOutcome>)> {
    let mut sockets = Vec::with_capacity(clients);
    for i in 0..clients {
        sockets.push(join(addr, &format!("c{i}")).await?);
    }
    let mut slow_stream = None;
    if slow {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(addr).await?;
        handshake(&mut stream, addr, "/chat/slow").await?;
        slow_stream = Some(stream);
    }
    // Everyone has seen every join (the slow client's too) before the run starts.
    for (i, ws) in sockets.iter_mut().enumerate() {
        // Client i sees the joins of those after it.
        let expected = clients - 1 - i + usize::from(slow);
        let mut joins = 0;
        while joins < expected {
            if next_line(ws).await?.ends_with(" connected to chat") {
                joins += 1;
            }
        }
    }
    start.wait().await;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let base = Instant::now();
    let end = base + duration;
    let padding = "p".repeat(size.saturating_sub(24));
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let padding = padding.clone();
            let pace = (rate, i as f64 / clients as f64);
            tokio::spawn(chat_client(ws, barrier.clone(), base, pace, end, move |seq, micros| {
                format!("{seq} {micros} {padding}")
            }))
        })
        .collect();
    barrier.wait().await;
    let mut seen = Vec::with_capacity(clients);
    for task in tasks {
        seen.push(task.await.map_err(std::io::Error::other)?);
    }
    let tally = tally(&seen, |_| (0..clients).collect());
    let left = seen.iter().all(|s| s.slow_left);
    let outcome = match slow_stream {
        None => None,
        Some(mut stream) => {
            // Reads what the kernel kept for it; the server closed the connection.
            let mut all = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
            let closed = matches!(read, Ok(Ok(_)) | Ok(Err(_)));
            Some(SlowOutcome { left: left && closed, bytes_read: all.len(), close_code: last_close_code(&all) })
        }
    };
    Ok((tally, outcome))
}

/// The code of the close frame that ends `stream` (server frames).
fn last_close_code(mut rest: &[u8]) -> Option<u16> {
    let mut code = None;
    while let Ok(Some((header, header_len))) = FrameHeader::decode(rest) {
        let end = header_len.checked_add(usize::try_from(header.payload_len).ok()?)?;
        let payload = rest.get(header_len..end)?;
        code = (header.opcode == 8 && payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        rest = &rest[end..];
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saw(order: &[(u32, u64)]) -> Seen {
        Seen { order: order.to_vec(), ..Seen::default() }
    }

    #[test]
    fn receivers_that_saw_another_order_are_counted() {
        let everyone = |_| vec![0, 1, 2];
        // The same order, one receiver missing a line: no disagreement.
        let same = [saw(&[(0, 1), (1, 1), (0, 2)]), saw(&[(0, 1), (1, 1), (0, 2)]), saw(&[(0, 1), (0, 2)])];
        assert_eq!(disagreements(&same, &everyone), 0);
        // Two lines swapped for one receiver.
        let swapped = [saw(&[(0, 1), (1, 1)]), saw(&[(1, 1), (0, 1)]), saw(&[(0, 1), (1, 1)])];
        assert_eq!(disagreements(&swapped, &everyone), 1);
    }
}
