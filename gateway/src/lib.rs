//! # chinwag-gateway: the socket gateway
//!
//! Clients connect at `{path}?namespace=X`, identified by a JWT; their typed JSON
//! messages become events on an event bus, and the bus answers, sends to users and
//! broadcasts, never across namespaces. Who may join a namespace is the token's
//! namespaces claim, the connect handler's approval, or, said explicitly, anyone.
//! The rules are in [`chinwag_core::gateway`]; this crate reads the
//! configuration, authenticates clients, keeps the time of their deadlines and
//! connects the bus.
//!
//! Start one with [`Gateway::new`] and serve it with [`Gateway::serve`] on any
//! runtime. With `bus: redis://...` (the `redis` feature, on by default) events
//! also leave on Redis and commands come back from it ([`bus`], [`envelope`]), so
//! handlers can live in any process and several nodes can share the users.

pub mod auth;
pub mod bus;
pub mod config;
pub mod envelope;
pub mod identity;
mod metrics;
pub mod service;

pub use auth::{AuthError, KeySummary, Verified, Verifier};
pub use bus::BusStatus;
pub use config::{Config, ConfigError};
pub use identity::{Authenticator, Identified, Refusal, identify};
pub use service::{Command, GatewayHandle, GatewayService, Handlers};

use chinwag_core::gateway::NamespacePolicy;
use chinwag_core::handshake::OriginPolicy;
use chinwag_core::limit::RateLimit;
use chinwag_driver::Runtime;
use futures_lite::future::or;
use std::time::{Duration, Instant};

/// How often the gateway looks at its JWT key file for a change.
pub const KEY_FILE_POLL: Duration = Duration::from_secs(1);

/// The longest the deadline timer sleeps with nothing due (it is woken earlier
/// when a deadline is set).
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// How long a stopping gateway waits for its bus to publish what is queued (the
/// close events of its last connections).
const BUS_FLUSH_GRACE: Duration = Duration::from_secs(2);

/// A gateway node: the WebSocket server and, when configured, its Redis bus.
pub struct Gateway {
    server: chinwag_service::Server<GatewayService>,
    handle: GatewayHandle,
    bus: Option<bus::Remote>,
}

impl Gateway {
    /// A gateway for `config` (its path, message size, heartbeat, approval and
    /// bus), identifying clients with `authenticator`, with the in-process
    /// `handlers` (which run as well when a Redis bus is configured). Refused if
    /// the bus cannot be used by this build; if a JWT authenticator has no
    /// namespace policy and connections are not approved (anyone could join any
    /// namespace); if approval is on with the in-process bus and no handler for
    /// the connect topic (every connection would time out); or if a configuration
    /// built by hand (not by [`Config::parse`]) has a value that
    /// [`Config::parse`] refuses.
    pub fn new(config: Config, authenticator: Authenticator, handlers: Handlers) -> Result<Self, ConfigError> {
        // Config's fields are public: what parse checks is checked again here, so
        // that a bad value is an error rather than a panic when serving.
        config::check_path(&config.path)?;
        config::check_heartbeat("gateway.heartbeat.interval_secs", config.heartbeat_interval_secs)?;
        config::check_heartbeat("gateway.heartbeat.timeout_secs", config.heartbeat_timeout_secs)?;
        check_tenancy(&config, &authenticator, &handlers)?;
        let connection = chinwag_core::Config {
            max_frame_size: config.max_message_size,
            max_message_size: config.max_message_size,
            keepalive_interval: Some(Duration::from_secs(config.heartbeat_interval_secs)),
            keepalive_timeout: Duration::from_secs(config.heartbeat_timeout_secs),
            // A message over the limit gets an error message, and the client
            // stays: it is read past unkept, so it costs no memory.
            oversized: chinwag_core::Oversized::Skip,
            ..chinwag_core::Config::default()
        };
        let path = config.path.clone();
        let deflate = config.deflate.then(chinwag_core::deflate::DeflateConfig::default);
        let limits = chinwag_service::Limits {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            trusted_proxies: config.trusted_proxies.clone(),
            message_rate: config.message_rate.map(|(rate, burst)| RateLimit::new(rate, burst)),
            origins: config.allowed_origins.iter().fold(OriginPolicy::same_host(), |policy, o| policy.allow(o)),
        };
        let (outbox, bus) = match &config.bus {
            config::Bus::InProcess => (None, None),
            config::Bus::Redis(url) => {
                let (outbox, bus) = bus::remote(url, config.send_topic.clone(), config.broadcast_topic.clone())?;
                (Some(outbox), Some(bus))
            }
        };
        let mut service = GatewayService::new(config, authenticator.clone(), handlers);
        let metrics = service.metrics.clone();
        let tenancy = service.tenancy.clone();
        if let Some(outbox) = &outbox {
            service = service.with_outbox(outbox.clone());
        }
        let server = chinwag_service::Server::new(service)
            .route(&path)
            .map_err(|e| ConfigError { key: "gateway.socket.path".into(), problem: e.to_string() })?
            .config(connection)
            .limits(limits)
            .deflate(deflate);
        let handle = GatewayHandle::new(server.handle(), outbox, metrics, tenancy, authenticator);
        Ok(Self { server, handle, bus })
    }

