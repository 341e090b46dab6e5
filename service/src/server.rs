//! Running a service: accept connections, route them, call the hooks, deliver.

use chinwag_core::chat::ConnId;
use chinwag_core::deflate::DeflateConfig;
use chinwag_core::http::StatusCode;
use chinwag_core::limit::{FLOOD_REASON, MessageRate, Verdict};
use chinwag_core::{CloseCode, Closed, Config, ConnectionError, HandshakeError, Message, Rejection, RequestKind};
use chinwag_driver::{Incoming, PendingRequest, Receiver, Runtime, Timer, Transport, read_request};
use std::future::{Future, poll_fn};
use std::io;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::accept::{ACCEPT_BACKOFF, race};
use crate::admission::{Accepted, Over};
use crate::hook_panic::{self, INTERNAL_ERROR};
use crate::limits::Counters;
use crate::ops::process::{encode_counter, encode_gauge};
use crate::ops::{Admin, DisconnectReason, Metrics, Readiness, RefusalReason};
use crate::route::{InvalidPattern, PathPattern};
use crate::service::{ScrapedMetric, ScrapedValue};
use crate::state::Shared;
use crate::{Admit, AdmitRequest, Context, Decision, Handle, Limits, Service};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// A WebSocket server for a [`Service`], on any [`Runtime`].
pub struct Server<S> {
    service: Arc<S>,
    pattern: Option<PathPattern>,
    config: Config,
    limits: Arc<Limits>,
    /// permessage-deflate for every accepted connection whose client offers it
    /// (unless the service's [`Decision`] sets its own).
    deflate: Option<DeflateConfig>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

/// The refusal metric's reason for a connection over a limit.
fn refusal_reason(over: Over) -> RefusalReason {
    match over {
        Over::ServerFull => RefusalReason::ServerFull,
        Over::PerIp => RefusalReason::TooManyPerIp,
    }
}

/// The admin listener's view of a server.
struct ServerAdmin<S> {
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    service: Arc<S>,
}

impl<S: Service> Admin for ServerAdmin<S> {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn readiness(&self) -> Readiness {
        // A panicking readiness check reads as not ready.
        let service = hook_panic::catch(&self.shared, "readiness", || self.service.readiness())
            .unwrap_or_else(|| Readiness::not_ready("the service's readiness check panicked"));
        let (ready, state) = if self.shared.is_shutting_down() {
            (false, "shutting down")
        } else if self.shared.draining.load(Ordering::Acquire) {
            (false, "draining before shutting down")
        } else {
            (service.ready, "serving")
        };
        let detail = match service.detail.as_str() {
            "" => state.to_owned(),
            detail => format!("{state}; {detail}"),
        };
        Readiness { ready, detail }
    }
}

/// Metrics computed when Prometheus scrapes: the backlog of every connection, and
/// the service's gauges.
struct Scrape<S> {
    shared: Arc<Shared>,
    service: Arc<S>,
}

impl<S> std::fmt::Debug for Scrape<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl<S: Service> Collector for Scrape<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (backlog, lock_stats, scraped) = {
            let state = self.shared.lock();
            // A panicking scrape costs its metrics, not the admin endpoint.
            (
                state.backlog(),
                state.lock_stats,
                hook_panic::catch(&self.shared, "scrape", || self.service.scrape(&state.hub)).unwrap_or_default(),
            )
        };
        let (bytes, backlogged) = backlog;
        let fixed = [
            ScrapedMetric::gauge(
                "chinwag_outgoing_backlog_bytes",
                "Bytes queued for clients and not yet written, all connections together",
                bytes as i64,
            ),
            ScrapedMetric::gauge(
                "chinwag_backlogged_connections",
                "Connections whose outgoing backlog is over its high-water mark (slow readers)",
                backlogged as i64,
            ),
        ];
        for scraped in fixed.iter().chain(&scraped) {
            match scraped.value {
                ScrapedValue::Gauge(value) => encode_gauge(&mut encoder, scraped.name, scraped.help, value)?,
                ScrapedValue::Counter(value) => encode_counter(&mut encoder, scraped.name, scraped.help, value)?,
            }
        }
        // Whether the one lock every runtime thread takes to reach the hub limits
        // scaling with cores: the rate of the wait in seconds is the share of a
        // thread spent waiting for it.
        encode_counter(
            &mut encoder,
            "chinwag_hub_lock_acquisitions",
            "Times the hub's lock was taken: for each message received, connection opened or closed, plain HTTP request, call from a server handle (a push, say) and scrape",
            lock_stats.acquisitions,
        )?;
        encode_counter(
            &mut encoder,
            "chinwag_hub_lock_contended",
            "Times a thread found the hub's lock held by another thread and waited for it",
            lock_stats.contended,
        )?;
        encode_counter(
            &mut encoder,
            "chinwag_hub_lock_wait_seconds",
            "Time threads spent waiting for the hub's lock, all threads together",
            lock_stats.wait_nanos as f64 / 1e9,
        )?;
        encode_counter(
            &mut encoder,
            "chinwag_hub_lock_held_seconds",
            "Time the hub's lock was held: its rate is the share of time the hub was busy, which more cores cannot raise past 1",
            lock_stats.held_nanos as f64 / 1e9,
        )?;
        Ok(())
    }
}

