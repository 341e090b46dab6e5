//! The metrics of a server, under the names operators expect: `chinwag_*`,
//! counters ending in `_total`, units in the names.

use chinwag_core::{CloseCode, Closed, ConnectionError, ProtocolError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why an upgrade (or a connection over a limit) was refused: the `reason` label of
/// `chinwag_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// 400, 426, 431: a malformed or unsupported request, or a bad path parameter.
    BadRequest,
    /// 401: the service did not accept the client's credentials (the gateway's JWT).
    Unauthorized,
    /// 403 from the Origin check.
    Origin,
    /// 403 from the service.
    Forbidden,
    /// 404: no WebSocket endpoint at the path.
    NotFound,
    /// 409: the service found a conflict (the chat: the name is taken).
    Conflict,
    /// 429: too many connections from the client's address.
    TooManyPerIp,
    /// 503: the server is at its connection limit.
    ServerFull,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 503: the service's `admit` did not answer within the handshake timeout.
    AdmitTimeout,
    /// 503 from the service: something it needs is unavailable (the chat on
    /// several nodes: its Redis). Not `ServerFull`, which is the connection limit:
    /// an operator must not take a lost dependency for missing capacity.
    Unavailable,
    /// The client did not complete its request within the handshake timeout.
    Timeout,
    /// Any other status the service answered with.
    Other,
}

impl RefusalReason {
    /// Every reason, so that each is exported (at 0) from the start.
    pub const ALL: [Self; 13] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Origin,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::TooManyPerIp,
        Self::ServerFull,
        Self::ShuttingDown,
        Self::AdmitTimeout,
        Self::Unavailable,
        Self::Timeout,
        Self::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Origin => "origin",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::TooManyPerIp => "too_many_per_ip",
            Self::ServerFull => "server_full",
            Self::ShuttingDown => "shutting_down",
            Self::AdmitTimeout => "admit_timeout",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// The reason for a refusal with `status` by the service or the core.
    pub fn for_status(status: u16) -> Self {
        match status {
            400 | 426 | 431 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            429 => Self::TooManyPerIp,
            503 => Self::Unavailable,
            _ => Self::Other,
        }
    }
}

/// Why a connection ended: the `reason` label of `chinwag_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// A clean close with 1000 (or no code).
    Normal,
    /// A clean close with 1001 from the client (a page closed, an app going away).
    GoingAway,
    /// The client broke the protocol (1002).
    ProtocolError,
    /// The client sent text that is not UTF-8 (1007).
    InvalidUtf8,
    /// The client sent a message over the size limit (1009).
    TooBig,
    /// The client read too slowly: its outgoing backlog went over the bound (1008).
    SlowConsumer,
    /// The client kept sending over the message rate after its warning (1008).
    Flood,
    /// The client stopped answering keepalive pings.
    PingTimeout,
    /// The connection was lost without a close handshake (a reset, a vanished peer,
    /// or no answer to our close frame).
    TransportLost,
    /// The server was shutting down (1001 from the server).
    Shutdown,
    /// The service closed it (another code from the server).
    ClosedByServer,
    /// A clean close with any other code from the client.
    Other,
}

impl DisconnectReason {
    /// Every reason, so that each is exported (at 0) from the start.
    pub const ALL: [Self; 12] = [
        Self::Normal,
        Self::GoingAway,
        Self::ProtocolError,
        Self::InvalidUtf8,
        Self::TooBig,
        Self::SlowConsumer,
        Self::Flood,
        Self::PingTimeout,
        Self::TransportLost,
        Self::Shutdown,
        Self::ClosedByServer,
        Self::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "going_away",
            Self::ProtocolError => "protocol_error",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::TooBig => "too_big",
            Self::SlowConsumer => "slow_consumer",
            Self::Flood => "flood",
            Self::PingTimeout => "ping_timeout",
            Self::TransportLost => "transport_lost",
            Self::Shutdown => "shutdown",
            Self::ClosedByServer => "closed_by_server",
            Self::Other => "other",
        }
    }

    /// Why a connection that ended as `closed` did; `flooded`: the server closed it
    /// for flooding; `shutting_down`: the server was shutting down.
    pub fn of(closed: &Closed, flooded: bool, shutting_down: bool) -> Self {
        if flooded {
            return Self::Flood;
        }
        let by_server = closed.initiator == chinwag_core::Initiator::Local;
        match closed.error {
            Some(ConnectionError::Protocol(ProtocolError::InvalidUtf8)) => Self::InvalidUtf8,
            Some(ConnectionError::Protocol(ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge)) => {
                Self::TooBig
            }
            Some(ConnectionError::Protocol(_)) => Self::ProtocolError,
            Some(ConnectionError::SlowConsumer) => Self::SlowConsumer,
            Some(ConnectionError::KeepaliveTimeout) => Self::PingTimeout,
            Some(ConnectionError::TransportClosed | ConnectionError::CloseTimeout) if !(by_server && shutting_down) => {
                Self::TransportLost
            }
            _ if by_server && shutting_down => Self::Shutdown,
            _ if by_server => Self::ClosedByServer,
            _ => match closed.code {
                CloseCode::NORMAL | CloseCode::NO_STATUS => Self::Normal,
                CloseCode::GOING_AWAY => Self::GoingAway,
                _ => Self::Other,
            },
        }
    }
}

