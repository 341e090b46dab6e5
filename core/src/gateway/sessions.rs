//! The gateway's connections over time: each one's context, whether its connect
//! handler has admitted it yet, and its deadlines.
//!
//! With approval on, a new connection is *pending*: it is recorded (its events
//! carry its context) but in no routing group, so no send or broadcast reaches
//! it, and its messages are answered with an error instead of being published. A
//! reply to its connect event admits it; a failure closes it (1008); no answer by
//! its deadline closes it too (1008, [`APPROVAL_TIMEOUT_REASON`]). A connection
//! whose token has an expiry is closed at it ([`TOKEN_EXPIRED_CODE`]), so that
//! its client reconnects with a fresh token.
//!
//! Like the connection state machine, every call that depends on time takes
//! `now` and first fires every deadline due by then, so no call acts on a stale
//! clock: a broadcast at `now` never reaches a connection whose approval or token
//! ran out before `now`, however late the adapter's timer is. The adapter sleeps
//! until [`Sessions::poll_timeout`] and calls [`Sessions::handle_timeout`].

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{BadMessage, Identity, Publish, Topics};
use crate::chat::{ConnId, Hub};
use crate::{CloseCode, Closed};

/// The reason of the 1008 close of a connection whose connect handler did not
/// answer in time.
pub const APPROVAL_TIMEOUT_REASON: &str = "the connect handler did not approve the connection in time";

/// The close code of a connection whose token expired while it was connected:
/// in the range RFC 6455 leaves to applications, so that a client can tell it
/// from every other close and reconnect with a fresh token.
pub const TOKEN_EXPIRED_CODE: CloseCode = CloseCode(4001);

/// The reason sent with [`TOKEN_EXPIRED_CODE`].
pub const TOKEN_EXPIRED_REASON: &str = "the token has expired: reconnect with a new one";

/// The `message` of the error a pending connection gets for each message it sends
/// before it is admitted (the message is not published, and not kept).
pub const NOT_ADMITTED: &str =
    "not admitted yet: the connect handler has not answered, so this message was not delivered";

/// A deadline that passed, as [`Sessions::handle_timeout`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timeout {
    /// The connect handler did not answer in time: closed with 1008.
    Approval,
    /// The token expired: closed with [`TOKEN_EXPIRED_CODE`].
    TokenExpired,
}

#[derive(Debug)]
struct Session {
    identity: Identity,
    context: Value,
    /// Waiting for the connect handler's reply.
    pending: bool,
    /// Closed by the gateway (refused, timed out, expired): it has left the hub,
    /// and waits for its close handshake to end.
    closing: bool,
    approve_by: Option<Instant>,
    expires_at: Option<Instant>,
}

/// Every connection of a gateway, with its phase and deadlines. Changes the
/// [`Hub`] it is given (routing groups, deliveries, closes); holds no clock.
#[derive(Debug, Default)]
pub struct Sessions {
    approval: Option<Duration>,
    sessions: HashMap<ConnId, Session>,
    deadlines: BTreeSet<(Instant, ConnId, Timeout)>,
    approvals_timed_out: u64,
    tokens_expired: u64,
}

impl Sessions {
    /// No connections. `approval`: how long a new connection may wait for its
    /// connect handler's reply (`None`: connections are admitted at once).
    pub fn new(approval: Option<Duration>) -> Self {
        Self { approval, ..Self::default() }
    }

    /// Whether new connections wait for the connect handler's approval.
    pub fn approval(&self) -> Option<Duration> {
        self.approval
    }

    /// A connection accepted at `now` for `identity`, with what the adapter adds
    /// to its context in `extra` and the time its token expires, if it is to be
    /// closed then. Records it (pending, if approval is on; else admitted and
    /// reachable) and returns whether the earliest deadline moved earlier, so that
    /// an adapter sleeping until [`poll_timeout`](Self::poll_timeout) wakes up.
    pub fn open(
        &mut self,
        now: Instant,
        hub: &mut Hub,
        conn: ConnId,
        identity: Identity,
        extra: &Map<String, Value>,
        expires_at: Option<Instant>,
    ) -> bool {
        self.handle_timeout(now, hub);
        let before = self.poll_timeout();
        let context = super::record(hub, conn, &identity, extra);
        let pending = self.approval.is_some();
        if !pending {
            super::join(hub, conn, &identity);
        }
        // A deadline an `Instant` cannot hold is never reached: no deadline.
        let approve_by = self.approval.and_then(|wait| now.checked_add(wait));
        if let Some(at) = approve_by {
            self.deadlines.insert((at, conn, Timeout::Approval));
        }
        if let Some(at) = expires_at {
            self.deadlines.insert((at, conn, Timeout::TokenExpired));
        }
        self.sessions.insert(conn, Session { identity, context, pending, closing: false, approve_by, expires_at });
        match (before, self.poll_timeout()) {
            (Some(before), Some(after)) => after < before,
            (None, after) => after.is_some(),
            (Some(_), None) => false,
        }
    }