/// At most this many connections over a limit are kept open at once to be told so
/// (503 or 429); beyond it they are dropped at once, so that a flood of connections
/// costs no more than the limit.
const MAX_REFUSING: usize = 64;

impl<S: Service> Server<S> {
    /// A server for `service` that accepts upgrades on any path, with the default
    /// [`Config`].
    pub fn new(service: S) -> Self {
        let service = Arc::new(service);
        let mut metrics = Metrics::new();
        let shared = Arc::new(Shared::new(metrics.server().clone()));
        service.register_metrics(metrics.registry());
        let scrape = Scrape { shared: shared.clone(), service: service.clone() };
        metrics.registry().register_collector(Box::new(scrape));
        Self {
            service,
            pattern: None,
            config: Config::default(),
            limits: Arc::new(Limits::default()),
            deflate: Some(DeflateConfig::default()),
            shared,
            metrics: Arc::new(metrics),
        }
    }

    /// The service, for settings it takes after the server was made (the chat's
    /// history length, say).
    pub fn service(&self) -> &S {
        &self.service
    }

    /// What the admin listener serves for this server: its metrics and readiness
    /// (see [`ops::admin::serve`](crate::ops::admin::serve)).
    pub fn admin(&self) -> Arc<dyn Admin> {
        Arc::new(ServerAdmin {
            metrics: self.metrics.clone(),
            shared: self.shared.clone(),
            service: self.service.clone(),
        })
    }

    /// Accepts upgrades only on paths that match `pattern` (for example
    /// `/chat/{name}`); other upgrade requests get 404. Hooks read the parameters
    /// with [`Context::param`].
    pub fn route(mut self, pattern: &str) -> Result<Self, InvalidPattern> {
        self.pattern = Some(PathPattern::new(pattern)?);
        Ok(self)
    }

    /// The limits and timers of every connection.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The server-wide limits: connection counts, message rate, origins.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// permessage-deflate (RFC 7692) for connections whose client offers it:
    /// `Some` with the settings (the default: [`DeflateConfig::default`], no
    /// context takeover either way, so that a broadcast is compressed once and
    /// shared by every recipient), or `None` to never compress. A [`Decision`]
    /// whose [`Accept`](chinwag_core::Accept) sets its own deflate settings wins.
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// A handle for other tasks: pushes, broadcasts, shutdown.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Serves connections from `listener` until [`Handle::shutdown`], then waits for
    /// the open connections to finish their close handshakes (at most the close
    /// timeout, plus a second) and returns. Every connection runs on the runtime
    /// this is called on; [`serve_threads`](Self::serve_threads) spreads them over
    /// several threads.
    pub async fn serve<R: Runtime>(self, listener: R::Listener) -> io::Result<()> {
        self.accept_until_shutdown::<R>(&listener).await;
        drop(listener);
        self.drain::<R>().await;
        Ok(())
    }

