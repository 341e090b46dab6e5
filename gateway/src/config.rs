//! The gateway's configuration file (`conf/socket.yaml`): the structure of the
//! socket gateway document (`gateway.socket.path`, `onconnect.publish`,
//! `onmessage.publish`, `onmessage.types[].{type, publish}`, `onclose.publish`,
//! `send.subscribe`, `broadcast.subscribe`), plus what chinwag needs beyond it:
//! `listen`, `auth` (with its namespace policy, audiences, issuers, leeway and
//! keys), `onconnect.approve`, `bus`, `limits` (with `trusted_proxies`),
//! `heartbeat`, `admin` and `ready_requires_bus`.
//!
//! A bad file is refused as a whole, with the key and the problem
//! ("gateway.socket.path: must start with /"); unknown keys are errors, so that a
//! typo is never silently ignored.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use chinwag_core::gateway::NamespacePolicy;
use chinwag_core::gateway::{Topics, TypeRoute};
use chinwag_core::handshake::{Cidr, TrustedProxies};

/// A configuration that was read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The WebSocket endpoint's path, literal (no `{`, `}`, `?`, `#` or spaces);
    /// clients add `?namespace=`.
    pub path: String,
    /// The topics events are published to.
    pub topics: Topics,
    /// The topic whose messages are sent to one user (`send.subscribe`).
    pub send_topic: Option<String>,
    /// The topic whose messages are broadcast (`broadcast.subscribe`).
    pub broadcast_topic: Option<String>,
    /// How clients prove who they are.
    pub auth: Auth,
    /// Whether a new connection waits for the connect handler's reply before it
    /// is admitted (`socket.onconnect.approve`), and for how many seconds at most
    /// (`approve_timeout_secs`, 1 to [`MAX_APPROVE_TIMEOUT_SECS`]); `None`: admitted
    /// at once.
    pub approve_timeout_secs: Option<u64>,
    /// Where events go.
    pub bus: Bus,
    /// The largest message a client may send, in bytes (larger: an error message,
    /// and the message is not delivered).
    pub max_message_size: usize,
    /// Open connections at most; over it, handshakes get 503.
    pub max_connections: usize,
    /// Open connections per client address at most (`None`, the default: no
    /// limit; `0` in the file); over it, 429. Behind a reverse proxy, without
    /// `trusted_proxies` this limits the proxy (all its clients together).
    pub max_connections_per_ip: Option<usize>,
    /// The reverse proxies whose `Forwarded` or `X-Forwarded-For` header gives the
    /// client address (`limits.trusted_proxies`: CIDR ranges or addresses). The
    /// client address is what `max_connections_per_ip` counts and the events'
    /// `context.client_address`.
    pub trusted_proxies: TrustedProxies,
    /// Messages per second each connection may send on average, and at once after
    /// a quiet spell (`None`: no limit). Over it, messages are dropped, the client
    /// gets an error message ([`RATE_WARNING`](crate::service::RATE_WARNING)) once
    /// per flood, and a client that keeps flooding is closed with 1008.
    pub message_rate: Option<(f64, u32)>,
    /// Web page origins allowed to connect besides the server's own host (`*`: any).
    pub allowed_origins: Vec<String>,
    /// Ping after this many seconds of silence (1 to [`MAX_HEARTBEAT_SECS`]).
    pub heartbeat_interval_secs: u64,
    /// Close a client that has not answered within this many seconds after a ping
    /// (1 to [`MAX_HEARTBEAT_SECS`]).
    pub heartbeat_timeout_secs: u64,
    /// The admin listener (metrics, health, readiness): `gateway.admin`, an address
    /// or `off` (`None`); default 127.0.0.1:9091. Never the public port.
    pub admin: Option<SocketAddr>,
    /// Whether `/ready` answers 503 while the Redis bus is down
    /// (`gateway.ready_requires_bus`, default false). Every node shares one Redis:
    /// with it on, an outage takes every node out of the load balancer at once, and
    /// clients cannot even connect; off, nodes keep serving what needs no bus.
    pub ready_requires_bus: bool,
    /// Whether permessage-deflate (RFC 7692) is accepted from clients that offer
    /// it, as every browser does (`gateway.deflate`, default true). On, JSON
    /// messages travel compressed, with the server's defaults: no context
    /// takeover, so an idle connection holds no compression state and a
    /// broadcast is compressed once for all its recipients.
    pub deflate: bool,
}

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A JWT in the `ID_TOKEN` cookie (or `Authorization: Bearer`), whose
    /// `preferred_username` is the user.
    Jwt(JwtConfig),
    /// Development only: the username comes from `?username=`, unchecked. Logged as a
    /// warning at start.
    DevelopmentUsernames,
}

/// The JWT check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The one algorithm accepted.
    pub algorithm: Algorithm,
    /// Where the keys come from.
    pub key: KeySource,
    /// The cookie that holds the token.
    pub cookie: String,
    /// The accepted audiences (`audience`: one or a list): a token's `aud` must
    /// name one of them. Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// The accepted issuers (`issuer`: one or a list): a token's `iss` must be one
    /// of them. Empty: `iss` is not checked.
    pub issuers: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (`leeway_secs`, 0 to
    /// [`MAX_LEEWAY_SECS`]; default 0).
    pub leeway_secs: u64,
    /// Who may join which namespace (`namespaces_claim: NAME`, or `any_namespace:
    /// true`); `None` when the file states neither, which only a gateway whose
    /// connect handler approves each connection may do.
    pub namespaces: Option<NamespacePolicy>,
    /// Whether a connection is closed when its token expires
    /// ([`TOKEN_EXPIRED_CODE`](chinwag_core::gateway::TOKEN_EXPIRED_CODE);
    /// `close_on_expiry`, default true).
    pub close_on_expiry: bool,
}