    /// What the admin listener serves for this gateway: its metrics (the server's,
    /// the gateway's and the bus's) and readiness.
    pub fn admin(&self) -> std::sync::Arc<dyn chinwag_service::ops::Admin> {
        self.server.admin()
    }

    /// A handle for the rest of the program: sends, broadcasts, the bus's state,
    /// shutdown.
    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }

    /// Serves `listener` on runtime `R` until the gateway is shut down, with the
    /// bus's tasks, the deadline timer (approvals, token expiries) and the key
    /// file's watch on the same runtime; on the way out, the bus gets a moment to
    /// publish the last close events.
    pub async fn serve<R: Runtime>(self, listener: R::Listener) -> std::io::Result<()> {
        self.run::<R, _>(|server| server.serve::<R>(listener)).await
    }

    /// Serves `listeners` as [`serve`](Self::serve) does, with the connections
    /// spread over one thread per listener
    /// ([`Server::serve_threads`](chinwag_service::Server::serve_threads)); the
    /// bus's tasks and the timers stay on this one.
    pub async fn serve_threads<R: Runtime>(
        self,
        listeners: chinwag_service::threads::Listeners,
    ) -> std::io::Result<()> {
        self.run::<R, _>(|server| server.serve_threads::<R>(listeners)).await
    }

    /// Runs `serve` with the bus's tasks and the timers beside it.
    async fn run<R: Runtime, F: Future<Output = std::io::Result<()>>>(
        self,
        serve: impl FnOnce(chinwag_service::Server<GatewayService>) -> F,
    ) -> std::io::Result<()> {
        let running = self.bus.map(|bus| bus.start::<R>(self.handle.clone()));
        // The timers run as long as the server does: `or` drops them with it.
        let timers = or(deadlines::<R>(self.handle.clone()), watch_keys::<R>(self.handle.clone()));
        let result = or(serve(self.server), async {
            timers.await;
            unreachable!("the timers never return")
        })
        .await;
        if let Some(running) = running {
            running.stop::<R>(BUS_FLUSH_GRACE).await;
        }
        result
    }
}

/// The tenancy rules a gateway is refused for at start (see [`Gateway::new`]).
fn check_tenancy(config: &Config, authenticator: &Authenticator, handlers: &Handlers) -> Result<(), ConfigError> {
    if let Some(secs) = config.approve_timeout_secs {
        config::check_approve_timeout(secs)?;
    }
    let approval = config.approve_timeout_secs.is_some();
    if let Authenticator::Jwt(verifier) = authenticator {
        match verifier.namespace_policy() {
            None if !approval => {
                return Err(ConfigError {
                    key: "gateway.auth.jwt".into(),
                    problem: config::NO_NAMESPACE_POLICY.into(),
                });
            }
            Some(NamespacePolicy::Any) if !approval => tracing::warn!(
                "gateway.auth.jwt.any_namespace: every user with a valid token may join every namespace; \
                 for a single tenant only"
            ),
            _ => {}
        }
    }
    if approval && config.bus == config::Bus::InProcess {
        let topic = config.topics.on_connect.as_deref().unwrap_or_default();
        if !handlers.handles(topic) {
            return Err(ConfigError {
                key: "gateway.socket.onconnect.approve".into(),
                problem: format!(
                    "the in-process bus has no handler for {topic:?}, so no connection would ever be approved: \
                     each would wait and be closed at approve_timeout_secs. Use a Redis bus (--bus \
                     redis://HOST:PORT) with a connect handler, or turn approval off"
                ),
            });
        }
    }
    Ok(())
}