    /// Serves connections on as many threads as there are `listeners` (see
    /// [`threads`](crate::threads)): this one and one new thread per other
    /// listener, each with an executor of its own ([`Runtime::block_on_thread`])
    /// and a listener of its own on the same address, so that a connection stays on
    /// the thread that accepted it (no work stealing, no wake-up across threads
    /// between its reads and writes; a broadcast reaches every thread's
    /// connections through the one hub). Returns like [`serve`](Self::serve), once
    /// every thread has drained.
    ///
    /// A runtime that spreads tasks over a pool of its own (`!R::THREAD_PER_CORE`:
    /// async-std, smol) needs one listener only.
    ///
    /// # Errors
    /// When a listener cannot be registered or a thread cannot start (see
    /// [`serve_on_threads`](crate::threads::serve_on_threads)): the server is shut
    /// down, and the threads that did start return.
    pub async fn serve_threads<R: Runtime>(self, listeners: crate::threads::Listeners) -> io::Result<()> {
        let server = Arc::new(self);
        let stopper = server.shared.clone();
        let serve = move |listener: R::Listener| {
            let server = server.clone();
            async move {
                server.accept_until_shutdown::<R>(&listener).await;
                drop(listener);
                server.drain::<R>().await;
            }
        };
        crate::threads::serve_on_threads::<R, _, _>(listeners, serve, move || {
            stopper.shutting_down.store(true, Ordering::Release);
            stopper.shutdown.notify(usize::MAX);
        })
        .await
    }