/// The accepted JWT signature algorithm (one, so that a token cannot choose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 and a public key.
    RS256,
    /// ECDSA P-256 with SHA-256 and a public key.
    ES256,
}

/// Where the JWT keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// HS256 secrets in environment variables (never in the file): one, or
    /// several during a rotation (a token signed with any of them is accepted;
    /// `chinwag token` signs with the first).
    SecretEnv(Vec<String>),
    /// A PEM public key file (RS256, ES256), relative to the config file.
    PublicKeyFile(PathBuf),
    /// A JWKS file (RS256, ES256), relative to the config file: the JSON key set
    /// identity providers publish, keys chosen by the token's `kid`; read again on
    /// SIGHUP and when it changes.
    JwksFile(PathBuf),
}

/// The event bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// In this process: handlers registered through the library API.
    InProcess,
    /// Redis pub/sub at this URL (`redis://host:port[/db]`).
    Redis(String),
}

impl std::str::FromStr for Bus {
    type Err = String;

    /// `in-process`, or a `redis://host[:port][/db]` URL.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "in-process" => Ok(Bus::InProcess),
            url if url.starts_with("redis://") && url.len() > "redis://".len() => Ok(Bus::Redis(url.to_owned())),
            other => Err(format!("{other:?}: use in-process or a redis:// URL")),
        }
    }
}

/// A configuration refused: the key (a dotted path) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, like `gateway.socket.onmessage.types[1].publish` (empty: the file).
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() { f.write_str(&self.problem) } else { write!(f, "{}: {}", self.key, self.problem) }
    }
}

impl std::error::Error for ConfigError {}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), problem: problem.into() }
}

// ----- the file's structure ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    gateway: GatewaySection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewaySection {
    #[serde(default = "default_listen")]
    listen: String,
    socket: SocketSection,
    auth: Option<AuthSection>,
    #[serde(default = "default_bus")]
    bus: String,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    heartbeat: HeartbeatSection,
    #[serde(default = "default_admin")]
    admin: String,
    #[serde(default)]
    ready_requires_bus: bool,
    #[serde(default = "default_deflate")]
    deflate: bool,
}