    /// The connect event of `conn` (if the gateway publishes one).
    pub fn connected(&self, topics: &Topics, conn: ConnId) -> Vec<Publish> {
        self.sessions.get(&conn).map(|s| super::connected(topics, &s.context)).unwrap_or_default()
    }

    /// The context of `conn`'s events, as it was when it opened.
    pub fn context(&self, conn: ConnId) -> Option<&Value> {
        self.sessions.get(&conn).map(|s| &s.context)
    }

    /// Whether `conn` waits for its connect handler's approval.
    pub fn is_pending(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(|s| s.pending && !s.closing)
    }

    /// Whether `conn` is admitted and open: sends and broadcasts reach it, its
    /// messages are published.
    pub fn is_admitted(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(|s| !s.pending && !s.closing)
    }

    /// How many connections wait for approval.
    pub fn pending(&self) -> usize {
        self.sessions.values().filter(|s| s.pending && !s.closing).count()
    }

    /// How many connections were closed so far because their connect handler did
    /// not answer in time, and because their token expired.
    pub fn timed_out(&self) -> (u64, u64) {
        (self.approvals_timed_out, self.tokens_expired)
    }

    /// How many connections are known (pending, admitted or closing).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no connection is known.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A text message from `conn` at `now`: the events to publish, or why not. A
    /// pending connection is told ([`NOT_ADMITTED`]) and nothing is published; a
    /// closing one gets nothing.
    pub fn message(
        &mut self,
        now: Instant,
        hub: &mut Hub,
        conn: ConnId,
        text: &str,
        topics: &Topics,
    ) -> Result<Vec<Publish>, BadMessage> {
        self.handle_timeout(now, hub);
        let Some(session) = self.sessions.get(&conn).filter(|s| !s.closing) else {
            return Err(BadMessage::Closing);
        };
        if session.pending {
            super::push_error(hub, conn, serde_json::json!({"message": NOT_ADMITTED}));
            return Err(BadMessage::NotAdmitted);
        }
        super::message(hub, conn, text, topics, &session.context)
    }

    /// A handler's reply at `now` to an event about `conn`: a reply to the connect
    /// event (`on_connect`) admits a pending connection first, so that the reply
    /// is the first thing it gets. False if the connection is gone or closing.
    pub fn reply(
        &mut self,
        now: Instant,
        hub: &mut Hub,
        conn: ConnId,
        reply_type: &str,
        on_connect: bool,
        payload: Value,
    ) -> bool {
        self.handle_timeout(now, hub);
        let Some(session) = self.sessions.get_mut(&conn).filter(|s| !s.closing) else { return false };
        if session.pending && on_connect {
            session.pending = false;
            if let Some(at) = session.approve_by.take() {
                self.deadlines.remove(&(at, conn, Timeout::Approval));
            }
            super::join(hub, conn, &session.identity);
        }
        super::reply(hub, conn, reply_type, payload)
    }

    /// A handler's failure at `now` of an event about `conn`: an error to the
    /// client; a failed connect event also closes it (1008). False if the
    /// connection is gone or closing.
    pub fn fail(&mut self, now: Instant, hub: &mut Hub, conn: ConnId, on_connect: bool, payload: Value) -> bool {
        self.handle_timeout(now, hub);
        if self.sessions.get(&conn).is_none_or(|s| s.closing) {
            return false;
        }
        let failed = super::fail(hub, conn, on_connect, payload);
        if on_connect {
            self.closing(conn);
        }
        failed
    }

    /// [`send`](super::send) at `now`: only admitted connections are reached.
    pub fn send(
        &mut self,
        now: Instant,
        hub: &mut Hub,
        username: &str,
        namespace: Option<&str>,
        message_type: &str,
        payload: Value,
    ) -> usize {
        self.handle_timeout(now, hub);
        super::send(hub, username, namespace, message_type, payload)
    }

    /// [`broadcast`](super::broadcast) at `now`: only admitted connections are
    /// reached.
    pub fn broadcast(
        &mut self,
        now: Instant,
        hub: &mut Hub,
        namespace: Option<&str>,
        message_type: &str,
        payload: Value,
    ) -> usize {
        self.handle_timeout(now, hub);
        super::broadcast(hub, namespace, message_type, payload)
    }

