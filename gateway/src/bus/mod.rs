//! The event bus between the gateway and handlers in other processes.
//!
//! Events leave through an outbox: a bounded queue that service hooks fill
//! without waiting (they run under the hub's lock), drained by the bus's publisher
//! task. Commands come back through the bus's subscriber task, which applies them
//! with a [`GatewayHandle`](crate::GatewayHandle). [`BusStatus`] says whether both
//! tasks are connected and counts what went through and what was lost.
//!
//! Nothing is stored: an event that cannot reach Redis waits in the outbox, a
//! batch whose publication failed is sent once more on a new connection (so a
//! handler may, rarely, see an event twice), and what still cannot go is counted
//! and logged as lost.

#[cfg(feature = "redis")]
pub(crate) mod redis;

use chinwag_core::chat::ConnId;
use chinwag_core::gateway::Publish;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::envelope::{self, ReplyTo};

/// Events that may wait in the outbox while the bus is slow or down; beyond it,
/// new events are dropped (and counted). At a few hundred bytes an event, this
/// bounds the outbox to a few MiB.
pub const OUTBOX_CAPACITY: usize = 16_384;

/// Above this many queued events, while the bus is connected, connections wait
/// before reading their next message (backpressure) instead of having their events
/// dropped. Half the capacity, so that the messages already being read still fit.
pub const OUTBOX_HIGH_WATER: usize = OUTBOX_CAPACITY / 2;

/// An event on its way to the bus: the channel (its topic) and the JSON envelope.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Outgoing {
    pub(crate) channel: String,
    pub(crate) payload: Vec<u8>,
}

/// What the bus tasks share with the gateway: connection flags and counters.
#[derive(Default)]
pub(crate) struct BusState {
    pub(crate) publisher_connected: AtomicBool,
    pub(crate) subscribed: AtomicBool,
    pub(crate) published: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Notified when the outbox was drained or the publisher's connection changed:
    /// wakes the connections waiting in [`Outbox::ready`].
    pub(crate) room: event_listener::Event,
}

impl BusState {
    /// Records whether the publisher is connected, and wakes waiting connections.
    #[cfg(feature = "redis")]
    pub(crate) fn set_publisher_connected(&self, connected: bool) {
        self.publisher_connected.store(connected, Ordering::Release);
        self.room.notify(usize::MAX);
    }
}

impl BusState {
    pub(crate) fn snapshot(&self, node: &str, queued: usize) -> BusStatus {
        BusStatus {
            queued,
            node: node.to_owned(),
            connected: self.publisher_connected.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire),
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// The state of a gateway's bus between processes, for health checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusStatus {
    /// This node's id: its reply channel is `chinwag:reply:{node}`.
    pub node: String,
    /// Whether events can leave and commands can arrive right now (both the
    /// publishing connection and the subscription are up).
    pub connected: bool,
    /// Events handed to the bus.
    pub published: u64,
    /// Events dropped because the outbox was full (the bus was down or too slow).
    pub dropped: u64,
    /// Events whose publication failed on two connections in a row, or that were
    /// still queued when the gateway stopped with Redis away.
    pub lost: u64,
    /// Commands (replies, failures, sends, broadcasts) received and carried out.
    pub applied: u64,
    /// Commands refused as malformed (each is logged with its reason).
    pub refused: u64,
    /// Events waiting in the outbox for the publisher.
    pub queued: usize,
}

/// Where a gateway's events leave for the bus. Cheap to call from service hooks:
/// it encodes the envelope and queues it without waiting.
pub(crate) struct Outbox {
    node: String,
    queue: async_channel::Sender<Outgoing>,
    state: std::sync::Arc<BusState>,
}

impl Outbox {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(node: String, queue: async_channel::Sender<Outgoing>, state: std::sync::Arc<BusState>) -> Self {
        Self { node, queue, state }
    }

    pub(crate) fn status(&self) -> BusStatus {
        self.state.snapshot(&self.node, self.queue.len())
    }

    /// Returns once the outbox has room, or at once while the bus is disconnected:
    /// then waiting could last as long as the outage and close every client on its
    /// heartbeat, so events are queued up to the capacity and then dropped.
    pub(crate) async fn ready(&self) {
        let waiting =
            || self.state.publisher_connected.load(Ordering::Acquire) && self.queue.len() >= OUTBOX_HIGH_WATER;
        while waiting() {
            let listener = self.state.room.listen();
            if !waiting() {
                return;
            }
            listener.await;
        }
    }

