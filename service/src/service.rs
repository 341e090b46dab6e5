//! What an application implements: the hooks of a WebSocket service, and the
//! context they get.

use bytes::Bytes;
use chinwag_core::chat::{ConnId, Hub, HubError};
use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, CloseCode, Closed, HttpResponse, Message, Rejection, Request, RequestKind, Utf8Bytes};
use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;

use crate::ops::Readiness;
use crate::route::{Params, query_param};

/// A WebSocket service: hooks called for each connection's life cycle.
///
/// Hooks run while the service's hub is locked, so they see a consistent state and
/// their operations are atomic; keep them short (no blocking I/O). For slow work,
/// spawn a task and talk back through a [`Handle`](crate::Handle). The two
/// asynchronous hooks, [`admit`](Self::admit) and [`ready`](Self::ready), run
/// without the lock.
pub trait Service: Send + Sync + 'static {
    /// A plain HTTP request (not an upgrade) arrived, for example a browser asking
    /// for a page; one to the service's path only once [`admit`](Self::admit) has
    /// allowed it. `hub` is the service's state, to read. The default answers 404.
    fn on_http(&self, request: &Request, hub: &Hub) -> HttpResponse {
        let _ = (request, hub);
        HttpResponse::new(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n")
    }

    /// A request matched the service's path (any request, without a route): an
    /// upgrade, or a plain HTTP request such as a page checking a name before it
    /// connects. Allow it, or refuse it with a status and a reason: a refused
    /// upgrade never reaches [`on_upgrade`](Self::on_upgrade), a refused plain
    /// request never reaches [`on_http`](Self::on_http), and both get the same
    /// answer. Called without the hub's lock, after the server's own checks (limits,
    /// path, Origin) and before `on_upgrade`. The default allows everything.
    ///
    /// It exists for a decision that needs I/O: reserving a user name in a store
    /// the servers share, say, so that two servers cannot both let the same name
    /// in. Hooks run under the hub's lock and must not wait on the network; and
    /// admitting first and reconciling later would open a connection that then has
    /// to be taken back. Here the server waits for the answer while the other
    /// connections carry on, and answers the client only once it has it.
    ///
    /// What the decision holds on to (the reservation) goes in the [`Ticket`] of
    /// [`Admit::allow_with`]: `on_upgrade` takes it with [`Context::take_ticket`]
    /// and keeps it with the connection. Otherwise the server drops it, never
    /// under the hub's lock: once `on_upgrade` has returned without taking it
    /// (refusing the upgrade, say), when shutdown began meanwhile, when the client
    /// went away during the wait, and at once for a plain HTTP request. So release
    /// the reservation in the ticket's `Drop`.
    ///
    /// The wait ends with the handshake timeout ([`Config::handshake_timeout`],
    /// counted from the connection's start), or when shutdown begins: the client
    /// then gets 503 and the future is dropped where it stands. A reservation that
    /// may be under way at that moment (sent, its answer not yet read) should also
    /// expire on its own in the store, as it should for a crash. A client that
    /// goes away during the wait does not cut it short: the answer is awaited, and
    /// its ticket dropped.
    ///
    /// [`Config::handshake_timeout`]: chinwag_core::Config::handshake_timeout
    fn admit<'a>(&'a self, request: &'a AdmitRequest<'a>) -> impl Future<Output = Admit> + Send + 'a {
        let _ = request;
        std::future::ready(Admit::allow())
    }

    /// An upgrade request matched the service's path and was admitted. Accept it
    /// (choosing a subprotocol, adding headers) or refuse it with a status and a
    /// reason. The connection already has its id and may store names and
    /// attributes here: if the request is refused, or the handshake fails, it
    /// leaves the hub again without [`on_close`](Self::on_close).
    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        let _ = cx;
        Decision::Accept(Accept::new())
    }

    /// The connection is open.
    fn on_open(&self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// A text message arrived.
    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        let _ = (cx, text);
    }

    /// Waited on before each connection reads its next message: a service whose
    /// work queues up (an event bus that cannot keep up, say) makes the clients
    /// wait here rather than drop what they send; TCP flow control then slows them
    /// down. Called without the hub's lock. The default is always ready. Keep the
    /// wait short: a connection that waits here does not read, so it does not see
    /// the peer's pongs either, and a wait longer than the keepalive timeout
    /// closes it.
    fn ready(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    /// A binary message arrived.
    fn on_binary(&self, cx: &mut Context<'_>, data: &Bytes) {
        let _ = (cx, data);
    }

    /// A message over the size limits went by unread: only with
    /// [`Oversized::Skip`](chinwag_core::Oversized::Skip) in the server's
    /// [`Config`](chinwag_core::Config) (by default such a message closes the
    /// connection with 1009 instead). The connection stays open.
    fn on_skipped(&self, cx: &mut Context<'_>, skipped: &chinwag_core::SkippedMessage) {
        let _ = (cx, skipped);
    }

    /// This connection sends messages faster than
    /// [`Limits::message_rate`](crate::Limits::message_rate) allows: the message that
    /// just arrived, and those that follow too fast, are dropped. Called once per
    /// flood: tell the peer (a peer that keeps flooding is closed with 1008 and
    /// "too many messages"). The default tells it nothing.
    fn on_rate_limited(&self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The connection closed (`closed` says how). It is still in the hub, with its
    /// names, groups and attributes, and leaves it right after this hook; unless
    /// the service closed it with [`Context::close`] (or the hub's `disconnect`),
    /// which took it out of the hub at once: then its attributes are gone here.
    fn on_close(&self, cx: &mut Context<'_>, closed: &Closed) {
        let _ = (cx, closed);
    }

    /// Registers the service's own metrics, once, when the server is made (the
    /// gateway: events published by topic). They are served with the server's on
    /// the admin listener.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }

    /// Values read when metrics are scraped (the chat: users online and rooms,
    /// from the hub; the gateway: its bus). Computed under the hub's lock: keep it
    /// cheap.
    fn scrape(&self, hub: &Hub) -> Vec<ScrapedMetric> {
        let _ = hub;
        Vec::new()
    }

    /// What `/ready` says of the service beyond draining: whether it can take new
    /// clients, and the state of what it depends on (the gateway: its bus).
    fn readiness(&self) -> Readiness {
        Readiness::ready("")
    }
}

/// A value a service reports when metrics are scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapedMetric {
    /// The metric's name (`chinwag_*`, with its unit; a counter's `_total` is
    /// added).
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Its value now.
    pub value: ScrapedValue,
}

