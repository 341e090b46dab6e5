//! The admin listener: `GET /metrics`, `GET /health`, `GET /ready`, for operators
//! and orchestrators, on an address of its own (never the public port: metrics and
//! readiness are not for clients).
//!
//! - `/health` answers 200 while the process serves: liveness. The admin task
//!   answering is the proof.
//! - `/ready` answers 200 when the server takes new clients, 503 while it drains
//!   before a shutdown, or when the service says it cannot serve (the gateway with
//!   `ready_requires_bus` while its bus is down). The body says why, and the bus's
//!   state for the gateway.
//! - `/metrics` answers the Prometheus text format (version 0.0.4).
//!
//! Anything else gets 404; other methods than GET and HEAD get 405.

use bytes::Bytes;
use chinwag_core::http::{HeaderValue, Method, StatusCode, header};
use chinwag_core::{Config, HttpResponse, RequestKind};
use chinwag_driver::{Runtime, read_request};
use std::sync::Arc;
use std::time::Duration;

use crate::accept::{ACCEPT_BACKOFF, AcceptFailures};

/// What a server tells the admin listener.
pub trait Admin: Send + Sync + 'static {
    /// The metrics, in the Prometheus text format.
    fn metrics(&self) -> String;
    /// Whether the server takes new clients, and what to say about it.
    fn readiness(&self) -> Readiness;
}

/// The answer of `/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the server takes new clients (200) or not (503).
    pub ready: bool,
    /// What the body says: why not, and the state of what the service depends on.
    pub detail: String,
}

impl Readiness {
    /// Ready, with a note.
    pub fn ready(detail: impl Into<String>) -> Self {
        Self { ready: true, detail: detail.into() }
    }

    /// Not ready, saying why.
    pub fn not_ready(detail: impl Into<String>) -> Self {
        Self { ready: false, detail: detail.into() }
    }
}

/// Admin requests are tiny; a client that has not sent one in this time is gone.
const ADMIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to one admin request.
pub fn answer(admin: &dyn Admin, method: &Method, path: &str) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" => {
            let readiness = admin.readiness();
            let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let word = if readiness.ready { "ready" } else { "not ready" };
            let body = if readiness.detail.is_empty() {
                format!("{word}\n")
            } else {
                format!("{word}: {}\n", readiness.detail)
            };
            text(status, body)
        }
        "/metrics" => HttpResponse::new(
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            admin.metrics(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /health or /ready\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = HttpResponse::new(status, "text/plain; charset=utf-8", body);
    // Probes and scrapes must see the current state, never a cached one.
    response.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves admin requests from `listener` until the process ends. Each connection
/// gets one answer and is closed; failures to accept are logged once per run.
pub async fn serve<R: Runtime>(listener: R::Listener, admin: Arc<dyn Admin>) {
    let config = Config {
        handshake_timeout: Some(ADMIN_HANDSHAKE_TIMEOUT),
        max_head_size: 8 << 10,
        max_headers: 64,
        ..Config::default()
    };
    let failures = AcceptFailures::default();
    loop {
        let io = match R::accept(&listener).await {
            Ok((io, _)) => io,
            Err(e) => {
                failures.failed(&e, std::time::Instant::now());
                R::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        failures.accepted(std::time::Instant::now());
        let (admin, config) = (admin.clone(), config.clone());
        R::spawn(async move {
            let Ok(pending) = read_request::<_, R::Timer>(io, config).await else { return };
            let request = pending.request();
            let response = if *request.kind() == RequestKind::Http {
                answer(&*admin, request.method(), request.path())
            } else {
                text(StatusCode::NOT_FOUND, "the admin listener has no WebSocket endpoint\n")
            };
            let _ = pending.respond(response).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);
    impl Admin for Fixed {
        fn metrics(&self) -> String {
            "chinwag_connections 3\n".into()
        }
        fn readiness(&self) -> Readiness {
            if self.0 { Readiness::ready("bus connected") } else { Readiness::not_ready("draining") }
        }
    }

    #[test]
    fn answers() {
        let get = Method::GET;
        assert_eq!(answer(&Fixed(true), &get, "/health").status, StatusCode::OK);
        let ready = answer(&Fixed(true), &get, "/ready");
        assert_eq!((ready.status, &ready.body[..]), (StatusCode::OK, &b"ready: bus connected\n"[..]));
        let draining = answer(&Fixed(false), &get, "/ready");
        assert_eq!(
            (draining.status, &draining.body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"not ready: draining\n"[..])
        );
        let metrics = answer(&Fixed(true), &get, "/metrics");
        assert_eq!(&metrics.body[..], b"chinwag_connections 3\n");
        assert_eq!(answer(&Fixed(true), &get, "/nope").status, StatusCode::NOT_FOUND);
        assert_eq!(answer(&Fixed(true), &Method::POST, "/ready").status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
