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
use chinwag_core::{Accept, CloseCode, Closed, HttpResponse, Initiator, Request, Utf8Bytes};
use chinwag_service::{Context, Decision, Handle, Service};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
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
}

impl GatewayService {
    /// A gateway for `config`, identifying clients with `authenticator`, with the
    /// in-process `handlers`.
    pub fn new(config: Config, authenticator: Authenticator, handlers: Handlers) -> Self {
        Self { config: Arc::new(config), authenticator, handlers, outbox: None, open: Mutex::new(HashMap::new()) }
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
            match self.handlers.by_topic.get(&event.topic) {
                Some(handlers) => {
                    tracing::debug!(topic = %event.topic, body = %event.body, "event");
                    for handler in handlers {
                        for command in handler(&event.body) {
                            apply(hub, Some((conn, event.reply_type(), event.is_connect())), command);
                        }
                    }
                }
                None if self.outbox.is_none() => tracing::info!(topic = %event.topic, body = %event.body, "event"),
                None => {}
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
fn apply(hub: &mut Hub, origin: Option<(ConnId, &str, bool)>, command: Command) -> usize {
    match (command, origin) {
        (Command::Reply(payload), Some((conn, reply_type, _))) => {
            usize::from(gateway::reply(hub, conn, reply_type, payload))
        }
        (Command::Fail(payload), Some((conn, _, on_connect))) => {
            usize::from(gateway::fail(hub, conn, on_connect, payload))
        }
        (Command::Send { username, namespace, message_type, payload }, _) => {
            gateway::send(hub, &username, namespace.as_deref(), &message_type, payload)
        }
        (Command::Broadcast { namespace, message_type, payload }, _) => {
            gateway::broadcast(hub, namespace.as_deref(), &message_type, payload)
        }
        (command, None) => {
            tracing::warn!(?command, "a reply or failure with no event to answer: dropped");
            0
        }
    }
}

/// How a connection ended, as its close event says it (`"closed"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CloseSummary {
    /// The code of the end that closed: the client's close frame, or the one the
    /// server sent (1008 for a failed connect or a flood, 1001 at shutdown...);
    /// 1006 when the connection ended without either (no answer to the
    /// heartbeat, a lost connection); 1005 for a client's close frame without a
    /// code.
    pub code: u16,
    /// The reason sent with that code; when there was no close frame or it had no
    /// reason, what happened (empty if nothing is known).
    pub reason: String,
    /// `"client"` or `"server"`: which end started the closing.
    pub initiator: &'static str,
}

/// What `closed` tells a handler. `Closed.code` and `reason` are only what the
/// client said, and a client answering the server's close usually echoes the code
/// with no reason: so when the server closed, its own frame is the one that says
/// why.
pub fn close_summary(closed: &Closed) -> CloseSummary {
    let (initiator, code, reason) = match (closed.initiator, &closed.sent) {
        (Initiator::Local, Some(sent)) => ("server", sent.code, sent.reason.as_str()),
        (Initiator::Local, None) => ("server", closed.code, closed.reason.as_str()),
        (Initiator::Peer, _) => ("client", closed.code, closed.reason.as_str()),
    };
    let reason = match &closed.error {
        Some(error) if reason.is_empty() => error.to_string(),
        _ => reason.to_owned(),
    };
    CloseSummary { code: code.0, reason, initiator }
}

/// The context an event carries beyond username, namespace and connection: the
/// namespace as a parameter (as the gateway document reads it), the query, and
/// the headers worth having.
fn extra(request: &Request, identity: &Identity) -> Map<String, Value> {
    let query: Map<String, Value> = request
        .query()
        .map(|q| chinwag_service::query_pairs(q).map(|(k, v)| (k, Value::String(v))).collect())
        .unwrap_or_default();
    let headers: Map<String, Value> = ["user-agent", "origin", "x-forwarded-for", "x-request-id"]
        .iter()
        .filter_map(|name| Some((name.to_string(), Value::String(request.header(name)?.to_owned()))))
        .collect();
    let mut extra = Map::new();
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
                let extra = extra(request, &identity);
                let conn = cx.id();
                // Recorded now, under the lock; the connect event goes out at open,
                // when a reply can reach the client.
                let context = gateway::register(cx.hub(), conn, &identity, &extra);
                self.open_map().insert(conn, Open { context });
                Decision::Accept(Accept::new())
            }
            Err(refusal) => {
                tracing::info!(status = %refusal.status, reason = %refusal.reason, "handshake refused");
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
        let summary = close_summary(closed);
        let mut events = gateway::close(CloseCode(summary.code), &self.config.topics, &open.context);
        // The core's rule gives the code; the reason and the initiator are only
        // known here, from the connection's Closed.
        for event in &mut events {
            event.body["closed"] = json!(summary);
        }
        self.publish(cx.hub(), conn, events);
    }
}

/// A handle on a running gateway for the rest of the program: what the `send` and
/// `broadcast` topics do, from Rust.
#[derive(Clone)]
pub struct GatewayHandle {
    handle: Handle,
    outbox: Option<Arc<Outbox>>,
}

impl GatewayHandle {
    pub(crate) fn new(handle: Handle, outbox: Option<Arc<Outbox>>) -> Self {
        Self { handle, outbox }
    }