/// The kind and value of a [`ScrapedMetric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrapedValue {
    /// A value that goes up and down.
    Gauge(i64),
    /// A count that only goes up (kept by the service, read at the scrape).
    Counter(u64),
}

impl ScrapedMetric {
    /// A gauge.
    pub fn gauge(name: &'static str, help: &'static str, value: i64) -> Self {
        Self { name, help, value: ScrapedValue::Gauge(value) }
    }

    /// A counter.
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self { name, help, value: ScrapedValue::Counter(value) }
    }
}

/// The answer to an upgrade request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Open the WebSocket.
    Accept(Accept),
    /// Refuse with an HTTP error status and a plain-text reason.
    Reject(Rejection),
}

impl Decision {
    /// Accept with no subprotocol and no extra headers.
    pub fn accept() -> Self {
        Self::Accept(Accept::new())
    }

    /// Refuse with `status` and a plain-text `reason`.
    pub fn reject(status: StatusCode, reason: impl Into<String>) -> Self {
        Self::Reject(Rejection::new(status, reason))
    }
}

/// A request as [`Service::admit`] sees it: before any connection exists, so
/// with no hub to act on.
#[derive(Debug)]
pub struct AdmitRequest<'a> {
    pub(crate) request: &'a Request,
    pub(crate) params: &'a Params,
    pub(crate) client: IpAddr,
}

