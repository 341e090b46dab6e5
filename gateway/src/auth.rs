//! Who a client is: the `preferred_username` claim of a JWT, taken from a cookie
//! (`ID_TOKEN` by default) or an `Authorization: Bearer` header, with its signature
//! checked against the one configured algorithm and the configured keys, its
//! issuer and audience against the configured ones, and its expiry against the
//! time passed in (with a leeway for clock skew). A client without a valid token
//! is refused at the handshake with 401 and the reason.
//!
//! Keys come from an environment variable (HS256 secrets, several during a
//! rotation), a PEM file, or a JWKS file (the key set identity providers publish,
//! each key chosen by the token's `kid`). Files are read again by
//! [`Verifier::reload`] (the binary calls it on SIGHUP) and
//! [`Verifier::reload_if_changed`] (the gateway polls it), so keys rotate without
//! a restart; a file that cannot be read or holds no usable key leaves the keys in
//! use as they were.

use base64::Engine;
use chinwag_core::gateway::NamespacePolicy;
use http::HeaderMap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::{Algorithm, JwtConfig, KeySource};

/// The keys tokens are checked against, as read from their source.
struct KeySet {
    /// Keys with a key id (from a JWKS): a token's `kid` picks one.
    named: HashMap<String, DecodingKey>,
    /// Keys without one: the PEM key, the HS256 secrets, JWKS keys with no `kid`.
    unnamed: Vec<DecodingKey>,
    /// Whether the token's `kid` chooses the key (a JWKS): otherwise every key
    /// is tried, whatever the token's `kid` says.
    by_kid: bool,
    /// The bytes of the file the keys were read from, to notice a change.
    read_from: Option<Vec<u8>>,
    /// What was loaded, for the log.
    summary: KeySummary,
}

/// What a load or reload of the keys found: for the log and the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    /// Where the keys came from (a file, or the secrets' variables).
    pub source: String,
    /// How many keys are in use.
    pub keys: usize,
    /// Their key ids (JWKS keys that have one).
    pub kids: Vec<String>,
    /// Keys of the file that were left out, and why (another algorithm, an
    /// encryption key, a key that does not parse).
    pub skipped: Vec<String>,
}

impl fmt::Display for KeySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} key(s)", self.source, self.keys)?;
        if !self.kids.is_empty() {
            write!(f, " (kid {})", self.kids.join(", "))?;
        }
        if !self.skipped.is_empty() {
            write!(f, "; left out: {}", self.skipped.join("; "))?;
        }
        Ok(())
    }
}

/// Checks tokens for one algorithm, with its keys, audiences, issuers and leeway.
/// Clones share their keys: a reload through one is seen by all.
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    keys: Arc<RwLock<Arc<KeySet>>>,
    /// Where the keys are read again from (`None`: given by hand, fixed).
    source: Option<KeySource>,
    validation: Validation,
    /// The configured algorithm as a token's header names it (RFC 7518).
    algorithm_name: &'static str,
    cookie: String,
    audiences: Vec<String>,
    issuers: Vec<String>,
    leeway_secs: u64,
    namespaces: Option<NamespacePolicy>,
    close_on_expiry: bool,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.summary().to_string())
            .field("cookie", &self.cookie)
            .field("audiences", &self.audiences)
            .field("issuers", &self.issuers)
            .field("leeway_secs", &self.leeway_secs)
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

/// A token that passed every check: who it names, and its claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The `preferred_username`.
    pub username: String,
    /// Every claim of the token (verified: its signature covers them).
    pub claims: Map<String, Value>,
    /// When it stops being accepted, in Unix seconds: its `exp` plus the leeway.
    pub expires: f64,
}

