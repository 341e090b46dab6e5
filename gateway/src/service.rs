//! The gateway as a [`chinwag_service::Service`], with the in-process event bus:
//! handlers are Rust functions registered per topic, run when an event is
//! published, and answer with [`Command`]s (reply, fail, send, broadcast) that are
//! carried out at once.
//!
//! Handlers run while the gateway's hub is locked, like every service hook: keep
//! them short, and hand slow work to a task that answers through a
//! [`GatewayHandle`].

use chinwag_core::chat::{ConnId, Hub};
use chinwag_core::gateway::{self, Identity, Publish};
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
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::unix_now;
use crate::bus::{BusStatus, Outbox};
use crate::config::Config;
use crate::identity::{Authenticator, identify};

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
}

/// What the gateway keeps per connection: its context, built once at open.
struct Open {
    context: Value,
}

/// The gateway service.
pub struct GatewayService {
    config: Arc<Config>,
    authenticator: Authenticator,
    handlers: Handlers,
    /// The bus to other processes, when one is configured.
    outbox: Option<Arc<Outbox>>,
    open: Mutex<HashMap<ConnId, Open>>,
    pub(crate) metrics: GatewayMetrics,
}

impl GatewayService {
    /// A gateway for `config`, identifying clients with `authenticator`, with the
    /// in-process `handlers`.
    pub fn new(config: Config, authenticator: Authenticator, handlers: Handlers) -> Self {
        let metrics = GatewayMetrics::new(&config.topics);
        Self {
            config: Arc::new(config),
            authenticator,
            handlers,
            outbox: None,
            open: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Also publishes every event to a bus between processes.
    pub(crate) fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    fn open_map(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
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
                        apply(hub, Some((conn, event.reply_type(), event.is_connect())), command, &self.metrics);
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

/// Carries out a command; `origin` is the connection, reply type and phase of the
/// event it answers (replies and failures need one). Returns how many connections
/// it reached.
fn apply(hub: &mut Hub, origin: Option<(ConnId, &str, bool)>, command: Command, metrics: &GatewayMetrics) -> usize {
    match (command, origin) {
        (Command::Reply(payload), Some((conn, reply_type, _))) => {
            metrics.command(CommandKind::Reply);
            usize::from(gateway::reply(hub, conn, reply_type, payload))
        }
        (Command::Fail(payload), Some((conn, _, on_connect))) => {
            metrics.command(CommandKind::Fail);
            usize::from(gateway::fail(hub, conn, on_connect, payload))
        }
        (Command::Send { username, namespace, message_type, payload }, _) => {
            metrics.command(CommandKind::Send);
            gateway::send(hub, &username, namespace.as_deref(), &message_type, payload)
        }
        (Command::Broadcast { namespace, message_type, payload }, _) => {
            metrics.command(CommandKind::Broadcast);
            gateway::broadcast(hub, namespace.as_deref(), &message_type, payload)
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
/// namespace as a parameter (as the gateway document reads it), the query, and
/// the headers worth having.
fn extra(request: &Request, identity: &Identity, client: IpAddr) -> Map<String, Value> {
    let query: Map<String, Value> = request
        .query()
        .map(|q| chinwag_service::query_pairs(q).map(|(k, v)| (k, Value::String(v))).collect())
        .unwrap_or_default();
    let headers: Map<String, Value> = ["user-agent", "origin", "x-forwarded-for", "x-request-id"]
        .iter()
        .filter_map(|name| Some((name.to_string(), Value::String(request.header(name)?.to_owned()))))
        .collect();
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
            Ok(identity) => {
                let extra = extra(request, &identity, cx.client_address());
                let conn = cx.id();
                // Recorded now, under the lock; the connect event goes out at open,
                // when a reply can reach the client.
                let context = gateway::register(cx.hub(), conn, &identity, &extra);
                self.open_map().insert(conn, Open { context });
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
        let open = self.open_map();
        let Some(Open { context }) = open.get(&conn) else { return };
        let events = gateway::connected(&self.config.topics, context);
        drop(open);
        self.publish(cx.hub(), conn, events);
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        let conn = cx.id();
        // Borrowed, not cloned: every message would otherwise copy the context's
        // JSON. (Hooks run under the hub's lock, so this lock is never contended.)
        let open = self.open_map();
        let Some(Open { context }) = open.get(&conn) else { return };
        let events = gateway::message(cx.hub(), conn, text, &self.config.topics, context);
        drop(open);
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
        let Some(open) = self.open_map().remove(&conn) else { return };
        let events = gateway::close(closed, &self.config.topics, &open.context);
        self.publish(cx.hub(), conn, events);
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    fn scrape(&self, _hub: &Hub) -> Vec<ScrapedMetric> {
        let Some(status) = self.outbox.as_ref().map(|o| o.status()) else {
            // The in-process bus is always there.
            return vec![ScrapedMetric::gauge(BUS_CONNECTED.0, BUS_CONNECTED.1, 1)];
        };
        vec![
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
        ]
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
}

impl GatewayHandle {
    pub(crate) fn new(handle: Handle, outbox: Option<Arc<Outbox>>, metrics: GatewayMetrics) -> Self {
        Self { handle, outbox, metrics }
    }

    /// The state of the bus between processes (`None` with the in-process bus).
    pub fn bus_status(&self) -> Option<BusStatus> {
        self.outbox.as_ref().map(|o| o.status())
    }

    /// Carries out a send or broadcast (replies and failures need an event and
    /// are ignored here). Returns how many connections it reached.
    pub fn command(&self, command: Command) -> usize {
        self.handle.with_hub(|hub| apply(hub, None, command, &self.metrics))
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
                apply(hub, Some((conn, reply_type, on_connect)), command, &self.metrics);
            }
            open
        })
    }

    /// The underlying service handle (shutdown, counters).
    pub fn service(&self) -> &Handle {
        &self.handle
    }
}
