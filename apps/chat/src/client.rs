//! `chinwag client`: a command-line WebSocket client built on the core, and the
//! client side of the Autobahn conformance run.

use chinwag_core::deflate::DeflateConfig;
use chinwag_core::{ClientRequest, CloseCode, Config, Message};
use chinwag_driver::{Error, Runtime, WebSocket, parse_url};
use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use crate::runtime::Program;

/// Opens a WebSocket to `url` on runtime `R`, offering permessage-deflate with
/// `deflate` if given.
async fn connect<R: Runtime>(
    url: &str,
    config: Config,
    deflate: Option<DeflateConfig>,
) -> Result<WebSocket<R::Io, R::Timer>, Error> {
    chinwag_driver::connect::<R>(&offer(parse_url(url)?, deflate), config).await
}

/// `request`, offering permessage-deflate with `deflate` if given.
fn offer(request: ClientRequest, deflate: Option<DeflateConfig>) -> ClientRequest {
    match deflate {
        Some(deflate) => request.with_deflate(deflate),
        None => request,
    }
}

/// `chinwag client URL [--header "Name: value"]...`.
pub struct Interactive {
    /// The ws:// URL.
    pub url: String,
    /// Extra handshake headers, as `Name: value`.
    pub headers: Vec<String>,
    /// permessage-deflate to offer (`None`: no compression).
    pub deflate: Option<DeflateConfig>,
}

impl Program for Interactive {
    type Output = io::Result<()>;
    async fn run<R: Runtime>(self) -> io::Result<()> {
        interactive::<R>(self.url, &self.headers, self.deflate).await
    }
}

/// The request for `url` with `headers` (`Name: value` each).
fn request(url: &str, headers: &[String]) -> io::Result<chinwag_core::ClientRequest> {
    let mut request = parse_url(url).map_err(io::Error::other)?;
    for header in headers {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("--header {header:?}: {why}"));
        let (name, value) = header.split_once(':').ok_or_else(|| bad("write it as Name: value"))?;
        let name = chinwag_core::http::HeaderName::try_from(name.trim()).map_err(|_| bad("not a header name"))?;
        let value = chinwag_core::http::HeaderValue::try_from(value.trim()).map_err(|_| bad("not a header value"))?;
        request = request.with_header(name, value);
    }
    Ok(request)
}

/// `chinwag client --autobahn URL`: the fuzzing server's URL, and the
/// permessage-deflate to offer (cases 12.* and 13.* need it).
pub struct Autobahn(pub String, pub Option<DeflateConfig>);

impl Program for Autobahn {
    type Output = io::Result<()>;
    async fn run<R: Runtime>(self) -> io::Result<()> {
        autobahn::<R>(self.0, self.1).await
    }
}

/// Sends each line of standard input as a text message and prints each message
/// received, until either side closes.
async fn interactive<R: Runtime>(url: String, headers: &[String], deflate: Option<DeflateConfig>) -> io::Result<()> {
    let request = offer(request(&url, headers)?, deflate);
    let ws = chinwag_driver::connect::<R>(&request, Config::default()).await.map_err(io::Error::other)?;
    let compressed = if ws.deflate().is_some() { " (compressed: permessage-deflate)" } else { "" };
    eprintln!("connected to {url}{compressed}; type lines to send, end input (Ctrl-D) to close");
    let (sender, mut receiver) = ws.split();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            // Fed, not pushed: piping a large file in waits for room, at the
            // server's pace, rather than overflowing the backlog.
            if block_on(sender.feed(&Message::text(line))).is_err() {
                return;
            }
        }
        let _ = block_on(sender.close(CloseCode::NORMAL, "end of input"));
    });
    let mut stdout = io::stdout();
    while let Some(message) = receiver.recv().await {
        match message {
            Message::Text(text) => writeln!(stdout, "{text}")?,
            Message::Binary(data) => writeln!(stdout, "<{} binary bytes>", data.len())?,
        }
    }
    if let Some(closed) = receiver.close_info() {
        eprintln!("closed: {} {}", closed.code, closed.reason);
    }
    Ok(())
}

/// Autobahn cases run at once in client mode.
const AUTOBAHN_PARALLEL: usize = 4;

/// Runs every case of an Autobahn fuzzing server at `base` (for example
/// `ws://127.0.0.1:9002`), echoing each message, then asks it to write its report.
async fn autobahn<R: Runtime>(base: String, deflate: Option<DeflateConfig>) -> io::Result<()> {
    let config = crate::echo::config();
    let count = {
        let mut ws =
            connect::<R>(&format!("{base}/getCaseCount"), config.clone(), None).await.map_err(io::Error::other)?;
        let Some(Message::Text(text)) = ws.recv().await else {
            return Err(io::Error::other("the fuzzing server sent no case count"));
        };
        while ws.recv().await.is_some() {}
        text.trim().parse::<u32>().map_err(io::Error::other)?
    };
    eprintln!("running {count} cases against {base}, {AUTOBAHN_PARALLEL} at a time");
    // Cases are independent connections: a few run at once, as the fuzzing client
    // does against a server (-p), so that the lock-step round trips of the
    // compression cases (thousands of messages each) overlap.
    let next = Arc::new(AtomicU32::new(1));
    let running = Arc::new(AtomicUsize::new(AUTOBAHN_PARALLEL));
    let finished = Arc::new(event_listener::Event::new());
    for _ in 0..AUTOBAHN_PARALLEL {
        let (next, running, finished, base, config) =
            (next.clone(), running.clone(), finished.clone(), base.clone(), config.clone());
        R::spawn(async move {
            loop {
                let case = next.fetch_add(1, Ordering::Relaxed);
                if case > count {
                    break;
                }
                let url = format!("{base}/runCase?case={case}&agent=chinwag");
                match connect::<R>(&url, config.clone(), deflate).await {
                    Ok(mut ws) => {
                        while let Some(message) = ws.recv().await {
                            if ws.send(&message).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => eprintln!("case {case}: {e}"),
                }
            }
            running.fetch_sub(1, Ordering::AcqRel);
            finished.notify(usize::MAX);
        });
    }
    loop {
        let listener = finished.listen();
        if running.load(Ordering::Acquire) == 0 {
            break;
        }
        listener.await;
    }
    let mut ws =
        connect::<R>(&format!("{base}/updateReports?agent=chinwag"), config, None).await.map_err(io::Error::other)?;
    while ws.recv().await.is_some() {}
    Ok(())
}

/// Runs a future on the current thread, parking between wake-ups: enough for the
/// input thread to await a close.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
