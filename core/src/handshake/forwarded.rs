//! The client's address behind reverse proxies: the `Forwarded` (RFC 7239) and
//! `X-Forwarded-For` headers, believed only from proxies the server trusts.
//!
//! Behind a proxy, a load balancer or an ingress, the TCP peer of every connection
//! is the proxy; the client's address is in a header the proxy adds. Such a header
//! is a chain: each proxy appends the address it received the request from. A
//! client can write anything it likes to the left of the chain, but it cannot
//! change what the proxies append after it. So the chain is read from the right:
//! trusted proxies are skipped, and the first address that is not a trusted proxy
//! is the one a trusted proxy saw connecting. Nothing to the left of it is read,
//! so nothing a client adds can change the result; and a peer that is not a
//! trusted proxy is the client, whatever headers it sends.
//!
//! The rules, in full ([`client_address`]):
//!
//! - The TCP peer is not in the trusted set: it is the client. Its headers are not
//!   read.
//! - The peer is trusted: the chain is `Forwarded` (its `for=` parameters) if the
//!   request has that header, else `X-Forwarded-For`, else there is none and the
//!   peer is the client. Several lines of one header form one chain, in order.
//! - Walking from the right: a trusted address is skipped; the first address that
//!   is not trusted is the client. If every address is trusted, the left-most
//!   one is (the hop closest to the client that the chain names).
//! - The walk falls back to the TCP peer when it reaches, before deciding, an
//!   element that is malformed, or a node that is not an address (`unknown`, an
//!   obfuscated identifier such as `_hidden`, a `Forwarded` element without
//!   `for=`): a trusted proxy then did not say who its client was, and what lies
//!   further left was written by someone it did not vouch for. An empty header
//!   also falls back to the peer.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as a dual-stack socket reports
//! IPv4 peers) are treated as the IPv4 addresses they carry, in the chain, for the
//! peer and in the result, so that one client is always one address.

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::Request;

/// A range of IP addresses in CIDR notation: `10.0.0.0/8`, `fd00::/8`, or a single
/// address (`192.0.2.7`, `::1`).
///
/// An IPv4 range also holds the IPv4-mapped IPv6 forms of its addresses, and an
/// IPv6 range written in IPv4-mapped form (`::ffff:10.0.0.0/104`) is the IPv4
/// range it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR range refused, with the reason (shown as is by the `chinwag` binary and
/// the gateway's configuration check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCidr(pub String);

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidCidr {}