fn default_deflate() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketSection {
    path: String,
    onconnect: Option<OnConnect>,
    onmessage: Option<OnMessage>,
    onclose: Option<Publish>,
    send: Option<Subscribe>,
    broadcast: Option<Subscribe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    publish: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnConnect {
    publish: String,
    #[serde(default)]
    approve: bool,
    approve_timeout_secs: Option<u64>,
}

/// One string, or a list of them (an audience, an issuer, a secret's variable).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    subscribe: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnMessage {
    publish: Option<String>,
    #[serde(default)]
    types: Vec<TypeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeEntry {
    #[serde(rename = "type")]
    message_type: String,
    publish: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    jwt: Option<JwtSection>,
    #[serde(default)]
    development_usernames: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtSection {
    algorithm: Algorithm,
    secret_env: Option<OneOrMany>,
    public_key_file: Option<String>,
    public_keys_file: Option<String>,
    #[serde(default = "default_cookie")]
    cookie: String,
    audience: Option<OneOrMany>,
    issuer: Option<OneOrMany>,
    #[serde(default)]
    leeway_secs: u64,
    namespaces_claim: Option<String>,
    #[serde(default)]
    any_namespace: bool,
    #[serde(default = "default_true")]
    close_on_expiry: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    #[serde(default = "default_max_message_size")]
    max_message_size: usize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// 0: no limit.
    #[serde(default)]
    max_connections_per_ip: usize,
    #[serde(default = "default_message_rate")]
    message_rate: f64,
    #[serde(default = "default_message_burst")]
    message_burst: u32,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_message_size: default_max_message_size(),
            max_connections: default_max_connections(),
            max_connections_per_ip: 0,
            message_rate: default_message_rate(),
            message_burst: default_message_burst(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

// The service's defaults (chinwag_service::Limits), which suit a gateway too: no
// per-IP limit among them, as behind a proxy every client has the proxy's address.
fn default_max_connections() -> usize {
    10_000
}
fn default_message_rate() -> f64 {
    50.0
}
fn default_message_burst() -> u32 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatSection {
    #[serde(default = "default_heartbeat")]
    interval_secs: u64,
    #[serde(default = "default_heartbeat")]
    timeout_secs: u64,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        Self { interval_secs: default_heartbeat(), timeout_secs: default_heartbeat() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:4000".to_owned()
}
fn default_admin() -> String {
    "127.0.0.1:9091".to_owned()
}
fn default_bus() -> String {
    "in-process".to_owned()
}
fn default_cookie() -> String {
    "ID_TOKEN".to_owned()
}
/// 64 KiB, as Centrifugo's default and the chat's.
fn default_max_message_size() -> usize {
    64 << 10
}
fn default_heartbeat() -> u64 {
    30
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad("", format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and checks YAML text; relative key files are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let deserializer = yaml_serde::Deserializer::from_str(text);
        let file: File = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // A syntax error ends the path in `?` segments: the key is what was known.
            let path = e.path().to_string();
            let key = path.trim_end_matches(".?").trim_end_matches('?').trim_end_matches('.').to_owned();
            // The YAML error names the enclosing key itself; the key is said once.
            let problem = e.into_inner().to_string();
            let problem = match problem.split_once(": ") {
                Some((prefix, rest)) if key.starts_with(prefix) => rest.to_owned(),
                _ => problem,
            };
            bad(&key, problem)
        })?;
        let g = file.gateway;
        let admin = match g.admin.as_str() {
            "off" => None,
            addr => Some(addr.parse().map_err(|_| {
                bad("gateway.admin", format!("{addr:?} is neither an address and port like 127.0.0.1:9091 nor off"))
            })?),
        };
        // (Port 0 asks for any free port: two of those never clash.)
        if admin.is_some_and(|a: SocketAddr| a.port() != 0) && admin == g.listen.parse().ok() {
            return Err(bad("gateway.admin", "must not be the public address (gateway.listen)"));
        }
        let listen = g.listen.parse().map_err(|_| {
            bad("gateway.listen", format!("{:?} is not an address and port like 127.0.0.1:4000", g.listen))
        })?;
        let socket = g.socket;
        check_path(&socket.path)?;
        // Every topic is checked where it is named, so that a refusal names its key.
        let topic = |key: &str, value: String| -> Result<String, ConfigError> {
            if value.trim().is_empty() {
                Err(bad(key, "a topic name cannot be empty"))
            } else if value.starts_with(crate::envelope::REPLY_CHANNEL_PREFIX) {
                Err(bad(key, format!("{value:?}: topics starting with chinwag:reply: are reserved")))
            } else {
                Ok(value)
            }
        };
        let (on_connect, approve_timeout_secs) = match socket.onconnect {
            None => (None, None),
            Some(OnConnect { publish, approve, approve_timeout_secs }) => {
                let publish = topic("gateway.socket.onconnect.publish", publish)?;
                let timeout = match (approve, approve_timeout_secs) {
                    (true, secs) => Some(secs.unwrap_or(DEFAULT_APPROVE_TIMEOUT_SECS)),
                    (false, None) => None,
                    (false, Some(_)) => {
                        return Err(bad(
                            "gateway.socket.onconnect.approve_timeout_secs",
                            "has no effect without approve: true",
                        ));
                    }
                };
                if let Some(secs) = timeout {
                    check_approve_timeout(secs)?;
                }
                (Some(publish), timeout)
            }
        };
        let on_close = socket.onclose.map(|p| topic("gateway.socket.onclose.publish", p.publish)).transpose()?;
        let (on_message, entries) = match socket.onmessage {
            Some(m) => (m.publish.map(|p| topic("gateway.socket.onmessage.publish", p)).transpose()?, m.types),
            None => (None, Vec::new()),
        };
        let mut message_types: Vec<TypeRoute> = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let key = format!("gateway.socket.onmessage.types[{i}]");
            if entry.message_type.is_empty() {
                return Err(bad(&format!("{key}.type"), "a message type cannot be empty"));
            }
            if message_types.iter().any(|t| t.message_type == entry.message_type) {
                return Err(bad(&format!("{key}.type"), format!("type {:?} is listed twice", entry.message_type)));
            }
            let publish = topic(&format!("{key}.publish"), entry.publish)?;
            message_types.push(TypeRoute { message_type: entry.message_type, topic: publish });
        }
        let send_topic = socket.send.map(|s| topic("gateway.socket.send.subscribe", s.subscribe)).transpose()?;
        let broadcast_topic =
            socket.broadcast.map(|s| topic("gateway.socket.broadcast.subscribe", s.subscribe)).transpose()?;
        // On a bus between processes, a topic is a channel: one the gateway both
        // published and subscribed to would feed its own events back as commands.
        if send_topic.is_some() && send_topic == broadcast_topic {
            return Err(bad("gateway.socket.broadcast.subscribe", "must differ from send.subscribe"));
        }
        let published =
            on_connect.iter().chain(&on_message).chain(&on_close).chain(message_types.iter().map(|t| &t.topic));
        for name in published {
            if Some(name) == send_topic.as_ref() || Some(name) == broadcast_topic.as_ref() {
                return Err(bad(
                    "gateway.socket",
                    format!("{name:?} is both published to and subscribed to; events would come back as commands"),
                ));
            }
        }

        let auth = match g.auth {
            None => {
                return Err(bad(
                    "gateway.auth",
                    "missing: configure auth.jwt (or, for development only, auth.development_usernames: true)",
                ));
            }
            Some(AuthSection { jwt: Some(_), development_usernames: true }) => {
                return Err(bad("gateway.auth", "choose one of jwt and development_usernames"));
            }
            Some(AuthSection { jwt: None, development_usernames: true }) => Auth::DevelopmentUsernames,
            Some(AuthSection { jwt: None, development_usernames: false }) => {
                return Err(bad("gateway.auth.jwt", "missing: the gateway needs a way to know its users"));
            }
            Some(AuthSection { jwt: Some(jwt), .. }) => Auth::Jwt(jwt_config(jwt, base)?),
        };
        check_namespace_policy(&auth, approve_timeout_secs)?;
        let bus = g.bus.parse::<Bus>().map_err(|problem| bad("gateway.bus", problem))?;
        if g.limits.max_message_size < 1 {
            return Err(bad("gateway.limits.max_message_size", "must be at least 1 byte"));
        }
        let limits = &g.limits;
        for (key, value) in
            [("max_connections", limits.max_connections), ("message_burst", limits.message_burst as usize)]
        {
            if value == 0 {
                return Err(bad(&format!("gateway.limits.{key}"), "must be at least 1"));
            }
        }
        if !limits.message_rate.is_finite() || limits.message_rate < 0.0 {
            return Err(bad("gateway.limits.message_rate", "messages per second: 0 (no limit) or more"));
        }
        if let Some(origin) = limits.allowed_origins.iter().find(|o| o.is_empty()) {
            return Err(bad("gateway.limits.allowed_origins", format!("{origin:?} is not an origin")));
        }
        let trusted_proxies = limits
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, range)| {
                range.parse::<Cidr>().map_err(|e| bad(&format!("gateway.limits.trusted_proxies[{i}]"), e.to_string()))
            })
            .collect::<Result<TrustedProxies, _>>()?;
        check_heartbeat("gateway.heartbeat.interval_secs", g.heartbeat.interval_secs)?;
        check_heartbeat("gateway.heartbeat.timeout_secs", g.heartbeat.timeout_secs)?;
        Ok(Config {
            listen,
            path: socket.path,
            topics: Topics { on_connect, on_message, message_types, on_close },
            send_topic,
            broadcast_topic,
            auth,
            approve_timeout_secs,
            bus,
            max_message_size: g.limits.max_message_size,
            max_connections: g.limits.max_connections,
            max_connections_per_ip: Some(g.limits.max_connections_per_ip).filter(|&n| n > 0),
            trusted_proxies,
            message_rate: (g.limits.message_rate > 0.0).then_some((g.limits.message_rate, g.limits.message_burst)),
            allowed_origins: g.limits.allowed_origins,
            heartbeat_interval_secs: g.heartbeat.interval_secs,
            heartbeat_timeout_secs: g.heartbeat.timeout_secs,
            admin,
            ready_requires_bus: g.ready_requires_bus,
            deflate: g.deflate,
        })
    }
}

