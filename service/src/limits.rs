//! What a server admits: connection counts, the incoming message rate, origins; and
//! the counters that say how often each limit acted.

use chinwag_core::handshake::OriginPolicy;
use chinwag_core::limit::RateLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

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
    /// Open TCP connections from one IP address at most. Over it, a request is
    /// answered with 429 and a reason. Default 256.
    pub max_connections_per_ip: usize,
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            message_rate: Some(RateLimit::new(50.0, 100)),
            origins: OriginPolicy::same_host(),
        }
    }
}

impl Limits {
    /// No connection limits, no rate limit, every origin: for benchmarks and tests.
    pub fn unlimited() -> Self {
        Self {
            max_connections: usize::MAX,
            max_connections_per_ip: usize::MAX,
            message_rate: None,
            origins: OriginPolicy::any(),
        }
    }
}

/// How often the server's limits acted since it started, from
/// [`Handle::stats`](crate::Handle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered with 503 because the server was full.
    pub refused_server_full: u64,
    /// Requests answered with 429 because their IP address had too many connections.
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
        }
    }
}

/// Why a new connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// `max_connections`.
    ServerFull,
    /// `max_connections_per_ip`.
    PerIp,
}

/// Open connections per IP address.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    /// Counts a new connection from `ip`, `open` being the connections open before
    /// it; or says which limit it is over (and counts nothing). Every admitted
    /// connection is [`release`](Self::release)d when it ends.
    pub(crate) fn admit(&self, limits: &Limits, open: usize, ip: IpAddr) -> Result<(), Over> {
        if open >= limits.max_connections {
            return Err(Over::ServerFull);
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= limits.max_connections_per_ip {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return Err(Over::PerIp);
        }
        *count += 1;
        Ok(())
    }

    /// A connection admitted from `ip` ended.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_come_and_go() {
        let limits = Limits { max_connections_per_ip: 2, max_connections: 3, ..Limits::default() };
        let admission = Admission::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert_eq!(admission.admit(&limits, 0, a), Ok(()));
        assert_eq!(admission.admit(&limits, 1, a), Ok(()));
        assert_eq!(admission.admit(&limits, 2, a), Err(Over::PerIp));
        assert_eq!(admission.admit(&limits, 2, b), Ok(()));
        assert_eq!(admission.admit(&limits, 3, b), Err(Over::ServerFull));
        admission.release(a);
        assert_eq!(admission.count(a), 1);
        admission.release(a);
        admission.release(b);
        assert_eq!(admission.count(a), 0);
        assert_eq!(admission.count(b), 0);
        assert!(admission.per_ip.lock().unwrap().is_empty(), "no entries left behind");
    }
}