impl Cidr {
    /// The range of the addresses whose first `prefix` bits are those of `network`.
    /// Refused if the prefix is longer than the address, or if `network` has bits
    /// set after the prefix (`10.0.0.1/8`): such a range is usually a typo, and in
    /// a list of trusted proxies a typo is a hole.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, InvalidCidr> {
        let bits = if network.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            let family = if bits == 32 { 4 } else { 6 };
            return Err(InvalidCidr(format!(
                "{network}/{prefix}: the prefix of an IPv{family} range is at most {bits} bits"
            )));
        }
        let masked = mask(network, prefix);
        if masked != network {
            return Err(InvalidCidr(format!(
                "{network}/{prefix} has bits set after its prefix: did you mean {masked}/{prefix}?"
            )));
        }
        // The mapped form of an IPv4 range is that range, so that it matches the
        // canonical (IPv4) addresses it is compared with.
        if let IpAddr::V6(v6) = network
            && prefix >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Ok(Self { network: IpAddr::V4(v4), prefix: prefix - 96 });
        }
        Ok(Self { network, prefix })
    }

    /// The range of one address.
    pub fn host(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self { network: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// The range's first address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits every address of the range shares with
    /// [`network`](Self::network).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range (in either of its forms, when it is an IPv4
    /// address or an IPv4-mapped IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => mask(ip.to_canonical(), self.prefix) == self.network,
            (IpAddr::V6(_), IpAddr::V6(v6)) => mask(IpAddr::V6(v6), self.prefix) == self.network,
            // An IPv6 range such as ::/0 or ::ffff:0:0/96 holds the mapped forms.
            (IpAddr::V6(_), IpAddr::V4(v4)) => mask(IpAddr::V6(v4.to_ipv6_mapped()), self.prefix) == self.network,
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & keep))
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    /// `ADDRESS/PREFIX` or `ADDRESS`, IPv4 or IPv6 (without brackets or zone).
    fn from_str(text: &str) -> Result<Self, InvalidCidr> {
        let text = text.trim();
        let not_a_range =
            || InvalidCidr(format!("{text:?} is not an IP address or a CIDR range like 10.0.0.0/8 or fd00::/8"));
        match text.split_once('/') {
            None => text.parse().map(Self::host).map_err(|_| not_a_range()),
            Some((address, prefix)) => {
                let address: IpAddr = address.parse().map_err(|_| not_a_range())?;
                if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(not_a_range());
                }
                let prefix: u8 = prefix.parse().map_err(|_| not_a_range())?;
                Self::new(address, prefix)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose forwarding headers a server believes: a set of [`Cidr`]
/// ranges. The default is empty: no proxy is trusted, every TCP peer is the
/// client, and forwarding headers are never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<Cidr>,
}

impl TrustedProxies {
    /// No trusted proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// The proxies in `ranges`.
    pub fn new(ranges: impl IntoIterator<Item = Cidr>) -> Self {
        Self { ranges: ranges.into_iter().collect() }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The trusted ranges.
    pub fn ranges(&self) -> &[Cidr] {
        &self.ranges
    }

    /// The client address of `request`, received from `peer` ([`client_address`]
    /// with this set).
    pub fn client_address(&self, request: &Request, peer: IpAddr) -> ClientAddress {
        client_address(request, peer, |ip| self.contains(ip))
    }
}

impl FromIterator<Cidr> for TrustedProxies {
    fn from_iter<I: IntoIterator<Item = Cidr>>(ranges: I) -> Self {
        Self::new(ranges)
    }
}

/// A forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardingHeader {
    /// `Forwarded` (RFC 7239), its `for=` parameters.
    Forwarded,
    /// `X-Forwarded-For`, a list of addresses.
    XForwardedFor,
}

impl fmt::Display for ForwardingHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Forwarded => "Forwarded",
            Self::XForwardedFor => "X-Forwarded-For",
        })
    }
}

/// Why a trusted proxy's header could not give the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// An element the walk reached is not valid (or the header has no element).
    Malformed,
    /// The walk reached a node that is not an address: `unknown`, an obfuscated
    /// identifier (`_hidden`), or a `Forwarded` element without `for=`.
    NotAnAddress,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::NotAnAddress => "names a hop that is not an address",
        })
    }
}

/// Where a client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The TCP peer: not a trusted proxy, or a trusted proxy that sent no
    /// forwarding header.
    Peer,
    /// The header of a trusted proxy.
    Header(ForwardingHeader),
    /// The TCP peer, a trusted proxy whose header could not be used.
    Fallback(ForwardingHeader, Unusable),
}

/// The address of a connection's client, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The address (an IPv4-mapped IPv6 address as the IPv4 address it carries).
    pub ip: IpAddr,
    /// Where it came from.
    pub source: AddressSource,
}

/// The `X-Forwarded-For` header (not in the `http` crate: it was never
/// standardised).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address of `request`, received over TCP from `peer`, where `trusted`
/// says which addresses are trusted proxies. See the [module's
/// documentation](self) for the rules. Never panics, whatever the headers.
pub fn client_address(request: &Request, peer: IpAddr, trusted: impl Fn(IpAddr) -> bool) -> ClientAddress {
    client_address_from_headers(request.headers(), peer, trusted)
}

