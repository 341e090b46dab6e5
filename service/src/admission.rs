//! Who is let in: the server-wide connection limit, checked at accept, and the
//! per-client limit, checked where the client's address is first known.
//!
//! A peer that is not a trusted proxy is the client, so its address is known at
//! accept and it is counted there: its half-open connections count from their
//! first moment, and one address cannot hold more places than its limit while it
//! dawdles over its requests. A trusted proxy's client is only known once the
//! request head is read ([`chinwag_core::handshake::forwarded`]), so its
//! connections are counted then. Either way the place is a [`ClientSlot`], held by
//! the connection's task and given back when it is dropped: exactly once, however
//! the connection ends.

use chinwag_core::handshake::forwarded::{AddressSource, ClientAddress};
use chinwag_core::http::StatusCode;
use chinwag_core::{Rejection, Request};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use crate::Limits;
use crate::limits::Counters;

/// Why a new connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// `max_connections`.
    ServerFull,
    /// `max_connections_per_ip`.
    PerIp,
}

impl Over {
    /// The counter of this refusal in `counters`.
    pub(crate) fn counter(self, counters: &Counters) -> &AtomicU64 {
        match self {
            Over::ServerFull => &counters.refused_server_full,
            Over::PerIp => &counters.refused_per_ip,
        }
    }

    /// The answer a refused client gets.
    pub(crate) fn rejection(self) -> Rejection {
        match self {
            Over::ServerFull => Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is at its connection limit; try again later",
            ),
            Over::PerIp => Rejection::new(StatusCode::TOO_MANY_REQUESTS, "too many connections from your address"),
        }
    }
}

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Open connections per client address.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    per_ip: PerIp,
}

/// A connection let in at accept: its TCP peer, and its place under the per-IP
/// limit once it has one. The connection's task holds it to the end.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The TCP peer's address (IPv4-mapped IPv6 addresses as IPv4).
    pub(crate) peer: IpAddr,
    slot: Option<ClientSlot>,
}

impl Admission {
    /// At accept, `open` connections being open before this one from `peer`: the
    /// server-wide limit; and the per-IP limit if `peer` is the client (not a
    /// trusted proxy).
    pub(crate) fn admit_peer(&self, limits: &Limits, open: usize, peer: IpAddr) -> Result<Accepted, Over> {
        let peer = peer.to_canonical();
        if open >= limits.max_connections {
            return Err(Over::ServerFull);
        }
        let slot = if limits.trusted_proxies.contains(peer) { None } else { self.admit_client(limits, peer)? };
        Ok(Accepted { peer, slot })
    }

    /// Once the request head of `accepted` is read: its client address; and, for a
    /// connection from a trusted proxy, that client counted under the per-IP limit,
    /// or refused (with the client address, to log).
    pub(crate) fn admit_request(
        &self,
        limits: &Limits,
        accepted: &mut Accepted,
        request: &Request,
    ) -> Result<IpAddr, (Over, IpAddr)> {
        let client = client_address(limits, request, accepted.peer);
        if limits.trusted_proxies.contains(accepted.peer) {
            accepted.slot = self.admit_client(limits, client).map_err(|over| (over, client))?;
        }
        Ok(client)
    }

