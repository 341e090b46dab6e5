//! chinwag-core's client address behind trusted proxies
//! (`handshake::forwarded`): arbitrary `Forwarded` and `X-Forwarded-For` lines,
//! from a peer and with a trusted set chosen by the first byte. Checks that
//! nothing panics and that the answer is deterministic; that an untrusted peer
//! is always its own client, whatever it sends; that an address other than the
//! peer comes from the header; and the rules a proxy in front relies on: lines
//! a client adds in front never change an address read from the header, another
//! trusted proxy appending its client's address (a trusted one) changes nothing,
//! and an untrusted address appended last is the answer.
#![no_main]

use chinwag_core::handshake::forwarded::{
    AddressSource, ClientAddress, TrustedProxies, X_FORWARDED_FOR, client_address_from_headers,
};
use chinwag_core::http::header::FORWARDED;
use chinwag_core::http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Ranges, chosen by the first byte's six low bits.
const RANGES: [&str; 6] = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "::1", "fd00::/8", "0.0.0.0/0"];
/// Peers, chosen by its two high bits.
const PEERS: [&str; 4] = ["10.0.0.1", "192.0.2.1", "::ffff:10.0.0.2", "2001:db8::1"];
/// Not in any range but 0.0.0.0/0.
const OUTSIDER: &str = "198.51.100.7";

fn resolve(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> ClientAddress {
    client_address_from_headers(headers, peer, |ip| trusted.contains(ip))
}

/// `headers` with `line` before (or after) its lines of `name`.
fn with_line(headers: &HeaderMap, name: &HeaderName, line: &[u8], first: bool) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(line).ok()?;
    let mut out = HeaderMap::new();
    if first {
        out.append(name.clone(), value.clone());
    }
    for (n, v) in headers {
        out.append(n.clone(), v.clone());
    }
    if !first {
        out.append(name.clone(), value);
    }
    Some(out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else { return };
    let trusted: TrustedProxies =
        RANGES.iter().enumerate().filter(|(i, _)| choice >> i & 1 == 1).map(|(_, r)| r.parse().unwrap()).collect();
    let peer: IpAddr = PEERS[usize::from(choice >> 6)].parse().unwrap();
    // Lines: the first byte picks the header (even: Forwarded), the rest is its value.
    let mut headers = HeaderMap::new();
    let mut prefix: &[u8] = &[];
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        let Some((&kind, value)) = line.split_first() else { continue };
        if i == 0 && kind == b'!' {
            prefix = value; // a line a client adds in front, below
            continue;
        }
        let name = if kind % 2 == 0 { FORWARDED } else { X_FORWARDED_FOR };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }

    let got = resolve(&headers, peer, &trusted);
    assert_eq!(got, resolve(&headers, peer, &trusted), "deterministic");
    let canonical = peer.to_canonical();
    if !trusted.contains(peer) {
        assert_eq!(got, ClientAddress { ip: canonical, source: AddressSource::Peer }, "an untrusted peer: {headers:?}");
        return;
    }
    if got.ip != canonical {
        assert!(matches!(got.source, AddressSource::Header(_)), "{got:?} from {headers:?}");
    }
    let Some(name) = [FORWARDED, X_FORWARDED_FOR].into_iter().find(|n| headers.contains_key(n)) else {
        assert_eq!(got, ClientAddress { ip: canonical, source: AddressSource::Peer }, "no header: the peer");
        return;
    };
    let decided = matches!(got.source, AddressSource::Header(_)) && !trusted.contains(got.ip);
    if decided {
        // Whatever a client writes in front of what the proxies appended.
        if let Some(prefixed) = with_line(&headers, &name, prefix, true) {
            assert_eq!(resolve(&prefixed, peer, &trusted), got, "prefixed {prefix:?} to {headers:?}");
        }
        // Another trusted proxy appending its (trusted) client's address.
        let hop = if name == FORWARDED { format!("for=\"{}\"", peer_spelling(peer)) } else { peer.to_string() };
        let appended = with_line(&headers, &name, hop.as_bytes(), false).unwrap();
        assert_eq!(resolve(&appended, peer, &trusted), got, "appended {hop} to {headers:?}");
    }
    // An untrusted address appended last is the client.
    let outsider: IpAddr = OUTSIDER.parse().unwrap();
    if !trusted.contains(outsider) {
        let hop = if name == FORWARDED { format!("for={OUTSIDER}") } else { OUTSIDER.to_owned() };
        let appended = with_line(&headers, &name, hop.as_bytes(), false).unwrap();
        assert_eq!(resolve(&appended, peer, &trusted).ip, outsider, "appended {hop} to {headers:?}");
    }
});

/// How a proxy writes `ip` as a node: IPv6 in brackets.
fn peer_spelling(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