    /// Accepts connections from `listener` and spawns each one's task on the
    /// calling runtime, until shutdown.
    async fn accept_until_shutdown<R: Runtime>(&self, listener: &R::Listener) {
        let shared = self.shared.clone();
        // One copy of the connection settings for every connection. The server
        // times the handshake itself (see `handshake`), so the core's timer is off.
        let connection_config = Arc::new(Config { handshake_timeout: None, ..self.config.clone() });
        let failures = &shared.accept_failures;
        loop {
            let accepted = race(R::accept(listener), wait_for_shutdown(&shared)).await;
            let Some(accepted) = accepted else { break };
            let (io, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: pause, keep serving the others.
                    failures.failed(&e, Instant::now());
                    R::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            failures.accepted(Instant::now());
            let ip = peer.ip();
            let open = shared.live.load(Ordering::Acquire);
            let accepted = match shared.admission.admit_peer(&self.limits, open, ip) {
                Ok(accepted) => accepted,
                Err(over) => {
                    self.refuse::<R>(io, over, ip);
                    continue;
                }
            };
            let (service, limits, shared) = (self.service.clone(), self.limits.clone(), shared.clone());
            // The handshake is a boxed future of its own, built here and freed once
            // the connection is open: a task keeps everything it captured for its
            // whole life, so the connection's task captures a pointer to the
            // handshake, not the transport, the config and the path pattern that
            // only the handshake needs (about 400 bytes per idle connection).
            let opening = Box::pin(open_connection::<R, S>(
                shared.clone(),
                service.clone(),
                self.pattern.clone(),
                (connection_config.clone(), self.config.handshake_timeout, self.deflate),
                limits.clone(),
                io,
                accepted,
            ));
            shared.task_started();
            // Every line a connection logs (its hooks' too) says which one and
            // from where: the TCP peer until the request names the client behind
            // a trusted proxy; `conn` once it is in the hub.
            let span = tracing::info_span!("connection", client = %peer, conn = tracing::field::Empty);
            // The connection's own `async fn` is the task, with no wrapper around
            // it: a wrapper would keep copies of what it passes in, and the task's
            // size is what every idle connection costs. `Clocked` adds no state:
            // it lends one clock reading to everything the task does per wake-up.
            let task = tracing::Instrument::instrument(connection::<R, S>(shared, service, limits, opening), span);
            R::spawn(chinwag_driver::Clocked::new(task));
        }
    }

    /// Lets the open connections finish their close handshakes, waiting at most
    /// the close timeout plus a second.
    async fn drain<R: Runtime>(&self) {
        let shared = &self.shared;
        let grace = self.config.close_timeout + Duration::from_secs(1);
        let drained = async {
            loop {
                let listener = shared.all_done.listen();
                if shared.live.load(Ordering::Acquire) == 0 {
                    return;
                }
                listener.await;
            }
        };
        if race(drained, R::sleep(grace)).await.is_none() {
            tracing::warn!(open = shared.live.load(Ordering::Acquire), "connections still open after the grace period");
        }
    }
}

impl<S: Service> Server<S> {
    /// Answers a connection over a limit with 503 or 429 and the reason, from a task
    /// of its own (bounded by the handshake timeout); or drops it at once when
    /// [`MAX_REFUSING`] are already being answered.
    fn refuse<R: Runtime>(&self, io: R::Io, over: Over, ip: IpAddr) {
        Counters::bump(over.counter(&self.shared.counters));
        self.shared.metrics.refused(refusal_reason(over));
        tracing::warn!(peer = %ip, ?over, "connection refused: over a limit");
        if self.shared.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.shared.refusing.fetch_sub(1, Ordering::AcqRel);
            return; // dropping `io` closes it
        }
        let (config, shared) = (self.config.clone(), self.shared.clone());
        R::spawn(async move {
            if let Ok(pending) = read_request::<_, R::Timer>(io, config).await {
                let _ = pending.reject(over.rejection()).await;
            }
            shared.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Resolves when shutdown is requested.
async fn wait_for_shutdown(shared: &Shared) {
    loop {
        let listener = shared.shutdown.listen();
        if shared.is_shutting_down() {
            return;
        }
        listener.await;
    }
}

/// How the wait for [`Service::admit`] ended.
enum Waited {
    /// Admit answered.
    Answered(Admit),
    /// The handshake timeout passed first.
    Late,
    /// Shutdown began first.
    ShuttingDown,
    /// The client went away (its answer, if any, dropped).
    Gone,
}

/// A connection's opening handshake: its request read, checked, admitted and
/// answered. `Some` once it is open, with its id, its receiving half and its
/// client's address.
async fn handshake<R: Runtime, S: Service>(
    shared: &Shared,
    service: &S,
    pattern: Option<&PathPattern>,
    (config, handshake_timeout, deflate): ConnectionSettings,
    limits: &Limits,
    io: R::Io,
    accepted: &mut Accepted,
) -> Option<(ConnId, Receiver<R::Io, R::Timer>, IpAddr, bool)> {
    // The server times the handshake, not the core: the wait for admit is part of
    // it, and a client whose wait runs out is still owed its 503, which the core
    // could not write once its own handshake timer had fired.
    let mut expiry = pin!(expiry::<R>(handshake_timeout));
    let read = read_request::<_, R::Timer>(io, config);
    let read = race(read, expiry.as_mut()).await;
    let mut pending = match read.unwrap_or(Err(chinwag_driver::Error::Handshake(HandshakeError::Timeout))) {
        Ok(pending) => pending,
        Err(e) => {
            // The core answered a malformed request itself (400, 426, 431), or the
            // client was too slow; a client that just went away is no refusal.
            match &e {
                chinwag_driver::Error::Handshake(HandshakeError::Refused { status, .. }) => {
                    shared.metrics.refused(RefusalReason::for_status(*status));
                }
                chinwag_driver::Error::Handshake(HandshakeError::Timeout) => {
                    shared.metrics.refused(RefusalReason::Timeout);
                }
                _ => {}
            }
            tracing::debug!(peer = %accepted.peer, error = %e, "handshake failed");
            return None;
        }
    };
    // The per-IP check of a trusted proxy's client, now that it is known.
    let client = match shared.admission.admit_request(limits, accepted, pending.request()) {
        Ok(client) => client,
        Err((over, client)) => {
            Counters::bump(over.counter(&shared.counters));
            shared.metrics.refused(refusal_reason(over));
            tracing::warn!(%client, peer = %accepted.peer, ?over, "connection refused: over a limit");
            let _ = pending.reject(over.rejection()).await;
            return None;
        }
    };
    if client != accepted.peer {
        // A trusted proxy's client: its lines name it, not the proxy.
        tracing::Span::current().record("client", tracing::field::display(client));
    }
    let request = pending.request().clone();
    let upgrade = *request.kind() == RequestKind::Upgrade;
    let params = match pattern.map(|p| p.matches(request.path())) {
        None => Default::default(),
        Some(Some(Ok(params))) => params,
        // A plain request off the route (the service's page): on_http's alone.
        Some(_) if !upgrade => {
            let response = http_page(shared, service, &request);
            let _ = pending.respond(response).await;
            return None;
        }
        Some(Some(Err(bad))) => {
            shared.metrics.refused(RefusalReason::BadRequest);
            let _ = pending.reject(Rejection::new(StatusCode::BAD_REQUEST, bad.0)).await;
            return None;
        }
        Some(None) => {
            shared.metrics.refused(RefusalReason::NotFound);
            let _ = pending.reject(Rejection::new(StatusCode::NOT_FOUND, "no WebSocket endpoint at this path")).await;
            return None;
        }
    };
    if upgrade && shared.is_shutting_down() {
        shared.metrics.refused(RefusalReason::ShuttingDown);
        let _ = pending.reject(shutting_down()).await;
        return None;
    }
    if upgrade && let Err(refused) = limits.origins.check(&request) {
        Counters::bump(&shared.counters.refused_origin);
        shared.metrics.refused(RefusalReason::Origin);
        tracing::info!(%client, origin = %refused.origin, "upgrade refused by the Origin check");
        let _ = pending.reject(Rejection::new(StatusCode::FORBIDDEN, refused.to_string())).await;
        return None;
    }

    let admitting = AdmitRequest { request: &request, params: &params, client };
    // Both the call and the future it returns run the service's code.
    let waited = match hook_panic::catch(shared, "admit", || service.admit(&admitting)) {
        Some(answer) => wait_for_admit(shared, &mut pending, answer, expiry).await,
        None => Waited::Answered(Admit::Reject(hook_panic::rejection())),
    };
    let mut ticket = match waited {
        Waited::Answered(Admit::Allow(ticket)) => ticket,
        Waited::Answered(Admit::Reject(rejection)) => {
            let (status, reason) = (rejection.status.as_u16(), &rejection.reason);
            tracing::info!(%client, status, %reason, upgrade, "request refused by the service's admit");
            refuse_admission(shared, pending, upgrade, RefusalReason::for_status(status), rejection).await;
            return None;
        }
        Waited::Late => {
            tracing::info!(%client, upgrade, "request refused: the service's admit did not answer in time");
            let rejection = Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "the server could not decide in time");
            refuse_admission(shared, pending, upgrade, RefusalReason::AdmitTimeout, rejection).await;
            return None;
        }
        Waited::ShuttingDown => {
            refuse_admission(shared, pending, upgrade, RefusalReason::ShuttingDown, shutting_down()).await;
            return None;
        }
        Waited::Gone => {
            tracing::debug!(%client, "the client went away while the service's admit decided");
            return None;
        }
    };
    if !upgrade {
        // A ticket is for an upgrade to keep; a plain request has nowhere to keep it.
        drop(ticket);
        let response = http_page(shared, service, &request);
        let _ = pending.respond(response).await;
        return None;
    }
    if shared.is_shutting_down() {
        // Shutdown began as admit answered (its answer is looked at first).
        refuse_admission(shared, pending, upgrade, RefusalReason::ShuttingDown, shutting_down()).await;
        return None;
    }

    // Decide, open and join under one lock. What on_upgrade checks (a free name,
    // say) still holds when it is recorded; and the 101 is only queued here, to be
    // written by the connection's first write after the lock: by the time the
    // client can see it, the connection is open in the hub and holds what its hooks
    // sent it, so every delivery to it from then on reaches it.
    let opened = {
        let mut state = shared.lock();
        let conn = state.hub.open();
        tracing::Span::current().record("conn", tracing::field::display(conn));
        let mut cx = Context::new(conn, &mut state.hub, client).with_request(&request, &params);
        cx.ticket = Some(&mut ticket);
        let decision = hook_panic::catch(shared, "on_upgrade", || service.on_upgrade(&mut cx))
            .unwrap_or_else(|| Decision::Reject(hook_panic::rejection()));
        match decision {
            Decision::Reject(rejection) => {
                shared.metrics.refused(RefusalReason::for_status(rejection.status.as_u16()));
                state.hub.close(conn);
                state.dispatch();
                Err((pending, rejection))
            }
            Decision::Accept(mut accept) => match pending.open({
                if accept.deflate.is_none() {
                    accept.deflate = deflate;
                }
                accept
            }) {
                Ok(ws) => {
                    if ws.deflate().is_some() {
                        shared.metrics.connections_compressed.inc();
                    }
                    let (sender, receiver) = ws.split();
                    let writer = sender.clone();
                    if shared.is_shutting_down() {
                        // Shutdown began during the handshake: close_all did not see us.
                        let _ = sender.push_close(CloseCode::GOING_AWAY, "server shutting down");
                    }
                    state.attach(conn, sender.into_any());
                    shared.metrics.connections_opened.inc();
                    shared.metrics.connections.inc();
                    // A connection its own on_upgrade closed has left the hub: it is
                    // closing, not opening.
                    let mut failed = false;
                    if state.hub.is_open(conn) {
                        let mut cx = Context::new(conn, &mut state.hub, client).with_request(&request, &params);
                        if hook_panic::catch(shared, "on_open", || service.on_open(&mut cx)).is_none() {
                            failed = true;
                            hook_panic::close(&state, conn);
                        }
                    }
                    state.dispatch();
                    Ok((conn, receiver, writer, failed))
                }
                Err(e) => {
                    tracing::warn!(%conn, error = %e, "on_upgrade accepted with an answer the core refused");
                    state.hub.close(conn);
                    state.dispatch();
                    return None;
                }
            },
        }
    };
    // Not under the lock: releasing what a ticket holds may take more than freeing
    // memory.
    drop(ticket);
    match opened {
        Ok((conn, receiver, writer, failed)) => {
            // The 101 and what the hooks queued, in one write, now rather than when
            // the connection is first ready to read. An error here is the receiving
            // loop's to report.
            let _ = writer.flush().await;
            Some((conn, receiver, client, failed))
        }
        Err((pending, rejection)) => {
            let _ = pending.reject(rejection).await;
            None
        }
    }
}

/// One connection, from its first byte to its last hook. `accepted` holds its
/// place under the per-IP limit, given back when this returns.
/// A connection's settings: the core's (shared), the handshake timeout the server
/// applies itself, and permessage-deflate's.
type ConnectionSettings = (Arc<Config>, Option<Duration>, Option<DeflateConfig>);

/// What [`open_connection`] gives: the open connection (its id, its receiving half, the
/// client's address, whether its `on_open` panicked) and the admission slot it
/// holds to the end.
type Opened<R> = (ConnId, Receiver<<R as Runtime>::Io, <R as Runtime>::Timer>, IpAddr, bool, Accepted);

/// The handshake of a connection, owning what only the handshake needs (see the
/// note where it is spawned).
async fn open_connection<R: Runtime, S: Service>(
    shared: Arc<Shared>,
    service: Arc<S>,
    pattern: Option<PathPattern>,
    config: ConnectionSettings,
    limits: Arc<Limits>,
    io: R::Io,
    mut accepted: Accepted,
) -> Option<Opened<R>> {
    let (conn, receiver, client, failed) =
        handshake::<R, S>(&shared, &*service, pattern.as_ref(), config, &limits, io, &mut accepted).await?;
    Some((conn, receiver, client, failed, accepted))
}

async fn connection<R: Runtime, S: Service>(
    shared: Arc<Shared>,
    service: Arc<S>,
    limits: Arc<Limits>,
    opening: Pin<Box<impl Future<Output = Option<Opened<R>>>>>,
) {
    // Declared first, so dropped last: the task counts as ended only once
    // everything it holds (the receiver, the admission slot) is gone.
    let _ended = TaskEnded(&shared);
    // `_accepted` keeps the connection's place under the per-IP limit until the end.
    let Some((conn, mut receiver, client, on_open_panicked, _accepted)) = opening.await else { return };

    let mut flooded = false;
    // A hook panicked: the connection is closing with 1011, and its hooks are
    // not called again (what still arrives is discarded).
    let mut failed = on_open_panicked;
    let mut rate = limits.message_rate.map(|limit| MessageRate::new(limit, Instant::now()));
    loop {
        if !failed {
            // Both the call and the future it returns run the service's code.
            let ready = hook_panic::catch(&shared, "ready", || service.ready());
            let caught = match ready {
                Some(ready) => {
                    let mut ready = pin!(ready);
                    poll_fn(|cx| hook_panic::poll_caught(&shared, "ready", ready.as_mut(), cx)).await
                }
                None => None,
            };
            if caught.is_none() {
                failed = true;
                hook_panic::close(&shared.lock(), conn);
            }
        }
        let Some(incoming) = receiver.recv_incoming().await else { break };
        if failed {
            continue;
        }
        if let Incoming::Message(message) = &incoming {
            shared.metrics.messages_received.inc();
            shared.metrics.received_bytes.inc_by(message.payload().len() as u64);
        }
        let verdict = rate.as_mut().map_or(Verdict::Allow, |rate| rate.check(Instant::now()));
        let mut state = shared.lock();
        let mut cx = Context::new(conn, &mut state.hub, client);
        let called = match verdict {
            Verdict::Allow => match &incoming {
                Incoming::Message(Message::Text(text)) => {
                    hook_panic::catch(&shared, "on_text", || service.on_text(&mut cx, text))
                }
                Incoming::Message(Message::Binary(data)) => {
                    hook_panic::catch(&shared, "on_binary", || service.on_binary(&mut cx, data))
                }
                Incoming::Skipped(skipped) => {
                    hook_panic::catch(&shared, "on_skipped", || service.on_skipped(&mut cx, skipped))
                }
            },
            Verdict::Drop { warn } => {
                Counters::bump(&shared.counters.messages_dropped);
                if warn {
                    tracing::info!(%conn, "incoming messages over the rate limit: dropping them");
                    hook_panic::catch(&shared, "on_rate_limited", || service.on_rate_limited(&mut cx))
                } else {
                    Some(())
                }
            }
            Verdict::Close => {
                Counters::bump(&shared.counters.messages_dropped);
                if !std::mem::replace(&mut flooded, true) {
                    Counters::bump(&shared.counters.closed_flooding);
                    tracing::warn!(%conn, "closing a connection that kept flooding after its warning");
                    state.close(conn, MessageRate::CLOSE_CODE, FLOOD_REASON);
                }
                Some(())
            }
        };
        if called.is_none() {
            failed = true;
            hook_panic::close(&state, conn);
        }
        state.dispatch();
    }

    let closed = receiver.close_info().unwrap_or_else(|| Closed {
        code: CloseCode::ABNORMAL,
        reason: String::new(),
        initiator: chinwag_core::Initiator::Peer,
        sent: None,
        error: Some(chinwag_core::ConnectionError::TransportClosed),
    });
    if closed.error == Some(ConnectionError::SlowConsumer) {
        tracing::debug!(%conn, "the connection closed for reading too slowly ended");
    }
    shared.metrics.connections.dec();
    shared.metrics.disconnected(DisconnectReason::of(&closed, flooded, shared.is_shutting_down()));
    let mut state = shared.lock();
    state.detach(conn);
    let mut cx = Context::new(conn, &mut state.hub, client);
    // A panic here has nothing left to answer: it is logged and counted.
    let _ = hook_panic::catch(&shared, "on_close", || service.on_close(&mut cx, &closed));
    state.hub.close(conn);
    state.dispatch();
}

/// Counts a connection's task as ended when dropped.
struct TaskEnded<'a>(&'a Shared);

impl Drop for TaskEnded<'_> {
    fn drop(&mut self) {
        tracing::trace!("connection task ended");
        self.0.task_ended();
    }
}

/// The answer to an upgrade that comes during shutdown.
fn shutting_down() -> Rejection {
    Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down")
}

/// Answers a request that got no further than admit's wait: counted among the
/// refused handshakes if it is an upgrade (a plain request is no handshake).
async fn refuse_admission<T: Transport, Tm: Timer>(
    shared: &Shared,
    pending: PendingRequest<T, Tm>,
    upgrade: bool,
    reason: RefusalReason,
    rejection: Rejection,
) {
    if upgrade {
        shared.metrics.refused(reason);
    }
    let _ = pending.reject(rejection).await;
}

/// Waits for admit's `answer` while watching the client, until `expiry` or
/// shutdown. A client that goes away does not end the wait (see
/// [`Service::admit`]): its answer is awaited, then dropped.
async fn wait_for_admit<T: Transport, Tm: Timer>(
    shared: &Shared,
    pending: &mut PendingRequest<T, Tm>,
    answer: impl Future<Output = Admit>,
    mut expiry: Pin<&mut impl Future<Output = ()>>,
) -> Waited {
    let mut answer = pin!(answer);
    let mut closed = pin!(pending.closed());
    let mut shutdown = pin!(wait_for_shutdown(shared));
    let mut gone = false;
    poll_fn(|cx| {
        // The answer first: most come at once, and then nothing else is set up.
        if let Poll::Ready(answer) = hook_panic::poll_caught(shared, "admit", answer.as_mut(), cx) {
            let answer = answer.unwrap_or_else(|| Admit::Reject(hook_panic::rejection()));
            return Poll::Ready(if gone { Waited::Gone } else { Waited::Answered(answer) });
        }
        if !gone && closed.as_mut().poll(cx).is_ready() {
            gone = true;
        }
        let ended = if expiry.as_mut().poll(cx).is_ready() {
            Waited::Late
        } else if shutdown.as_mut().poll(cx).is_ready() {
            Waited::ShuttingDown
        } else {
            return Poll::Pending;
        };
        Poll::Ready(if gone { Waited::Gone } else { ended })
    })
    .await
}

/// The service's page for a plain HTTP request (`on_http`), or a 500 if it
/// panicked. The hub's lock is taken outside the hook's call, so that a panic is
/// caught before the lock is released and does not poison it.
fn http_page<S: Service>(shared: &Shared, service: &S, request: &chinwag_core::Request) -> chinwag_core::HttpResponse {
    let state = shared.lock();
    hook_panic::catch(shared, "on_http", || service.on_http(request, &state.hub)).unwrap_or_else(|| {
        chinwag_core::HttpResponse::new(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", INTERNAL_ERROR)
    })
}

/// Resolves when the handshake's time is up: `timeout` from now (never without
/// one).
async fn expiry<R: Runtime>(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => R::sleep(timeout).await,
        None => std::future::pending().await,
    }
}
