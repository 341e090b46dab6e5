//! Real services the gateway tests run beside the code under test: a
//! `redis-server` on a free loopback port, the Python example handler, and an
//! observer that records what crosses the bus. Each is stopped when dropped, so a
//! failing test leaves nothing running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// A `redis-server` of its own on a free loopback port, persisting nothing.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one and waits until it answers. Panics, saying how to install it, if
    /// `redis-server` is missing (tests/run.sh installs it).
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut server = Self { child: None, port };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): tests/run.sh installs it, or `apt-get install redis-server`")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (as a crash would: nothing is kept anyway).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Publishes `message` on `channel`; returns how many subscribers got it.
    pub fn publish(&self, channel: &str, message: &str) -> usize {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut connection = client.get_connection().expect("redis answers");
        redis::cmd("PUBLISH").arg(channel).arg(message).query(&mut connection).expect("PUBLISH works")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python of the tests' venv (made by tests/setup-python.sh on first use).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let output = Command::new("bash")
                .arg(repository().join("tests/setup-python.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("bash runs tests/setup-python.sh");
            assert!(output.status.success(), "tests/setup-python.sh failed");
            PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim())
        })
        .clone()
}

/// The example handler (examples/gateway-handler/handler.py), running against a
/// Redis; its log is printed if the test fails.
pub struct PythonHandler {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
}

impl PythonHandler {
    /// Starts it on `redis_url` and waits until it has subscribed.
    pub fn start(redis_url: &str) -> Self {
        Self::start_with(redis_url, &[])
    }

    /// Starts it on `redis_url` with more arguments (`--members acme=alex`) and
    /// waits until it has subscribed.
    pub fn start_with(redis_url: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(repository().join("examples/gateway-handler/handler.py"))
            .args(["--redis", redis_url])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the handler starts");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let handler = Self { child, lines, log };
        handler.wait_ready();
        handler
    }

    /// Waits for the handler's next "ready" (at start, and after each reconnection).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "ready" => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("the Python handler never got ready; its log:\n{}", self.log())
                }
            }
        }
    }

    /// Stops it: no handler answers events any more.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it wrote to standard error so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for PythonHandler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the Python handler's log ---\n{}", self.log());
        }
    }
}

/// Records every message on some Redis channels, as (channel, JSON), from a
/// thread of its own; resubscribes if Redis restarts.
pub struct BusObserver {
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusObserver {
    /// Subscribes to `channels` and returns once subscribed.
    pub fn start(redis_url: &str, channels: &[&str]) -> Self {
        let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = channel();
        let client = redis::Client::open(redis_url).expect("a valid URL");
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let (record, stopping) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                let Ok(mut connection) = client.get_connection() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let mut pubsub = connection.as_pubsub();
                if pubsub.subscribe(&channels).is_err()
                    || pubsub.set_read_timeout(Some(Duration::from_millis(50))).is_err()
                {
                    continue;
                }
                let _ = ready_tx.send(());
                while !stopping.load(Ordering::Acquire) {
                    match pubsub.get_message() {
                        Ok(message) => {
                            let body = serde_json::from_slice(message.get_payload_bytes())
                                .unwrap_or_else(|_| serde_json::Value::String("<not JSON>".into()));
                            record.lock().unwrap().push((message.get_channel_name().to_owned(), body));
                        }
                        Err(e) if e.is_timeout() => {}
                        Err(_) => break,
                    }
                }
            }
        });
        ready.recv_timeout(Duration::from_secs(10)).expect("the observer subscribed");
        Self { seen, stop, thread: Some(thread) }
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<(String, serde_json::Value)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for BusObserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
