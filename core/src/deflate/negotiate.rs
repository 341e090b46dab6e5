//! Reading `Sec-WebSocket-Extensions` (RFC 6455 §9.1) and agreeing on
//! permessage-deflate's parameters (RFC 7692 §7.1), for both roles.

use std::fmt;

use super::{DeflateConfig, PERMESSAGE_DEFLATE, clamp_bits};

/// One extension of a `Sec-WebSocket-Extensions` list: its name and parameters
/// (quoted values unquoted), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, as written.
    pub name: String,
    /// The parameters: name and, if given, value.
    pub params: Vec<(String, Option<String>)>,
}

/// A `Sec-WebSocket-Extensions` value that does not follow the grammar of RFC 6455
/// §9.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedExtensions;

impl fmt::Display for MalformedExtensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed Sec-WebSocket-Extensions header")
    }
}

impl std::error::Error for MalformedExtensions {}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over a header value.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn skip_ows(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn token(&mut self) -> Result<String, MalformedExtensions> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if start == self.at {
            return Err(MalformedExtensions);
        }
        // Token characters are ASCII.
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    /// A quoted string (RFC 9110 §5.6.4), unquoted.
    fn quoted(&mut self) -> Result<String, MalformedExtensions> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(MalformedExtensions),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(out).map_err(|_| MalformedExtensions);
                }
                Some(b'\\') => {
                    let escaped = self.s.get(self.at + 1).copied().ok_or(MalformedExtensions)?;
                    if !is_qdtext(escaped) && escaped != b'"' && escaped != b'\\' {
                        return Err(MalformedExtensions);
                    }
                    out.push(escaped);
                    self.at += 2;
                }
                Some(b) if is_qdtext(b) => {
                    out.push(b);
                    self.at += 1;
                }
                Some(_) => return Err(MalformedExtensions),
            }
        }
    }
}

fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// Parses one `Sec-WebSocket-Extensions` value: a comma-separated list of
/// extensions, each a token with `;`-separated parameters, a parameter a token with
/// an optional `=` and a token or quoted-string value. Empty list elements (`a, ,b`)
/// are allowed, as RFC 9110 §5.6.1 asks of recipients.
pub fn parse_extensions(value: &[u8]) -> Result<Vec<Extension>, MalformedExtensions> {
    let mut c = Cursor { s: value, at: 0 };
    let mut out = Vec::new();
    loop {
        c.skip_ows();
        match c.peek() {
            None => break,
            Some(b',') => {
                c.at += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c.token()?;
        let mut params = Vec::new();
        loop {
            c.skip_ows();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.at += 1;
                    break;
                }
                Some(b';') => {
                    c.at += 1;
                    c.skip_ows();
                    let param = c.token()?;
                    c.skip_ows();
                    let value = if c.peek() == Some(b'=') {
                        c.at += 1;
                        c.skip_ows();
                        Some(if c.peek() == Some(b'"') { c.quoted()? } else { c.token()? })
                    } else {
                        None
                    };
                    params.push((param, value));
                }
                Some(_) => return Err(MalformedExtensions),
            }
        }
        out.push(Extension { name, params });
    }
    Ok(out)
}

/// Parses every line of a `Sec-WebSocket-Extensions` header, in order (several
/// lines are one list, RFC 9110 §5.3).
pub fn parse_header_values<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Extension>, MalformedExtensions> {
    let mut all = Vec::new();
    for value in values {
        all.extend(parse_extensions(value)?);
    }
    Ok(all)
}

/// The permessage-deflate parameters of one offer or answer, checked: each at most
/// once, none unknown, window bits a decimal 8 to 15 without leading zeros.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (only allowed in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

/// A decimal from 8 to 15 without leading zeros (RFC 7692 §7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

