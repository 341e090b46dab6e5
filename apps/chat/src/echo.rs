//! `chinwag echo`: a WebSocket echo server, the target of conformance runs and
//! benchmarks.

use chinwag_core::{Config, RequestKind};
use chinwag_driver::{Runtime, read_request};
use chinwag_service::accept::{ACCEPT_BACKOFF, AcceptFailures};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

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

/// Echoes every text and binary message back on every connection.
async fn serve<R: Runtime>(addr: SocketAddr) -> io::Result<()> {
    let listener = R::bind(addr).await?;
    tracing::info!(addr = %R::local_addr(&listener)?, "echo server listening");
    let mut failures = AcceptFailures::default();
    loop {
        let (io, peer) = match R::accept(&listener).await {
            Ok(accepted) => accepted,
            Err(e) => {
                failures.failed(&e, Instant::now());
                R::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        failures.accepted(Instant::now());
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
