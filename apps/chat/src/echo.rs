//! `chinwag echo`: a WebSocket echo server, the target of conformance runs and
//! benchmarks.
//!
//! Its loop stays lean: nothing is counted per message. What operators get costs
//! per connection only: a registry of open connections (so that a shutdown reaches
//! every one of them with 1001), their count, and, with `--admin-addr`, the admin
//! listener (connections, the process's memory, CPU and descriptors, readiness).

use chinwag_core::deflate::DeflateConfig;
use chinwag_core::{CloseCode, Config, RequestKind};
use chinwag_driver::{AnySender, Runtime, Timer, Transport, WebSocket, read_request};
use chinwag_service::accept::{ACCEPT_BACKOFF, AcceptFailures, race};
use chinwag_service::ops::prometheus_client::metrics::counter::Counter;
use chinwag_service::ops::prometheus_client::metrics::gauge::Gauge;
use chinwag_service::ops::prometheus_client::registry::Registry;
use chinwag_service::ops::{Admin, ProcessCollector, Readiness};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ops::{AdminAddr, on_termination, start_admin};
use crate::runtime::Program;

/// The settings of the echo server: large messages (Autobahn sends up to 16 MiB).
pub fn config() -> Config {
    Config { max_frame_size: 64 << 20, max_message_size: 64 << 20, ..Config::default() }
}

/// The echo server, listening on an address.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Threads serving connections (see `chinwag_service::threads`).
    pub threads: NonZeroUsize,
    /// Where its admin listener listens.
    pub admin: AdminAddr,
    /// How long it keeps serving after SIGTERM, with `/ready` at 503.
    pub drain_delay: Duration,
    /// permessage-deflate for clients that offer it (`None`: never compress).
    pub deflate: Option<DeflateConfig>,
}

impl Program for EchoServer {
    type Output = io::Result<()>;
    async fn run<R: Runtime>(self) -> io::Result<()> {
        let echo = Arc::new(Echo::new());
        let (drain, shutdown) = (echo.clone(), echo.clone());
        on_termination(self.drain_delay, move || drain.drain(), move || shutdown.shutdown())?;
        start_admin::<R>(self.admin, echo.clone()).await?;
        let listeners = crate::runtime::bind::<R>(self.addr, self.threads)?;
        tracing::info!(addr = %listeners.local_addr()?, threads = listeners.count(), "echo server listening");
        let (stopper, deflate) = (echo.clone(), self.deflate);
        let serve = move |listener| serve::<R>(listener, echo.clone(), deflate);
        chinwag_service::threads::serve_on_threads::<R, _, _>(listeners, serve, move || stopper.shutdown()).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What the echo server's connections share: who is open, for the shutdown.
struct Echo {
    /// Each open connection's sender, to close it with 1001.
    open: Mutex<Slots<AnySender>>,
    draining: AtomicBool,
    shutting_down: AtomicBool,
    /// Notified when shutdown starts and when the last connection ends.
    changed: event_listener::Event,
    /// Failed accepts, on every thread that accepts.
    accept_failures: AcceptFailures,
    registry: Registry,
    connections: Gauge,
    opened: Counter,
}

impl Echo {
    fn new() -> Self {
        let mut registry = Registry::default();
        let (connections, opened) = (Gauge::default(), Counter::default());
        registry.register("chinwag_connections", "Open WebSocket connections", connections.clone());
        registry.register("chinwag_connections_opened", "WebSocket connections opened", opened.clone());
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            open: Mutex::new(Slots::default()),
            draining: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            changed: event_listener::Event::new(),
            accept_failures: AcceptFailures::default(),
            registry,
            connections,
            opened,
        }
    }

    fn open_map(&self) -> std::sync::MutexGuard<'_, Slots<AnySender>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Closes every open connection with 1001 and stops accepting.
    fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for sender in self.open_map().iter() {
            close_for_shutdown(sender);
        }
        self.changed.notify(usize::MAX);
    }

    /// Records an open connection; `None` if shutdown began (it is closed then).
    fn enter(&self, sender: AnySender) -> Option<usize> {
        let mut open = self.open_map();
        if self.shutting_down.load(Ordering::Acquire) {
            close_for_shutdown(&sender);
            return None;
        }
        let id = open.insert(sender);
        self.connections.inc();
        self.opened.inc();
        Some(id)
    }

    fn leave(&self, id: Option<usize>) {
        let Some(id) = id else { return };
        let mut open = self.open_map();
        open.remove(id);
        self.connections.dec();
        if open.is_empty() {
            self.changed.notify(usize::MAX);
        }
    }
}