impl<'a> AdmitRequest<'a> {
    /// The request: path, query, headers.
    pub fn request(&self) -> &'a Request {
        self.request
    }

    /// The path parameters of the service's route.
    pub fn params(&self) -> &'a Params {
        self.params
    }

    /// The client's address, as [`Context::client_address`] gives it.
    pub fn client_address(&self) -> IpAddr {
        self.client
    }

    /// Whether this is a WebSocket upgrade (else a plain HTTP request to the same
    /// path, which [`Service::on_http`] answers if it is allowed).
    pub fn is_upgrade(&self) -> bool {
        *self.request.kind() == RequestKind::Upgrade
    }

    /// A path parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.get(name)
    }

    /// A query parameter, decoded.
    pub fn query(&self, name: &str) -> Option<Cow<'a, str>> {
        query_param(self.request.query(), name)
    }
}

/// The answer of [`Service::admit`].
#[derive(Debug)]
pub enum Admit {
    /// Go on to [`Service::on_upgrade`] (or [`Service::on_http`]), with what the
    /// decision reserved, if anything.
    Allow(Option<Ticket>),
    /// Refuse with an HTTP error status and a plain-text reason.
    Reject(Rejection),
}

impl Admit {
    /// Go on, with nothing reserved.
    pub fn allow() -> Self {
        Self::Allow(None)
    }

    /// Go on, handing `ticket` to [`Service::on_upgrade`] (see [`Ticket`]).
    pub fn allow_with(ticket: impl Any + Send) -> Self {
        Self::Allow(Some(Ticket::new(ticket)))
    }

    /// Refuse with `status` and a plain-text `reason`.
    pub fn reject(status: StatusCode, reason: impl Into<String>) -> Self {
        Self::Reject(Rejection::new(status, reason))
    }
}

/// What [`Service::admit`] reserved for an upgrade, for
/// [`Service::on_upgrade`] to take with [`Context::take_ticket`]. A ticket not
/// taken is dropped (see [`Service::admit`] for when): release what it holds in
/// its value's `Drop`.
pub struct Ticket(Box<dyn Any + Send>);

impl Ticket {
    /// A ticket holding `value`.
    pub fn new(value: impl Any + Send) -> Self {
        Self(Box::new(value))
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket(..)")
    }
}

/// What a hook knows and can do: the connection it is about, its client's
/// address, the request that opened it (in `on_upgrade` and `on_open`), and the
/// connector operations of the hub (push to this connection, broadcast, named
/// connections, groups).
pub struct Context<'a> {
    pub(crate) conn: ConnId,
    pub(crate) hub: &'a mut Hub,
    pub(crate) client: IpAddr,
    pub(crate) request: Option<&'a Request>,
    pub(crate) params: Option<&'a Params>,
    /// The ticket of the upgrade being decided (in `on_upgrade` only).
    pub(crate) ticket: Option<&'a mut Option<Ticket>>,
}

impl<'a> Context<'a> {
    /// The context of a hook about `conn`, with no request.
    pub(crate) fn new(conn: ConnId, hub: &'a mut Hub, client: IpAddr) -> Self {
        Self { conn, hub, client, request: None, params: None, ticket: None }
    }

    /// With the request that opened the connection (`on_upgrade`, `on_open`).
    pub(crate) fn with_request(self, request: &'a Request, params: &'a Params) -> Self {
        Self { request: Some(request), params: Some(params), ..self }
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.conn
    }

    /// The client's address: the TCP peer's, or, when the peer is one of
    /// [`Limits::trusted_proxies`](crate::Limits::trusted_proxies), the address its
    /// forwarding header names (IPv4-mapped IPv6 addresses as IPv4). The address
    /// the per-IP limit counts and the server's logs name.
    pub fn client_address(&self) -> IpAddr {
        self.client
    }

    /// The upgrade request (in `on_upgrade` and `on_open`).
    pub fn request(&self) -> Option<&Request> {
        self.request
    }

