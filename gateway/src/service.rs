//! The gateway as a [`chinwag_service::Service`], with the in-process event bus:
//! handlers are Rust functions registered per topic, run when an event is
//! published, and answer with [`Command`]s (reply, fail, send, broadcast) that are
//! carried out at once.
//!
//! Handlers run while the gateway's hub is locked, like every service hook: keep
//! them short, and hand slow work to a task that answers through a
//! [`GatewayHandle`].
//!
//! Each connection's phase (pending approval or admitted) and deadlines are kept
//! by [`chinwag_core::gateway::Sessions`]; this module reads the clock and passes
//! it in, and [`Gateway::serve`](crate::Gateway::serve) runs the timer that wakes
//! at the next deadline.

use chinwag_core::chat::{ConnId, Hub};
use chinwag_core::gateway::{self, Identity, Publish, Sessions};
use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, Closed, HttpResponse, Request, Utf8Bytes};
use chinwag_service::ScrapedMetric;
use chinwag_service::ops::Readiness;
use chinwag_service::ops::prometheus_client::registry::Registry;

use crate::metrics::{CommandKind, GatewayMetrics};

/// The bus gauge's name and help: 1 while events can leave and commands arrive.
const BUS_CONNECTED: (&str, &str) =
    ("chinwag_gateway_bus_connected", "1 while the bus is connected (always, with the in-process bus)");
use chinwag_service::{Context, Decision, Handle, Service};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::{KeySummary, unix_now};
use crate::bus::{BusStatus, Outbox};
use crate::config::Config;
use crate::identity::{Authenticator, Identified, identify};

/// What a handler asks the gateway to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Answer the client the event came from: `{"type": "onconnect" or the topic,
    /// "payload"}`.
    Reply(Value),
    /// Fail the event: `{"type": "error", "payload"}` to the client; a failed
    /// connect also closes it (1008).
    Fail(Value),
    /// `{"type", "payload"}` to every connection of `username` in `namespace`
    /// (`None`: all of the user's connections).
    Send {
        /// The user.
        username: String,
        /// The tenant, or every tenant of the user.
        namespace: Option<String>,
        /// The message's `type`.
        message_type: String,
        /// The message's `payload`.
        payload: Value,
    },
    /// `{"type", "payload"}` to every connection (`namespace`: only those in it).
    Broadcast {
        /// Only this tenant, or everyone.
        namespace: Option<String>,
        /// The message's `type`.
        message_type: String,
        /// The message's `payload`.
        payload: Value,
    },
}

/// The `message` of the error a client gets when its messages start being dropped
/// for the rate limit (`limits.message_rate`): once per flood, so that a client
/// knows why its messages go unanswered before it is closed for flooding.
pub const RATE_WARNING: &str =
    "you are sending too fast, so your messages are being dropped; slow down or you will be disconnected";

/// A handler: gets the event's body (`{"event", "context", "message"?, ...}`).
pub type Handler = Box<dyn Fn(&Value) -> Vec<Command> + Send + Sync>;

/// The in-process bus: handlers by topic. With none, events are only logged.
#[derive(Default)]
pub struct Handlers {
    by_topic: HashMap<String, Vec<Handler>>,
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler for `topic`.
    pub fn on(mut self, topic: &str, handler: impl Fn(&Value) -> Vec<Command> + Send + Sync + 'static) -> Self {
        self.by_topic.entry(topic.to_owned()).or_default().push(Box::new(handler));
        self
    }

    /// Whether some handler is registered for `topic`.
    pub fn handles(&self, topic: &str) -> bool {
        self.by_topic.contains_key(topic)
    }
}

/// The connections' phases and deadlines, shared by the service's hooks, the
/// handle and the deadline timer. Always locked after the hub, never before.
#[derive(Default)]
pub(crate) struct Tenancy {
    sessions: Mutex<Sessions>,
    /// Notified when a deadline earlier than every other one is set, so that the
    /// timer sleeping until the old earliest wakes up.
    pub(crate) earlier_deadline: event_listener::Event,
}

impl Tenancy {
    fn new(approval: Option<Duration>) -> Self {
        Self { sessions: Mutex::new(Sessions::new(approval)), earlier_deadline: event_listener::Event::new() }
    }

