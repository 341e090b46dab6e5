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
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use crate::ops::{AdminAddr, on_termination, start_admin};
use crate::runtime::Program;

mod event_loop;

/// What a plain HTTP request gets: its content type and body.
const PAGE: (&str, &str) = ("text/plain; charset=utf-8", "chinwag echo server: connect with a WebSocket client\n");

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

    /// Records an open connection; [`UNRECORDED`] if shutdown began (it is
    /// closed then).
    fn enter(&self, sender: AnySender) -> u32 {
        let mut open = self.open_map();
        if self.shutting_down.load(Ordering::Acquire) {
            close_for_shutdown(&sender);
            return UNRECORDED;
        }
        let slot = open.insert(sender);
        let Some(id) = u32::try_from(slot).ok().filter(|&id| id != UNRECORDED) else {
            // Four billion open connections would take terabytes: never here, but
            // a wrapped id must not leave another connection's slot.
            open.remove(slot);
            return UNRECORDED;
        };
        self.connections.inc();
        self.opened.inc();
        id
    }

    fn leave(&self, id: u32) {
        if id == UNRECORDED {
            return;
        }
        let mut open = self.open_map();
        open.remove(id as usize);
        self.connections.dec();
        if open.is_empty() {
            self.changed.notify(usize::MAX);
        }
    }
}

/// The id of a connection not in the registry (it opened after shutdown began).
/// Ids are `u32`, not `Option<usize>`: a connection's task keeps its id for its
/// whole life, and the task's size is what an idle connection costs.
const UNRECORDED: u32 = u32::MAX;

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
        R::spawn(chinwag_driver::Clocked::new(EchoTask::<R, _>::new(opening, echo)));
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

/// A connection's task: its handshake, then its echo loop, until it closes.
///
/// Written by hand, not as an `async fn`: a task keeps the state of every await
/// it might be in for its whole life, and tokio's task takes 128 bytes with a
/// future of up to 24 bytes and 256 with anything larger (the `async fn` was 144).
/// This one is 24: the registry, and either the pending handshake or the open
/// connection with its id. No message is kept across a wait: the loop receives
/// only when there is room for the reply, then queues it at once.
struct EchoTask<R: Runtime, F> {
    echo: Arc<Echo>,
    state: EchoState<R, F>,
}

enum EchoState<R: Runtime, F> {
    /// The handshake, boxed: it needs the transport, the peer's address and the
    /// settings, none of which the open connection keeps.
    Opening(Pin<Box<F>>),
    Open {
        ws: WebSocket<R::Io, R::Timer>,
        id: u32,
    },
    Done,
}

impl<R: Runtime, F> EchoTask<R, F> {
    fn new(opening: Pin<Box<F>>, echo: Arc<Echo>) -> Self {
        Self { echo, state: EchoState::Opening(opening) }
    }
}

impl<R: Runtime, F: Future<Output = Opened<R>>> Future for EchoTask<R, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                EchoState::Opening(opening) => match ready!(opening.as_mut().poll(cx)) {
                    Some(ws) => {
                        // Type-erased, not boxed in a closure: the same pointer as
                        // the connection's own, with no allocation per connection.
                        let id = this.echo.enter(ws.sender().into_any());
                        this.state = EchoState::Open { ws, id };
                    }
                    None => this.state = EchoState::Done,
                },
                EchoState::Open { ws, id } => {
                    if let Err(e) = ready!(poll_echo(ws, cx)) {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    this.echo.leave(*id);
                    this.state = EchoState::Done;
                }
                EchoState::Done => return Poll::Ready(()),
            }
        }
    }
}

impl<R: Runtime, F> Drop for EchoTask<R, F> {
    /// Leaves the registry also when the task is dropped unfinished (its runtime
    /// shut down).
    fn drop(&mut self) {
        if let EchoState::Open { id, .. } = self.state {
            self.echo.leave(id);
        }
    }
}

/// Echoes every message until the connection closes. A message is received only
/// while the replies queued are within the backlog's bound (a client that does
/// not read its echoes is not read either), and replies are queued, not written:
/// a burst of pipelined messages is answered with one write, made before the
/// task waits for more input.
fn poll_echo<T: Transport, Tm: Timer>(
    ws: &mut WebSocket<T, Tm>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), chinwag_driver::Error>> {
    loop {
        match ready!(ws.poll_recv_with_room(cx)) {
            Some(message) => ws.start_send(&message)?,
            None => return Poll::Ready(Ok(())),
        }
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
        let page = chinwag_core::HttpResponse::new(chinwag_core::http::StatusCode::OK, PAGE.0, PAGE.1);
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
    use super::{EchoTask, Opened, Slots};
    use chinwag_tokio::Tokio;

    /// What an idle connection costs: tokio keeps a task of 128 bytes for a future
    /// of up to 24, and of 256 for anything larger.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_connections_task_stays_within_tokios_smallest_task() {
        type Task = chinwag_driver::Clocked<EchoTask<Tokio, std::future::Ready<Opened<Tokio>>>>;
        let size = size_of::<Task>();
        assert!(size <= 24, "the echo task is {size} bytes");
    }

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
