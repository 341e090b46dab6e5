//! # chinwag-gateway: the socket gateway
//!
//! Clients connect at `{path}?namespace=X`, identified by a JWT; their typed JSON
//! messages become events on an event bus, and the bus answers, sends to users and
//! broadcasts, never across namespaces. The rules are in
//! [`chinwag_core::gateway`]; this crate reads the configuration (and, as it
//! grows, authenticates clients and connects the bus).
//!
//! Status: the configuration ([`config`]) and the JWT check ([`auth`]) are done;
//! the buses and the server are being built (see the README's gateway section).

pub mod auth;
pub mod config;
pub mod identity;

pub use auth::{AuthError, Verifier};
pub use config::{Config, ConfigError};
pub use identity::{Authenticator, Refusal, identify};