    /// The earliest deadline: when [`handle_timeout`](Self::handle_timeout) has
    /// something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// Closes every connection whose deadline is due by `now`: pending past its
    /// approval deadline (1008, [`APPROVAL_TIMEOUT_REASON`]), or past its token's
    /// expiry ([`TOKEN_EXPIRED_CODE`]). Returns which, and why.
    pub fn handle_timeout(&mut self, now: Instant, hub: &mut Hub) -> Vec<(ConnId, Timeout)> {
        let mut fired = Vec::new();
        while let Some(&(at, conn, why)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let (code, reason) = match why {
                Timeout::Approval => {
                    self.approvals_timed_out += 1;
                    (CloseCode::POLICY_VIOLATION, APPROVAL_TIMEOUT_REASON)
                }
                Timeout::TokenExpired => {
                    self.tokens_expired += 1;
                    (TOKEN_EXPIRED_CODE, TOKEN_EXPIRED_REASON)
                }
            };
            // A connection the hub already forgot (the server closed it) is
            // closing all the same.
            let _ = hub.disconnect(conn, code, reason);
            self.closing(conn);
            fired.push((conn, why));
        }
        fired
    }

    /// `conn` left the hub for good: its deadlines go.
    fn closing(&mut self, conn: ConnId) {
        if let Some(session) = self.sessions.get_mut(&conn) {
            session.closing = true;
            if let Some(at) = session.approve_by.take() {
                self.deadlines.remove(&(at, conn, Timeout::Approval));
            }
            if let Some(at) = session.expires_at.take() {
                self.deadlines.remove(&(at, conn, Timeout::TokenExpired));
            }
        }
    }

