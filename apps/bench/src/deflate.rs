//! `chinwag-bench deflate`: permessage-deflate on a realistic text corpus (JSON
//! chat messages of 200 B to 4 KiB), side by side with chinwag without compression
//! and with an independent peer that compresses (Python `websockets`).
//!
//! The load generator is a client on the core itself (a `Connection` over a tokio
//! socket, lock-step), so that it compresses like any client would and counts the
//! bytes it writes and reads: the bytes on the wire. The server's CPU time comes
//! from /proc, its memory from its resident set.

use bytes::Buf;
use chinwag_core::deflate::DeflateConfig;
use chinwag_core::{ClientRequest, Config, Connection, Event};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `n` chat messages as JSON, 200 B to 4 KiB, from a fixed seed: words from a
/// small vocabulary, user and room names, numbers, as chat traffic looks.
pub(crate) fn corpus(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "a",
        "to",
        "and",
        "is",
        "it",
        "you",
        "that",
        "we",
        "for",
        "on",
        "this",
        "with",
        "deploy",
        "build",
        "test",
        "failed",
        "passed",
        "merge",
        "branch",
        "review",
        "looks",
        "good",
        "thanks",
        "meeting",
        "tomorrow",
        "lunch",
        "coffee",
        "release",
        "bug",
        "fixed",
        "server",
        "client",
        "latency",
        "p99",
        "memory",
        "compression",
        "websocket",
        "rust",
        "async",
        "tokio",
        "ok",
        "lol",
        "great",
        "idea",
        "please",
        "check",
        "issue",
        "link",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|i| {
            let target = 200 + (next() % 3900) as usize;
            let mut text = String::new();
            while text.len() + 120 < target {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            }
            format!(
                r#"{{"type":"message","id":{},"ts":{},"room":"room-{}","from":{{"id":{},"name":"user{}"}},"text":"{}","mentions":[]}}"#,
                1_000_000 + i,
                1_764_000_000_000u64 + next() % 100_000_000,
                next() % 20,
                next() % 5000,
                next() % 5000,
                text
            )
        })
        .collect()
}

/// A WebSocket client on the core over a tokio socket, counting wire bytes.
pub(crate) struct Client {
    conn: Connection,
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes written to and read from the socket.
    pub(crate) wire_out: u64,
    pub(crate) wire_in: u64,
}

impl Client {
    /// Connects to `path` on `addr`, offering permessage-deflate with `deflate`.
    pub(crate) async fn connect(addr: SocketAddr, path: &str, deflate: Option<DeflateConfig>) -> std::io::Result<Self> {
        let stream = crate::load::tcp_connect(addr, None).await?;
        let mut request = ClientRequest::new(&format!("ws://{addr}{path}")).map_err(std::io::Error::other)?;
        if let Some(d) = deflate {
            request = request.with_deflate(d);
        }
        let mut n = 0x1234_5678u32;
        let masks = Box::new(move || {
            n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            n.to_be_bytes()
        });
        let config = Config { keepalive_interval: None, max_message_size: 64 << 20, ..Config::default() };
        let conn = Connection::client(&request, *b"chinwag-bench-ky", masks, config, Instant::now());
        let mut client = Self { conn, stream, buf: vec![0; 64 << 10], wire_out: 0, wire_in: 0 };
        client.flush().await?;
        loop {
            match client.conn.poll_event(Instant::now()) {
                Some(Event::Open(_)) => return Ok(client),
                Some(other) => return Err(std::io::Error::other(format!("handshake: {other:?}"))),
                None => client.read().await?,
            }
        }
    }

    /// Whether permessage-deflate was agreed.
    pub(crate) fn compressed(&self) -> bool {
        self.conn.deflate().is_some()
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        while let Some(out) = self.conn.poll_transmit() {
            let chunk = out.chunk();
            let n = chunk.len();
            self.stream.write_all(chunk).await?;
            self.wire_out += n as u64;
            out.advance(n);
        }
        Ok(())
    }

    async fn read(&mut self) -> std::io::Result<()> {
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.wire_in += n as u64;
        self.conn.receive(Instant::now(), &self.buf[..n]);
        Ok(())
    }

    /// Sends a text message.
    pub(crate) async fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.conn.send_text(Instant::now(), text).map_err(std::io::Error::other)?;
        self.flush().await
    }

    /// Waits for the next text message; returns its length.
    pub(crate) async fn recv(&mut self) -> std::io::Result<usize> {
        loop {
            match self.conn.poll_event(Instant::now()) {
                Some(Event::Text(text)) => return Ok(text.len()),
                Some(Event::Binary(data)) => return Ok(data.len()),
                Some(Event::Closed(c)) => return Err(std::io::Error::other(format!("closed: {c:?}"))),
                Some(_) => {}
                None => {
                    // Pongs and close answers go out before waiting for more.
                    self.flush().await?;
                    self.read().await?;
                }
            }
        }
    }
}

/// One echo run's results.
pub(crate) struct EchoRun {
    pub(crate) messages_per_sec: f64,
    /// Server CPU time per echoed message, in microseconds.
    pub(crate) cpu_us: f64,
    /// Bytes on the wire per message, each way (client to server).
    pub(crate) wire_per_message: f64,
    /// The payload bytes per message (the uncompressed size).
    pub(crate) payload_per_message: f64,
    pub(crate) compressed: bool,
}