impl Params {
    /// Reads the parameters of a permessage-deflate element; `None` if any is
    /// unknown, repeated or has a bad value. A value-less `client_max_window_bits`
    /// is allowed only when `offer`.
    fn read(params: &[(String, Option<String>)], offer: bool) -> Option<Self> {
        let mut p = Self::default();
        for (name, value) in params {
            // Parameter names are tokens, compared without regard to case as
            // extension tokens are (RFC 6455 §9.1 registers them in lower case).
            let name = name.to_ascii_lowercase();
            match (name.as_str(), value.as_deref()) {
                ("server_no_context_takeover", None) if !p.server_no_context_takeover => {
                    p.server_no_context_takeover = true;
                }
                ("client_no_context_takeover", None) if !p.client_no_context_takeover => {
                    p.client_no_context_takeover = true;
                }
                ("server_max_window_bits", Some(v)) if p.server_max_window_bits.is_none() => {
                    p.server_max_window_bits = Some(window_bits(v)?);
                }
                ("client_max_window_bits", None) if offer && p.client_max_window_bits.is_none() => {
                    p.client_max_window_bits = Some(None);
                }
                ("client_max_window_bits", Some(v)) if p.client_max_window_bits.is_none() => {
                    p.client_max_window_bits = Some(Some(window_bits(v)?));
                }
                _ => return None,
            }
        }
        Some(p)
    }
}

/// The parameters both ends agreed on: what the server's answer says, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's largest window, as agreed (`None`: not limited, 15).
    pub server_max_window_bits: Option<u8>,
    /// The client's largest window, as agreed (`None`: not limited, 15).
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The server's window bits in force (15 unless limited).
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The client's window bits in force (15 unless limited).
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(15)
    }

    /// The `Sec-WebSocket-Extensions` value of the server's answer.
    pub fn response(&self) -> String {
        let mut out = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// (Server) Answers the client's offers: the first permessage-deflate offer this
/// end can honour, with the parameters of `config` (RFC 7692 §5.1 and §7.1).
/// Returns `None` when there is nothing to accept: no offer, only declined ones, or
/// a malformed header (`values` are the lines of `Sec-WebSocket-Extensions`).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>, config: &DeflateConfig) -> Option<DeflateParams> {
    let extensions = parse_header_values(values).ok()?;
    extensions
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|e| Params::read(&e.params, true).map(|offer| answer(&offer, config)))
}

/// The server's answer to one valid offer.
fn answer(offer: &Params, config: &DeflateConfig) -> DeflateParams {
    let server_bits = clamp_bits(config.server_max_window_bits);
    // An offer that limits the server's window must be answered with the same or a
    // smaller value; otherwise the server states its limit only when it has one.
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(asked) => Some(asked.min(server_bits)),
        None => (server_bits < 15).then_some(server_bits),
    };
    // The client's window may be limited only if the client offered the parameter,
    // and not above the value it offered.
    let client_bits = clamp_bits(config.client_max_window_bits);
    let client_max_window_bits = match offer.client_max_window_bits {
        None => None,
        Some(offered) => {
            let offered = offered.unwrap_or(15);
            (client_bits < offered).then_some(client_bits)
        }
    };
    DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover || config.server_no_context_takeover,
        // The client's hint is made binding by echoing it.
        client_no_context_takeover: offer.client_no_context_takeover || config.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    }
}

