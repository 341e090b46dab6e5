//! # chinwag-core: a sans-IO WebSocket protocol core
//!
//! A complete RFC 6455 implementation as pure state machines: the opening handshake
//! (server and client), framing, the connection life cycle with its close handshake,
//! and keepalive. It performs no I/O, spawns nothing, never reads a clock and draws no
//! random numbers of its own: bytes, time and random bytes come in as arguments;
//! events and bytes to write come out. That makes it embeddable in any runtime (the
//! `chinwag-tokio` and `chinwag-futures` crates are thin drivers around it) and
//! testable deterministically, down to simulated time.
//!
//! ## Driving a [`Connection`]: the call-order contract
//!
//! There is one way to drive the core: time and bytes in, events and bytes out.
//! **Every input takes `now`**, the current time, as its first argument, and first
//! fires whatever deadline is due by then; so no call can act on a stale clock,
//! and the compiler, not a comment, makes sure the time is given.
//!
//! | direction | call |
//! |---|---|
//! | time in | [`Connection::handle_timeout`]`(now)` when [`Connection::poll_timeout`] is reached |
//! | bytes in | [`Connection::receive`]`(now, &bytes)`; [`Connection::receive_eof`]`(now)` when the transport ends; [`Connection::transport_lost`]`(now)` when it fails |
//! | events out | [`Connection::poll_event`]`(now) -> Option<Event>` |
//! | bytes out | [`Connection::poll_transmit`] `-> Option<&mut Outgoing>` (a [`bytes::Buf`]) |
//! | timer out | [`Connection::poll_timeout`] `-> Option<Instant>` |
//! | application calls | `accept`, `reject`, `respond`, `send*`, `ping`, `pong`, `close`, each `(now, ..) -> Result<(), LocalError>` |
//!
//! A driver loops like this:
//!
//! 1. **Wake up** (bytes arrived, the application called, or the timer fired) and
//!    read the clock. One reading may serve everything the connection's own task
//!    does in one wake-up; a call made from another task (a broadcast, a shutdown)
//!    reads the clock at the call, never a value cached by the connection's task.
//! 2. **Feed** what arrived with `receive`, or `receive_eof`; make the application's
//!    calls; call `handle_timeout` if the timer fired.
//! 3. **Drain** `poll_event` until it returns `None`, acting on each event (answering
//!    an [`Event::UpgradeRequest`] with `accept`/`reject` may produce more events:
//!    keep draining).
//! 4. **Write** what `poll_transmit` holds: all queued frames in one vectored write,
//!    then `advance` by what the transport took. Keep the rest for when the
//!    transport is writable again.
//! 5. If [`Connection::is_finished`], close the transport and stop. If
//!    [`Connection::wants_write_shutdown`] (a server that failed the connection or
//!    refused a request, its answer written), shut the transport's writing side
//!    down and keep reading while `wants_input` says so: the core discards what
//!    still arrives, and is finished at the peer's EOF or the close timeout.
//!    Otherwise **sleep** until bytes arrive, the application calls, or
//!    `poll_timeout()` is reached, and go to 1.
//!
//! Any split of the incoming stream into `receive` calls yields the same events.
//! Errors of the peer are never returned: a violation queues the close frame it
//! earns (1002, 1007, 1008 for a peer too slow to read, 1009) and yields
//! [`Event::Closed`] with the [`ConnectionError`]. `Err(LocalError)` is only for
//! calls the application should not have made in the current state; such a call
//! changes nothing. The life cycle, input by input, is the transition table in the
//! `connection` module's documentation (source: `core/src/connection/mod.rs`).
//!
//! ## Example: a client and a server in memory
//!
//! ```
//! use bytes::Buf;
//! use chinwag_core::{Accept, ClientRequest, CloseCode, Config, Connection, Event};
//! use std::time::Instant;
//!
//! let now = Instant::now(); // any instant: the core only compares instants it is given
//! let request = ClientRequest::new("ws://example.com/chat").unwrap();
//! let mut masks = 0u32; // use a strong random source in real code
//! let next_mask = move || { masks = masks.wrapping_add(0x9E37_79B9); masks.to_be_bytes() };
//! let mut client = Connection::client(&request, *b"0123456789abcdef", Box::new(next_mask), Config::default(), now);
//! let mut server = Connection::server(Config::default(), now);
//!
//! // Move whatever one side queued to the other, as a transport would.
//! fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
//!     while let Some(out) = from.poll_transmit() {
//!         let chunk = out.chunk().to_vec();
//!         out.advance(chunk.len());
//!         to.receive(now, &chunk);
//!     }
//! }
//!
//! pump(&mut client, &mut server, now);
//! let Some(Event::UpgradeRequest(request)) = server.poll_event(now) else { panic!() };
//! assert_eq!(request.path(), "/chat");
//! server.accept(now, Accept::new()).unwrap();
//! assert!(matches!(server.poll_event(now), Some(Event::Open(_))));
//!
//! pump(&mut server, &mut client, now);
//! assert!(matches!(client.poll_event(now), Some(Event::Open(_))));
//!
//! client.send_text(now, "hello").unwrap();
//! pump(&mut client, &mut server, now);
//! match server.poll_event(now) {
//!     Some(Event::Text(text)) => assert_eq!(text, "hello"),
//!     other => panic!("{other:?}"),
//! }
//!
//! // The server closes; the client answers; both report the close.
//! server.close(now, CloseCode::NORMAL, "bye").unwrap();
//! pump(&mut server, &mut client, now);
//! let Some(Event::Closed(closed)) = client.poll_event(now) else { panic!() };
//! assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::NORMAL, "bye"));
//! pump(&mut client, &mut server, now);
//! let Some(Event::Closed(closed)) = server.poll_event(now) else { panic!() };
//! assert!(closed.is_clean());
//! assert!(server.is_finished()); // the server closes the transport first
//! client.receive_eof(now);
//! assert!(client.is_finished());
//! ```
//!
//! ## Modules
//! - [`handshake`]: the opening handshake on both sides, also usable on its own.
//! - [`frame`]: the frame header codec and masking.
//! - [`utf8`]: the incremental, fail-fast UTF-8 validator.
//! - [`close`]: close codes.
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation and its settings.
//! - [`limit`]: per-peer limits fed with time (the incoming message rate).
//! - `gateway` (feature `gateway`): the socket gateway's rules: typed JSON messages,
//!   bus events, and routing that never crosses namespaces.
//! - [`Connection`] (in `connection/`): the state machine that ties them together.
#![deny(unsafe_code)]

pub mod chat;
pub mod close;
mod connection;
pub mod deflate;
pub mod frame;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod handshake;
pub mod limit;
mod message;
pub mod utf8;

pub use close::CloseCode;
pub use connection::{
    CloseFrame, Closed, Config, Connection, ConnectionError, Event, Initiator, LocalError, MaskSource, Opened,
    Outgoing, Oversized, ProtocolError, Role, SLOW_CONSUMER_REASON, SkippedMessage, State,
};
pub use handshake::{Accept, ClientRequest, HandshakeError, HttpResponse, Rejection, Request, RequestKind};
pub use message::{Message, SharedFrame, Utf8Bytes};

/// Re-exported so that applications can name header and status types without a
/// direct dependency.
pub use http;
