//! # chinwag-gateway: the socket gateway
//!
//! Clients connect at `{path}?namespace=X`, identified by a JWT; their typed JSON
//! messages become events on an event bus, and the bus answers, sends to users and
//! broadcasts, never across namespaces. The rules are in
//! [`chinwag_core::gateway`]; this crate reads the configuration (and, as it
//! grows, authenticates clients and connects the bus).
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

pub use auth::{AuthError, Verifier};
pub use bus::BusStatus;
pub use config::{Config, ConfigError};
pub use identity::{Authenticator, Refusal, identify};
pub use service::{Command, GatewayHandle, GatewayService, Handlers};

use chinwag_core::handshake::OriginPolicy;
use chinwag_core::limit::RateLimit;
use chinwag_driver::Runtime;
use std::time::Duration;

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
    /// A gateway for `config` (its path, message size, heartbeat and bus),
    /// identifying clients with `authenticator`, with the in-process `handlers`
    /// (which run as well when a Redis bus is configured). Refused if the bus
    /// cannot be used by this build, or if a configuration built by hand (not by
    /// [`Config::parse`]) has a path or heartbeat that [`Config::parse`] refuses.
    pub fn new(config: Config, authenticator: Authenticator, handlers: Handlers) -> Result<Self, ConfigError> {
        // Config's fields are public: what parse checks is checked again here, so
        // that a bad value is an error rather than a panic when serving.
        config::check_path(&config.path)?;
        config::check_heartbeat("gateway.heartbeat.interval_secs", config.heartbeat_interval_secs)?;
        config::check_heartbeat("gateway.heartbeat.timeout_secs", config.heartbeat_timeout_secs)?;
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
        let mut service = GatewayService::new(config, authenticator, handlers);
        let metrics = service.metrics.clone();
        if let Some(outbox) = &outbox {
            service = service.with_outbox(outbox.clone());
        }
        let server = chinwag_service::Server::new(service)
            .route(&path)
            .map_err(|e| ConfigError { key: "gateway.socket.path".into(), problem: e.to_string() })?
            .config(connection)
            .limits(limits)
            .deflate(deflate);
        let handle = GatewayHandle::new(server.handle(), outbox, metrics);
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
    /// bus's tasks on the same runtime; on the way out, the bus gets a moment to
    /// publish the last close events.
    pub async fn serve<R: Runtime>(self, listener: R::Listener) -> std::io::Result<()> {
        let running = self.bus.map(|bus| bus.start::<R>(self.handle.clone()));
        let result = self.server.serve::<R>(listener).await;
        if let Some(running) = running {
            running.stop::<R>(BUS_FLUSH_GRACE).await;
        }
        result
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
    }
}
