//! `chinwag echo` on chinwag-mio's event loops, its default: one loop per
//! thread, each with a listener of its own (`SO_REUSEPORT`), connections driven
//! through the core with no task, waker or lock per message.
//!
//! What operators get is the same as on tokio and async-std: 1001 to every open
//! connection at shutdown (after the drain delay, `/ready` at 503 meanwhile),
//! the admin listener (on a thread of its own, with a tokio runtime that serves
//! nothing else), the connection gauge and counter, accept failures logged at a
//! bounded rate, and a slow reader slowed by TCP flow control.

use chinwag_core::deflate::DeflateConfig;
use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, CloseCode, Connection, Event, HttpResponse, Message};
use chinwag_driver::Runtime;
use chinwag_mio::{Control, Handler, Stopped};
use chinwag_service::threads::Listeners;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Echo, EchoServer, PAGE, config};
use crate::ops::{AdminAddr, on_termination, start_admin};

/// The close reason every open connection gets at shutdown.
const SHUTTING_DOWN: &str = "server shutting down";

impl EchoServer {
    /// Serves until SIGTERM or Ctrl-C, then closes every connection with 1001 and
    /// returns once their close handshakes are done (or the close timeout and a
    /// second later).
    ///
    /// # Errors
    /// When the address or the admin address cannot be bound, or a loop cannot
    /// start; the loops already started are stopped first.
    pub fn serve_on_event_loops(self) -> io::Result<()> {
        let echo = Arc::new(Echo::new());
        let control = Control::new();
        let (drain, stopping, stopper) = (echo.clone(), echo.clone(), control.clone());
        on_termination(
            self.drain_delay,
            move || drain.drain(),
            move || {
                stopping.shutdown();
                // 1001 and a fixed reason: `shutdown` cannot refuse them.
                let _ = stopper.shutdown(CloseCode::GOING_AWAY, SHUTTING_DOWN);
            },
        )?;
        start_admin_thread(self.admin, echo.clone())?;
        let mut listeners = Listeners::bind(self.addr, self.threads)?.into_std().into_iter();
        let own = listeners.next().expect("at least one listener");
        tracing::info!(addr = %own.local_addr()?, threads = self.threads, "echo server listening (event loops)");
        let settings = Arc::new(config());
        let handler = move || LoopEcho { echo: echo.clone(), deflate: self.deflate };
        let mut loops = Vec::new();
        for (index, listener) in (1..).zip(listeners) {
            let (own_control, settings, handler) = (control.clone(), settings.clone(), handler());
            let spawned = std::thread::Builder::new()
                .name(format!("chinwag-{index}"))
                .spawn(move || chinwag_mio::serve(listener, settings, handler, &own_control));
            match spawned {
                Ok(thread) => loops.push(thread),
                Err(e) => {
                    let _ = control.shutdown(CloseCode::GOING_AWAY, SHUTTING_DOWN);
                    let _ = join(loops); // the spawn failure is the error to report
                    return Err(e);
                }
            }
        }
        let result = chinwag_mio::serve(own, settings, handler(), &control);
        if result.is_err() {
            // This loop failed: the others stop too, and the error is the server's.
            let _ = control.shutdown(CloseCode::GOING_AWAY, SHUTTING_DOWN);
        }
        let abandoned = result?.abandoned + join(loops)?;
        if abandoned > 0 {
            tracing::warn!(open = abandoned, "connections still open after the grace period");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Waits for every loop; returns the connections they abandoned, or the first
/// error.
fn join(loops: Vec<std::thread::JoinHandle<io::Result<Stopped>>>) -> io::Result<usize> {
    let mut abandoned = Ok(0);
    for thread in loops {
        let stopped = thread.join().unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")));
        abandoned = match (abandoned, stopped) {
            (Ok(sum), Ok(stopped)) => Ok(sum + stopped.abandoned),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
    }
    abandoned
}

/// Serves the admin listener (if asked for) on a thread of its own, with a
/// current-thread tokio runtime: the loops have no executor to run it on. Returns
/// once it listens, or the error that kept it from listening.
fn start_admin_thread(admin: AdminAddr, echo: Arc<Echo>) -> io::Result<()> {
    if admin == AdminAddr::Off {
        return Ok(());
    }
    let (started, result) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("chinwag-admin".into()).spawn(move || {
        chinwag_tokio::Tokio::block_on_thread(async move {
            let listening = start_admin::<chinwag_tokio::Tokio>(admin, echo).await;
            let failed = listening.is_err();
            let _ = started.send(listening);
            if !failed {
                // Serves until the process exits.
                std::future::pending::<()>().await;
            }
        });
    })?;
    result.recv().unwrap_or_else(|_| Err(io::Error::other("the admin thread ended as it started")))
}

/// One loop's handler: echoes every message, answers plain requests with the
/// page, counts connections.
struct LoopEcho {
    echo: Arc<Echo>,
    deflate: Option<DeflateConfig>,
}

impl Handler for LoopEcho {
    fn on_event(&mut self, now: Instant, conn: &mut Connection, event: Event) {
        // A call the core refuses (a send on a closing connection) changes nothing.
        let _ = match event {
            Event::Text(text) => conn.send(now, &Message::Text(text)),
            Event::Binary(data) => conn.send(now, &Message::Binary(data)),
            Event::UpgradeRequest(_) => {
                let accept = Accept::new();
                conn.accept(now, if let Some(deflate) = self.deflate { accept.with_deflate(deflate) } else { accept })
            }
            Event::HttpRequest(_) => conn.respond(now, HttpResponse::new(StatusCode::OK, PAGE.0, PAGE.1)),
            Event::Open(_) => {
                self.echo.connections.inc();
                self.echo.opened.inc();
                Ok(())
            }
            Event::Closed(_) => {
                self.echo.connections.dec();
                Ok(())
            }
            _ => Ok(()),
        };
    }

    fn on_accept(&mut self, now: Instant, _peer: SocketAddr) {
        self.echo.accept_failures.accepted(now);
    }

    fn on_accept_error(&mut self, now: Instant, error: &io::Error) {
        self.echo.accept_failures.failed(error, now);
    }
}
