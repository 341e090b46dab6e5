//! Who may join which namespace, from a verified token's claims.
//!
//! The namespace comes from the client (`?namespace=`); on its own it is only the
//! client's word. With [`NamespacePolicy::Claim`], the identity provider's token
//! says which namespaces its user may join, and a request for any other is
//! refused before the connection exists (nothing published, nothing delivered).

use serde_json::{Map, Value};
use std::fmt;

/// How the namespaces a user may join are decided at the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePolicy {
    /// Any user may join any namespace: a single tenant, development, or a
    /// gateway whose connect handler approves each connection instead.
    Any,
    /// The token's claim of this name lists the namespaces its user may join: an
    /// array of strings, `"*"` among them for any. A token without the claim may
    /// join none.
    Claim(String),
}

/// Why a namespace was refused: the handshake gets 403 with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceRefusal {
    /// The token has no such claim (or it is null).
    MissingClaim {
        /// The claim's name.
        claim: String,
    },
    /// The claim is not an array of strings.
    BadClaim {
        /// The claim's name.
        claim: String,
    },
    /// The claim does not list the namespace.
    NotAllowed {
        /// The claim's name.
        claim: String,
        /// The namespace asked for.
        namespace: String,
    },
}

impl fmt::Display for NamespaceRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingClaim { claim } => write!(f, "the token has no {claim} claim, so it may join no namespace"),
            Self::BadClaim { claim } => write!(
                f,
                "the token's {claim} claim is not a list of namespace names (a JSON array of strings), \
                 so it may join no namespace"
            ),
            Self::NotAllowed { claim, namespace } => {
                write!(f, "the token's {claim} claim does not allow the namespace \"{namespace}\"")
            }
        }
    }
}

impl std::error::Error for NamespaceRefusal {}

/// The claim value that allows every namespace.
pub const ANY_NAMESPACE: &str = "*";

/// Whether a user whose verified token has `claims` may join `namespace` under
/// `policy`. A connection without a namespace joins no tenant (it gets only
/// broadcasts to all and sends to its user without a namespace), so it is always
/// allowed. Names are compared exactly, as the client sent them (decoded).
pub fn authorize(
    policy: &NamespacePolicy,
    claims: &Map<String, Value>,
    namespace: Option<&str>,
) -> Result<(), NamespaceRefusal> {
    let (NamespacePolicy::Claim(claim), Some(namespace)) = (policy, namespace) else { return Ok(()) };
    let items = match claims.get(claim) {
        None | Some(Value::Null) => return Err(NamespaceRefusal::MissingClaim { claim: claim.clone() }),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(NamespaceRefusal::BadClaim { claim: claim.clone() }),
    };
    // Every item is checked, not only up to a match: a claim with a number in it
    // is malformed whatever else it lists, and is refused the same way each time.
    let mut allowed = false;
    for item in items {
        let Value::String(name) = item else { return Err(NamespaceRefusal::BadClaim { claim: claim.clone() }) };
        allowed |= name == ANY_NAMESPACE || name == namespace;
    }
    if allowed {
        Ok(())
    } else {
        Err(NamespaceRefusal::NotAllowed { claim: claim.clone(), namespace: namespace.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn the_claim_decides() {
        let policy = NamespacePolicy::Claim("namespaces".into());
        let token = claims(json!({"namespaces": ["acme", "globex"]}));
        assert_eq!(authorize(&policy, &token, Some("acme")), Ok(()));
        assert_eq!(authorize(&policy, &token, None), Ok(()), "no namespace: no tenant to protect");
        let refused = authorize(&policy, &token, Some("initech")).unwrap_err();
        assert_eq!(refused.to_string(), "the token's namespaces claim does not allow the namespace \"initech\"");
        assert!(authorize(&policy, &token, Some("ACME")).is_err(), "exact names");
        assert_eq!(authorize(&policy, &claims(json!({"namespaces": ["*"]})), Some("any")), Ok(()));
        let missing = authorize(&policy, &claims(json!({"sub": "x"})), Some("acme")).unwrap_err();
        assert_eq!(missing.to_string(), "the token has no namespaces claim, so it may join no namespace");
        assert!(matches!(
            authorize(&policy, &claims(json!({"namespaces": null})), Some("acme")),
            Err(NamespaceRefusal::MissingClaim { .. })
        ));
        for bad in [json!("acme"), json!({"acme": true}), json!(["acme", 1]), json!(7)] {
            assert!(
                matches!(
                    authorize(&policy, &claims(json!({"namespaces": bad})), Some("acme")),
                    Err(NamespaceRefusal::BadClaim { .. })
                ),
                "{bad}"
            );
        }
        assert!(authorize(&policy, &claims(json!({"namespaces": []})), Some("acme")).is_err());
        assert_eq!(authorize(&NamespacePolicy::Any, &Map::new(), Some("acme")), Ok(()));
    }
}
