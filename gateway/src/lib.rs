//! # chinwag-gateway: the socket gateway
//!
//! Clients connect at `{path}?namespace=X`, identified by a JWT; their typed JSON
//! messages become events on an event bus, and the bus answers, sends to users and
//! broadcasts, never across namespaces. The rules are in
//! [`chinwag_core::gateway`]; this crate reads the configuration (and, as it
//! grows, authenticates clients and connects the bus).
//!
//! Status: the configuration ([`config`]), the JWT check ([`auth`]), identities
//! ([`identity`]) and the server with the in-process bus ([`service`], [`server`])
//! are done; the Redis bus and the `chinwag gateway` command are being built.

pub mod auth;
pub mod config;
pub mod envelope;
pub mod identity;
pub mod service;

pub use auth::{AuthError, Verifier};
pub use config::{Config, ConfigError};
pub use identity::{Authenticator, Refusal, identify};
pub use service::{Command, GatewayHandle, GatewayService, Handlers};

use std::time::Duration;

/// The gateway server for `config`: its path, message size and heartbeat, with the
/// in-process `handlers`. Serve it with `serve::<R>(listener)` on any runtime.
pub fn server(
    config: Config,
    authenticator: Authenticator,
    handlers: Handlers,
) -> chinwag_service::Server<GatewayService> {
    let connection = chinwag_core::Config {
        max_frame_size: config.max_message_size,
        max_message_size: config.max_message_size,
        keepalive_interval: Some(Duration::from_secs(config.heartbeat_interval_secs)),
        keepalive_timeout: Duration::from_secs(config.heartbeat_timeout_secs),
        ..chinwag_core::Config::default()
    };
    let path = config.path.clone();
    chinwag_service::Server::new(GatewayService::new(config, authenticator, handlers))
        .route(&path)
        .expect("a checked path is a valid route")
        .config(connection)
}
