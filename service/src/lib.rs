//! # chinwag-service: WebSocket services with connector operations
//!
//! An application implements [`Service`]: hooks for an HTTP request, an upgrade
//! request (accept or refuse, with path parameters, query and headers), open, text,
//! binary and close; and [`Service::admit`], an asynchronous decision taken before
//! those, for one that needs I/O (reserving a name in a shared store). Each hook gets a [`Context`] with the connector operations of
//! a [`Hub`](chinwag_core::chat::Hub): push to this connection, broadcast, store the
//! connection under a unique name and push to that name, groups (add, push, remove
//! a member, remove the group). Other parts of the program get a cloneable
//! [`Handle`] that pushes to names and groups, broadcasts, and shuts down.
//!
//! [`Server::serve`] runs a service on any [`Runtime`](chinwag_driver::Runtime):
//! tokio, async-std or smol run the same service unchanged.
//!
//! ```no_run
//! use chinwag_core::Utf8Bytes;
//! use chinwag_driver::Runtime;
//! use chinwag_service::{Context, Server, Service};
//!
//! struct Echo;
//! impl Service for Echo {
//!     fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
//!         cx.push_text(text.clone());
//!     }
//! }
//!
//! chinwag_tokio::Tokio::block_on(async {
//!     let listener = chinwag_tokio::Tokio::bind("127.0.0.1:9001".parse().unwrap()).await.unwrap();
//!     Server::new(Echo).serve::<chinwag_tokio::Tokio>(listener).await
//! })
//! .unwrap();
//! ```
//!
//! Deliveries are efficient by construction: a message for many connections is
//! encoded once and queued on each by reference; each connection's own task writes
//! all it has queued with one vectored write.

pub mod accept;
mod admission;
mod handle;
mod hook_panic;
mod limits;
pub mod ops;
mod route;
mod server;
mod service;
mod state;
pub mod threads;

pub use handle::Handle;
pub use limits::{Limits, Stats};
pub use route::{BadParam, InvalidPattern, Params, PathPattern, query_pairs, query_param};
pub use server::Server;
pub use service::{Admit, AdmitRequest, Context, Decision, ScrapedMetric, ScrapedValue, Service, Ticket};