/// Why a client was refused (the handshake gets 401 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the cookie or the `Authorization` header.
    MissingToken,
    /// The token is signed with another algorithm than the configured one.
    WrongAlgorithm,
    /// The token's `kid` names none of the keys.
    UnknownKey,
    /// The token has no `kid`, and there are several keys to choose from.
    NoKeyId,
    /// The signature does not match the key.
    BadSignature,
    /// The token's `exp` is past (or it has none).
    Expired,
    /// The token is not valid yet (`nbf`).
    NotYetValid,
    /// The token has no `iss`, and issuers are configured.
    MissingIssuer,
    /// The token's `iss` is none of the configured issuers.
    WrongIssuer,
    /// The token has no `aud`, and audiences are configured.
    MissingAudience,
    /// The token's `aud` names none of the configured audiences.
    WrongAudience,
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
            Self::UnknownKey => f.write_str("the token's key id (kid) is not one of this server's keys"),
            Self::NoKeyId => f.write_str("the token has no key id (kid), and this server has several keys"),
            Self::BadSignature => f.write_str("the token's signature is not valid"),
            Self::Expired => f.write_str("the token has expired (or has no exp)"),
            Self::NotYetValid => f.write_str("the token is not valid yet"),
            Self::MissingIssuer => f.write_str("the token has no iss (issuer), which this server requires"),
            Self::WrongIssuer => f.write_str("the token is from an issuer (iss) this server does not accept"),
            Self::MissingAudience => f.write_str("the token has no aud (audience), which this server requires"),
            Self::WrongAudience => {
                f.write_str("the token is meant for another audience (its aud does not name this server)")
            }
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
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or_else(|| malformed(&format!("its {name} is not a number"))),
    }
}

/// The seconds since the Unix epoch, as JWT times count them: what the gateway
/// passes as `now` to [`Verifier::authenticate`] and [`hs256_token`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An HS256 secret in environment variable `var`: set, and 32 bytes or more.
fn secret_from_env(var: &str) -> Result<String, String> {
    let secret = std::env::var(var).map_err(|_| format!("the environment variable {var} (a JWT secret) is not set"))?;
    if secret.len() < 32 {
        return Err(format!("the JWT secret in {var} is shorter than 32 bytes"));
    }
    Ok(secret)
}

