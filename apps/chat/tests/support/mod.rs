//! Running the `chinwag` binary as an operator does, for the tests in this folder:
//! its addresses from its log, signals, its admin endpoints over plain HTTP.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `chinwag` process, killed if the test fails before it exits.
pub struct Server {
    pub child: Child,
    /// The public address (the chat's, the gateway's or the echo server's).
    pub addr: SocketAddr,
    /// The admin listener's address, if it has one.
    pub admin: Option<SocketAddr>,
    /// Every line it logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The loopback address in a log line such as `... on http://127.0.0.1:PORT ...` or
/// `... addr=127.0.0.1:PORT`.
fn address_in(line: &str) -> Option<SocketAddr> {
    let at = line.find("127.0.0.1:")?;
    let end = line[at..].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).map_or(line.len(), |e| at + e);
    line[at..end].parse().ok()
}

impl Server {
    /// Starts the binary with `args` and `env` and waits for the line that names
    /// its public address (and, if `admin`, the admin listener's).
    pub fn start(args: &[&str], env: &[(&str, &str)], admin: bool) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chinwag"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the chinwag binary runs");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut admin_addr) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while addr.is_none() || (admin && admin_addr.is_none()) {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the server did not say where it listens: {:?}", log.lock().unwrap()));
            if line.contains("admin on") {
                admin_addr = address_in(&line);
            } else if line.contains("listening") || line.contains(" on http://") || line.contains(" on ws://") {
                addr = address_in(&line).or(addr);
            }
        }
        Self { child, addr: addr.unwrap(), admin: admin_addr, log }
    }

    /// Sends a signal (`TERM`, `INT`), as `docker stop` and Kubernetes do.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit` after `since`.
    pub fn wait_exit(&mut self, since: Instant, limit: Duration) -> (ExitStatus, Duration) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, since.elapsed());
            }
            assert!(since.elapsed() < limit, "the server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path` on the admin listener: the status and the body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin.expect("an admin listener"), path)
    }

    /// The value of one metric line (`name` with its labels, as exported).
    pub fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200);
        metric_in(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    }
}

/// The value of a series in a Prometheus text exposition.
pub fn metric_in(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET (one request per connection, as probes do).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("the admin listener answers");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    (status, body)
}

/// A WebSocket client of the tests (tokio-tungstenite, an independent
/// implementation, as browsers are).
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message, skipping pings and pongs; panics on anything else or
/// after 10 s.
pub async fn next_text(ws: &mut Ws) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}
