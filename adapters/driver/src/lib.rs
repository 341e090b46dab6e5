//! # chinwag-driver: one async driver for every runtime
//!
//! This crate turns a [`chinwag_core::Connection`] into an async WebSocket over any
//! byte transport. It is the part the runtime adapters share: `chinwag-tokio` and
//! `chinwag-futures` only implement [`Transport`] and [`Timer`] for their types (and
//! add `connect`), so both behave identically by construction.
//!
//! It follows the core's call-order contract and makes no protocol decision of its
//! own. What it adds is I/O strategy:
//! - **Reads** go into one buffer per thread, borrowed only during a poll, so an
//!   idle connection holds no read buffer.
//! - **Writes** take every queued frame in one vectored write. `send` writes at
//!   once; `feed` only queues, and `recv` writes what is queued before it waits for
//!   input, so a receive loop that feeds its replies answers a burst of pipelined
//!   messages with one system call.
//! - **Backpressure**: `send` waits while the outgoing backlog is over
//!   [`Config::backlog_high_water`](chinwag_core::Config::backlog_high_water).
//! - **Split halves**: the receiving and sending halves may live in different
//!   tasks; one shared waker makes sure neither steals the other's wake-ups.
//! - **Fan-out**: [`Sender::push_shared`] queues a pre-encoded frame and wakes the
//!   connection's own task, which writes it along with anything else queued.

mod clock;
mod error;
mod handshake;
mod io;
mod runtime;
mod socket;
mod transport;
mod wake;

pub use clock::Clocked;
pub use error::Error;
pub use handshake::{PendingRequest, accept, client_handshake, read_request};
pub use runtime::{Runtime, connect, parse_url};
pub use socket::{AnySender, Incoming, Receiver, Sender, WebSocket};
pub use transport::{Timer, Transport};

pub use chinwag_core as core;