/// Values in slots reused as they come and go (the open connections' senders):
/// a sender's slot is 16 bytes, where a hash map's entry and spare capacity cost
/// about 40 per connection, and every idle connection pays it.
struct Slots<T> {
    slots: Vec<Option<T>>,
    /// Empty slots, reused before the vector grows.
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> Slots<T> {
    /// Keeps `value`; returns its slot.
    fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(value);
                slot
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    /// Drops the value in `slot`.
    fn remove(&mut self, slot: usize) {
        if self.slots.get_mut(slot).and_then(Option::take).is_some() {
            self.free.push(slot);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// Values kept: every slot that is not free.
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Admin for Echo {
    fn metrics(&self) -> String {
        let mut out = String::new();
        let _ = chinwag_service::ops::prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    fn readiness(&self) -> Readiness {
        if self.shutting_down.load(Ordering::Acquire) {
            Readiness::not_ready("shutting down")
        } else if self.draining.load(Ordering::Acquire) {
            Readiness::not_ready("draining before shutting down")
        } else {
            Readiness::ready("serving")
        }
    }
}

/// Echoes every text and binary message back on every connection accepted from
/// `listener` (compressed with `deflate` for clients that offer it), until
/// shutdown; then waits for the close handshakes, up to the close timeout and a
/// second.
async fn serve<R: Runtime>(listener: R::Listener, echo: Arc<Echo>, deflate: Option<DeflateConfig>) {
    let failures = &echo.accept_failures;
    // One copy of the settings, shared by every connection.
    let settings = Arc::new(config());
    loop {
        let accepted = race(R::accept(&listener), until(&echo, |e| e.shutting_down.load(Ordering::Acquire))).await;
        let Some(accepted) = accepted else { break };
        let (io, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                failures.failed(&e, Instant::now());
                R::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        failures.accepted(Instant::now());
        let echo = echo.clone();
        // The handshake is a boxed future of its own, built here: a task keeps
        // everything it captured for its whole life, so it captures a pointer to
        // the handshake (freed once the connection is open), not the transport,
        // the peer's address and the settings that only the handshake needs.
        let opening = Box::pin(open::<R>(io, peer, settings.clone(), deflate));
        // One clock reading per wake-up of the task serves its receive, its
        // reply and its next wait.
        R::spawn(chinwag_driver::Clocked::new(echo_connection::<R>(opening, echo)));
    }
    // Closed now, as the service's server does: a client that connects during
    // the drain is refused at once instead of waiting in the backlog for a reset.
    drop(listener);
    let grace = config().close_timeout + Duration::from_secs(1);
    let closed = until(&echo, |e| e.open_map().is_empty());
    if race(closed, R::sleep(grace)).await.is_none() {
        tracing::warn!(open = echo.open_map().len(), "connections still open after the grace period");
    }
}

/// Starts closing a connection because the server shuts down.
fn close_for_shutdown(sender: &AnySender) {
    let _ = sender.push_close(CloseCode::GOING_AWAY, "server shutting down");
}

/// Echoes on the connection `opening` opens, until it closes.
///
/// The spawned future itself, with no wrapper around it: a wrapper would keep its
/// own copies of what it passes in, and the task's size is what an idle
/// connection costs (this keeps tokio's task at 256 bytes instead of 384).
async fn echo_connection<R: Runtime>(opening: Pin<Box<impl Future<Output = Opened<R>>>>, echo: Arc<Echo>) {
    let Some(mut ws) = opening.await else { return };
    // Type-erased, not boxed in a closure: the same pointer as the connection's
    // own, with no allocation per connection.
    let id = echo.enter(ws.sender().into_any());
    if let Err(e) = echo_messages(&mut ws).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    echo.leave(id);
}

/// Echoes every message until the connection closes. Feeding (not sending) lets a
/// burst of pipelined messages be answered with one write: `recv` writes what is
/// queued before it waits for more input.
async fn echo_messages<T: Transport, Tm: Timer>(ws: &mut WebSocket<T, Tm>) -> Result<(), chinwag_driver::Error> {
    loop {
        // Not `while let`: that keeps the received `Option` beside the message
        // in the task's state, 40 bytes more per idle connection.
        let message = match ws.recv().await {
            Some(message) => message,
            None => return Ok(()),
        };
        ws.feed(&message).await?;
    }
}

/// What [`open`] gives: the open WebSocket, or `None` (a plain HTTP request got the
/// page, or the handshake failed and was logged).
type Opened<R> = Option<WebSocket<<R as Runtime>::Io, <R as Runtime>::Timer>>;

/// Reads the request and answers it, logging a failure with the peer's address.
async fn open<R: Runtime>(
    io: R::Io,
    peer: SocketAddr,
    settings: Arc<Config>,
    deflate: Option<DeflateConfig>,
) -> Opened<R> {
    answer::<R>(io, settings, deflate).await.unwrap_or_else(|e| {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
        None
    })
}

/// Reads the request and answers it: the WebSocket, opened; or `None` once a plain
/// HTTP request got the page.
async fn answer<R: Runtime>(
    io: R::Io,
    settings: Arc<Config>,
    deflate: Option<DeflateConfig>,
) -> Result<Opened<R>, chinwag_driver::Error> {
    let pending = read_request::<_, R::Timer>(io, settings).await?;
    if *pending.request().kind() != RequestKind::Upgrade {
        let page = chinwag_core::HttpResponse::new(
            chinwag_core::http::StatusCode::OK,
            "text/plain; charset=utf-8",
            "chinwag echo server: connect with a WebSocket client\n",
        );
        pending.respond(page).await?;
        return Ok(None);
    }
    let accept = chinwag_core::Accept::new();
    let accept = match deflate {
        Some(deflate) => accept.with_deflate(deflate),
        None => accept,
    };
    pending.accept(accept).await.map(Some)
}

/// Resolves once `done(echo)` holds, checked whenever the echo server's state
/// changes.
async fn until(echo: &Echo, done: impl Fn(&Echo) -> bool) {
    loop {
        let listener = echo.changed.listen();
        if done(echo) {
            return;
        }
        listener.await;
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn slots_are_reused_and_counted() {
        let mut slots = Slots::default();
        let (a, b, c) = (slots.insert('a'), slots.insert('b'), slots.insert('c'));
        assert_eq!(slots.len(), 3);
        slots.remove(b);
        slots.remove(b);
        assert_eq!(slots.len(), 2, "a second removal of the same slot counts once");
        assert_eq!(slots.iter().collect::<String>(), "ac");
        let d = slots.insert('d');
        assert_eq!(d, b, "an empty slot is reused before the vector grows");
        assert_eq!(slots.slots.len(), 3);
        for slot in [a, c, d] {
            slots.remove(slot);
        }
        assert!(slots.is_empty());
        assert_eq!(slots.iter().count(), 0);
    }
}