/// Lock-step echo of the corpus over `connections` connections for `measure`
/// after `warmup`.
pub(crate) async fn echo(
    addr: SocketAddr,
    deflate: Option<DeflateConfig>,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    cpu: &dyn Fn() -> Duration,
) -> std::io::Result<EchoRun> {
    let corpus = std::rc::Rc::new(corpus(1000));
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Client::connect(addr, "/", deflate).await?);
    }
    let compressed = clients.iter().all(Client::compressed);
    let start = Instant::now();
    let (from, to) = (start + warmup, start + warmup + measure);
    let local = tokio::task::LocalSet::new();
    let cpu_at_start = std::cell::Cell::new(None);
    let results = local
        .run_until(async {
            let mut tasks = Vec::new();
            for (i, mut client) in clients.into_iter().enumerate() {
                let corpus = corpus.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let (mut count, mut payload, mut wire_at_from) = (0u64, 0u64, None);
                    let mut n = i * 37;
                    loop {
                        let now = Instant::now();
                        if now >= to {
                            break;
                        }
                        if now >= from && wire_at_from.is_none() {
                            wire_at_from = Some(client.wire_out);
                        }
                        let text = &corpus[n % corpus.len()];
                        n += 1;
                        client.send(text).await?;
                        let got = client.recv().await?;
                        if got != text.len() {
                            return Err(std::io::Error::other("the echo differs in length"));
                        }
                        if wire_at_from.is_some() {
                            count += 1;
                            payload += text.len() as u64;
                        }
                    }
                    let wire = client.wire_out - wire_at_from.unwrap_or(client.wire_out);
                    Ok::<_, std::io::Error>((count, payload, wire))
                }));
            }
            tokio::time::sleep_until((from).into()).await;
            cpu_at_start.set(Some(cpu()));
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.map_err(std::io::Error::other)??);
            }
            Ok::<_, std::io::Error>(all)
        })
        .await?;
    let cpu_used = cpu().saturating_sub(cpu_at_start.get().unwrap_or_default());
    let count: u64 = results.iter().map(|r| r.0).sum();
    let payload: u64 = results.iter().map(|r| r.1).sum();
    let wire: u64 = results.iter().map(|r| r.2).sum();
    let count_f = count.max(1) as f64;
    Ok(EchoRun {
        messages_per_sec: count as f64 / measure.as_secs_f64(),
        cpu_us: cpu_used.as_secs_f64() * 1e6 / count_f,
        wire_per_message: wire as f64 / count_f,
        payload_per_message: payload as f64 / count_f,
        compressed,
    })
}

/// One fan-out run's results.
pub(crate) struct FanoutRun {
    pub(crate) deliveries_per_sec: f64,
    pub(crate) cpu_us: f64,
    /// Bytes a subscriber read per message delivered.
    pub(crate) wire_per_delivery: f64,
    pub(crate) compressed: bool,
}

/// `subscribers` subscribers (`/sub`) and one publisher (`/pub`) to a fan-out
/// server: the publisher sends `messages` corpus messages as fast as it can; the
/// run ends when every subscriber has them all (or after `limit`).
pub(crate) async fn fanout(
    addr: SocketAddr,
    deflate: Option<DeflateConfig>,
    subscribers: usize,
    messages: usize,
    limit: Duration,
    cpu: &dyn Fn() -> Duration,
) -> std::io::Result<FanoutRun> {
    let corpus = corpus(messages);
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        subs.push(Client::connect(addr, "/sub", deflate).await?);
    }
    let compressed = subs.iter().all(Client::compressed);
    let mut publisher = Client::connect(addr, "/pub", None).await?;
    // Let the server finish opening every subscriber before publishing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_start = cpu();
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    let (delivered, wire) = local
        .run_until(async {
            let mut tasks = Vec::new();
            for mut sub in subs {
                tasks.push(tokio::task::spawn_local(async move {
                    let before = sub.wire_in;
                    let mut got = 0usize;
                    while got < messages {
                        match tokio::time::timeout_at((start + limit).into(), sub.recv()).await {
                            Ok(Ok(_)) => got += 1,
                            _ => break,
                        }
                    }
                    (got, sub.wire_in - before)
                }));
            }
            for text in &corpus {
                publisher.send(text).await?;
            }
            let (mut delivered, mut wire) = (0u64, 0u64);
            for t in tasks {
                let (got, bytes) = t.await.map_err(std::io::Error::other)?;
                delivered += got as u64;
                wire += bytes;
            }
            Ok::<_, std::io::Error>((delivered, wire))
        })
        .await?;
    let elapsed = start.elapsed();
    let cpu_used = cpu().saturating_sub(cpu_start);
    let expected = (subscribers * messages) as u64;
    if delivered < expected {
        return Err(std::io::Error::other(format!("{delivered} of {expected} deliveries within {limit:?}")));
    }
    Ok(FanoutRun {
        deliveries_per_sec: delivered as f64 / elapsed.as_secs_f64(),
        cpu_us: cpu_used.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        wire_per_delivery: wire as f64 / delivered.max(1) as f64,
        compressed,
    })
}

/// Opens `connections` connections, echoes one corpus message on each (so that a
/// connection with context takeover has its compressor and decompressor), and
/// returns them still open: the caller measures the server's memory.
pub(crate) async fn idle(
    addr: SocketAddr,
    deflate: Option<DeflateConfig>,
    connections: usize,
) -> std::io::Result<(Vec<Client>, bool)> {
    let corpus = corpus(16);
    let mut clients = Vec::new();
    for i in 0..connections {
        let mut client = Client::connect(addr, "/", deflate).await?;
        client.send(&corpus[i % corpus.len()]).await?;
        client.recv().await?;
        clients.push(client);
    }
    let compressed = clients.iter().all(Client::compressed);
    Ok((clients, compressed))
}