    pub(crate) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `expires` (Unix seconds, from a token) as a time of the monotonic clock whose
/// reading is `now`; `None` if no `Instant` can hold it (never reached).
fn deadline_at(now: Instant, expires: f64) -> Option<Instant> {
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let left = Duration::try_from_secs_f64((expires - unix_now).max(0.0)).ok()?;
    now.checked_add(left)
}

/// The gateway service.
pub struct GatewayService {
    config: Arc<Config>,
    authenticator: Authenticator,
    handlers: Handlers,
    /// The bus to other processes, when one is configured.
    outbox: Option<Arc<Outbox>>,
    pub(crate) tenancy: Arc<Tenancy>,
    pub(crate) metrics: GatewayMetrics,
}

impl GatewayService {
    /// A gateway for `config`, identifying clients with `authenticator`, with the
    /// in-process `handlers`.
    pub fn new(config: Config, authenticator: Authenticator, handlers: Handlers) -> Self {
        let metrics = GatewayMetrics::new(&config.topics);
        let tenancy = Arc::new(Tenancy::new(config.approve_timeout_secs.map(Duration::from_secs)));
        Self { config: Arc::new(config), authenticator, handlers, outbox: None, tenancy, metrics }
    }

    /// Also publishes every event to a bus between processes.
    pub(crate) fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Publishes `events` about `conn`: runs each one's in-process handlers and
    /// carries out their commands, and queues it for the bus between processes (if
    /// any); with neither, the event is only logged.
    fn publish(&self, hub: &mut Hub, conn: ConnId, events: Vec<Publish>) {
        for event in events {
            self.metrics.published(&event.topic);
            // Event bodies hold what users typed and who they are: debug only.
            tracing::debug!(topic = %event.topic, body = %event.body, "event");
            if let Some(handlers) = self.handlers.by_topic.get(&event.topic) {
                for handler in handlers {
                    for command in handler(&event.body) {
                        let origin = Some((conn, event.reply_type(), event.is_connect()));
                        apply(hub, &self.tenancy, origin, command, &self.metrics);
                    }
                }
            }
            // Last, so that the event moves into the outbox rather than being copied.
            if let Some(outbox) = &self.outbox {
                outbox.post(conn, event);
            }
        }
    }
}

/// Carries out a command now; `origin` is the connection, reply type and phase
/// of the event it answers (replies and failures need one). Returns how many
/// connections it reached. A reply to a connect event admits a pending
/// connection; sends and broadcasts reach admitted connections only.
fn apply(
    hub: &mut Hub,
    tenancy: &Tenancy,
    origin: Option<(ConnId, &str, bool)>,
    command: Command,
    metrics: &GatewayMetrics,
) -> usize {
    let now = Instant::now();
    let mut sessions = tenancy.sessions();
    match (command, origin) {
        (Command::Reply(payload), Some((conn, reply_type, on_connect))) => {
            metrics.command(CommandKind::Reply);
            usize::from(sessions.reply(now, hub, conn, reply_type, on_connect, payload))
        }
        (Command::Fail(payload), Some((conn, _, on_connect))) => {
            metrics.command(CommandKind::Fail);
            usize::from(sessions.fail(now, hub, conn, on_connect, payload))
        }
        (Command::Send { username, namespace, message_type, payload }, _) => {
            metrics.command(CommandKind::Send);
            sessions.send(now, hub, &username, namespace.as_deref(), &message_type, payload)
        }
        (Command::Broadcast { namespace, message_type, payload }, _) => {
            metrics.command(CommandKind::Broadcast);
            sessions.broadcast(now, hub, namespace.as_deref(), &message_type, payload)
        }
        (command, None) => {
            metrics.command(CommandKind::Unanswerable);
            tracing::warn!(?command, "a reply or failure with no event to answer: dropped");
            0
        }
    }
}

/// The context an event carries beyond username, namespace and connection: the
/// client's address (behind trusted proxies, the one their header names), the
/// namespace as a parameter (as the gateway document reads it), the query, the
/// headers worth having, and the verified token's claims as `headers.jwt` (where
/// the gateway document's handlers read `preferred_username`).
fn extra(request: &Request, identity: &Identity, claims: Map<String, Value>, client: IpAddr) -> Map<String, Value> {
    let query: Map<String, Value> = request
        .query()
        .map(|q| chinwag_service::query_pairs(q).map(|(k, v)| (k, Value::String(v))).collect())
        .unwrap_or_default();
    let mut headers: Map<String, Value> = ["user-agent", "origin", "x-forwarded-for", "x-request-id"]
        .iter()
        .filter_map(|name| Some((name.to_string(), Value::String(request.header(name)?.to_owned()))))
        .collect();
    headers.insert("jwt".into(), Value::Object(claims));
    let mut extra = Map::new();
    extra.insert("client_address".into(), Value::String(client.to_string()));
    extra.insert("params".into(), json!({"namespace": identity.namespace}));
    extra.insert("query".into(), Value::Object(query));
    extra.insert("headers".into(), Value::Object(headers));
    extra
}

impl Service for GatewayService {
    fn on_http(&self, request: &Request, _hub: &Hub) -> HttpResponse {
        if request.path() == "/health" {
            // A node cut off from its bus cannot deliver events: load balancers
            // should send new clients elsewhere until it is back.
            return match self.outbox.as_ref().map(|o| o.status()) {
                Some(status) if !status.connected => HttpResponse::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("bus disconnected (node {})\n", status.node),
                ),
                Some(status) => HttpResponse::new(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    format!("ok (node {})\n", status.node),
                ),
                None => HttpResponse::new(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            };
        }
        HttpResponse::new(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n")
    }

    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        let Some(request) = cx.request() else { return Decision::reject(StatusCode::BAD_REQUEST, "no request") };
        match identify(request, &self.authenticator, unix_now()) {
            Ok(Identified { identity, claims, expires }) => {
                let extra = extra(request, &identity, claims, cx.client_address());
                let conn = cx.id();
                let now = Instant::now();
                let expires_at = expires.and_then(|expires| deadline_at(now, expires));
                // Recorded now, under the lock; the connect event goes out at open,
                // when a reply can reach the client.
                let earlier = self.tenancy.sessions().open(now, cx.hub(), conn, identity, &extra, expires_at);
                if earlier {
                    self.tenancy.earlier_deadline.notify(usize::MAX);
                }
                Decision::Accept(Accept::new())
            }
            Err(refusal) => {
                let client = cx.client_address();
                tracing::info!(%client, status = %refusal.status, reason = %refusal.reason, "handshake refused");
                Decision::reject(refusal.status, refusal.reason)
            }
        }
    }

