//! Who a client is: the `preferred_username` claim of a JWT, taken from a cookie
//! (`ID_TOKEN` by default) or an `Authorization: Bearer` header, with its signature
//! checked against the one configured algorithm and key, and its expiry against the
//! time passed in. A client without a valid token is refused at the handshake with
//! 401 and the reason.

use http::HeaderMap;
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use std::fmt;

use crate::config::{Algorithm, JwtConfig, KeySource};

/// Checks tokens for one algorithm and key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
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
    /// The token is not a well-formed JWT.
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

#[derive(Deserialize)]
struct Claims {
    preferred_username: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
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
        let algorithm = match algorithm {
            Algorithm::HS256 => JwtAlgorithm::HS256,
            Algorithm::RS256 => JwtAlgorithm::RS256,
            Algorithm::ES256 => JwtAlgorithm::ES256,
        };
        let mut validation = Validation::new(algorithm);
        // Time comes in as an argument (checked below), not from the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self { key, validation, cookie: cookie.into() }
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
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            other => AuthError::Malformed(format!("{other:?}")),
        })?;
        let claims = data.claims;
        if claims.exp.is_none_or(|exp| exp <= now) {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(AuthError::NotYetValid);
        }
        claims.preferred_username.filter(|u| !u.trim().is_empty()).ok_or(AuthError::MissingUsername)
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
