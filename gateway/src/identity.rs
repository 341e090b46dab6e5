//! Who is connecting, decided at the handshake: the username (from the JWT, or in
//! development mode from `?username=`) and the namespace (from `?namespace=`,
//! allowed by the token's namespaces claim when the gateway reads one). A refusal
//! carries the HTTP status and the reason the client gets.

use chinwag_core::Request;
use chinwag_core::gateway::{self, Identity, NamespacePolicy};
use chinwag_core::http::StatusCode;
use chinwag_service::query_param;
use serde_json::{Map, Value};

use crate::auth::Verifier;

/// The longest namespace and username accepted, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// How the gateway learns who a client is.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// A JWT, checked by the verifier (boxed: it is large, and made once).
    Jwt(Box<Verifier>),
    /// Development only: `?username=`, unchecked.
    DevelopmentUsernames,
}

/// Who a client is, once its request passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Identified {
    /// Its user and namespace.
    pub identity: Identity,
    /// The verified token's claims, as events carry them in
    /// `context.headers.jwt`; in development mode, `{"preferred_username": NAME}`.
    pub claims: Map<String, Value>,
    /// When the token stops being accepted (Unix seconds: `exp` plus the leeway),
    /// if the connection is to be closed then.
    pub expires: Option<f64>,
}

/// A handshake refused: the status (401, 403 or 400) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401 when the client could not be identified, 403 for a namespace its token
    /// does not allow, 400 for a malformed namespace.
    pub status: StatusCode,
    /// Plain text for the response body.
    pub reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

/// Checks a username or namespace: 1 to 64 characters, no control characters, no
/// spaces at either end.
fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_NAME_CHARS {
        return Err(format!("a {what} is 1 to {MAX_NAME_CHARS} characters"));
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(format!("a {what} cannot contain control characters or start or end with a space"));
    }
    Ok(())
}

/// The identity of the client that sent `request`, at `now` (Unix seconds): its
/// token's user and claims, and the namespace it asked for, if its token allows
/// it (403 otherwise: nothing about the connection is published).
pub fn identify(request: &Request, authenticator: &Authenticator, now: u64) -> Result<Identified, Refusal> {
    let (username, claims, expires, policy) = match authenticator {
        Authenticator::Jwt(verifier) => {
            let verified =
                verifier.verify(request.headers(), now).map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.to_string()))?;
            let expires = verifier.closes_on_expiry().then_some(verified.expires);
            // No policy stated: the connect handler approves (Gateway::new refuses
            // a gateway without approval).
            let policy = verifier.namespace_policy().cloned().unwrap_or(NamespacePolicy::Any);
            (verified.username, verified.claims, expires, policy)
        }
        Authenticator::DevelopmentUsernames => {
            let username = query_param(request.query(), "username")
                .map(|u| u.into_owned())
                .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "development mode: add ?username=NAME"))?;
            let mut claims = Map::new();
            claims.insert("preferred_username".into(), Value::String(username.clone()));
            (username, claims, None, NamespacePolicy::Any)
        }
    };
    check_name("username", &username).map_err(|e| refuse(StatusCode::UNAUTHORIZED, e))?;
    let namespace = query_param(request.query(), "namespace").map(|n| n.into_owned());
    if let Some(ns) = &namespace {
        check_name("namespace", ns).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    }
    gateway::authorize(&policy, &claims, namespace.as_deref())
        .map_err(|e| refuse(StatusCode::FORBIDDEN, e.to_string()))?;
    Ok(Identified { identity: Identity { username, namespace }, claims, expires })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;

    fn request(target: &str, extra: &str) -> Request {
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        let now = std::time::Instant::now();
        let mut conn = chinwag_core::Connection::server(chinwag_core::Config::default(), now);
        conn.receive(now, head.as_bytes());
        match conn.poll_event(now) {
            Some(chinwag_core::Event::UpgradeRequest(request)) => *request,
            other => panic!("not an upgrade request: {other:?}"),
        }
    }

    #[test]
    fn development_usernames() {
        let dev = Authenticator::DevelopmentUsernames;
        let id = identify(&request("/connect?namespace=acme&username=alex", ""), &dev, 0).unwrap();
        assert_eq!(id.identity, Identity { username: "alex".into(), namespace: Some("acme".into()) });
        assert_eq!(Value::Object(id.claims), serde_json::json!({"preferred_username": "alex"}));
        assert_eq!(id.expires, None);
        let id = identify(&request("/connect?username=Ann%20Lee", ""), &dev, 0).unwrap();
        assert_eq!(id.identity, Identity { username: "Ann Lee".into(), namespace: None });
        assert_eq!(identify(&request("/connect?namespace=acme", ""), &dev, 0).unwrap_err().status, 401);
        assert_eq!(identify(&request("/connect?username=%20x", ""), &dev, 0).unwrap_err().status, 401);
        let long = "n".repeat(65);
        let refused = identify(&request(&format!("/connect?username=a&namespace={long}"), ""), &dev, 0).unwrap_err();
        assert_eq!(
            (refused.status, refused.reason.as_str()),
            (StatusCode::BAD_REQUEST, "a namespace is 1 to 64 characters")
        );
        assert_eq!(identify(&request("/connect?username=a&namespace=", ""), &dev, 0).unwrap_err().status, 400);
        assert_eq!(identify(&request("/connect?username=a&namespace=%07", ""), &dev, 0).unwrap_err().status, 400);
    }

    #[test]
    fn jwt_refusals_are_401_with_the_reason() {
        let verifier = Verifier::new(
            Algorithm::HS256,
            jsonwebtoken::DecodingKey::from_secret(b"a test secret of at least thirty-two bytes"),
            "ID_TOKEN",
        );
        let jwt = Authenticator::Jwt(Box::new(verifier));
        let refused = identify(&request("/connect?namespace=acme&username=alex", ""), &jwt, 0).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert!(refused.reason.starts_with("no token"), "?username= is ignored with JWT auth: {}", refused.reason);
        let refused = identify(&request("/connect", "Cookie: ID_TOKEN=abc\r\n"), &jwt, 0).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert!(refused.reason.contains("malformed"), "{}", refused.reason);
    }
}
