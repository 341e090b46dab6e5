//! The chat server: the chat room of `chinwag_core::chat` (its rules in `room`,
//! carried out by a `Replica`), served with its page on one port.

use bytes::Bytes;
use chinwag_core::chat::v1::{self, Resume};
use chinwag_core::chat::{Hub, Replica, room};
use chinwag_core::http::{HeaderValue, Method, StatusCode, header};
use chinwag_core::{Accept, Closed, Config, HttpResponse, Request, Utf8Bytes};
use chinwag_service::ops::Readiness;
use chinwag_service::{
    Admit, AdmitRequest, Context, Decision, Limits, PathPattern, ScrapedMetric, Server, Service, query_param,
};

use crate::cluster::{Cluster, NameLease};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// The WebSocket endpoint.
pub const ROUTE: &str = "/chat/{name}";

/// The page, embedded in the binary: it works offline, with no CDN.
const PAGE: &str = include_str!("page/index.html");

static ROUTE_PATTERN: LazyLock<PathPattern> = LazyLock::new(|| PathPattern::new(ROUTE).expect("valid route"));

/// The line a client sending too fast gets (once per flood).
pub const RATE_WARNING: &str =
    "error: you are sending too fast, so your messages are being dropped; slow down or you will be disconnected";

/// The limits of chat connections: chat lines are short, so messages are capped at
/// 64 KiB (as Centrifugo does by default); larger ones close with 1009.
pub fn config() -> Config {
    Config { max_frame_size: 64 << 10, max_message_size: 64 << 10, ..Config::default() }
}

/// The chat server with the default limits, ready to serve.
pub fn server() -> Server<ChatService> {
    server_with(config(), Limits::default())
}

/// The chat server with the given connection settings and server limits.
pub fn server_with(config: Config, limits: Limits) -> Server<ChatService> {
    Server::new(ChatService::alone()).route(ROUTE).expect("valid route").config(config).limits(limits)
}

/// The chat server as a node of the chat shared by every node on `cluster`'s
/// Redis. Start the cluster's tasks with the server's handle
/// ([`Cluster::start`]) before serving.
pub fn clustered_server_with(config: Config, limits: Limits, cluster: Arc<Cluster>) -> Server<ChatService> {
    Server::new(ChatService::clustered(cluster)).route(ROUTE).expect("valid route").config(config).limits(limits)
}

/// The chat as a [`Service`]: each hook hands over to the node's [`Replica`] of
/// the chat and logs the lines it shows.
#[derive(Debug, Clone)]
pub struct ChatService {
    /// This node's replica. Hooks lock it while they hold the hub's lock, and
    /// so does whatever applies the log: always the hub first, then this.
    chat: Arc<Mutex<Replica>>,
    /// The nodes this one shares the chat with, if any.
    cluster: Option<Arc<Cluster>>,
}

impl ChatService {
    /// The chat on this node alone: the replica is its own log, named by a
    /// random epoch (a restarted process starts new logs, and a client
    /// recovering from before the restart is told its lines are lost).
    pub fn alone() -> Self {
        let mut replica = Replica::alone();
        replica.set_epoch(crate::cluster::new_node_id());
        Self { chat: Arc::new(Mutex::new(replica)), cluster: None }
    }

    /// The chat shared by every node on `cluster`'s Redis.
    pub fn clustered(cluster: Arc<Cluster>) -> Self {
        Self { chat: cluster.replica(), cluster: Some(cluster) }
    }

    /// How many lines of each room to keep for history and recovery (default
    /// [`DEFAULT_HISTORY`](chinwag_core::chat::DEFAULT_HISTORY)). Set it before
    /// serving: a cluster node loads that many when it joins.
    pub fn set_history_len(&self, len: usize) {
        self.with_chat(|chat| chat.set_history_len(len));
    }

    /// Runs `f` on the replica, then hands what it output to the cluster.
    fn with_chat<T>(&self, f: impl FnOnce(&mut Replica) -> T) -> T {
        let mut chat = self.chat.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut chat);
        if let Some(cluster) = &self.cluster {
            cluster.flush(&mut chat);
        }
        out
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    HttpResponse::new(status, "text/plain; charset=utf-8", body)
}

fn log(lines: Vec<String>) {
    for line in lines {
        tracing::info!(target: "chat", "{line}");
    }
}

