//! Which web pages may open WebSocket connections to a server: the defence against
//! cross-site WebSocket hijacking (RFC 6455 §10.2).
//!
//! Browsers send an `Origin` header with every WebSocket handshake and let any page
//! connect anywhere, with the user's cookies; only the server can refuse a page from
//! another site. Programs other than browsers send no `Origin` and are not subject
//! to the check (they could send any value they liked).

use http::uri::{Authority, Scheme, Uri};
use std::fmt;

use super::Request;

/// The Origin check a server applies to upgrade requests.
///
/// The default, [`OriginPolicy::same_host`], admits pages served by the host the
/// request was sent to (the `Origin`'s host and port equal the `Host` header's) and
/// clients that send no `Origin`. Add other sites with [`allow`](Self::allow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    same_host: bool,
    /// Allowed origins, normalised by [`normalize`].
    allowed: Vec<String>,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::same_host()
    }
}

/// A request refused by the Origin check. Servers answer it with 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRefused {
    /// The `Origin` header as received.
    pub origin: String,
}

impl fmt::Display for OriginRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "origin {} is not allowed to connect", self.origin)
    }
}

impl std::error::Error for OriginRefused {}

impl OriginPolicy {
    /// Pages from the host the request was sent to, and clients without `Origin`.
    pub fn same_host() -> Self {
        Self { any: false, same_host: true, allowed: Vec::new() }
    }

    /// Only the origins added with [`allow`](Self::allow), and clients without
    /// `Origin`.
    pub fn only() -> Self {
        Self { any: false, same_host: false, allowed: Vec::new() }
    }

    /// Every origin: no protection. For public APIs without cookies or other ambient
    /// credentials.
    pub fn any() -> Self {
        Self { any: true, same_host: false, allowed: Vec::new() }
    }

    /// Also admits `origin`: `scheme://host[:port]` as browsers send it (for example
    /// `https://chat.example.com`), compared without regard to case and default
    /// ports; `*` admits every origin; `null` admits pages with an opaque origin
    /// (sandboxed frames, `file:` pages).
    pub fn allow(mut self, origin: &str) -> Self {
        if origin.trim() == "*" {
            self.any = true;
        } else {
            self.allowed.push(normalize(origin).unwrap_or_else(|| origin.trim().to_ascii_lowercase()));
        }
        self
    }

    /// Checks the `Origin` of `request`.
    pub fn check(&self, request: &Request) -> Result<(), OriginRefused> {
        self.check_headers(request.origin(), request.host())
    }

