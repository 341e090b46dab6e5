//! `chinwag echo` out of file descriptors: the real binary, in a child process
//! whose RLIMIT_NOFILE is tiny, is flooded with connections until `accept` fails
//! with EMFILE. It must back off (little CPU while it cannot accept), log once per
//! episode, and serve again once descriptors are free. Linux only: the CPU time is
//! read from /proc.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Descriptors the child may have: a few for itself, the rest for connections.
const MAX_FILES: u32 = 32;

/// The echo server in a child process; killed when dropped.
struct Echo {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    /// Starts `chinwag echo --runtime RUNTIME` on a free port.
    fn start(runtime: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // `exec`: the child's pid is the server's, for /proc.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {MAX_FILES} && exec \"$0\" echo --addr \"$1\" --runtime \"$2\""))
            .arg(env!("CARGO_BIN_EXE_chinwag"))
            .arg(addr.to_string())
            .arg(runtime)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().expect("piped"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let echo = Self { child, addr, log };
        echo.wait_for_lines("echo server listening", 1);
        echo
    }

    /// How many log lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(needle)).count()
    }

    fn wait_for_lines(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count(needle) < n {
            assert!(Instant::now() < deadline, "no {n} lines with {needle:?}; the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// User plus system CPU time the server has used.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc/PID/stat");
        // Fields 14 and 15 (utime, stime), counted after the parenthesised name.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("(comm)").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
    }

    /// Opens connections until well past what the server can accept, and waits
    /// until it says `accept` failed (the `episode`th time).
    fn exhaust(&self, episode: usize) -> Vec<TcpStream> {
        let held: Vec<TcpStream> =
            (0..2 * MAX_FILES).map(|_| TcpStream::connect(self.addr).expect("the kernel queues it")).collect();
        self.wait_for_lines("accept failed", episode);
        held
    }

    /// Waits until a WebSocket echoes a message (the server accepts again).
    fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match echo_once(self.addr) {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "never served again ({e}); the log:\n{}", self.log()),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Keeps connecting until the server says the `episode`th run of failures is
    /// over (it says so on an accept that follows a quiet second).
    fn wait_until_recovered(&self, episode: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count("accepting connections again") < episode {
            assert!(Instant::now() < deadline, "never said it recovered; the log:\n{}", self.log());
            self.wait_until_serving();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the echo server's log ---\n{}", self.log());
        }
    }
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK is a number")
}

/// One WebSocket round trip over a raw socket: handshake, a masked text frame, its
/// echo.
fn echo_once(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&key);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    stream.write_all(&frame)?;
    let mut got = Vec::new();
    let expected: &[u8] = b"\x81\x05hello";
    let mut buf = [0; 1024];
    while !got.ends_with(expected) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(format!("closed after {:?}", String::from_utf8_lossy(&got))));
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    Ok(())
}

/// Out of descriptors twice in a row: each time, little CPU and one line while it
/// lasts, then served again and one line saying so.
fn backs_off_and_recovers(runtime: &str) {
    let echo = Echo::start(runtime);
    echo.wait_until_serving();
    for episode in 1..=2 {
        let held = echo.exhaust(episode);
        // While it cannot accept: a retry now and then, not a busy loop (which
        // takes a whole core), and one log line for the whole episode.
        let (cpu, wall) = (echo.cpu_time(), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let (cpu, wall) = (echo.cpu_time() - cpu, wall.elapsed());
        assert!(cpu < wall / 10, "episode {episode}: {cpu:?} of CPU in {wall:?} while out of descriptors");
        assert_eq!(echo.count("accept failed"), episode, "one line per episode; the log:\n{}", echo.log());
        // Descriptors come back: it serves again, and says so once.
        drop(held);
        echo.wait_until_recovered(episode);
        assert_eq!(echo.count("accept failed"), episode, "the log:\n{}", echo.log());
    }
}

#[test]
fn out_of_descriptors_on_tokio() {
    backs_off_and_recovers("tokio");
}

#[test]
fn out_of_descriptors_on_async_std() {
    backs_off_and_recovers("async-std");
}

#[test]
fn out_of_descriptors_on_the_event_loops() {
    backs_off_and_recovers("event-loop");
}
