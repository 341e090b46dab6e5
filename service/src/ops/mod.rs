//! What operators need from a running server: Prometheus metrics, liveness and
//! readiness, served on an admin listener of its own (never the public port).
//!
//! - [`Metrics`]: the registry, with the metrics every service has
//!   ([`ServerMetrics`]: connections, refusals and disconnects by reason, messages
//!   and bytes both ways, broadcast latency) and the process's own (resident
//!   memory, CPU time, open descriptors). A service adds its own with
//!   [`Service::register_metrics`](crate::Service::register_metrics) and
//!   [`Service::scrape`](crate::Service::scrape).
//! - [`Readiness`]: whether the server takes new clients (not while draining), and
//!   what the service says of itself (the gateway: its bus).
//! - [`admin::serve`]: `GET /metrics`, `GET /health`, `GET /ready` on a listener.
//!
//! Counting costs one relaxed atomic add per event and nothing per message in a
//! broadcast beyond one add per broadcast; everything else is computed when
//! Prometheus scrapes.

pub mod admin;
mod metrics;
pub(crate) mod process;

pub use admin::{Admin, Readiness};
pub use metrics::{DisconnectReason, Metrics, RefusalReason, ServerMetrics};
pub use process::ProcessCollector;
pub use prometheus_client;