/// The longest heartbeat interval or timeout, in seconds: a day. Far beyond any
/// useful heartbeat, so a larger value is a mistake (milliseconds typed as
/// seconds, say); and at the extreme a deadline `Instant` cannot hold would turn
/// the heartbeat off without a word (the core treats it as "never", where plain
/// `Instant + Duration` would panic).
pub const MAX_HEARTBEAT_SECS: u64 = 24 * 60 * 60;

/// The endpoint's path: `/` and a literal path, matched as it is. `{` and `}` are
/// refused: to the server's router they would be parameters (or an invalid
/// pattern), which the gateway does not use.
pub(crate) fn check_path(path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(bad("gateway.socket.path", format!("{path:?} must be a path starting with / (no query)")));
    }
    if path.contains(['{', '}']) {
        return Err(bad("gateway.socket.path", format!("{path:?}: a path cannot contain {{ or }}")));
    }
    Ok(())
}

/// A heartbeat interval or timeout: 1 second to [`MAX_HEARTBEAT_SECS`].
pub(crate) fn check_heartbeat(key: &str, secs: u64) -> Result<(), ConfigError> {
    if secs == 0 {
        Err(bad(key, "must be at least 1 second"))
    } else if secs > MAX_HEARTBEAT_SECS {
        Err(bad(key, format!("must be at most {MAX_HEARTBEAT_SECS} seconds (a day)")))
    } else {
        Ok(())
    }
}

/// The default of `socket.onconnect.approve_timeout_secs`.
pub const DEFAULT_APPROVE_TIMEOUT_SECS: u64 = 10;

/// The longest `approve_timeout_secs`: an hour. A pending connection holds a
/// place under `max_connections` and gets nothing; a handler slower than that
/// is a broken one.
pub const MAX_APPROVE_TIMEOUT_SECS: u64 = 3600;

/// The largest `leeway_secs`: five minutes. Clocks that disagree by more are
/// broken, and a larger leeway would keep expired tokens valid.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// An approval timeout: 1 second to [`MAX_APPROVE_TIMEOUT_SECS`].
pub(crate) fn check_approve_timeout(secs: u64) -> Result<(), ConfigError> {
    let key = "gateway.socket.onconnect.approve_timeout_secs";
    if secs == 0 {
        Err(bad(key, "must be at least 1 second"))
    } else if secs > MAX_APPROVE_TIMEOUT_SECS {
        Err(bad(key, format!("must be at most {MAX_APPROVE_TIMEOUT_SECS} seconds (an hour)")))
    } else {
        Ok(())
    }
}

/// What the refusal of a JWT gateway without a namespace policy says.
pub const NO_NAMESPACE_POLICY: &str = "no namespace policy: any user with a valid token could join any namespace \
     (?namespace=) and get its broadcasts. State one: namespaces_claim: CLAIM (the token lists the namespaces its \
     user may join), or socket.onconnect.approve: true (a connect handler admits each connection), or \
     any_namespace: true (a single tenant: every user may join every namespace)";

/// With JWT users the file must say who may join which namespace: a claim,
/// approval by the connect handler, or any namespace, said explicitly.
/// (Development usernames are anyone's anyway: any namespace.)
pub(crate) fn check_namespace_policy(auth: &Auth, approve_timeout_secs: Option<u64>) -> Result<(), ConfigError> {
    match auth {
        Auth::Jwt(JwtConfig { namespaces: None, .. }) if approve_timeout_secs.is_none() => {
            Err(bad("gateway.auth.jwt", NO_NAMESPACE_POLICY))
        }
        _ => Ok(()),
    }
}