    fn on_open(&self, cx: &mut Context<'_>) {
        let conn = cx.id();
        let events = self.tenancy.sessions().connected(&self.config.topics, conn);
        self.publish(cx.hub(), conn, events);
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        let conn = cx.id();
        let events = self.tenancy.sessions().message(Instant::now(), cx.hub(), conn, text, &self.config.topics);
        if let Ok(events) = events {
            self.publish(cx.hub(), conn, events);
        }
    }

    fn on_binary(&self, cx: &mut Context<'_>, _data: &bytes::Bytes) {
        let conn = cx.id();
        gateway::binary(cx.hub(), conn);
    }

    async fn ready(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.ready().await;
        }
    }

    fn on_skipped(&self, cx: &mut Context<'_>, skipped: &chinwag_core::SkippedMessage) {
        let conn = cx.id();
        gateway::too_big(cx.hub(), conn, skipped.len, self.config.max_message_size);
    }

    fn on_rate_limited(&self, cx: &mut Context<'_>) {
        let conn = cx.id();
        gateway::push_error(cx.hub(), conn, json!({"message": RATE_WARNING}));
    }

    fn on_close(&self, cx: &mut Context<'_>, closed: &Closed) {
        let conn = cx.id();
        let events = self.tenancy.sessions().close(conn, closed, &self.config.topics);
        self.publish(cx.hub(), conn, events);
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    fn scrape(&self, _hub: &Hub) -> Vec<ScrapedMetric> {
        let (pending, (approvals_timed_out, tokens_expired)) = {
            let sessions = self.tenancy.sessions();
            (sessions.pending(), sessions.timed_out())
        };
        let tenancy = [
            ScrapedMetric::gauge(
                "chinwag_gateway_pending_connections",
                "Connections waiting for their connect handler's approval",
                pending as i64,
            ),
            ScrapedMetric::counter(
                "chinwag_gateway_approval_timeouts",
                "Connections closed because the connect handler did not approve them in time",
                approvals_timed_out,
            ),
            ScrapedMetric::counter(
                "chinwag_gateway_tokens_expired",
                "Connections closed because their token expired while they were connected",
                tokens_expired,
            ),
        ];
        let Some(status) = self.outbox.as_ref().map(|o| o.status()) else {
            // The in-process bus is always there.
            let mut scraped = vec![ScrapedMetric::gauge(BUS_CONNECTED.0, BUS_CONNECTED.1, 1)];
            scraped.extend(tenancy);
            return scraped;
        };
        let mut scraped = vec![
            ScrapedMetric::gauge(BUS_CONNECTED.0, BUS_CONNECTED.1, i64::from(status.connected)),
            ScrapedMetric::gauge(
                "chinwag_gateway_outbox_events",
                "Events waiting in the outbox for the Redis publisher",
                status.queued as i64,
            ),
            ScrapedMetric::counter(
                "chinwag_gateway_events_dropped",
                "Events dropped because the outbox was full (the bus was down or too slow)",
                status.dropped,
            ),
            ScrapedMetric::counter(
                "chinwag_gateway_events_lost",
                "Events whose publication to Redis failed twice, or still queued at shutdown with Redis away",
                status.lost,
            ),
            ScrapedMetric::counter(
                "chinwag_gateway_commands_refused",
                "Commands from the bus refused as malformed",
                status.refused,
            ),
        ];
        scraped.extend(tenancy);
        scraped
    }

    fn readiness(&self) -> Readiness {
        match self.outbox.as_ref().map(|o| o.status()) {
            None => Readiness::ready("bus: in-process"),
            Some(status) if status.connected => {
                Readiness::ready(format!("bus: connected to Redis (node {})", status.node))
            }
            Some(status) if self.config.ready_requires_bus => {
                Readiness::not_ready(format!("bus: disconnected from Redis (node {})", status.node))
            }
            Some(status) => Readiness::ready(format!(
                "bus: disconnected from Redis (node {}); serving without it (gateway.ready_requires_bus is off)",
                status.node
            )),
        }
    }
}

/// A handle on a running gateway for the rest of the program: what the `send` and
/// `broadcast` topics do, from Rust.
#[derive(Clone)]
pub struct GatewayHandle {
    handle: Handle,
    outbox: Option<Arc<Outbox>>,
    metrics: GatewayMetrics,
    pub(crate) tenancy: Arc<Tenancy>,
    authenticator: Authenticator,
}

impl GatewayHandle {
    pub(crate) fn new(
        handle: Handle,
        outbox: Option<Arc<Outbox>>,
        metrics: GatewayMetrics,
        tenancy: Arc<Tenancy>,
        authenticator: Authenticator,
    ) -> Self {
        Self { handle, outbox, metrics, tenancy, authenticator }
    }