impl Service for ChatService {
    fn on_http(&self, request: &Request, hub: &Hub) -> HttpResponse {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match request.path() {
            "/" | "/index.html" => {
                let mut page = HttpResponse::new(StatusCode::OK, "text/html; charset=utf-8", PAGE);
                page.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                page.headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                page
            }
            path => match ROUTE_PATTERN.matches(path) {
                // The endpoint over plain HTTP says whether a connection would be
                // admitted, and why not: the page shows it after a refused handshake.
                Some(Ok(params)) => {
                    let age = query_param(request.query(), "age");
                    match self.with_chat(|chat| chat.check(hub, params.get("name").unwrap_or_default(), age.as_deref()))
                    {
                        Ok(_) => text(StatusCode::OK, "welcome: connect with a WebSocket\n"),
                        Err(refusal) => text(status(refusal.status), refusal.reason),
                    }
                }
                Some(Err(bad)) => text(StatusCode::BAD_REQUEST, bad.0),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }

    async fn admit<'a>(&'a self, request: &'a AdmitRequest<'a>) -> Admit {
        // Alone, the hub is the whole chat: on_upgrade decides under its lock.
        let Some(cluster) = &self.cluster else { return Admit::allow() };
        let name = request.param("name").unwrap_or_default();
        let age = request.query("age");
        match cluster.admit(name, age.as_deref(), request.is_upgrade()).await {
            Ok(Some(lease)) => Admit::allow_with(lease),
            Ok(None) => Admit::allow(),
            Err(rejection) => {
                tracing::info!(name, status = %rejection.status, reason = rejection.reason, "refused");
                Admit::Reject(rejection)
            }
        }
    }

    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        let name = cx.param("name").unwrap_or_default().to_owned();
        let age = cx.query("age").map(|age| age.into_owned());
        let conn = cx.id();
        let lease = cx.take_ticket::<NameLease>();
        if self.cluster.is_some() && lease.is_none() {
            return Decision::reject(StatusCode::SERVICE_UNAVAILABLE, "the chat could not reserve the name");
        }
        // chinwag.v1 for a client that offers it, with the history or recovery
        // it asks for in the query.
        let v1 = cx.request().is_some_and(|r| r.subprotocols().iter().any(|p| p == v1::PROTOCOL));
        let resume = if v1 {
            let query = |key: &str| cx.query(key).map(|v| v.into_owned());
            match Resume::from_query(query("history").as_deref(), query("since").as_deref(), query("epoch").as_deref())
            {
                Ok(resume) => Some(resume),
                Err(reason) => return Decision::reject(StatusCode::BAD_REQUEST, reason),
            }
        } else {
            None
        };
        match self.with_chat(|chat| {
            let name = chat.admit(cx.hub(), conn, &name, age.as_deref())?;
            if let Some(resume) = resume {
                chat.use_v1(conn, resume);
            }
            Ok::<_, room::Refusal>(name)
        }) {
            Ok(_) => {
                // The connection holds the name in Redis now: its departure frees it.
                if let Some(lease) = lease {
                    lease.keep();
                }
                if v1 { Decision::Accept(Accept::new().with_subprotocol(v1::PROTOCOL)) } else { Decision::accept() }
            }
            Err(refusal) => {
                tracing::info!(name, status = refusal.status, reason = refusal.reason, "refused");
                Decision::reject(status(refusal.status), refusal.reason)
            }
        }
    }

    fn on_open(&self, cx: &mut Context<'_>) {
        let conn = cx.id();
        log(self.with_chat(|chat| chat.open(cx.hub(), conn)));
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        let conn = cx.id();
        log(self.with_chat(|chat| chat.text(cx.hub(), conn, text)));
    }

    fn on_binary(&self, cx: &mut Context<'_>, _data: &Bytes) {
        cx.push_text("error: the chat only takes text messages");
    }

    fn on_rate_limited(&self, cx: &mut Context<'_>) {
        cx.push_text(RATE_WARNING);
    }

    fn on_close(&self, cx: &mut Context<'_>, _closed: &Closed) {
        let conn = cx.id();
        log(self.with_chat(|chat| chat.close(cx.hub(), conn)));
    }

    fn scrape(&self, hub: &Hub) -> Vec<ScrapedMetric> {
        let _ = hub;
        let (users, rooms, everywhere) =
            self.with_chat(|chat| (chat.local_count(), chat.local_rooms(), chat.users().len()));
        let mut metrics = vec![
            ScrapedMetric::gauge(
                "chinwag_chat_users",
                "Users in the chat on this node (joined, under their names)",
                users as i64,
            ),
            ScrapedMetric::gauge("chinwag_chat_rooms", "Rooms with at least one member on this node", rooms as i64),
            ScrapedMetric::gauge("chinwag_chat_cluster_users", "Users in the chat on every node", everywhere as i64),
        ];
        // Exported alone too (always 0): one dashboard serves both deployments.
        metrics.push(ScrapedMetric::counter(
            "chinwag_chat_malformed_entries",
            "Entries of the chat's Redis logs that could not be read (skipped)",
            self.cluster.as_ref().map_or(0, |cluster| cluster.malformed()),
        ));
        metrics
    }

    fn readiness(&self) -> Readiness {
        match &self.cluster {
            Some(cluster) => cluster.readiness(),
            None => Readiness::ready(""),
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}