    /// Counts a connection from client `ip` under the per-IP limit, or says it is
    /// over it (and counts nothing). `Ok(None)` when there is no per-IP limit: then
    /// nothing is counted at all, and no lock is taken.
    pub(crate) fn admit_client(&self, limits: &Limits, ip: IpAddr) -> Result<Option<ClientSlot>, Over> {
        let Some(max) = limits.max_connections_per_ip else { return Ok(None) };
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return Err(Over::PerIp);
        }
        *count += 1;
        Ok(Some(ClientSlot { per_ip: self.per_ip.clone(), ip }))
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

/// A connection's place under the per-IP limit, given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// The client address of `request`, received from `peer`, under `limits`'
/// trusted proxies. A trusted proxy's header that could not be used is logged
/// (at debug: a client can cause it, so it must not flood the log).
fn client_address(limits: &Limits, request: &Request, peer: IpAddr) -> IpAddr {
    let ClientAddress { ip, source } = limits.trusted_proxies.client_address(request, peer);
    if let AddressSource::Fallback(header, problem) = source {
        tracing::debug!(%peer, %header, %problem, "a trusted proxy's forwarding header is unusable: the proxy is taken as the client");
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;
    use chinwag_core::handshake::TrustedProxies;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_ip_counts_come_and_go() {
        let limits = Limits { max_connections_per_ip: Some(2), max_connections: 3, ..Limits::default() };
        let admission = Admission::default();
        let (a, b) = (ip("127.0.0.1"), ip("127.0.0.2"));
        let a1 = admission.admit_peer(&limits, 0, a).unwrap();
        let a2 = admission.admit_peer(&limits, 1, a).unwrap();
        assert!(a1.slot.is_some() && a2.slot.is_some());
        assert_eq!(admission.admit_peer(&limits, 2, a).unwrap_err(), Over::PerIp);
        let b1 = admission.admit_peer(&limits, 2, b).unwrap();
        assert_eq!(admission.admit_peer(&limits, 3, b).unwrap_err(), Over::ServerFull);
        drop(a1);
        assert_eq!(admission.count(a), 1);
        drop((a2, b1));
        assert_eq!(admission.count(a), 0);
        assert_eq!(admission.count(b), 0);
        assert!(admission.per_ip.lock().unwrap().is_empty(), "no entries left behind");
    }

    #[test]
    fn trusted_proxies_are_counted_by_their_clients() {
        let limits = Limits {
            max_connections_per_ip: Some(1),
            trusted_proxies: TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]),
            ..Limits::default()
        };
        let admission = Admission::default();
        // A request as the core reads it off the wire.
        let request = |xff: &str| {
            let now = std::time::Instant::now();
            let mut conn = chinwag_core::Connection::server(chinwag_core::Config::default(), now);
            conn.receive(now, format!("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\n\r\n").as_bytes());
            match conn.poll_event(now) {
                Some(chinwag_core::Event::HttpRequest(request)) => *request,
                other => panic!("{other:?}"),
            }
        };
        // The proxy is not counted at accept, however many connections it brings.
        let mut proxied: Vec<Accepted> =
            (0..5).map(|open| admission.admit_peer(&limits, open, ip("10.0.0.1")).unwrap()).collect();
        assert!(proxied.iter().all(|a| a.slot.is_none()));
        assert_eq!(admission.count(ip("10.0.0.1")), 0);
        // Its clients are, once known; a client of its own is the proxy.
        let mut next = || proxied.pop().unwrap();
        let mut first = next();
        assert_eq!(admission.admit_request(&limits, &mut first, &request("203.0.113.7")), Ok(ip("203.0.113.7")));
        let refused = admission.admit_request(&limits, &mut next(), &request("198.51.100.1, 203.0.113.7"));
        assert_eq!(refused, Err((Over::PerIp, ip("203.0.113.7"))));
        let mut other = next();
        assert_eq!(admission.admit_request(&limits, &mut other, &request("203.0.113.8")), Ok(ip("203.0.113.8")));
        let mut unusable = next();
        assert_eq!(admission.admit_request(&limits, &mut unusable, &request("unknown")), Ok(ip("10.0.0.1")));
        assert_eq!(admission.count(ip("10.0.0.1")), 1);
        // A peer that is not trusted is its own client, whatever it sends.
        let mut direct = admission.admit_peer(&limits, 0, ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(direct.peer, ip("192.0.2.1"));
        assert_eq!(admission.admit_request(&limits, &mut direct, &request("203.0.113.9")), Ok(ip("192.0.2.1")));
        assert_eq!(admission.count(ip("192.0.2.1")), 1);
        assert_eq!(admission.count(ip("203.0.113.9")), 0);
        drop((first, other, unusable, direct));
        assert!(admission.per_ip.lock().unwrap().is_empty(), "no entries left behind");
    }

    #[test]
    fn no_per_ip_limit_counts_nothing() {
        let admission = Admission::default();
        let slots: Vec<_> =
            (0..1000).map(|open| admission.admit_peer(&Limits::default(), open, ip("127.0.0.1")).unwrap()).collect();
        assert!(slots.iter().all(|a| a.slot.is_none()));
        assert!(admission.per_ip.lock().unwrap().is_empty());
        assert_eq!(admission.admit_peer(&Limits::default(), 10_000, ip("127.0.0.1")).unwrap_err(), Over::ServerFull);
    }
}