    /// Checks an `Origin` header value against a `Host` header value (for servers
    /// that parsed the request themselves).
    pub fn check_headers(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefused> {
        let Some(origin) = origin else { return Ok(()) };
        if self.any {
            return Ok(());
        }
        let normalized = normalize(origin);
        let key = normalized.as_deref().unwrap_or(origin.trim());
        if self.allowed.iter().any(|a| a.eq_ignore_ascii_case(key)) {
            return Ok(());
        }
        if self.same_host
            && let (Some(origin), Some(host)) = (origin_host_port(origin), host)
            && let Some(host) = host_port(host, origin.2)
            && origin.0.eq_ignore_ascii_case(&host.0)
            && origin.1 == host.1
        {
            return Ok(());
        }
        Err(OriginRefused { origin: origin.to_owned() })
    }
}

/// `scheme://host:port` in lower case with the port always present, or `None` when
/// `origin` is not a tuple origin.
fn normalize(origin: &str) -> Option<String> {
    let (host, port, scheme) = origin_host_port(origin)?;
    Some(format!("{}://{}:{port}", scheme, host.to_ascii_lowercase()))
}

/// Host, port (explicit or the scheme's default) and scheme of an origin.
fn origin_host_port(origin: &str) -> Option<(String, u16, &'static str)> {
    let uri: Uri = origin.trim().parse().ok()?;
    let scheme = match uri.scheme()? {
        s if *s == Scheme::HTTP => "http",
        s if *s == Scheme::HTTPS => "https",
        s if s.as_str().eq_ignore_ascii_case("ws") => "http",
        s if s.as_str().eq_ignore_ascii_case("wss") => "https",
        _ => return None,
    };
    if uri.path_and_query().is_some_and(|p| !matches!(p.as_str(), "" | "/")) {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let port = authority.port_u16().unwrap_or(default_port(scheme));
    Some((authority.host().to_owned(), port, scheme))
}

/// Host and port of a `Host` header; a missing port is the default of `scheme`,
/// the scheme the page used (a proxy in front may terminate TLS).
fn host_port(host: &str, scheme: &str) -> Option<(String, u16)> {
    let authority: Authority = host.trim().parse().ok()?;
    Some((authority.host().to_owned(), authority.port_u16().unwrap_or(default_port(scheme))))
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(origin: &str, host: &str) -> bool {
        OriginPolicy::same_host().check_headers(Some(origin), Some(host)).is_ok()
    }

    #[test]
    fn same_host_admits_the_servers_own_pages() {
        assert!(same("http://127.0.0.1:9090", "127.0.0.1:9090"));
        assert!(same("http://Chat.Example.com", "chat.example.com"));
        assert!(same("https://chat.example.com", "chat.example.com"));
        assert!(same("https://chat.example.com", "chat.example.com:443"));
        assert!(same("http://[::1]:9090", "[::1]:9090"));
    }

    #[test]
    fn same_host_refuses_other_sites() {
        assert!(!same("http://evil.example", "127.0.0.1:9090"));
        assert!(!same("http://127.0.0.1:9091", "127.0.0.1:9090"));
        assert!(!same("http://localhost:9090", "127.0.0.1:9090"));
        assert!(!same("https://chat.example.com", "chat.example.com:80"));
        assert!(!same("null", "127.0.0.1:9090"));
        assert!(!same("http://chat.example.com.evil.example", "chat.example.com"));
        assert!(!same("http://user@chat.example.com", "chat.example.com"));
        assert!(!same("", "127.0.0.1:9090"));
    }

    #[test]
    fn clients_without_origin_are_not_checked() {
        assert!(OriginPolicy::only().check_headers(None, None).is_ok());
        assert!(OriginPolicy::same_host().check_headers(None, Some("x")).is_ok());
    }

    #[test]
    fn the_allow_list() {
        let policy = OriginPolicy::only().allow("https://app.example.com").allow("null");
        assert!(policy.check_headers(Some("https://APP.example.com:443"), Some("api.example.com")).is_ok());
        assert!(policy.check_headers(Some("null"), Some("api.example.com")).is_ok());
        let refused = policy.check_headers(Some("https://api.example.com"), Some("api.example.com"));
        assert_eq!(refused, Err(OriginRefused { origin: "https://api.example.com".into() }));
        assert!(OriginPolicy::only().allow("*").check_headers(Some("http://x"), None).is_ok());
        assert!(OriginPolicy::any().check_headers(Some("garbage"), None).is_ok());
    }

    proptest! {
        /// No origin naming another host is admitted by the same-host check, whatever
        /// the spelling.
        #[test]
        fn other_hosts_are_refused(a in "[a-z]{1,8}", b in "[a-z]{1,8}", port in 1u16.., scheme in "https?") {
            prop_assume!(a != b);
            let origin = format!("{scheme}://{a}.example:{port}");
            let other_host = format!("{b}.example:{port}");
            let same_host = format!("{}.example:{port}", a.to_uppercase());
            prop_assert!(!same(&origin, &other_host));
            prop_assert!(same(&origin, &same_host));
        }

        #[test]
        fn never_panics(origin in ".{0,40}", host in ".{0,40}") {
            let _ = OriginPolicy::same_host().allow(&origin).check_headers(Some(&origin), Some(&host));
        }
    }
}
