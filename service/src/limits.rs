//! What a server admits: connection counts, the incoming message rate, origins; and
//! the counters that say how often each limit acted.

use chinwag_core::handshake::{OriginPolicy, TrustedProxies};
use chinwag_core::limit::RateLimit;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server-wide limits of a [`Server`](crate::Server), beyond the per-connection
/// sizes and timers of its [`Config`](chinwag_core::Config).
///
/// The defaults suit a public server on one machine; `docs/limits.md` lists every
/// limit with its default and what a client sees when it hits it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open TCP connections (WebSocket or plain HTTP) at most. Over it, a request
    /// is answered with 503 and a reason. Default 10,000.
    pub max_connections: usize,
    /// Open TCP connections from one client address at most (`None`: no limit).
    /// Over it, a request is answered with 429 and a reason. Default: no limit,
    /// because every client behind a reverse proxy, an ingress or a NAT shares one
    /// address: behind a proxy, a limit per address without
    /// [`trusted_proxies`](Self::trusted_proxies) limits the proxy, that is all its
    /// clients together.
    ///
    /// The client address is the TCP peer's, or, for a peer in `trusted_proxies`,
    /// the one its forwarding header names. A peer that is the client is counted
    /// when it connects; a trusted proxy's client once its request head is read.
    pub max_connections_per_ip: Option<usize>,
    /// The incoming message rate of each connection (`None`: no limit). Over it,
    /// messages are dropped and [`Service::on_rate_limited`] warns the peer; a peer
    /// that keeps flooding is closed with 1008. Default 50 per second, bursts of 100.
    ///
    /// [`Service::on_rate_limited`]: crate::Service::on_rate_limited
    pub message_rate: Option<RateLimit>,
    /// Which web pages may connect (cross-site WebSocket hijacking). Refused
    /// requests get 403. Default: the server's own host, and clients that send no
    /// `Origin`.
    pub origins: OriginPolicy,
    /// The reverse proxies whose `Forwarded` or `X-Forwarded-For` header names the
    /// client (see [`chinwag_core::handshake::forwarded`] for exactly what is read).
    /// The client address counts against `max_connections_per_ip`, appears in the
    /// logs, and is [`Context::client_address`](crate::Context::client_address).
    /// Default: none, and those headers are never read (a client could write any
    /// address in them).
    pub trusted_proxies: TrustedProxies,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: None,
            message_rate: Some(RateLimit::new(50.0, 100)),
            origins: OriginPolicy::same_host(),
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

impl Limits {
    /// No connection limits, no rate limit, every origin, no trusted proxy: for
    /// benchmarks and tests.
    pub fn unlimited() -> Self {
        Self {
            max_connections: usize::MAX,
            max_connections_per_ip: None,
            message_rate: None,
            origins: OriginPolicy::any(),
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

/// How often the server's limits acted since it started, from
/// [`Handle::stats`](crate::Handle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered with 503 because the server was full.
    pub refused_server_full: u64,
    /// Requests answered with 429 because their client address had too many
    /// connections.
    pub refused_per_ip: u64,
    /// Upgrade requests answered with 403 by the Origin check.
    pub refused_origin: u64,
    /// Connections closed with 1008 for reading too slowly (outgoing backlog over
    /// the limit), counted when the close frame is queued.
    pub closed_slow: u64,
    /// Connections closed with 1008 for flooding (message rate).
    pub closed_flooding: u64,
    /// Incoming messages dropped for being over the rate (the peer was warned), or
    /// from a peer being closed for flooding.
    pub messages_dropped: u64,
    /// Calls of the service's hooks that panicked (each answered with a 500 or a
    /// 1011 close of its connection).
    pub hook_panics: u64,
}

/// The counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) refused_server_full: AtomicU64,
    pub(crate) refused_per_ip: AtomicU64,
    pub(crate) refused_origin: AtomicU64,
    pub(crate) closed_slow: AtomicU64,
    pub(crate) closed_flooding: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) hook_panics: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            refused_server_full: get(&self.refused_server_full),
            refused_per_ip: get(&self.refused_per_ip),
            refused_origin: get(&self.refused_origin),
            closed_slow: get(&self.closed_slow),
            closed_flooding: get(&self.closed_flooding),
            messages_dropped: get(&self.messages_dropped),
            hook_panics: get(&self.hook_panics),
        }
    }
}