/// (Client) Checks the server's answer to the offer of `config`
/// ([`DeflateConfig::offer`]): `Ok(None)` if the server accepted no extension,
/// `Ok(Some)` with the agreed parameters, or why the answer is invalid (the client
/// must then fail the connection, RFC 7692 §5.1).
pub fn check_response<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    config: &DeflateConfig,
) -> Result<Option<DeflateParams>, &'static str> {
    let extensions = parse_header_values(values).map_err(|_| "malformed Sec-WebSocket-Extensions in the response")?;
    let answer = match extensions.as_slice() {
        [] => return Ok(None),
        [one] if one.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) => one,
        [_] => return Err("the server chose an extension that was not offered"),
        _ => return Err("the server chose more than one extension"),
    };
    let p = Params::read(&answer.params, false).ok_or("invalid permessage-deflate parameters in the response")?;
    if config.server_no_context_takeover && !p.server_no_context_takeover {
        return Err("the server did not agree to server_no_context_takeover");
    }
    let asked = clamp_bits(config.server_max_window_bits);
    if asked < 15 && p.server_max_window_bits.is_none_or(|bits| bits > asked) {
        return Err("the server did not limit its window as asked");
    }
    let client_max_window_bits = p.client_max_window_bits.flatten();
    // `client_max_window_bits` is always offered, with a value when under 15.
    if client_max_window_bits.is_some_and(|bits| bits > clamp_bits(config.client_max_window_bits)) {
        return Err("the server allowed the client a larger window than offered");
    }
    Ok(Some(DeflateParams {
        server_no_context_takeover: p.server_no_context_takeover,
        // The client keeps to what it offered even if the server did not echo it.
        client_no_context_takeover: p.client_no_context_takeover || config.client_no_context_takeover,
        server_max_window_bits: p.server_max_window_bits,
        client_max_window_bits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server(offer: &str, config: &DeflateConfig) -> Option<String> {
        negotiate([offer.as_bytes()], config).map(|p| p.response())
    }

    #[test]
    fn parses_the_grammar() {
        let e = parse_extensions(b"foo, permessage-deflate ; client_max_window_bits ;x=\"1\\\"5\", ,bar;a=b").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], Extension { name: "foo".into(), params: vec![] });
        assert_eq!(e[1].params, vec![("client_max_window_bits".into(), None), ("x".into(), Some("1\"5".into()))]);
        assert_eq!(e[2].params, vec![("a".into(), Some("b".into()))]);
        for bad in ["a;", "a;=b", "a b", "a;b=", "a;b=\"x", "a;b=\"x\"y", ";a", "a;b=c d", "a;b=\"\u{7}\""] {
            assert_eq!(parse_extensions(bad.as_bytes()), Err(MalformedExtensions), "{bad}");
        }
        assert_eq!(parse_extensions(b"").unwrap(), vec![]);
        assert_eq!(parse_extensions(b" , ,").unwrap(), vec![]);
    }

    #[test]
    fn server_answers_with_its_defaults() {
        let d = DeflateConfig::default();
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        // What browsers offer.
        assert_eq!(server("permessage-deflate; client_max_window_bits", &d).as_deref(), Some(both));
        assert_eq!(server("permessage-deflate", &d).as_deref(), Some(both));
        let takeover = DeflateConfig::default().with_context_takeover();
        assert_eq!(server("permessage-deflate", &takeover).as_deref(), Some("permessage-deflate"));
        assert_eq!(
            server("permessage-deflate; client_no_context_takeover", &takeover).as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
    }

    #[test]
    fn server_window_bits() {
        let d = DeflateConfig::default().with_context_takeover();
        let small = DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 11, ..d };
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=9", &d).as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=12", &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        assert_eq!(
            server("permessage-deflate", &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        // The client's window is limited only if it offered the parameter.
        assert_eq!(
            server("permessage-deflate; client_max_window_bits", &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11")
        );
        assert_eq!(
            server("permessage-deflate; client_max_window_bits=9", &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=8", &d).as_deref(),
            Some("permessage-deflate; server_max_window_bits=8")
        );
    }

    #[test]
    fn server_declines_bad_offers_and_tries_the_next() {
        let d = DeflateConfig::default().with_context_takeover();
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(server(bad, &d), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate; client_no_context_takeover");
            assert_eq!(
                server(&with_fallback, &d).as_deref(),
                Some("permessage-deflate; client_no_context_takeover"),
                "{bad}"
            );
        }
        // A quoted value is its unquoted token.
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=\"10\"", &d).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        // A malformed header negotiates nothing.
        assert_eq!(server("permessage-deflate; =", &d), None);
        // Several header lines are one list.
        let p = negotiate([&b"foo"[..], b"permessage-deflate"], &d);
        assert!(p.is_some());
    }

    #[test]
    fn client_checks_the_answer() {
        let d = DeflateConfig::default();
        assert_eq!(
            d.offer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
        );
        let check = |r: &str, c: &DeflateConfig| check_response([r.as_bytes()], c);
        assert_eq!(check("", &d), Ok(None));
        let ok =
            check("permessage-deflate; server_no_context_takeover; client_max_window_bits=9", &d).unwrap().unwrap();
        assert!(ok.server_no_context_takeover && ok.client_no_context_takeover);
        assert_eq!(ok.client_window_bits(), 9);
        for bad in [
            "permessage-deflate", // server_no_context_takeover asked for
            "permessage-deflate; server_no_context_takeover; client_max_window_bits", // no value in an answer
            "permessage-deflate; server_no_context_takeover; foo",
            "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
            "x-other",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover;",
        ] {
            assert!(check(bad, &d).is_err(), "{bad}");
        }
        let limited = DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 12, ..d };
        assert!(limited.offer().contains("server_max_window_bits=10; client_max_window_bits=12"));
        assert!(check("permessage-deflate; server_no_context_takeover", &limited).is_err());
        assert!(check("permessage-deflate; server_no_context_takeover; server_max_window_bits=11", &limited).is_err());
        assert!(check("permessage-deflate; server_no_context_takeover; server_max_window_bits=10", &limited).is_ok());
        assert!(
            check(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=13",
                &limited
            )
            .is_err()
        );
    }

    /// Header values built from the pieces negotiation cares about, and noise.
    fn header_value() -> impl Strategy<Value = String> {
        let param = prop_oneof![
            Just("server_no_context_takeover".to_owned()),
            Just("client_no_context_takeover".to_owned()),
            (7u8..17).prop_map(|b| format!("server_max_window_bits={b}")),
            (7u8..17).prop_map(|b| format!("client_max_window_bits={b}")),
            Just("client_max_window_bits".to_owned()),
            Just("server_max_window_bits".to_owned()),
            (7u8..17).prop_map(|b| format!("client_max_window_bits=\"{b}\"")),
            "[a-z_=\"; ,]{0,12}",
        ];
        let ext = (
            prop_oneof![Just("permessage-deflate"), Just("PerMessage-Deflate"), Just("foo")],
            prop::collection::vec(param, 0..5),
        )
            .prop_map(|(name, params)| {
                let mut s = name.to_owned();
                for p in params {
                    s.push_str("; ");
                    s.push_str(&p);
                }
                s
            });
        prop_oneof![prop::collection::vec(ext, 0..4).prop_map(|e| e.join(", ")), ".{0,64}"]
    }

    fn config() -> impl Strategy<Value = DeflateConfig> {
        (any::<bool>(), any::<bool>(), 0u8..20, 0u8..20).prop_map(|(s, c, sb, cb)| DeflateConfig {
            server_no_context_takeover: s,
            client_no_context_takeover: c,
            server_max_window_bits: sb,
            client_max_window_bits: cb,
            ..DeflateConfig::default()
        })
    }

    proptest! {
        /// No header value panics the parser, and every answer a server gives is
        /// one that a client that made the offer accepts, with the same parameters.
        #[test]
        fn every_answer_is_valid(value in header_value(), bytes in prop::collection::vec(any::<u8>(), 0..64), c in config()) {
            let _ = parse_extensions(&bytes);
            let _ = negotiate([&bytes[..]], &c);
            if let Some(params) = negotiate([value.as_bytes()], &c) {
                let response = params.response();
                // The answer parses, names one extension, and holds valid parameters.
                let parsed = parse_extensions(response.as_bytes()).unwrap();
                prop_assert_eq!(parsed.len(), 1);
                prop_assert!(Params::read(&parsed[0].params, false).is_some());
                // The server honours the offer's limits and requests.
                let offers = parse_extensions(value.as_bytes()).unwrap();
                let offer = offers.iter()
                    .filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
                    .find_map(|e| Params::read(&e.params, true))
                    .unwrap();
                if offer.server_no_context_takeover {
                    prop_assert!(params.server_no_context_takeover);
                }
                if let Some(asked) = offer.server_max_window_bits {
                    prop_assert!(params.server_max_window_bits.is_some_and(|b| b <= asked));
                }
                match offer.client_max_window_bits {
                    None => prop_assert!(params.client_max_window_bits.is_none()),
                    Some(v) => prop_assert!(params.client_max_window_bits.is_none_or(|b| b <= v.unwrap_or(15))),
                }
                for bits in [params.server_max_window_bits, params.client_max_window_bits].into_iter().flatten() {
                    prop_assert!((8..=15).contains(&bits));
                }
            }
        }

        /// A client accepts the answer of a server to its own offer, whatever both
        /// configurations, and both ends agree on the parameters.
        #[test]
        fn client_and_server_agree(client in config(), server_config in config()) {
            let offer = client.offer();
            let params = negotiate([offer.as_bytes()], &server_config).expect("our own offer is valid");
            let response = params.response();
            let seen = check_response([response.as_bytes()], &client).unwrap().unwrap();
            prop_assert_eq!(seen.server_no_context_takeover, params.server_no_context_takeover);
            prop_assert_eq!(seen.client_no_context_takeover, params.client_no_context_takeover);
            prop_assert_eq!(seen.server_window_bits(), params.server_window_bits());
            prop_assert_eq!(seen.client_window_bits(), params.client_window_bits());
        }
    }
}