    /// Queues `event` about `conn`, with the address its answer comes back to.
    pub(crate) fn post(&self, conn: ConnId, event: Publish) {
        let reply_to = ReplyTo {
            node: Cow::Borrowed(&self.node),
            connection: conn.0,
            reply_type: Cow::Borrowed(event.reply_type()),
            on_connect: event.is_connect(),
        };
        let payload = envelope::event(&event.body, &reply_to);
        if self.queue.try_send(Outgoing { channel: event.topic, payload }).is_err() {
            let dropped = self.state.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The first drop and then every thousandth: a flood of identical lines
            // would hide the rest of the log while the bus is down.
            if dropped == 1 || dropped.is_multiple_of(1000) {
                tracing::warn!(dropped, "the bus's outbox is full (Redis is down?): event dropped");
            }
        }
    }
}

/// A bus to other processes, ready to start: Redis, or nothing in a build without
/// it.
#[cfg(feature = "redis")]
pub(crate) type Remote = redis::RedisBus;
/// A bus to other processes, ready to start: none in a build without Redis.
#[cfg(not(feature = "redis"))]
pub(crate) enum Remote {}

#[cfg(not(feature = "redis"))]
impl Remote {
    pub(crate) fn start<R: chinwag_driver::Runtime>(self, _handle: crate::GatewayHandle) -> Remote {
        match self {}
    }

    pub(crate) async fn stop<R: chinwag_driver::Runtime>(self, _grace: std::time::Duration) {
        match self {}
    }
}

/// The bus to Redis at `url` for a node subscribing to `send` and `broadcast`:
/// the outbox for the service, and the tasks to start.
#[cfg(feature = "redis")]
pub(crate) fn remote(
    url: &str,
    send: Option<String>,
    broadcast: Option<String>,
) -> Result<(std::sync::Arc<Outbox>, Remote), crate::ConfigError> {
    use std::sync::Arc;
    let client = ::redis::Client::open(url)
        .map_err(|e| crate::ConfigError { key: "gateway.bus".into(), problem: e.to_string() })?;
    let node = new_node_id();
    let state = Arc::new(BusState::default());
    let (queue, drain) = async_channel::bounded(OUTBOX_CAPACITY);
    let channels = redis::Channels { reply: envelope::reply_channel(&node), send, broadcast };
    let outbox = Arc::new(Outbox::new(node.clone(), queue, state.clone()));
    Ok((outbox, redis::RedisBus { client, node, channels, queue: drain, state }))
}

/// In a build without Redis, a Redis bus is refused.
#[cfg(not(feature = "redis"))]
pub(crate) fn remote(
    _url: &str,
    _send: Option<String>,
    _broadcast: Option<String>,
) -> Result<(std::sync::Arc<Outbox>, Remote), crate::ConfigError> {
    Err(crate::ConfigError {
        key: "gateway.bus".into(),
        problem: "this build has no Redis bus (chinwag-gateway's `redis` feature)".into(),
    })
}

/// A fresh random id (16 hex digits) for a node: random, so that a restarted
/// node never gets the replies meant for the connections of its previous life
/// (the gateway), or is a new node the others reap the old one of (the chat).
#[cfg(feature = "redis")]
pub fn new_node_id() -> String {
    let mut bytes = [0u8; 8];
    // Without an OS random source, the time and process id still separate nodes.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = ((nanos as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn event(topic: &str, kind: &str) -> Publish {
        Publish { topic: topic.into(), body: json!({"event": kind, "context": {"connection": 7}}) }
    }

    #[test]
    fn events_leave_with_their_reply_address_and_a_full_outbox_drops_and_counts() {
        let state = Arc::new(BusState::default());
        let (queue, drain) = async_channel::bounded(2);
        let outbox = Outbox::new("n1".into(), queue, state.clone());
        outbox.post(ConnId(7), event("socket:connection", "connect"));
        outbox.post(ConnId(7), event("socket:type_one", "message"));
        outbox.post(ConnId(7), event("socket:close", "close"));
        let first = drain.try_recv().unwrap();
        assert_eq!(first.channel, "socket:connection");
        let body: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
        assert_eq!(
            body["reply_to"],
            json!({"node": "n1", "connection": 7, "reply_type": "onconnect", "on_connect": true})
        );
        let second: serde_json::Value = serde_json::from_slice(&drain.try_recv().unwrap().payload).unwrap();
        assert_eq!(second["reply_to"]["reply_type"], "socket:type_one");
        assert!(drain.try_recv().is_err(), "the third did not fit");
        let status = outbox.status();
        assert_eq!((status.dropped, status.connected, status.node.as_str()), (1, false, "n1"));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn node_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..100).map(|_| new_node_id()).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