/// A token for `username` that the gateway configured by `config` accepts, valid
/// from `now` (Unix seconds) for `lifetime_secs`: for trying the gateway out and
/// for tests. It carries the first configured audience and issuer, and, when the
/// gateway reads namespaces from a claim, `namespaces` in it (`*` for any).
/// HS256 only, signed with the first secret; with RS256 or ES256, tokens come
/// from the identity provider that holds the private key.
pub fn hs256_token(
    config: &JwtConfig,
    username: &str,
    namespaces: &[String],
    now: u64,
    lifetime_secs: u64,
) -> Result<String, String> {
    let KeySource::SecretEnv(vars) = &config.key else {
        return Err("only an HS256 gateway (auth.jwt.secret_env) can have its tokens made here".into());
    };
    let var = vars.first().ok_or("auth.jwt.secret_env names no variable")?;
    let secret = secret_from_env(var)?;
    let mut claims = serde_json::json!({"preferred_username": username, "iat": now, "exp": now + lifetime_secs});
    if let Some(audience) = config.audiences.first() {
        claims["aud"] = audience.as_str().into();
    }
    if let Some(issuer) = config.issuers.first() {
        claims["iss"] = issuer.as_str().into();
    }
    if let (Some(NamespacePolicy::Claim(claim)), false) = (&config.namespaces, namespaces.is_empty()) {
        claims[claim.as_str()] = namespaces.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(JwtAlgorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

fn jwt_algorithm(algorithm: Algorithm) -> (JwtAlgorithm, &'static str) {
    match algorithm {
        Algorithm::HS256 => (JwtAlgorithm::HS256, "HS256"),
        Algorithm::RS256 => (JwtAlgorithm::RS256, "RS256"),
        Algorithm::ES256 => (JwtAlgorithm::ES256, "ES256"),
    }
}

/// Reads the keys of `source` for `algorithm`.
fn load(source: &KeySource, algorithm: Algorithm) -> Result<KeySet, String> {
    match source {
        KeySource::SecretEnv(vars) => {
            let secrets = vars.iter().map(|var| secret_from_env(var)).collect::<Result<Vec<_>, _>>()?;
            Ok(KeySet {
                named: HashMap::new(),
                unnamed: secrets.iter().map(|s| DecodingKey::from_secret(s.as_bytes())).collect(),
                by_kid: false,
                read_from: None,
                summary: KeySummary {
                    source: format!("the secret(s) in {}", vars.join(", ")),
                    keys: secrets.len(),
                    kids: Vec::new(),
                    skipped: Vec::new(),
                },
            })
        }
        KeySource::PublicKeyFile(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let key = match algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                _ => DecodingKey::from_ec_pem(&pem),
            };
            let key = key.map_err(|e| format!("{} is not a {algorithm:?} public key: {e}", path.display()))?;
            Ok(KeySet {
                named: HashMap::new(),
                unnamed: vec![key],
                by_kid: false,
                read_from: Some(pem),
                summary: KeySummary {
                    source: path.display().to_string(),
                    keys: 1,
                    kids: Vec::new(),
                    skipped: Vec::new(),
                },
            })
        }
        KeySource::JwksFile(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut set = jwks(&bytes, algorithm).map_err(|e| format!("{}: {e}", path.display()))?;
            set.summary.source = path.display().to_string();
            set.read_from = Some(bytes);
            Ok(set)
        }
    }
}

/// The keys of a JWKS (RFC 7517 §5: `{"keys": [...]}`) usable with `algorithm`.
/// Keys for another algorithm or for encryption, and keys that do not parse,
/// are left out (and named in the summary): an identity provider's set often
/// holds such keys beside the signing ones. A set with no usable key is an error.
fn jwks(bytes: &[u8], algorithm: Algorithm) -> Result<KeySet, String> {
    let not_jwks = "not a JWKS: a JSON object with a \"keys\" array";
    let document: Value = serde_json::from_slice(bytes).map_err(|e| format!("{not_jwks} ({e})"))?;
    let Some(Value::Array(entries)) = document.get("keys") else { return Err(not_jwks.into()) };
    let (mut named, mut unnamed, mut skipped) = (HashMap::new(), Vec::new(), Vec::new());
    let wanted = match algorithm {
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::ES256 => KeyAlgorithm::ES256,
    };
    for (i, entry) in entries.iter().enumerate() {
        let label = match entry.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("kid {kid}"),
            None => format!("key #{i}"),
        };
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                skipped.push(format!("{label}: not a key this server can read ({e})"));
                continue;
            }
        };
        let suits = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
            _ => false,
        };
        let why_not = if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            Some("an encryption key (use: enc)".to_owned())
        } else if jwk.common.key_algorithm.is_some_and(|alg| alg != wanted) {
            Some(format!("for another algorithm than {algorithm:?}"))
        } else if !suits {
            Some(format!("not a {algorithm:?} key"))
        } else {
            None
        };
        if let Some(why_not) = why_not {
            skipped.push(format!("{label}: {why_not}"));
            continue;
        }
        let key = match DecodingKey::from_jwk(&jwk) {
            Ok(key) => key,
            Err(e) => {
                skipped.push(format!("{label}: not a valid key ({e})"));
                continue;
            }
        };
        match jwk.common.key_id {
            Some(kid) if named.contains_key(&kid) => skipped.push(format!("{label}: a second key with this kid")),
            Some(kid) => {
                named.insert(kid, key);
            }
            None => unnamed.push(key),
        }
    }
    let keys = named.len() + unnamed.len();
    if keys == 0 {
        let detail = if skipped.is_empty() { String::new() } else { format!(" (left out: {})", skipped.join("; ")) };
        return Err(format!("no usable {algorithm:?} key in it{detail}"));
    }
    let mut kids: Vec<String> = named.keys().cloned().collect();
    kids.sort();
    Ok(KeySet {
        named,
        unnamed,
        by_kid: true,
        read_from: None,
        summary: KeySummary { source: String::new(), keys, kids, skipped },
    })
}

impl Verifier {
    /// A verifier for `algorithm` with one fixed `key`, reading tokens from
    /// `cookie`; no audience, issuer or leeway (see the builder methods), and no
    /// namespace policy: a gateway refuses it unless its connect handler approves
    /// each connection, or [`namespaces`](Self::namespaces) says who may join what.
    pub fn new(algorithm: Algorithm, key: DecodingKey, cookie: impl Into<String>) -> Self {
        let keys = KeySet {
            named: HashMap::new(),
            unnamed: vec![key],
            by_kid: false,
            read_from: None,
            summary: KeySummary {
                source: "a key given by the program".into(),
                keys: 1,
                kids: Vec::new(),
                skipped: Vec::new(),
            },
        };
        Self::with_keys(algorithm, keys, None, cookie.into())
    }