/// [`client_address`] from the headers alone, for servers that parsed the request
/// themselves.
pub fn client_address_from_headers(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: impl Fn(IpAddr) -> bool,
) -> ClientAddress {
    let peer = peer.to_canonical();
    let at_peer = |source| ClientAddress { ip: peer, source };
    if !trusted(peer) {
        return at_peer(AddressSource::Peer);
    }
    let (header, name, parse): (_, _, fn(&[u8]) -> Hop) = if headers.contains_key(FORWARDED) {
        (ForwardingHeader::Forwarded, FORWARDED, forwarded_element)
    } else if headers.contains_key(X_FORWARDED_FOR) {
        (ForwardingHeader::XForwardedFor, X_FORWARDED_FOR, x_forwarded_for_element)
    } else {
        return at_peer(AddressSource::Peer);
    };
    // Right to left: the last line first, each line's last element first. Splitting
    // at every comma, quotes or not, is what keeps a client's text out: an element
    // a proxy writes never holds a comma, so whatever a client wrote (an unclosed
    // quote included) stays to the left of the proxies' elements.
    let elements = headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty());
    let mut leftmost = None;
    for element in elements {
        match parse(element) {
            Hop::Address(ip) => {
                let ip = ip.to_canonical();
                if !trusted(ip) {
                    return ClientAddress { ip, source: AddressSource::Header(header) };
                }
                leftmost = Some(ip);
            }
            Hop::NotAnAddress => return at_peer(AddressSource::Fallback(header, Unusable::NotAnAddress)),
            Hop::Malformed => return at_peer(AddressSource::Fallback(header, Unusable::Malformed)),
        }
    }
    match leftmost {
        Some(ip) => ClientAddress { ip, source: AddressSource::Header(header) },
        None => at_peer(AddressSource::Fallback(header, Unusable::Malformed)),
    }
}

/// One element of a chain, as the walk sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Address(IpAddr),
    NotAnAddress,
    Malformed,
}

/// An `X-Forwarded-For` element: a node as in `Forwarded`'s `for=` (an address,
/// with a port or not, IPv6 with or without brackets; `unknown`; `_obfuscated`),
/// unquoted.
fn x_forwarded_for_element(element: &[u8]) -> Hop {
    match std::str::from_utf8(element) {
        Ok(text) => node(text),
        Err(_) => Hop::Malformed,
    }
}

/// A `Forwarded` element: `pair *( ";" pair )`, `pair = token "=" ( token /
/// quoted-string )` (RFC 7239 §4), of which only `for` is read; it may appear at
/// most once. Whitespace around `;` is allowed, as some proxies write it.
fn forwarded_element(element: &[u8]) -> Hop {
    let mut rest = element;
    let mut found: Option<Hop> = None;
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.iter().position(|&b| b == b'=') else { return Hop::Malformed };
        let (name, after) = (&rest[..eq], &rest[eq + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Hop::Malformed;
        }
        let (value, after) = match after.first() {
            Some(b'"') => match quoted_string(&after[1..]) {
                Some((value, after)) => (value, after),
                None => return Hop::Malformed,
            },
            _ => {
                // A token; `:` and brackets as well, which RFC 7239 wants quoted but
                // proxies do not always quote.
                let end = after
                    .iter()
                    .position(|&b| !(is_tchar(b) || matches!(b, b':' | b'[' | b']')))
                    .unwrap_or(after.len());
                (after[..end].to_vec(), &after[end..])
            }
        };
        if value.is_empty() {
            return Hop::Malformed;
        }
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return Hop::Malformed; // §4: a parameter at most once per element
            }
            found = Some(match std::str::from_utf8(&value) {
                Ok(text) => node(text),
                Err(_) => Hop::Malformed,
            });
        }
        rest = after.trim_ascii_start();
        match rest.first() {
            None => break,
            Some(b';') => rest = &rest[1..],
            Some(_) => return Hop::Malformed,
        }
    }
    found.unwrap_or(Hop::NotAnAddress)
}

/// The content of a quoted-string whose opening quote was just read, with its
/// escapes undone, and what follows its closing quote; `None` if it is not closed.
fn quoted_string(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut value = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((value, &bytes[i + 1..])),
            b'\\' => {
                value.push(*bytes.get(i + 1)?);
                i += 2;
            }
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    None
}