    /// A path parameter of the request (in `on_upgrade` and `on_open`),
    /// percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params?.get(name)
    }

    /// A query parameter of the request (in `on_upgrade` and `on_open`), decoded.
    pub fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query_param(self.request?.query(), name)
    }

    /// The ticket [`Service::admit`] gave this upgrade, if it holds a `T`: in
    /// `on_upgrade` only (`None` in the other hooks, and when there is none). The
    /// service owns it from then on, and keeps it with the connection until
    /// `on_close`, say. A ticket of another type stays where it is, and is dropped
    /// with one left untaken, once `on_upgrade` has returned.
    pub fn take_ticket<T: Any>(&mut self) -> Option<T> {
        let slot = self.ticket.as_deref_mut()?;
        match slot.take()?.0.downcast::<T>() {
            Ok(value) => Some(*value),
            Err(other) => {
                *slot = Some(Ticket(other));
                None
            }
        }
    }

    /// An attribute of this connection.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.hub.attribute(self.conn, key)
    }

    /// Sets an attribute of this connection.
    pub fn set_attribute(&mut self, key: &str, value: impl Into<String>) {
        let _ = self.hub.set_attribute(self.conn, key, value);
    }

    /// Sends a message to this connection.
    pub fn push(&mut self, message: &Message) {
        let _ = self.hub.push(self.conn, message);
    }

    /// Sends a text message to this connection.
    pub fn push_text(&mut self, text: impl Into<Utf8Bytes>) {
        self.push(&Message::Text(text.into()));
    }

    /// Sends a message to every connection of the service; returns how many.
    pub fn broadcast(&mut self, message: &Message) -> usize {
        self.hub.broadcast(message)
    }

    /// Stores this connection under a name, replacing the connection stored under it
    /// before (returned; it stays open).
    pub fn store_name(&mut self, name: &str) -> Option<ConnId> {
        self.hub.store_name(self.conn, name).ok().flatten()
    }

    /// Sends a message to the connection stored under `name`.
    pub fn push_to_name(&mut self, name: &str, message: &Message) -> Result<ConnId, HubError> {
        self.hub.push_to_name(name, message)
    }

    /// Forgets a stored name.
    pub fn remove_name(&mut self, name: &str) -> Option<ConnId> {
        self.hub.remove_name(name)
    }

    /// Adds this connection to a group; false if it already was a member.
    pub fn add_to_group(&mut self, group: &str) -> bool {
        self.hub.add_to_group(self.conn, group).unwrap_or(false)
    }

    /// Sends a message to every member of a group; returns how many.
    pub fn push_to_group(&mut self, group: &str, message: &Message) -> Result<usize, HubError> {
        self.hub.push_to_group(group, message)
    }

    /// The groups this connection is in, in name order.
    pub fn groups(&self) -> impl Iterator<Item = &str> + '_ {
        self.hub.groups_of(self.conn)
    }

    /// Removes this connection from a group; false if it was not a member.
    pub fn remove_from_group(&mut self, group: &str) -> bool {
        self.hub.remove_from_group(self.conn, group).unwrap_or(false)
    }

    /// Removes a whole group (its members stay open).
    pub fn remove_group(&mut self, group: &str) -> Result<Vec<ConnId>, HubError> {
        self.hub.remove_group(group)
    }

    /// Closes this connection with a code and reason. It leaves the hub now;
    /// `on_close` still runs when the close handshake ends. Called from
    /// `on_upgrade` of an accepted upgrade, the close follows the 101 and `on_open`
    /// does not run.
    ///
    /// A code that may not be sent (see [`CloseCode::is_sendable`]: not 1005,
    /// 1006, 1015, nor outside 1000–1014 and 3000–4999) or a reason over 123 bytes
    /// is refused with [`HubError::InvalidClose`], and nothing happens: the
    /// connection stays in the hub and open, as if the call had not been made.
    /// (Refused, not clamped: a code or reason silently changed would tell the peer
    /// something the service did not say.)
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), HubError> {
        self.hub.disconnect(self.conn, code, reason).map(drop)
    }

    /// The whole hub, for anything the shortcuts above do not cover.
    pub fn hub(&mut self) -> &mut Hub {
        self.hub
    }
}