    fn with_keys(algorithm: Algorithm, keys: KeySet, source: Option<KeySource>, cookie: String) -> Self {
        let (jwt, algorithm_name) = jwt_algorithm(algorithm);
        let mut validation = Validation::new(jwt);
        // Time comes in as an argument, and the claims are checked below, in
        // words: jsonwebtoken only checks the signature.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            algorithm,
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            source,
            validation,
            algorithm_name,
            cookie,
            audiences: Vec::new(),
            issuers: Vec::new(),
            leeway_secs: 0,
            namespaces: None,
            close_on_expiry: true,
        }
    }

    /// Also requires a token's `aud` to name one of `audiences` (none: `aud` is
    /// not checked).
    pub fn audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// Also requires a token's `iss` to be one of `issuers` (none: not checked).
    pub fn issuers(mut self, issuers: Vec<String>) -> Self {
        self.issuers = issuers;
        self
    }

    /// Allows `secs` of clock skew on `exp` and `nbf`.
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Who may join which namespace: any, or those a claim lists.
    pub fn namespaces(mut self, policy: NamespacePolicy) -> Self {
        self.namespaces = Some(policy);
        self
    }

    /// Whether connections are closed when their token expires (default: yes).
    pub fn close_on_expiry(mut self, close: bool) -> Self {
        self.close_on_expiry = close;
        self
    }

    /// The verifier a configuration asks for: the secrets from their environment
    /// variables, or the public keys from their file; its audiences, issuers,
    /// leeway and namespace policy.
    pub fn from_config(config: &JwtConfig) -> Result<Self, String> {
        let keys = load(&config.key, config.algorithm)?;
        let mut verifier = Self::with_keys(config.algorithm, keys, Some(config.key.clone()), config.cookie.clone())
            .audiences(config.audiences.clone())
            .issuers(config.issuers.clone())
            .leeway(config.leeway_secs)
            .close_on_expiry(config.close_on_expiry);
        verifier.namespaces = config.namespaces.clone();
        Ok(verifier)
    }

    /// The namespace policy (`None`: unstated; only approval makes that safe).
    pub fn namespace_policy(&self) -> Option<&NamespacePolicy> {
        self.namespaces.as_ref()
    }

    /// Whether connections are closed when their token expires.
    pub fn closes_on_expiry(&self) -> bool {
        self.close_on_expiry
    }

    /// What keys are in use.
    pub fn summary(&self) -> KeySummary {
        self.current().summary.clone()
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the keys again from their file (or variables), and uses them from now
    /// on. If they cannot be read, or none is usable, the keys in use stay, and
    /// the error says why. A verifier built by hand has nothing to reload.
    pub fn reload(&self) -> Result<KeySummary, String> {
        let Some(source) = &self.source else { return Err("the keys were given by the program".into()) };
        let keys = load(source, self.algorithm)?;
        let summary = keys.summary.clone();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(summary)
    }

    /// Reloads the keys if their file's contents changed since they were read:
    /// `Ok(None)` when unchanged (or when they come from variables). Comparing the
    /// contents, not the modification time, also notices a file replaced by a
    /// rename or through a symbolic link (as Kubernetes updates a mounted Secret).
    pub fn reload_if_changed(&self) -> Result<Option<KeySummary>, String> {
        let path = match &self.source {
            Some(KeySource::PublicKeyFile(path) | KeySource::JwksFile(path)) => path,
            _ => return Ok(None),
        };
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if self.current().read_from.as_deref() == Some(&bytes[..]) {
            return Ok(None);
        }
        self.reload().map(Some)
    }

    /// Whether the keys come from a file that can change.
    pub fn watches_a_file(&self) -> bool {
        matches!(&self.source, Some(KeySource::PublicKeyFile(_) | KeySource::JwksFile(_)))
    }

    /// The username of the client whose request carried `headers`, at `now` (Unix
    /// seconds).
    pub fn authenticate(&self, headers: &HeaderMap, now: u64) -> Result<String, AuthError> {
        self.verify(headers, now).map(|verified| verified.username)
    }

    /// The verified token of the client whose request carried `headers`, at `now`
    /// (Unix seconds): its username, its claims and when it expires.
    pub fn verify(&self, headers: &HeaderMap, now: u64) -> Result<Verified, AuthError> {
        let token = self.token(headers).ok_or(AuthError::MissingToken)?;
        let kid = self.check_header(token)?;
        let keys = self.current();
        let candidates: Vec<&DecodingKey> = if keys.by_kid {
            match &kid {
                Some(kid) => vec![keys.named.get(kid).ok_or(AuthError::UnknownKey)?],
                None if keys.named.len() + keys.unnamed.len() == 1 => {
                    keys.named.values().chain(&keys.unnamed).collect()
                }
                None => return Err(AuthError::NoKeyId),
            }
        } else {
            keys.unnamed.iter().collect()
        };
        let claims = self.decode(token, &candidates)?;
        self.check_claims(claims, now as f64)
    }

    /// The claims of `token`, signed by one of `keys` (tried in order: the secrets
    /// of a rotation, new and old).
    fn decode(&self, token: &str, keys: &[&DecodingKey]) -> Result<Value, AuthError> {
        let mut refusal = AuthError::BadSignature;
        for key in keys {
            match jsonwebtoken::decode::<Value>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    refusal = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                        ErrorKind::InvalidToken => malformed(NOT_THREE_PARTS),
                        ErrorKind::Base64(_) => malformed("a part is not base64url"),
                        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                            malformed("its header or claims are not JSON objects of the expected form")
                        }
                        // The key rather than the token (a key that does not suit
                        // the algorithm): the client cannot fix it; the log says
                        // what it was.
                        _ => malformed("it cannot be checked"),
                    };
                    tracing::debug!(error = ?e, %refusal, "token refused");
                    // Only a signature that does not match is worth the next key:
                    // anything else is wrong whatever the key.
                    if refusal != AuthError::BadSignature {
                        return Err(refusal);
                    }
                }
            }
        }
        Err(refusal)
    }

    /// The claims' checks, in words: times (with the leeway), issuer, audience,
    /// username. The claims are read here rather than by serde into a struct, so
    /// that a claim of the wrong type is named.
    fn check_claims(&self, claims: Value, now: f64) -> Result<Verified, AuthError> {
        let Value::Object(claims) = claims else { return Err(malformed("its claims are not a JSON object")) };
        let leeway = self.leeway_secs as f64;
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                None | Some(Value::Null) => return Err(AuthError::MissingIssuer),
                Some(Value::String(iss)) if self.issuers.contains(iss) => {}
                Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
                Some(_) => return Err(malformed("its iss is not a string")),
            }
        }
        if !self.audiences.is_empty() {
            // RFC 7519 §4.1.3: one string, or an array of them.
            let named = |aud: &Value| aud.as_str().is_some_and(|a| self.audiences.iter().any(|ours| ours == a));
            match claims.get("aud") {
                None | Some(Value::Null) => return Err(AuthError::MissingAudience),
                Some(Value::String(_)) if named(&claims["aud"]) => {}
                Some(Value::String(_)) => return Err(AuthError::WrongAudience),
                Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => {
                    if !auds.iter().any(named) {
                        return Err(AuthError::WrongAudience);
                    }
                }
                Some(_) => return Err(malformed("its aud is not a string or a list of strings")),
            }
        }
        let expires = match seconds(&claims, "exp")? {
            Some(exp) if exp + leeway > now => exp + leeway,
            _ => return Err(AuthError::Expired),
        };
        if seconds(&claims, "nbf")?.is_some_and(|nbf| nbf - leeway > now) {
            return Err(AuthError::NotYetValid);
        }
        let username = match claims.get("preferred_username") {
            Some(Value::String(username)) if !username.trim().is_empty() => username.clone(),
            None | Some(Value::String(_) | Value::Null) => return Err(AuthError::MissingUsername),
            _ => return Err(malformed("its preferred_username is not a string")),
        };
        Ok(Verified { username, claims, expires })
    }

    /// Refuses a token whose header names another algorithm than the configured
    /// one, whatever the name, before jsonwebtoken parses it (jsonwebtoken
    /// refuses a name it has no variant for, `none` above all, as a JSON error,
    /// which would otherwise be reported as a malformed token); returns its `kid`.
    fn check_header(&self, token: &str) -> Result<Option<String>, AuthError> {
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
        match header.get("kid") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(kid)) => Ok(Some(kid.clone())),
            Some(_) => Err(malformed("its header's kid is not a string")),
        }
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
