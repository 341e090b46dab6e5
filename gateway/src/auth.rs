//! Who a client is: the `preferred_username` claim of a JWT, taken from a cookie
//! (`ID_TOKEN` by default) or an `Authorization: Bearer` header, with its signature
//! checked against the one configured algorithm and key, and its expiry against the
//! time passed in. A client without a valid token is refused at the handshake with
//! 401 and the reason.

use base64::Engine;
use http::HeaderMap;
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;
use std::fmt;

use crate::config::{Algorithm, JwtConfig, KeySource};

/// Checks tokens for one algorithm and key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// The configured algorithm as a token's header names it (RFC 7518).
    algorithm_name: &'static str,
    cookie: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("cookie", &self.cookie)
            .finish()
    }
}

/// Why a client was refused (the handshake gets 401 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the cookie or the `Authorization` header.
    MissingToken,
    /// The token is signed with another algorithm than the configured one.
    WrongAlgorithm,
    /// The signature does not match the key.
    BadSignature,
    /// The token's `exp` is past (or it has none).
    Expired,
    /// The token is not valid yet (`nbf`).
    NotYetValid,
    /// The token has no `preferred_username` (or an empty one).
    MissingUsername,
    /// The token is not a well-formed JWT: what is wrong with it, in words (never
    /// a parser's debug output: this text is the body of a 401).
    Malformed(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingToken => f.write_str("no token: send it in the cookie or an Authorization: Bearer header"),
            Self::WrongAlgorithm => f.write_str("the token is signed with an algorithm this server does not accept"),
            Self::BadSignature => f.write_str("the token's signature is not valid"),
            Self::Expired => f.write_str("the token has expired (or has no exp)"),
            Self::NotYetValid => f.write_str("the token is not valid yet"),
            Self::MissingUsername => f.write_str("the token has no preferred_username"),
            Self::Malformed(e) => write!(f, "the token is malformed: {e}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// The reason for a token that is not `header.claims.signature`.
const NOT_THREE_PARTS: &str = "it is not three base64url parts separated by dots";

/// What is wrong with a malformed token, as [`AuthError::Malformed`] says it.
fn malformed(what: &str) -> AuthError {
    AuthError::Malformed(what.to_owned())
}

/// A NumericDate claim (seconds since the epoch, possibly fractional): `None` when
/// absent or null, an error naming the claim when it is not a number.
fn seconds(claims: &Value, name: &str) -> Result<Option<f64>, AuthError> {
    match &claims[name] {
        Value::Null => Ok(None),
        value => value.as_f64().map(Some).ok_or_else(|| malformed(&format!("its {name} is not a number"))),
    }
}

/// The seconds since the Unix epoch, as JWT times count them: what the gateway
/// passes as `now` to [`Verifier::authenticate`] and [`hs256_token`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The HS256 secret in environment variable `var`: set, and 32 bytes or more.
fn secret_from_env(var: &str) -> Result<String, String> {
    let secret =
        std::env::var(var).map_err(|_| format!("the environment variable {var} (the JWT secret) is not set"))?;
    if secret.len() < 32 {
        return Err(format!("the JWT secret in {var} is shorter than 32 bytes"));
    }
    Ok(secret)
}

/// A token for `username` that the gateway configured by `config` accepts, valid
/// from `now` (Unix seconds) for `lifetime_secs`: for trying the gateway out and
/// for tests. HS256 only; with RS256 or ES256, tokens come from the identity
/// provider that holds the private key.
pub fn hs256_token(config: &JwtConfig, username: &str, now: u64, lifetime_secs: u64) -> Result<String, String> {
    let KeySource::SecretEnv(var) = &config.key else {
        return Err("only an HS256 gateway (auth.jwt.secret_env) can have its tokens made here".into());
    };
    let secret = secret_from_env(var)?;
    let claims = serde_json::json!({"preferred_username": username, "iat": now, "exp": now + lifetime_secs});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(JwtAlgorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

impl Verifier {
    /// A verifier for `algorithm` with `key`, reading tokens from `cookie`.
    pub fn new(algorithm: Algorithm, key: DecodingKey, cookie: impl Into<String>) -> Self {
        let (algorithm, algorithm_name) = match algorithm {
            Algorithm::HS256 => (JwtAlgorithm::HS256, "HS256"),
            Algorithm::RS256 => (JwtAlgorithm::RS256, "RS256"),
            Algorithm::ES256 => (JwtAlgorithm::ES256, "ES256"),
        };
        let mut validation = Validation::new(algorithm);
        // Time comes in as an argument (checked below), not from the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self { key, validation, algorithm_name, cookie: cookie.into() }
    }

    /// The verifier a configuration asks for: the secret from its environment
    /// variable, or the public key from its PEM file.
    pub fn from_config(config: &JwtConfig) -> Result<Self, String> {
        let key = match (&config.key, config.algorithm) {
            (KeySource::SecretEnv(var), _) => DecodingKey::from_secret(secret_from_env(var)?.as_bytes()),
            (KeySource::PublicKeyFile(path), algorithm) => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let key = match algorithm {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    _ => DecodingKey::from_ec_pem(&pem),
                };
                key.map_err(|e| format!("{} is not a {algorithm:?} public key: {e}", path.display()))?
            }
        };
        Ok(Self::new(config.algorithm, key, config.cookie.clone()))
    }

    /// The username of the client whose request carried `headers`, at `now` (Unix
    /// seconds).
    pub fn authenticate(&self, headers: &HeaderMap, now: u64) -> Result<String, AuthError> {
        let token = self.token(headers).ok_or(AuthError::MissingToken)?;
        self.check_algorithm(token)?;
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).map_err(|e| {
            let refusal = match e.kind() {
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidToken => malformed(NOT_THREE_PARTS),
                ErrorKind::Base64(_) => malformed("a part is not base64url"),
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    malformed("its header or claims are not JSON objects of the expected form")
                }
                // The key rather than the token (a key that does not suit the
                // algorithm): the client cannot fix it; the log says what it was.
                _ => malformed("it cannot be checked"),
            };
            tracing::debug!(error = ?e, %refusal, "token refused");
            refusal
        })?;
        // The claims are read here rather than by serde into a struct, so that a
        // claim of the wrong type is named in words.
        let claims = data.claims;
        if !claims.is_object() {
            return Err(malformed("its claims are not a JSON object"));
        }
        let now_secs = now as f64;
        if seconds(&claims, "exp")?.is_none_or(|exp| exp <= now_secs) {
            return Err(AuthError::Expired);
        }
        if seconds(&claims, "nbf")?.is_some_and(|nbf| nbf > now_secs) {
            return Err(AuthError::NotYetValid);
        }
        match &claims["preferred_username"] {
            Value::String(username) if !username.trim().is_empty() => Ok(username.clone()),
            Value::String(_) | Value::Null => Err(AuthError::MissingUsername),
            _ => Err(malformed("its preferred_username is not a string")),
        }
    }

    /// Refuses a token whose header names another algorithm than the configured
    /// one, whatever the name, before jsonwebtoken parses it: jsonwebtoken
    /// refuses a name it has no variant for (`none` above all) as a JSON error,
    /// which would otherwise be reported as a malformed token.
    fn check_algorithm(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(NOT_THREE_PARTS));
        };
        let not_json = || malformed("its header is not base64url-encoded JSON");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| not_json())?;
        let Ok(Value::Object(header)) = serde_json::from_slice(&bytes) else { return Err(not_json()) };
        let Some(Value::String(alg)) = header.get("alg") else { return Err(malformed("its header has no alg")) };
        if alg != self.algorithm_name {
            return Err(AuthError::WrongAlgorithm);
        }
        Ok(())
    }

    /// The token: the configured cookie first, then `Authorization: Bearer`.
    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let from_cookie = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value.trim_matches('"'));
        from_cookie.filter(|t| !t.is_empty()).or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|t| !t.is_empty())
        })
    }
}