    /// `conn` closed: forgets it and returns its close events (with the context
    /// it had when it opened).
    pub fn close(&mut self, conn: ConnId, closed: &Closed, topics: &Topics) -> Vec<Publish> {
        self.closing(conn);
        match self.sessions.remove(&conn) {
            Some(session) => super::close(closed, topics, &session.context),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{TypeRoute, everyone_group};
    use super::*;
    use crate::chat::Delivery;
    use serde_json::json;

    fn topics() -> Topics {
        Topics {
            on_connect: Some("socket:connection".into()),
            on_message: Some("socket:generalMessage".into()),
            message_types: vec![TypeRoute { message_type: "one".into(), topic: "socket:type_one".into() }],
            on_close: Some("socket:close".into()),
        }
    }

    fn id(user: &str, ns: &str) -> Identity {
        Identity { username: user.into(), namespace: Some(ns.into()) }
    }

    type Queued = (Vec<(ConnId, Value)>, Vec<(ConnId, u16, String)>);

    /// What the hub queued: frames as (recipient, JSON), and closes.
    fn drain(hub: &mut Hub) -> Queued {
        let (mut frames, mut closes) = (Vec::new(), Vec::new());
        while let Some(d) = hub.poll_delivery() {
            match d {
                Delivery::Frame { to, frame } => {
                    let value: Value = serde_json::from_slice(super::super::tests::payload(frame.as_bytes())).unwrap();
                    frames.extend(to.into_iter().map(|c| (c, value.clone())));
                }
                Delivery::Close { conn, code, reason } => closes.push((conn, code.0, reason)),
            }
        }
        (frames, closes)
    }

    #[test]
    fn a_pending_connection_gets_nothing_until_its_connect_reply() {
        let t0 = Instant::now();
        let mut hub = Hub::new();
        let mut sessions = Sessions::new(Some(Duration::from_secs(10)));
        let (alex, eve) = (hub.open(), hub.open());
        assert!(sessions.open(t0, &mut hub, alex, id("alex", "acme"), &Map::new(), None));
        assert!(!sessions.open(t0, &mut hub, eve, id("eve", "acme"), &Map::new(), None), "not earlier");
        assert_eq!(sessions.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(sessions.connected(&topics(), alex)[0].body["context"]["username"], "alex");
        assert_eq!(sessions.pending(), 2);
        // Nothing reaches them: not a broadcast to their namespace, nor to all, nor a send.
        assert_eq!(sessions.broadcast(t0, &mut hub, Some("acme"), "news", json!(1)), 0);
        assert_eq!(sessions.broadcast(t0, &mut hub, None, "news", json!(2)), 0);
        assert_eq!(sessions.send(t0, &mut hub, "alex", Some("acme"), "note", json!(3)), 0);
        assert_eq!(sessions.send(t0, &mut hub, "alex", None, "note", json!(4)), 0);
        assert!(!hub.groups_of(alex).any(|g| g == everyone_group()));
        // Their messages are not published; they are told why.
        let refused = sessions.message(t0, &mut hub, eve, r#"{"type":"one"}"#, &topics());
        assert_eq!(refused, Err(BadMessage::NotAdmitted));
        let (frames, closes) = drain(&mut hub);
        assert_eq!(frames, [(eve, json!({"type": "error", "payload": {"message": NOT_ADMITTED}}))]);
        assert!(closes.is_empty());
        // The reply admits alex: it is the first thing alex gets, then broadcasts reach alex.
        assert!(sessions.reply(t0, &mut hub, alex, "onconnect", true, json!({"hello": "alex"})));
        assert!(sessions.is_admitted(alex));
        assert_eq!(sessions.broadcast(t0, &mut hub, Some("acme"), "news", json!(5)), 1);
        let published = sessions.message(t0, &mut hub, alex, r#"{"type":"one"}"#, &topics()).unwrap();
        assert_eq!(published.len(), 2);
        let (frames, _) = drain(&mut hub);
        assert_eq!(
            frames,
            [
                (alex, json!({"type": "onconnect", "payload": {"hello": "alex"}})),
                (alex, json!({"type": "news", "payload": 5}))
            ]
        );
        // A failed connect closes eve with 1008, after the error.
        assert!(sessions.fail(t0, &mut hub, eve, true, json!({"message": "not a member"})));
        let (frames, closes) = drain(&mut hub);
        assert_eq!(frames, [(eve, json!({"type": "error", "payload": {"message": "not a member"}}))]);
        assert_eq!(closes, [(eve, 1008, "refused by the connect handler".to_owned())]);
        assert_eq!(sessions.poll_timeout(), None, "nobody is pending any more");
        assert!(!sessions.reply(t0, &mut hub, eve, "onconnect", true, json!(1)), "a late reply admits nobody");
        assert_eq!(sessions.message(t0, &mut hub, eve, "{}", &topics()), Err(BadMessage::Closing));
        let closed = Closed {
            code: CloseCode(1008),
            reason: String::new(),
            initiator: crate::Initiator::Local,
            sent: None,
            error: None,
        };
        assert_eq!(sessions.close(eve, &closed, &topics())[0].body["context"]["username"], "eve");
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn deadlines_close_with_their_codes() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut hub = Hub::new();
        let mut sessions = Sessions::new(Some(s(5)));
        let (slow, brief, admitted) = (hub.open(), hub.open(), hub.open());
        sessions.open(t0, &mut hub, slow, id("slow", "acme"), &Map::new(), Some(t0 + s(60)));
        // A token that expires before the approval deadline: that comes first.
        assert!(sessions.open(t0, &mut hub, brief, id("brief", "acme"), &Map::new(), Some(t0 + s(2))));
        sessions.open(t0, &mut hub, admitted, id("ok", "acme"), &Map::new(), Some(t0 + s(30)));
        sessions.reply(t0, &mut hub, admitted, "onconnect", true, json!(null));
        drain(&mut hub);
        assert_eq!(sessions.poll_timeout(), Some(t0 + s(2)));
        assert!(sessions.handle_timeout(t0 + s(1), &mut hub).is_empty());
        assert_eq!(sessions.handle_timeout(t0 + s(2), &mut hub), [(brief, Timeout::TokenExpired)]);
        // Any call at a later time fires what is due first: the broadcast at 6 s
        // does not reach `slow`, whose approval ran out at 5 s.
        assert_eq!(sessions.broadcast(t0 + s(6), &mut hub, Some("acme"), "news", json!(1)), 1);
        let (frames, closes) = drain(&mut hub);
        assert_eq!(frames, [(admitted, json!({"type": "news", "payload": 1}))]);
        assert_eq!(
            closes,
            [(brief, 4001, TOKEN_EXPIRED_REASON.to_owned()), (slow, 1008, APPROVAL_TIMEOUT_REASON.to_owned())]
        );
        // The admitted connection's token expires at 30 s.
        assert_eq!(sessions.poll_timeout(), Some(t0 + s(30)));
        assert_eq!(sessions.handle_timeout(t0 + s(31), &mut hub), [(admitted, Timeout::TokenExpired)]);
        assert_eq!(sessions.send(t0 + s(31), &mut hub, "ok", None, "t", json!(1)), 0);
        assert_eq!(sessions.poll_timeout(), None);
        assert_eq!(sessions.timed_out(), (1, 2));
        assert!(TOKEN_EXPIRED_CODE.is_sendable() && (4000..=4999).contains(&TOKEN_EXPIRED_CODE.0));
        assert!(APPROVAL_TIMEOUT_REASON.len() <= 123 && TOKEN_EXPIRED_REASON.len() <= 123);
    }

    #[test]
    fn without_approval_connections_are_admitted_at_once() {
        let t0 = Instant::now();
        let mut hub = Hub::new();
        let mut sessions = Sessions::new(None);
        let conn = hub.open();
        assert!(!sessions.open(t0, &mut hub, conn, id("alex", "acme"), &Map::new(), None));
        assert!(sessions.is_admitted(conn));
        assert_eq!(sessions.broadcast(t0, &mut hub, None, "news", json!(1)), 1);
        assert_eq!(sessions.poll_timeout(), None);
    }
}