    /// Closes the connections whose deadline (approval, token expiry) is due now:
    /// what the gateway's timer calls when it wakes.
    pub(crate) fn fire_deadlines(&self) -> Option<Instant> {
        self.handle.with_hub(|hub| {
            let mut sessions = self.tenancy.sessions();
            for (conn, why) in sessions.handle_timeout(Instant::now(), hub) {
                tracing::info!(%conn, ?why, "closing a connection at its deadline");
            }
            sessions.poll_timeout()
        })
    }

    /// Reads the JWT keys again from their file (the binary calls this on
    /// SIGHUP), logs the outcome and counts it. On an error the keys in use stay.
    /// `None` in development mode, which has no keys.
    pub fn reload_keys(&self) -> Option<Result<KeySummary, String>> {
        let Authenticator::Jwt(verifier) = &self.authenticator else { return None };
        let outcome = verifier.reload();
        self.metrics.key_reload(&outcome);
        Some(outcome)
    }

    /// Reloads the JWT keys if their file changed since they were read (the
    /// gateway polls this every second). An error is logged and counted once,
    /// not at every poll: `last_error` is the one seen last.
    pub(crate) fn reload_keys_if_changed(&self, last_error: &mut Option<String>) {
        let Authenticator::Jwt(verifier) = &self.authenticator else { return };
        match verifier.reload_if_changed() {
            Ok(None) => *last_error = None,
            Ok(Some(summary)) => {
                *last_error = None;
                self.metrics.key_reload(&Ok(summary));
            }
            Err(error) if last_error.as_ref() != Some(&error) => {
                self.metrics.key_reload::<KeySummary>(&Err(error.clone()));
                *last_error = Some(error);
            }
            Err(_) => {}
        }
    }

    /// Whether the JWT keys come from a file that can change.
    pub(crate) fn keys_in_a_file(&self) -> bool {
        matches!(&self.authenticator, Authenticator::Jwt(verifier) if verifier.watches_a_file())
    }

    /// The state of the bus between processes (`None` with the in-process bus).
    pub fn bus_status(&self) -> Option<BusStatus> {
        self.outbox.as_ref().map(|o| o.status())
    }

    /// Carries out a send or broadcast (replies and failures need an event and
    /// are ignored here). Returns how many connections it reached.
    pub fn command(&self, command: Command) -> usize {
        self.handle.with_hub(|hub| apply(hub, &self.tenancy, None, command, &self.metrics))
    }

    /// Answers an event from outside the in-process handlers (a handler on another
    /// machine): a reply or failure for connection `conn` (the `connection` of the
    /// event's context), typed `reply_type`; `on_connect` if the event was the
    /// connect event (a failure then closes). False if the connection is gone.
    pub fn answer(&self, conn: u64, reply_type: &str, on_connect: bool, command: Command) -> bool {
        let conn = ConnId(conn);
        self.handle.with_hub(|hub| {
            let open = hub.is_open(conn);
            if open {
                apply(hub, &self.tenancy, Some((conn, reply_type, on_connect)), command, &self.metrics);
            }
            open
        })
    }

    /// The underlying service handle (shutdown, counters).
    pub fn service(&self) -> &Handle {
        &self.handle
    }
}