    /// The state of the bus between processes (`None` with the in-process bus).
    pub fn bus_status(&self) -> Option<BusStatus> {
        self.outbox.as_ref().map(|o| o.status())
    }

    /// Carries out a send or broadcast (replies and failures need an event and
    /// are ignored here). Returns how many connections it reached.
    pub fn command(&self, command: Command) -> usize {
        self.handle.with_hub(|hub| apply(hub, None, command))
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
                apply(hub, Some((conn, reply_type, on_connect)), command);
            }
            open
        })
    }

    /// The underlying service handle (shutdown, counters).
    pub fn service(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chinwag_core::{CloseFrame, ConnectionError};

    fn closed(code: u16, reason: &str, initiator: Initiator, sent: Option<(u16, &str)>) -> Closed {
        Closed {
            code: CloseCode(code),
            reason: reason.into(),
            initiator,
            sent: sent.map(|(code, reason)| CloseFrame { code: CloseCode(code), reason: reason.into() }),
            error: None,
        }
    }

    fn summary(code: u16, reason: &str, initiator: &'static str) -> CloseSummary {
        CloseSummary { code, reason: reason.into(), initiator }
    }

    #[test]
    fn close_events_say_who_closed_and_why() {
        // The client closed: its code and reason (our echo is not news).
        let by_client = closed(1000, "bye", Initiator::Peer, Some((1000, "")));
        assert_eq!(close_summary(&by_client), summary(1000, "bye", "client"));
        let no_code = closed(1005, "", Initiator::Peer, Some((1000, "")));
        assert_eq!(close_summary(&no_code), summary(1005, "", "client"));
        // The server closed: its code and reason, whatever the client echoed.
        let refused = closed(1000, "", Initiator::Local, Some((1008, "refused by the connect handler")));
        assert_eq!(close_summary(&refused), summary(1008, "refused by the connect handler", "server"));
        // No close frame from the client: what happened.
        let lost = Closed { error: Some(ConnectionError::TransportClosed), ..closed(1006, "", Initiator::Peer, None) };
        assert_eq!(close_summary(&lost), summary(1006, &ConnectionError::TransportClosed.to_string(), "client"));
        let silent =
            Closed { error: Some(ConnectionError::KeepaliveTimeout), ..closed(1006, "", Initiator::Local, None) };
        assert_eq!(close_summary(&silent), summary(1006, &ConnectionError::KeepaliveTimeout.to_string(), "server"));
        let flooded = Closed {
            error: Some(ConnectionError::CloseTimeout),
            ..closed(1006, "", Initiator::Local, Some((1008, "too many messages")))
        };
        assert_eq!(close_summary(&flooded), summary(1008, "too many messages", "server"));
    }
}
