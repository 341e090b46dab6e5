//! `chinwag echo`: a WebSocket echo server, the target of conformance runs and
//! benchmarks.

use chinwag_core::{Config, RequestKind};
use chinwag_driver::{Runtime, read_request};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::runtime::Program;

/// The settings of the echo server: large messages (Autobahn sends up to 16 MiB).
pub fn config() -> Config {
    Config { max_frame_size: 64 << 20, max_message_size: 64 << 20, ..Config::default() }
}

/// The echo server, listening on an address.
pub struct EchoServer(pub SocketAddr);

impl Program for EchoServer {
    type Output = io::Result<()>;
    async fn run<R: Runtime>(self) -> io::Result<()> {
        serve::<R>(self.0).await
    }
}

/// How long to wait before accepting again after `accept` failed. Failures such as
/// EMFILE (out of file descriptors) leave the pending connection queued and the
/// listener ready, so retrying at once would spin a core until a descriptor is
/// freed; the same pause as `chinwag_service::Server`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long accepts must go without failing before a run of failures counts as
/// over. At the descriptor limit, each connection that ends frees one descriptor
/// and lets one accept through before the next fails: those successes do not end
/// the trouble, and must not log a line each.
const ACCEPT_RECOVERED_AFTER: Duration = Duration::from_secs(1);

/// A run of failed accepts, logged once when it starts and once when it ends.
struct AcceptTrouble {
    started: Instant,
    last_failure: Instant,
    failures: u64,
}

/// Echoes every text and binary message back on every connection.
async fn serve<R: Runtime>(addr: SocketAddr) -> io::Result<()> {
    let listener = R::bind(addr).await?;
    tracing::info!(addr = %R::local_addr(&listener)?, "echo server listening");
    let mut trouble: Option<AcceptTrouble> = None;
    loop {
        let (io, peer) = match R::accept(&listener).await {
            Ok(accepted) => accepted,
            Err(e) => {
                let now = Instant::now();
                match &mut trouble {
                    Some(trouble) => {
                        trouble.failures += 1;
                        trouble.last_failure = now;
                    }
                    None => {
                        tracing::warn!(error = %e, "accept failed; retrying every {ACCEPT_BACKOFF:?} (logged once until it works)");
                        trouble = Some(AcceptTrouble { started: now, last_failure: now, failures: 1 });
                    }
                }
                // The connections already open carry on meanwhile.
                R::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Some(t) = trouble.take_if(|t| t.last_failure.elapsed() >= ACCEPT_RECOVERED_AFTER) {
            let lasted = t.last_failure - t.started;
            tracing::info!(failures = t.failures, ?lasted, "accepting connections again");
        }
        R::spawn(async move {
            if let Err(e) = echo_connection::<R>(io).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn echo_connection<R: Runtime>(io: R::Io) -> Result<(), chinwag_driver::Error> {
    let pending = read_request::<_, R::Timer>(io, config()).await?;
    if *pending.request().kind() != RequestKind::Upgrade {
        let page = chinwag_core::HttpResponse::new(
            chinwag_core::http::StatusCode::OK,
            "text/plain; charset=utf-8",
            "chinwag echo server: connect with a WebSocket client\n",
        );
        return pending.respond(page).await;
    }
    let mut ws = pending.accept(chinwag_core::Accept::new()).await?;
    // Feeding (not sending) lets a burst of pipelined messages be answered with one
    // write: `recv` writes what is queued before it waits for more input.
    while let Some(message) = ws.recv().await {
        ws.feed(&message).await?;
    }
    Ok(())
}