fn names(key: &str, what: &str, value: Option<OneOrMany>) -> Result<Vec<String>, ConfigError> {
    let names = value.map(OneOrMany::into_vec).unwrap_or_default();
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(bad(key, format!("{what} cannot be empty")));
    }
    Ok(names)
}

fn jwt_config(jwt: JwtSection, base: &Path) -> Result<JwtConfig, ConfigError> {
    let file = |f: String| (!f.is_empty()).then(|| base.join(f));
    let pem = jwt.public_key_file.map(file);
    let jwks = jwt.public_keys_file.map(file);
    let key = match (jwt.algorithm, jwt.secret_env, pem, jwks) {
        (Algorithm::HS256, Some(env), None, None) => {
            let vars = env.into_vec();
            if vars.is_empty() || vars.iter().any(|v| v.is_empty()) {
                return Err(bad("gateway.auth.jwt.secret_env", "a variable's name cannot be empty"));
            }
            KeySource::SecretEnv(vars)
        }
        (Algorithm::HS256, _, _, _) => {
            return Err(bad(
                "gateway.auth.jwt",
                "HS256 takes secret_env (the name of the variable holding the secret, or a list of them during \
                 a rotation), and no public_key_file or public_keys_file",
            ));
        }
        (_, None, Some(_), Some(_)) => {
            return Err(bad(
                "gateway.auth.jwt",
                "public_key_file (one PEM key) and public_keys_file (a JWKS key set) exclude each other: choose one",
            ));
        }
        (_, None, Some(Some(pem)), None) => KeySource::PublicKeyFile(pem),
        (_, None, None, Some(Some(jwks))) => KeySource::JwksFile(jwks),
        (algorithm, _, _, _) => {
            return Err(bad(
                "gateway.auth.jwt",
                format!(
                    "{algorithm:?} takes public_key_file (a PEM file) or public_keys_file (a JWKS file), \
                     and no secret_env"
                ),
            ));
        }
    };
    if jwt.cookie.is_empty() {
        return Err(bad("gateway.auth.jwt.cookie", "a cookie name cannot be empty"));
    }
    let audiences = names("gateway.auth.jwt.audience", "an audience", jwt.audience)?;
    let issuers = names("gateway.auth.jwt.issuer", "an issuer", jwt.issuer)?;
    if jwt.leeway_secs > MAX_LEEWAY_SECS {
        return Err(bad(
            "gateway.auth.jwt.leeway_secs",
            format!("must be at most {MAX_LEEWAY_SECS} seconds: a larger leeway keeps expired tokens valid"),
        ));
    }
    let namespaces = match (jwt.namespaces_claim, jwt.any_namespace) {
        (Some(_), true) => {
            return Err(bad(
                "gateway.auth.jwt",
                "namespaces_claim and any_namespace exclude each other: with any_namespace the claim would not \
                 be checked",
            ));
        }
        (Some(claim), false) if claim.trim().is_empty() => {
            return Err(bad("gateway.auth.jwt.namespaces_claim", "a claim name cannot be empty"));
        }
        (Some(claim), false) => Some(NamespacePolicy::Claim(claim)),
        (None, true) => Some(NamespacePolicy::Any),
        (None, false) => None,
    };
    Ok(JwtConfig {
        algorithm: jwt.algorithm,
        key,
        cookie: jwt.cookie,
        audiences,
        issuers,
        leeway_secs: jwt.leeway_secs,
        namespaces,
        close_on_expiry: jwt.close_on_expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket gateway document's example, with the auth chinwag requires.
    const DOCUMENT: &str = r#"
gateway:
  socket:
    path: "/connect"
    onconnect:
      publish: "socket:connection"
    onmessage:
      publish: "socket:generalMessage"
      types:
          - type: "message_type_one"
            publish: "socket:type_one"
          - type: "message_type_two"
            publish: "socket:type_two"
    onclose:
      publish: "socket:close"
    send:
      subscribe: "socket:send"
    broadcast:
      subscribe: "socket:broadcast"
  auth:
    jwt:
      algorithm: HS256
      secret_env: GATEWAY_JWT_SECRET
      namespaces_claim: namespaces
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/chinwag"))
    }

    #[test]
    fn the_documents_example() {
        let config = parse(DOCUMENT).unwrap();
        assert_eq!(config.path, "/connect");
        assert_eq!(config.topics.on_connect.as_deref(), Some("socket:connection"));
        assert_eq!(config.topics.on_message.as_deref(), Some("socket:generalMessage"));
        assert_eq!(config.topics.message_types.len(), 2);
        assert_eq!(config.topics.message_types[1].message_type, "message_type_two");
        assert_eq!(config.topics.message_types[1].topic, "socket:type_two");
        assert_eq!(config.topics.on_close.as_deref(), Some("socket:close"));
        assert_eq!(config.send_topic.as_deref(), Some("socket:send"));
        assert_eq!(config.broadcast_topic.as_deref(), Some("socket:broadcast"));
        assert_eq!(
            config.auth,
            Auth::Jwt(JwtConfig {
                algorithm: Algorithm::HS256,
                key: KeySource::SecretEnv(vec!["GATEWAY_JWT_SECRET".into()]),
                cookie: "ID_TOKEN".into(),
                audiences: Vec::new(),
                issuers: Vec::new(),
                leeway_secs: 0,
                namespaces: Some(NamespacePolicy::Claim("namespaces".into())),
                close_on_expiry: true,
            })
        );
        // Defaults for what the document does not say.
        assert_eq!(config.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(config.bus, Bus::InProcess);
        assert_eq!(config.max_message_size, 64 << 10);
        assert_eq!((config.heartbeat_interval_secs, config.heartbeat_timeout_secs), (30, 30));
        assert_eq!((config.max_connections, config.max_connections_per_ip), (10_000, None));
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.message_rate, Some((50.0, 100)));
        assert!(config.allowed_origins.is_empty());
        assert_eq!(config.approve_timeout_secs, None);
        assert!(config.deflate, "permessage-deflate is accepted by default");
        let off = Config::parse(&format!("{DOCUMENT}  deflate: false\n"), Path::new(".")).unwrap();
        assert!(!off.deflate);
    }

    /// With JWT users the file states who may join which namespace; without it,
    /// the gateway is refused with the three ways explained.
    #[test]
    fn jwt_gateways_state_a_namespace_policy() {
        let without = DOCUMENT.replace("      namespaces_claim: namespaces\n", "");
        let refused = parse(&without).unwrap_err();
        assert_eq!(refused.key, "gateway.auth.jwt");
        for way in ["namespaces_claim", "socket.onconnect.approve: true", "any_namespace: true"] {
            assert!(refused.problem.contains(way), "{way}: {refused}");
        }
        let jwt = |text: &str| match parse(text).unwrap().auth {
            Auth::Jwt(jwt) => jwt,
            Auth::DevelopmentUsernames => panic!("jwt"),
        };
        let any = without.replace("GATEWAY_JWT_SECRET\n", "GATEWAY_JWT_SECRET\n      any_namespace: true\n");
        assert_eq!(jwt(&any).namespaces, Some(NamespacePolicy::Any));
        // Approval alone is a policy: the connect handler decides.
        let approved = without
            .replace("publish: \"socket:connection\"\n", "publish: \"socket:connection\"\n      approve: true\n");
        let config = parse(&approved).unwrap();
        assert_eq!(config.approve_timeout_secs, Some(DEFAULT_APPROVE_TIMEOUT_SECS));
        assert_eq!(jwt(&approved).namespaces, None);
        let both = DOCUMENT.replace(
            "publish: \"socket:connection\"\n",
            "publish: \"socket:connection\"\n      approve: true\n      approve_timeout_secs: 3\n",
        );
        let config = parse(&both).unwrap();
        assert_eq!(config.approve_timeout_secs, Some(3));
        assert_eq!(jwt(&both).namespaces, Some(NamespacePolicy::Claim("namespaces".into())));
    }

    #[test]
    fn tokens_as_identity_providers_issue_them() {
        let text = DOCUMENT.replace(
            "      algorithm: HS256\n      secret_env: GATEWAY_JWT_SECRET\n",
            "      algorithm: RS256\n      public_keys_file: keys/jwks.json\n      audience: chinwag\n      \
             issuer: [\"https://a.example\", \"https://b.example\"]\n      leeway_secs: 30\n      \
             close_on_expiry: false\n",
        );
        let Auth::Jwt(jwt) = parse(&text).unwrap().auth else { panic!("jwt") };
        assert_eq!(jwt.key, KeySource::JwksFile("/etc/chinwag/keys/jwks.json".into()));
        assert_eq!(jwt.audiences, ["chinwag"]);
        assert_eq!(jwt.issuers, ["https://a.example", "https://b.example"]);
        assert_eq!((jwt.leeway_secs, jwt.close_on_expiry), (30, false));
        let rotation = DOCUMENT.replace("secret_env: GATEWAY_JWT_SECRET", "secret_env: [NEW_SECRET, OLD_SECRET]");
        let Auth::Jwt(jwt) = parse(&rotation).unwrap().auth else { panic!("jwt") };
        assert_eq!(jwt.key, KeySource::SecretEnv(vec!["NEW_SECRET".into(), "OLD_SECRET".into()]));
    }

    #[test]
    fn limits() {
        let text = format!(
            "{DOCUMENT}  limits:\n    max_connections: 5\n    max_connections_per_ip: 2\n    message_rate: 0\n    \
             allowed_origins: [\"https://app.example\", \"*\"]\n    \
             trusted_proxies: [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\", \"::1\"]\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!((config.max_connections, config.max_connections_per_ip), (5, Some(2)));
        let trusted: Vec<String> = config.trusted_proxies.ranges().iter().map(|r| r.to_string()).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8", "::1/128"]);
        assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        let unlimited = parse(&format!("{DOCUMENT}  limits:\n    max_connections_per_ip: 0\n")).unwrap();
        assert_eq!(unlimited.max_connections_per_ip, None, "0: no per-IP limit");
        assert_eq!(config.message_rate, None, "0: no rate limit");
        assert_eq!(config.allowed_origins, ["https://app.example", "*"]);
        let rated = parse(&format!("{DOCUMENT}  limits:\n    message_rate: 2.5\n    message_burst: 4\n")).unwrap();
        assert_eq!(rated.message_rate, Some((2.5, 4)));
    }

    #[test]
    fn chinwags_own_keys() {
        let text = DOCUMENT.replace(
            "  auth:\n    jwt:\n      algorithm: HS256\n      secret_env: GATEWAY_JWT_SECRET\n      namespaces_claim: namespaces\n",
            "  listen: \"0.0.0.0:9100\"\n  bus: \"redis://127.0.0.1:6379\"\n  limits:\n    max_message_size: 1024\n  \
             heartbeat:\n    interval_secs: 5\n    timeout_secs: 2\n  auth:\n    jwt:\n      algorithm: ES256\n      \
             public_key_file: keys/jwt.pem\n      cookie: SESSION\n      any_namespace: true\n",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(config.bus, Bus::Redis("redis://127.0.0.1:6379".into()));
        assert_eq!(config.max_message_size, 1024);
        assert_eq!((config.heartbeat_interval_secs, config.heartbeat_timeout_secs), (5, 2));
        let Auth::Jwt(jwt) = config.auth else { panic!("jwt") };
        assert_eq!(jwt.key, KeySource::PublicKeyFile("/etc/chinwag/keys/jwt.pem".into()));
        assert_eq!(jwt.cookie, "SESSION");
    }

    /// Each bad file is refused with the key and the problem.
    #[test]
    fn bad_files_name_the_key_and_the_problem() {
        let cases: Vec<(String, &str, &str)> = vec![
            (DOCUMENT.replace("path: \"/connect\"", "path: \"connect\""), "gateway.socket.path", "starting with /"),
            (DOCUMENT.replace("path: \"/connect\"", "pth: \"/connect\""), "gateway.socket.pth", "unknown field `pth`"),
            (
                DOCUMENT.replace("publish: \"socket:type_two\"", "publish: \"\""),
                "gateway.socket.onmessage.types[1].publish",
                "empty",
            ),
            (
                DOCUMENT.replace("message_type_two", "message_type_one"),
                "gateway.socket.onmessage.types[1].type",
                "twice",
            ),
            (
                DOCUMENT.replace("publish: \"socket:type_one\"", "publish: [1]"),
                "gateway.socket.onmessage.types[0].publish",
                "invalid type",
            ),
            (DOCUMENT.replace("algorithm: HS256", "algorithm: none"), "gateway.auth.jwt.algorithm", "unknown variant"),
            (DOCUMENT.replace("algorithm: HS256", "algorithm: RS256"), "gateway.auth.jwt", "public_key_file"),
            (
                DOCUMENT
                    .replace("  auth:\n    jwt:\n      algorithm: HS256\n      secret_env: GATEWAY_JWT_SECRET\n      namespaces_claim: namespaces\n", ""),
                "gateway.auth",
                "missing",
            ),
            (format!("{DOCUMENT}  listen: \"localhost\"\n"), "gateway.listen", "address and port"),
            (format!("{DOCUMENT}  bus: \"kafka://x\"\n"), "gateway.bus", "redis://"),
            (
                format!("{DOCUMENT}  heartbeat:\n    interval_secs: 0\n"),
                "gateway.heartbeat.interval_secs",
                "at least 1",
            ),
            (format!("{DOCUMENT}  extra: 1\n"), "gateway.extra", "unknown field `extra`"),
            (format!("{DOCUMENT}  limits:\n    max_connections: 0\n"), "gateway.limits.max_connections", "at least 1"),
            (format!("{DOCUMENT}  limits:\n    message_rate: -1\n"), "gateway.limits.message_rate", "0 (no limit)"),
            (format!("{DOCUMENT}  limits:\n    message_burst: 0\n"), "gateway.limits.message_burst", "at least 1"),
            (
                format!("{DOCUMENT}  limits:\n    allowed_origins: [\"\"]\n"),
                "gateway.limits.allowed_origins",
                "not an origin",
            ),
            (
                format!("{DOCUMENT}  limits:\n    trusted_proxies: [\"10.0.0.0/8\", \"proxy.internal\"]\n"),
                "gateway.limits.trusted_proxies[1]",
                "not an IP address or a CIDR range",
            ),
            (
                format!("{DOCUMENT}  limits:\n    trusted_proxies: [\"10.0.0.1/8\"]\n"),
                "gateway.limits.trusted_proxies[0]",
                "did you mean 10.0.0.0/8?",
            ),
            (
                format!("{DOCUMENT}  limits:\n    trusted_proxies: [\"fd00::/129\"]\n"),
                "gateway.limits.trusted_proxies[0]",
                "at most 128 bits",
            ),
            (
                format!("{DOCUMENT}  limits:\n    trusted_proxies: \"10.0.0.0/8\"\n"),
                "gateway.limits.trusted_proxies",
                "invalid type",
            ),
            (
                format!("{DOCUMENT}  limits:\n    max_connections_per_ip: -1\n"),
                "gateway.limits.max_connections_per_ip",
                "expected usize",
            ),
            (
                DOCUMENT.replace("subscribe: \"socket:broadcast\"", "subscribe: \"socket:send\""),
                "gateway.socket.broadcast.subscribe",
                "must differ",
            ),
            (
                DOCUMENT.replace("publish: \"socket:type_two\"", "publish: \"socket:send\""),
                "gateway.socket",
                "both published to and subscribed to",
            ),
            (
                DOCUMENT.replace("publish: \"socket:close\"", "publish: \"chinwag:reply:x\""),
                "gateway.socket.onclose.publish",
                "reserved",
            ),
            (
                DOCUMENT.replace("publish: \"socket:type_two\"", "publish: \"chinwag:reply:n1\""),
                "gateway.socket.onmessage.types[1].publish",
                "reserved",
            ),
            (
                DOCUMENT.replace("subscribe: \"socket:send\"", "subscribe: \"chinwag:reply:n1\""),
                "gateway.socket.send.subscribe",
                "reserved",
            ),
            (DOCUMENT.replace("path: \"/connect\"", "path: \"/connect/{namespace}\""), "gateway.socket.path", "{"),
            (DOCUMENT.replace("path: \"/connect\"", "path: \"/connect}\""), "gateway.socket.path", "{"),
            (
                format!("{DOCUMENT}  heartbeat:\n    interval_secs: 86401\n"),
                "gateway.heartbeat.interval_secs",
                "at most 86400",
            ),
            (
                format!("{DOCUMENT}  heartbeat:\n    timeout_secs: 18446744073709551615\n"),
                "gateway.heartbeat.timeout_secs",
                "at most 86400",
            ),
            (
                DOCUMENT.replace(
                    "algorithm: HS256\n      secret_env: GATEWAY_JWT_SECRET",
                    "algorithm: ES256\n      public_key_file: a.pem\n      public_keys_file: b.json",
                ),
                "gateway.auth.jwt",
                "exclude each other",
            ),
            (
                DOCUMENT.replace("secret_env: GATEWAY_JWT_SECRET", "secret_env: GATEWAY_JWT_SECRET\n      public_keys_file: k"),
                "gateway.auth.jwt",
                "HS256 takes secret_env",
            ),
            (DOCUMENT.replace("secret_env: GATEWAY_JWT_SECRET", "secret_env: [A, \"\"]"), "gateway.auth.jwt.secret_env", "empty"),
            (
                DOCUMENT.replace("namespaces_claim: namespaces", "namespaces_claim: namespaces\n      any_namespace: true"),
                "gateway.auth.jwt",
                "exclude each other",
            ),
            (DOCUMENT.replace("namespaces_claim: namespaces", "namespaces_claim: \"\""), "gateway.auth.jwt.namespaces_claim", "empty"),
            (
                DOCUMENT.replace("namespaces_claim: namespaces", "namespaces_claim: namespaces\n      leeway_secs: 301"),
                "gateway.auth.jwt.leeway_secs",
                "at most 300",
            ),
            (
                DOCUMENT.replace("namespaces_claim: namespaces", "namespaces_claim: namespaces\n      audience: [\"\"]"),
                "gateway.auth.jwt.audience",
                "empty",
            ),
            (
                DOCUMENT.replace("namespaces_claim: namespaces", "namespaces_claim: namespaces\n      issuer: 7"),
                "gateway.auth.jwt.issuer",
                "",
            ),
            (
                DOCUMENT.replace(
                    "publish: \"socket:connection\"\n",
                    "publish: \"socket:connection\"\n      approve_timeout_secs: 5\n",
                ),
                "gateway.socket.onconnect.approve_timeout_secs",
                "without approve: true",
            ),
            (
                DOCUMENT.replace(
                    "publish: \"socket:connection\"\n",
                    "publish: \"socket:connection\"\n      approve: true\n      approve_timeout_secs: 0\n",
                ),
                "gateway.socket.onconnect.approve_timeout_secs",
                "at least 1",
            ),
            (
                DOCUMENT.replace(
                    "publish: \"socket:connection\"\n",
                    "publish: \"socket:connection\"\n      approve: true\n      approve_timeout_secs: 3601\n",
                ),
                "gateway.socket.onconnect.approve_timeout_secs",
                "at most 3600",
            ),
            ("gateway: [".to_owned(), "gateway", "invalid type"),
            ("gateway:\n  socket: {path: \"/x\"\n  ]]".to_owned(), "gateway.socket", "line 3"),
        ];
        for (text, key, problem) in cases {
            let error = parse(&text).expect_err(key);
            assert_eq!(error.key, key, "{error}");
            assert!(error.problem.contains(problem), "{key}: {error}");
        }
    }

    proptest::proptest! {
        /// Any text is a configuration or an error naming a problem, never a panic;
        /// and any edit of the document's example still parses or is refused cleanly.
        #[test]
        fn never_panics(text in "\\PC{0,300}", at in 0usize..600, insert in "[ :\\-\\[\\]{}a-z0-9\n\"]{0,12}") {
            let _ = parse(&text);
            let mut edited = DOCUMENT.to_owned();
            let at = (0..=at.min(edited.len())).rev().find(|&i| edited.is_char_boundary(i)).unwrap_or(0);
            edited.insert_str(at, &insert);
            if let Err(e) = parse(&edited) {
                proptest::prop_assert!(!e.problem.is_empty());
            }
        }
    }

    #[test]
    fn development_usernames_are_explicit() {
        let text = DOCUMENT.replace(
            "    jwt:\n      algorithm: HS256\n      secret_env: GATEWAY_JWT_SECRET\n      namespaces_claim: namespaces\n",
            "    development_usernames: true\n",
        );
        assert_eq!(parse(&text).unwrap().auth, Auth::DevelopmentUsernames);
        let both = DOCUMENT.replace("  auth:\n", "  auth:\n    development_usernames: true\n");
        assert_eq!(parse(&both).unwrap_err().key, "gateway.auth");
    }
}

#[cfg(test)]
mod readme {
    /// The README's example configuration is valid.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
        let end = start + readme[start..].find("```").expect("its end");
        let config = super::Config::parse(&readme[start..end], std::path::Path::new("."));
        assert!(config.is_ok(), "{:?}", config.err());
    }
}