type Reasons = Family<[(&'static str, &'static str); 1], Counter>;

/// The metrics every service has, as handles (cheap to clone: each is shared).
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    pub(crate) connections: Gauge,
    pub(crate) connections_opened: Counter,
    pub(crate) connections_compressed: Counter,
    pub(crate) refused: Reasons,
    pub(crate) messages_received: Counter,
    pub(crate) received_bytes: Counter,
    pub(crate) messages_sent: Counter,
    pub(crate) sent_bytes: Counter,
    pub(crate) disconnects: Reasons,
    pub(crate) broadcast_seconds: Histogram,
    pub(crate) draining: Gauge,
    pub(crate) hook_panics: Reasons,
}

impl ServerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            connections_compressed: Counter::default(),
            refused: Reasons::default(),
            messages_received: Counter::default(),
            received_bytes: Counter::default(),
            messages_sent: Counter::default(),
            sent_bytes: Counter::default(),
            disconnects: Reasons::default(),
            // 50 µs to about 13 s: one member to hundreds of thousands.
            broadcast_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
            draining: Gauge::default(),
            hook_panics: Reasons::default(),
        };
        for reason in RefusalReason::ALL {
            let _ = metrics.refused.get_or_create(&[("reason", reason.label())]);
        }
        for reason in DisconnectReason::ALL {
            let _ = metrics.disconnects.get_or_create(&[("reason", reason.label())]);
        }
        for hook in crate::hook_panic::HOOKS {
            let _ = metrics.hook_panics.get_or_create(&[("hook", hook)]);
        }
        let r = registry;
        r.register("chinwag_connections", "Open WebSocket connections", metrics.connections.clone());
        r.register(
            "chinwag_connections_opened",
            "WebSocket connections opened (upgrades accepted)",
            metrics.connections_opened.clone(),
        );
        r.register(
            "chinwag_connections_compressed",
            "WebSocket connections opened with permessage-deflate (RFC 7692) negotiated",
            metrics.connections_compressed.clone(),
        );
        r.register(
            "chinwag_handshakes_refused",
            "Upgrade requests and connections refused, by reason",
            metrics.refused.clone(),
        );
        r.register(
            "chinwag_messages_received",
            "Messages received from clients (text and binary)",
            metrics.messages_received.clone(),
        );
        r.register("chinwag_received_bytes", "Payload bytes of the messages received", metrics.received_bytes.clone());
        r.register(
            "chinwag_messages_sent",
            "Messages queued for clients, one per recipient",
            metrics.messages_sent.clone(),
        );
        r.register(
            "chinwag_sent_bytes",
            "Bytes of the frames queued for clients, one copy per recipient",
            metrics.sent_bytes.clone(),
        );
        r.register("chinwag_disconnects", "Connections ended, by reason", metrics.disconnects.clone());
        r.register(
            "chinwag_broadcast_delivery_seconds",
            "Time to hand a message for several connections to every one of them (queued for writing)",
            metrics.broadcast_seconds.clone(),
        );
        r.register("chinwag_draining", "1 while the server drains before shutting down", metrics.draining.clone());
        r.register(
            "chinwag_hook_panics",
            "Calls of the service's hooks that panicked (each answered with a 500 or a 1011 close), by hook",
            metrics.hook_panics.clone(),
        );
        metrics
    }

    /// Counts a panic of hook `hook`.
    pub(crate) fn hook_panicked(&self, hook: &'static str) {
        self.hook_panics.get_or_create(&[("hook", hook)]).inc();
    }

    /// Counts a refused upgrade or connection.
    pub fn refused(&self, reason: RefusalReason) {
        self.refused.get_or_create(&[("reason", reason.label())]).inc();
    }

    /// Counts an ended connection.
    pub fn disconnected(&self, reason: DisconnectReason) {
        self.disconnects.get_or_create(&[("reason", reason.label())]).inc();
    }
}