/// RFC 9110's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A node (RFC 7239 §6): `nodename [ ":" node-port ]`, `nodename` an IPv4 address,
/// a bracketed IPv6 address, `unknown` or an obfuscated identifier; leniently, a
/// bare IPv6 address too (no port then, or it would be ambiguous).
fn node(text: &str) -> Hop {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Hop::Address(ip);
    }
    let (name, port) = if let Some(inside) = text.strip_prefix('[') {
        let Some((v6, after)) = inside.split_once(']') else { return Hop::Malformed };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Hop::Malformed,
            },
        };
        return match (v6.parse::<Ipv6Addr>(), port.is_none_or(valid_port)) {
            (Ok(v6), true) => Hop::Address(IpAddr::V6(v6)),
            _ => Hop::Malformed,
        };
    } else {
        match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        }
    };
    if !port.is_none_or(valid_port) {
        return Hop::Malformed;
    }
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return Hop::Address(IpAddr::V4(v4));
    }
    if name.eq_ignore_ascii_case("unknown") || obfuscated(name) { Hop::NotAnAddress } else { Hop::Malformed }
}

/// `1*5DIGIT` or an obfuscated port.
fn valid_port(port: &str) -> bool {
    (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())) || obfuscated(port)
}

/// `"_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`.
fn obfuscated(text: &str) -> bool {
    text.strip_prefix('_')
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        ranges.iter().map(|r| r.parse::<Cidr>().unwrap()).collect()
    }

    /// The client address of a request with these headers from `peer`, with the
    /// proxies 10.0.0.0/8 and 2001:db8:ffff::/48 trusted.
    fn resolve(peer: &str, lines: &[(&str, &str)]) -> ClientAddress {
        let set = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        client_address_from_headers(&headers(lines), ip(peer), |ip| set.contains(ip))
    }

    fn from(header: ForwardingHeader, address: &str) -> ClientAddress {
        ClientAddress { ip: ip(address), source: AddressSource::Header(header) }
    }

    fn fallback(peer: &str, header: ForwardingHeader, why: Unusable) -> ClientAddress {
        ClientAddress { ip: ip(peer), source: AddressSource::Fallback(header, why) }
    }

    use ForwardingHeader::{Forwarded as F, XForwardedFor as X};

    #[test]
    fn ranges_parse_and_contain() {
        let lan: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains(ip("10.255.0.1")));
        assert!(lan.contains(ip("::ffff:10.1.2.3")), "the mapped form of an IPv4 address");
        assert!(!lan.contains(ip("11.0.0.1")));
        assert!(!lan.contains(ip("::a00:1")), "an IPv6 address that is not mapped");
        let one: Cidr = " 192.0.2.7 ".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        assert_eq!("::1".parse::<Cidr>().unwrap(), Cidr::host(ip("::1")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, lan, "an IPv4-mapped range is the IPv4 range");
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")), "::/0 holds the mapped forms of IPv4 addresses");
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("203.0.113.9")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("::ffff:203.0.113.9")));
    }

    #[test]
    fn bad_ranges_say_why() {
        for (text, why) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("10.0.0.0/33", "at most 32 bits"),
            ("fd00::/129", "at most 128 bits"),
            ("fd00::1/8", "did you mean fd00::/8?"),
            ("10.0.0.0/", "not an IP address or a CIDR range"),
            ("10.0.0.0/+8", "not an IP address or a CIDR range"),
            ("10.0.0.0/08000", "not an IP address or a CIDR range"),
            ("localhost", "not an IP address or a CIDR range"),
            ("[::1]", "not an IP address or a CIDR range"),
            ("fe80::1%eth0", "not an IP address or a CIDR range"),
            ("", "not an IP address or a CIDR range"),
        ] {
            let error = text.parse::<Cidr>().expect_err(text).to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let forged = [("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=203.0.113.8")];
        let got = resolve("192.0.2.1", &forged);
        assert_eq!(got, ClientAddress { ip: ip("192.0.2.1"), source: AddressSource::Peer });
        let got = resolve("::ffff:192.0.2.1", &forged);
        assert_eq!(got.ip, ip("192.0.2.1"), "the peer's mapped form is its IPv4 address");
        assert_eq!(resolve("10.0.0.1", &[]), ClientAddress { ip: ip("10.0.0.1"), source: AddressSource::Peer });
    }

    #[test]
    fn x_forwarded_for() {
        assert_eq!(resolve("10.0.0.1", &[("x-forwarded-for", "203.0.113.7")]), from(X, "203.0.113.7"));
        // The right-most address that is not a trusted proxy, not the left-most.
        let chain = [("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.2")];
        assert_eq!(resolve("10.0.0.1", &chain), from(X, "203.0.113.7"));
        // Lines in order; empty elements skipped; ports and brackets allowed.
        let lines = [("x-forwarded-for", "198.51.100.1,,"), ("x-forwarded-for", " 203.0.113.7:5111 , 10.0.0.2")];
        assert_eq!(resolve("10.0.0.1", &lines), from(X, "203.0.113.7"));
        assert_eq!(resolve("10.0.0.1", &[("x-forwarded-for", "[2001:db8::7]:443")]), from(X, "2001:db8::7"));
        assert_eq!(resolve("10.0.0.1", &[("x-forwarded-for", "2001:db8::7")]), from(X, "2001:db8::7"));
        assert_eq!(resolve("10.0.0.1", &[("x-forwarded-for", "::ffff:203.0.113.7")]), from(X, "203.0.113.7"));
        // Every hop trusted: the left-most one.
        assert_eq!(resolve("10.0.0.1", &[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]), from(X, "10.9.9.9"));
    }

    #[test]
    fn forwarded() {
        // RFC 7239's examples.
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=\"_gazonk\"")]),
            fallback("10.0.0.1", F, Unusable::NotAnAddress)
        );
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")]),
            from(F, "2001:db8:cafe::17")
        );
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]),
            from(F, "192.0.2.60")
        );
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=192.0.2.43, for=198.51.100.17")]),
            from(F, "198.51.100.17")
        );
        // Trusted hops skipped, by either family; quoted ports; spaces around `;`.
        let chain = "for=192.0.2.43, for=\"[2001:db8:ffff::3]:80\" ; proto=https, for=\"10.0.0.9:_p1\"";
        assert_eq!(resolve("10.0.0.1", &[("forwarded", chain)]), from(F, "192.0.2.43"));
        // Escapes in quoted strings; other parameters' quoted values may hold `;`.
        assert_eq!(resolve("10.0.0.1", &[("forwarded", "host=\"a;b\";for=\"192.0.2\\.5\"")]), from(F, "192.0.2.5"));
        // Forwarded wins over X-Forwarded-For.
        let both = [("x-forwarded-for", "198.51.100.1"), ("forwarded", "for=192.0.2.1")];
        assert_eq!(resolve("10.0.0.1", &both), from(F, "192.0.2.1"));
        // Unquoted, as some proxies write them.
        assert_eq!(resolve("10.0.0.1", &[("forwarded", "for=192.0.2.1:8080")]), from(F, "192.0.2.1"));
        assert_eq!(resolve("10.0.0.1", &[("forwarded", "for=[2001:db8::1]")]), from(F, "2001:db8::1"));
    }

    #[test]
    fn hops_that_are_not_addresses_fall_back_to_the_peer() {
        for (name, value) in [
            ("forwarded", "for=192.0.2.1, for=unknown"),
            ("forwarded", "for=192.0.2.1, for=\"unknown:80\""),
            ("forwarded", "for=192.0.2.1, for=_hidden;proto=https"),
            ("forwarded", "for=192.0.2.1, proto=https"),
            ("x-forwarded-for", "192.0.2.1, unknown, 10.0.0.2"),
            ("x-forwarded-for", "192.0.2.1, _hidden"),
        ] {
            let header = if name == "forwarded" { F } else { X };
            assert_eq!(
                resolve("10.0.0.1", &[(name, value)]),
                fallback("10.0.0.1", header, Unusable::NotAnAddress),
                "{value}"
            );
        }
    }

    #[test]
    fn malformed_headers_from_a_trusted_proxy_fall_back_to_the_peer() {
        for (name, value) in [
            ("forwarded", "for=192.0.2.1;for=192.0.2.2"),
            ("forwarded", "for=\"192.0.2.1"),
            ("forwarded", "for="),
            ("forwarded", "for"),
            ("forwarded", "for=192.0.2.1 proto=http"),
            ("forwarded", "for=\"[2001:db8::1\""),
            ("forwarded", "for=\"[2001:db8::1]80\""),
            ("forwarded", "for=\"192.0.2.1:123456\""),
            ("forwarded", "for=\"fe80::1%eth0\""),
            ("forwarded", "f r=1;for=192.0.2.1"),
            ("forwarded", ""),
            ("x-forwarded-for", "192.0.2.1, 192.0.2.999"),
            ("x-forwarded-for", "192.0.2.1, \"192.0.2.2\""),
            ("x-forwarded-for", "example.com"),
            ("x-forwarded-for", " , "),
            ("x-forwarded-for", "192.0.2.1:"),
        ] {
            let header = if name == "forwarded" { F } else { X };
            assert_eq!(
                resolve("10.0.0.1", &[(name, value)]),
                fallback("10.0.0.1", header, Unusable::Malformed),
                "{value}"
            );
        }
        // Bytes that are not ASCII.
        let mut map = HeaderMap::new();
        map.append("x-forwarded-for", HeaderValue::from_bytes(b"192.0.2.\xff").unwrap());
        let got = client_address_from_headers(&map, ip("10.0.0.1"), |ip| ip == self::ip("10.0.0.1"));
        assert_eq!(got, fallback("10.0.0.1", X, Unusable::Malformed));
    }

    #[test]
    fn what_a_client_writes_left_of_its_address_changes_nothing() {
        // The proxy (10.0.0.1) appended the client's real address, 192.0.2.1.
        for forged in ["for=\"", "for=1.2.3.4;for=5.6.7.8", "\\", "for=10.0.0.5", "for=unknown", "garbage ;;; ="] {
            let value = format!("{forged}, for=192.0.2.1");
            assert_eq!(resolve("10.0.0.1", &[("forwarded", &value)]), from(F, "192.0.2.1"), "{value}");
            let lines = [("forwarded", forged), ("forwarded", "for=192.0.2.1")];
            assert_eq!(resolve("10.0.0.1", &lines), from(F, "192.0.2.1"), "{forged}");
            let value = format!("{forged}, 192.0.2.1");
            assert_eq!(resolve("10.0.0.1", &[("x-forwarded-for", &value)]), from(X, "192.0.2.1"), "{value}");
        }
    }

    /// Addresses that collide often with the ranges below.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(10, 0, a, b))),
            (0u8..4).prop_map(|a| IpAddr::V4(Ipv4Addr::new(192, 0, 2, a))),
            (0u16..4).prop_map(|a| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, a))),
            (0u8..4).prop_map(|a| IpAddr::V6(Ipv4Addr::new(10, 0, 0, a).to_ipv6_mapped())),
        ]
    }

    fn range() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            address().prop_map(Cidr::host),
            Just("10.0.0.0/8".parse().unwrap()),
            Just("10.0.1.0/24".parse().unwrap()),
            Just("192.0.2.0/31".parse().unwrap()),
            Just("2001:db8::/126".parse().unwrap()),
            Just("::/0".parse().unwrap()),
            Just("0.0.0.0/0".parse().unwrap()),
        ]
    }

    /// One way a proxy may write `ip` as an `X-Forwarded-For` element.
    fn xff_spelling(ip: IpAddr, style: u8) -> String {
        match (ip, style % 3) {
            (IpAddr::V4(v4), 1) => format!("{v4}:{}", 1000 + u16::from(style)),
            (IpAddr::V6(v6), 1) => format!("[{v6}]:{}", 1000 + u16::from(style)),
            (IpAddr::V6(v6), 2) => format!("[{v6}]"),
            _ => ip.to_string(),
        }
    }

    /// One way a proxy may write `ip` as a `Forwarded` element.
    fn forwarded_spelling(ip: IpAddr, style: u8) -> String {
        let node = match (ip, style % 3) {
            (IpAddr::V4(v4), 0) => v4.to_string(),
            (IpAddr::V4(v4), 1) => format!("\"{v4}:{}\"", 1000 + u16::from(style)),
            (IpAddr::V4(v4), _) => format!("\"{v4}:_p{style}\""),
            (IpAddr::V6(v6), 1) => format!("\"[{v6}]:{}\"", 1000 + u16::from(style)),
            (IpAddr::V6(v6), _) => format!("\"[{v6}]\""),
        };
        match style % 4 {
            0 => format!("for={node}"),
            1 => format!("proto=https;For={node}"),
            2 => format!("for={node}; by=\"_proxy\""),
            _ => format!("host=\"example.com\";for={node};proto=http"),
        }
    }

    /// The chain as header lines: its elements joined, split into lines at `cuts`.
    fn lines(elements: &[String], cuts: &[bool]) -> Vec<String> {
        let mut lines = vec![String::new()];
        for (i, element) in elements.iter().enumerate() {
            let line = lines.last_mut().unwrap();
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str(element);
            if cuts.get(i).copied().unwrap_or(false) && i + 1 < elements.len() {
                lines.push(String::new());
            }
        }
        lines
    }

    /// The rule, written from the documentation, on a chain of addresses.
    fn model(chain: &[IpAddr], peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
        let peer = peer.to_canonical();
        if !trusted.contains(peer) {
            return peer;
        }
        for ip in chain.iter().rev() {
            if !trusted.contains(*ip) {
                return ip.to_canonical();
            }
        }
        chain.first().map_or(peer, |ip| ip.to_canonical())
    }

    proptest! {
        /// On any chain of addresses, in either header and any spelling, with any
        /// trusted set: the result is the model's; it is the peer or an address of
        /// the chain; and it is a trusted address only if every address is.
        #[test]
        fn the_right_most_untrusted_address(
            chain in proptest::collection::vec(address(), 0..6),
            styles in proptest::collection::vec(any::<u8>(), 6),
            cuts in proptest::collection::vec(any::<bool>(), 6),
            ranges in proptest::collection::vec(range(), 0..4),
            peer in address(),
            use_forwarded in any::<bool>(),
        ) {
            let trusted = TrustedProxies::new(ranges);
            let (name, elements): (&str, Vec<String>) = if use_forwarded {
                ("forwarded", chain.iter().zip(&styles).map(|(ip, s)| forwarded_spelling(*ip, *s)).collect())
            } else {
                ("x-forwarded-for", chain.iter().zip(&styles).map(|(ip, s)| xff_spelling(*ip, *s)).collect())
            };
            let mut map = HeaderMap::new();
            if !chain.is_empty() {
                for line in lines(&elements, &cuts) {
                    map.append(HeaderName::from_static(name), HeaderValue::from_str(&line).unwrap());
                }
            }
            let got = client_address_from_headers(&map, peer, |ip| trusted.contains(ip));
            prop_assert_eq!(got.ip, model(&chain, peer, &trusted));
            let canonical: Vec<IpAddr> = chain.iter().map(|ip| ip.to_canonical()).collect();
            prop_assert!(got.ip == peer.to_canonical() || canonical.contains(&got.ip));
            let all_trusted = trusted.contains(peer) && chain.iter().all(|ip| trusted.contains(*ip));
            prop_assert!(!trusted.contains(got.ip) || all_trusted, "{:?} is trusted", got);
        }

        /// Whatever a client writes (any printable text, in the header or in
        /// lines of its own) to the left of what trusted proxies appended, the
        /// result is its own address.
        #[test]
        fn a_client_cannot_forge_its_address(
            forged in "[ -~]{0,40}",
            client in address(),
            hops in proptest::collection::vec(address(), 0..3),
            ranges in proptest::collection::vec(range(), 0..4),
            peer in address(),
            use_forwarded in any::<bool>(),
            own_line in any::<bool>(),
            style in any::<u8>(),
        ) {
            // The proxies (the peer and the hops) are trusted, the client is not,
            // and other ranges may be, as long as they do not hold the client.
            prop_assume!(peer.to_canonical() != client.to_canonical() && !hops.iter().any(|h| h.to_canonical() == client.to_canonical()));
            let proxies = std::iter::once(peer).chain(hops.iter().copied()).map(Cidr::host);
            let trusted: TrustedProxies = ranges.into_iter().filter(|r| !r.contains(client)).chain(proxies).collect();
            let spell = |ip: IpAddr| if use_forwarded { forwarded_spelling(ip, style) } else { xff_spelling(ip, style) };
            let appended: Vec<String> = std::iter::once(client).chain(hops.iter().copied()).map(spell).collect();
            let name = HeaderName::from_static(if use_forwarded { "forwarded" } else { "x-forwarded-for" });
            let mut map = HeaderMap::new();
            if own_line {
                map.append(name.clone(), HeaderValue::from_str(&forged).unwrap());
                map.append(name, HeaderValue::from_str(&appended.join(", ")).unwrap());
            } else {
                map.append(name, HeaderValue::from_str(&format!("{forged}, {}", appended.join(","))).unwrap());
            }
            let got = client_address_from_headers(&map, peer, |ip| trusted.contains(ip));
            prop_assert_eq!(got.ip, client.to_canonical());
        }

        /// A peer that is not trusted is the client, whatever headers it sends.
        #[test]
        fn forged_headers_from_an_untrusted_peer_change_nothing(
            forwarded in proptest::option::of("[ -~]{0,60}"),
            xff in proptest::option::of("[ -~]{0,60}"),
            ranges in proptest::collection::vec(range(), 0..4),
            peer in address(),
        ) {
            let trusted = TrustedProxies::new(ranges);
            prop_assume!(!trusted.contains(peer));
            let mut map = HeaderMap::new();
            for (name, value) in [("forwarded", forwarded), ("x-forwarded-for", xff)] {
                if let Some(value) = value {
                    map.append(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
                }
            }
            let got = client_address_from_headers(&map, peer, |ip| trusted.contains(ip));
            prop_assert_eq!(got, ClientAddress { ip: peer.to_canonical(), source: AddressSource::Peer });
        }

        /// Any bytes, from a trusted peer: an answer, never a panic; the peer
        /// unless an address was read.
        #[test]
        fn never_panics(value in proptest::collection::vec(any::<u8>(), 0..80), use_forwarded in any::<bool>()) {
            let Ok(value) = HeaderValue::from_bytes(&value) else { return Ok(()) };
            let mut map = HeaderMap::new();
            map.append(if use_forwarded { FORWARDED } else { HeaderName::from_static("x-forwarded-for") }, value);
            let got = client_address_from_headers(&map, ip("10.0.0.1"), |_| true);
            if !matches!(got.source, AddressSource::Header(_)) {
                prop_assert_eq!(got.ip, ip("10.0.0.1"));
            }
        }

        /// A range holds exactly the addresses that share its prefix.
        #[test]
        fn ranges_hold_their_prefix(a in any::<u32>(), b in any::<u32>(), prefix in 0u8..=32) {
            let range = Cidr::new(mask(IpAddr::V4(Ipv4Addr::from_bits(a)), prefix), prefix).unwrap();
            let shift = 32 - u32::from(prefix);
            let same = a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0);
            prop_assert_eq!(range.contains(IpAddr::V4(Ipv4Addr::from_bits(b))), same);
            prop_assert_eq!(range.to_string().parse::<Cidr>(), Ok(range));
        }
    }
}