/// Closes connections at their deadlines: sleeps until the earliest, or until a
/// new connection sets an earlier one.
async fn deadlines<R: Runtime>(handle: GatewayHandle) {
    loop {
        let earlier = handle.tenancy.earlier_deadline.listen();
        let next = handle.fire_deadlines();
        let wait = next.map_or(IDLE_WAKE, |at| at.saturating_duration_since(Instant::now()));
        or(R::sleep(wait), earlier).await;
    }
}

/// Reloads the JWT keys when their file changes (nothing to do without one).
async fn watch_keys<R: Runtime>(handle: GatewayHandle) {
    if !handle.keys_in_a_file() {
        return std::future::pending().await;
    }
    let mut last_error = None;
    loop {
        R::sleep(KEY_FILE_POLL).await;
        handle.reload_keys_if_changed(&mut last_error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "gateway:\n  socket: { path: \"/connect\" }\n  auth: { development_usernames: true }\n";
        Config::parse(text, std::path::Path::new(".")).unwrap()
    }

    /// A configuration built by hand with what `Config::parse` refuses is an
    /// error at `Gateway::new`, never a panic (at the route, or at the first
    /// deadline computed from an enormous heartbeat).
    #[test]
    fn hand_built_configurations_are_checked() {
        let new = |config: Config| Gateway::new(config, Authenticator::DevelopmentUsernames, Handlers::new()).err();
        assert_eq!(new(config()), None);
        for path in ["/x/{", "/{a}/{a}", "/x}", "/{ns}", "connect"] {
            let refused = new(Config { path: path.into(), ..config() }).expect(path);
            assert_eq!(refused.key, "gateway.socket.path", "{path}: {refused}");
        }
        let refused = new(Config { heartbeat_interval_secs: u64::MAX, ..config() }).expect("u64::MAX");
        assert_eq!(refused.key, "gateway.heartbeat.interval_secs");
        let refused = new(Config { heartbeat_timeout_secs: config::MAX_HEARTBEAT_SECS + 1, ..config() })
            .expect("a day and a second");
        assert_eq!(refused.key, "gateway.heartbeat.timeout_secs");
        assert_eq!(new(Config { heartbeat_timeout_secs: config::MAX_HEARTBEAT_SECS, ..config() }), None);
        let refused = new(Config { approve_timeout_secs: Some(0), ..config() }).expect("no time to approve");
        assert_eq!(refused.key, "gateway.socket.onconnect.approve_timeout_secs");
    }

    fn jwt(policy: Option<NamespacePolicy>) -> Authenticator {
        let verifier = Verifier::new(
            config::Algorithm::HS256,
            jsonwebtoken::DecodingKey::from_secret(b"a test secret of at least thirty-two bytes"),
            "ID_TOKEN",
        );
        Authenticator::Jwt(Box::new(match policy {
            Some(policy) => verifier.namespaces(policy),
            None => verifier,
        }))
    }

    /// A JWT gateway must say who may join which namespace; approval with the
    /// in-process bus needs a connect handler, or every connection would time out.
    #[test]
    fn unsafe_tenancy_is_refused_at_start() {
        let refused = Gateway::new(config(), jwt(None), Handlers::new()).err().expect("no namespace policy");
        assert_eq!(refused.key, "gateway.auth.jwt");
        assert!(refused.problem.contains("namespaces_claim"), "{refused}");
        for policy in [NamespacePolicy::Any, NamespacePolicy::Claim("namespaces".into())] {
            assert!(Gateway::new(config(), jwt(Some(policy)), Handlers::new()).is_ok());
        }
        let mut approving = config();
        approving.topics.on_connect = Some("socket:connection".into());
        approving.approve_timeout_secs = Some(5);
        let refused = Gateway::new(approving.clone(), jwt(None), Handlers::new()).err().expect("nobody approves");
        assert_eq!(refused.key, "gateway.socket.onconnect.approve");
        assert!(refused.problem.contains("socket:connection"), "{refused}");
        let handlers = Handlers::new().on("socket:connection", |_| vec![Command::Reply(serde_json::json!("hi"))]);
        assert!(Gateway::new(approving, jwt(None), handlers).is_ok(), "approval is a policy of its own");
    }
}