/// A server's metrics registry: the [`ServerMetrics`], the process's own, and
/// whatever the service registers.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) server: ServerMetrics,
}

impl Metrics {
    /// A registry with the server and process metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let server = ServerMetrics::register(&mut registry);
        registry.register_collector(Box::new(super::process::ProcessCollector));
        Self { registry, server }
    }

    /// The registry, to register more metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The server metrics' handles.
    pub fn server(&self) -> &ServerMetrics {
        &self.server
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chinwag_core::{CloseFrame, Initiator};

    fn closed(code: u16, initiator: Initiator, sent: Option<u16>, error: Option<ConnectionError>) -> Closed {
        Closed {
            code: CloseCode(code),
            reason: String::new(),
            initiator,
            sent: sent.map(|c| CloseFrame { code: CloseCode(c), reason: String::new() }),
            error,
        }
    }

    #[test]
    fn disconnect_reasons() {
        use DisconnectReason::*;
        use Initiator::*;
        let cases = [
            (closed(1000, Peer, Some(1000), None), false, false, Normal),
            (closed(1005, Peer, Some(1005), None), false, false, Normal),
            (closed(1001, Peer, Some(1001), None), false, false, GoingAway),
            (closed(4000, Peer, Some(4000), None), false, false, Other),
            (closed(1001, Local, Some(1001), None), false, true, Shutdown),
            (closed(1006, Local, Some(1001), Some(ConnectionError::CloseTimeout)), false, true, Shutdown),
            (closed(4002, Local, Some(4002), None), false, false, ClosedByServer),
            (closed(1008, Local, Some(1008), None), true, false, Flood),
            (closed(1006, Local, Some(1008), Some(ConnectionError::SlowConsumer)), false, false, SlowConsumer),
            (closed(1006, Local, None, Some(ConnectionError::KeepaliveTimeout)), false, false, PingTimeout),
            (closed(1006, Peer, None, Some(ConnectionError::TransportClosed)), false, true, TransportLost),
            (closed(1006, Local, Some(4002), Some(ConnectionError::CloseTimeout)), false, false, TransportLost),
            (
                closed(
                    1006,
                    Local,
                    Some(1007),
                    Some(ConnectionError::Protocol(chinwag_core::ProtocolError::InvalidUtf8)),
                ),
                false,
                false,
                InvalidUtf8,
            ),
            (
                closed(
                    1006,
                    Local,
                    Some(1009),
                    Some(ConnectionError::Protocol(chinwag_core::ProtocolError::MessageTooLarge)),
                ),
                false,
                false,
                TooBig,
            ),
            (
                closed(
                    1006,
                    Local,
                    Some(1002),
                    Some(ConnectionError::Protocol(chinwag_core::ProtocolError::ReservedBits)),
                ),
                false,
                false,
                ProtocolError,
            ),
        ];
        for (closed, flooded, shutting_down, reason) in cases {
            assert_eq!(DisconnectReason::of(&closed, flooded, shutting_down), reason, "{closed:?}");
        }
    }

    /// A refusal is counted under what caused it: the connection limit and a
    /// slow admit have reasons of their own, and a 503 the service answers (a
    /// lost dependency) is not the connection limit.
    #[test]
    fn a_services_503_is_not_counted_as_the_connection_limit() {
        assert_eq!(RefusalReason::for_status(503), RefusalReason::Unavailable);
        assert_eq!(RefusalReason::for_status(429), RefusalReason::TooManyPerIp);
        let labels: std::collections::HashSet<_> = RefusalReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), RefusalReason::ALL.len(), "two reasons share a label");
        for label in ["server_full", "admit_timeout", "unavailable"] {
            assert!(labels.contains(label), "{label}");
        }
    }

    #[test]
    fn names_follow_the_conventions() {
        let metrics = Metrics::new();
        metrics.server.refused(RefusalReason::Conflict);
        let text = metrics.encode();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("chinwag_") || name.starts_with("process_"), "{name}");
        }
        assert!(text.contains("# TYPE chinwag_handshakes_refused_total counter"), "{text}");
        assert!(text.contains("chinwag_handshakes_refused_total{reason=\"conflict\"} 1\n"), "{text}");
        assert!(
            text.contains("chinwag_disconnects_total{reason=\"slow_consumer\"} 0\n"),
            "every reason from the start"
        );
        assert!(text.contains("chinwag_broadcast_delivery_seconds_bucket{le=\"5e-05\"} 0"), "{text}");
    }
}
