//! chinwag servers on `mio` event loops: the leanest way to run the core.
//!
//! Each thread runs one loop ([`serve`]) over a listener of its own (bind them
//! with `SO_REUSEPORT`, as `chinwag_service::threads::Listeners` does, so the
//! kernel spreads connections over the threads). A loop keeps its connections in a
//! slab, reads each socket into one buffer it reuses, hands the
//! [`Connection`](chinwag_core::Connection)'s events to a [`Handler`] that
//! answers them at once through the core's own calls, and writes what they
//! queued before it waits again. There is no task, no waker, no lock and no
//! shared state per message: what the tokio and futures-io adapters spend on
//! those is the difference between a `chinwag echo` on tokio and on this loop
//! (docs/benchmarks.md, "Instructions per echo").
//!
//! What it is for: servers whose work on a message is done when the handler
//! returns (an echo, a relay, a reply computed in place). A handler that must wait
//! for something (a database, another connection's lock held elsewhere) belongs
//! on the async adapters, which let a connection wait without holding its thread.
//!
//! The loop drives the core by its one contract (time and bytes in, events and
//! bytes out) and adds only what a socket needs:
//! - **reading** only while the connection [wants input](chinwag_core::Connection::wants_input):
//!   a peer that sends without reading its replies is slowed by TCP flow control
//!   once the replies queued pass the backlog's high-water mark;
//! - **fairness**: at most [`READS_PER_TURN`] reads for one connection before the
//!   others get theirs;
//! - **timers**: each connection's next deadline, filed in one ordered set;
//! - **shutdown** ([`Control::shutdown`]): the listeners close, every open
//!   connection is closed with the code given (1001, say), one that opens later
//!   is closed as it opens, and [`serve`] returns once all are finished, or a
//!   close timeout and a second later;
//! - **accept failures** (out of descriptors): reported to the handler, and
//!   accepting pauses for [`ACCEPT_RETRY`] instead of spinning.
//!
//! An echo server on one loop (more threads: a listener and a loop each, with
//! clones of one [`Control`]):
//!
//! ```no_run
//! use chinwag_core::http::StatusCode;
//! use chinwag_core::{Accept, CloseCode, Config, Connection, Event, HttpResponse, Message};
//! use std::sync::Arc;
//! use std::time::Instant;
//!
//! struct Echo;
//!
//! impl chinwag_mio::Handler for Echo {
//!     fn on_event(&mut self, now: Instant, conn: &mut Connection, event: Event) {
//!         // A call the core refuses (a send on a closing connection) changes nothing.
//!         let _ = match event {
//!             Event::UpgradeRequest(_) => conn.accept(now, Accept::new()),
//!             Event::HttpRequest(_) => conn.respond(now, HttpResponse::new(StatusCode::OK, "text/plain", "hi\n")),
//!             Event::Text(text) => conn.send(now, &Message::Text(text)),
//!             Event::Binary(data) => conn.send(now, &Message::Binary(data)),
//!             _ => Ok(()),
//!         };
//!     }
//! }
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:9001")?;
//! let control = chinwag_mio::Control::new();
//! let stopper = control.clone();
//! // Elsewhere, on a signal: every connection gets 1001, and `serve` returns.
//! # std::thread::spawn(move || stopper.shutdown(CloseCode::GOING_AWAY, "shutting down"));
//! let stopped = chinwag_mio::serve(listener, Arc::new(Config::default()), Echo, &control)?;
//! assert_eq!(stopped.abandoned, 0);
//! # Ok::<(), std::io::Error>(())
//! ```

mod control;
mod event_loop;

pub use control::Control;
pub use event_loop::{ACCEPT_RETRY, Handler, READS_PER_TURN, Stopped, serve};
