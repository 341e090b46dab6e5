//! The opening handshake over a transport, for both roles.

use chinwag_core::{
    Accept, ClientRequest, Config, Connection, Event, HandshakeError, HttpResponse, MaskSource, Rejection, Request,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::future::{Future, poll_fn};
use std::sync::Arc;

use crate::io::Io;
use crate::{Error, Timer, Transport, WebSocket};

/// A request read from a client, waiting for the application's answer.
///
/// Boxed parts: a task that awaits the handshake keeps the size of its future for
/// the connection's whole life, and the connection's state moves into the open
/// WebSocket's shared allocation anyway. So the handshake holds pointers only, and
/// an idle connection's task stays small.
pub struct PendingRequest<T, R> {
    io: Box<Io<T, R>>,
    request: Box<Request>,
}

impl<T: Transport, R: Timer> PendingRequest<T, R> {
    /// The request: path, query, headers, origin, offered subprotocols. Its
    /// [`kind`](Request::kind) says whether it is an upgrade or plain HTTP.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Accepts an upgrade request and returns the open WebSocket.
    // Not an `async fn`: the decision is taken before the future is built, so the
    // future does not carry `accept` (see the note on `PendingRequest`).
    pub fn accept(mut self, accept: Accept) -> impl Future<Output = Result<WebSocket<T, R>, Error>> {
        let now = crate::clock::now();
        let accepted = self.io.conn.accept(now, accept);
        async move {
            accepted?;
            let opened = self.io.conn.poll_event(now);
            debug_assert!(matches!(opened, Some(Event::Open(_))), "accept reports the opening first");
            poll_fn(|cx| self.io.poll_write(cx)).await?;
            Ok(WebSocket::from_io(*self.io))
        }
    }

    /// Accepts an upgrade request and returns the open WebSocket at once, with the
    /// 101 response queued ahead of anything sent on it: it is written with the
    /// first write (`recv` writes what is queued before it waits, as do `send` and
    /// `flush`). A server can then record the connection and queue its first
    /// messages before the client can see the 101, and the 101 and those messages
    /// leave in one write.
    pub fn open(mut self, accept: Accept) -> Result<WebSocket<T, R>, Error> {
        let now = crate::clock::now();
        self.io.conn.accept(now, accept)?;
        let opened = self.io.conn.poll_event(now);
        debug_assert!(matches!(opened, Some(Event::Open(_))), "accept reports the opening first");
        Ok(WebSocket::from_io(*self.io))
    }

    /// Waits until the request can no longer be answered, and returns why: the
    /// client closed the connection or the transport failed, the handshake timed
    /// out, or the client sent more before the answer than the core keeps (it is
    /// answered with 400 before this returns). Never returns while the client just
    /// waits; what it sends meanwhile is kept for after a 101.
    ///
    /// For a server whose answer takes a while (a look-up over the network): race
    /// the decision against this, and a client that left is not given a
    /// connection that nobody will read. Dropping it before it returns leaves the
    /// request to be answered.
    pub async fn closed(&mut self) -> HandshakeError {
        let failed = poll_fn(|cx| self.io.start_poll().poll_deciding(cx)).await;
        poll_fn(|cx| self.io.start_poll().poll_finish_alone(cx)).await;
        failed
    }

    /// Refuses the request with an error status and a plain-text reason, then closes
    /// the transport.
    pub async fn reject(mut self, rejection: Rejection) -> Result<(), Error> {
        self.io.conn.reject(crate::clock::now(), rejection)?;
        poll_fn(|cx| self.io.start_poll().poll_finish_alone(cx)).await;
        Ok(())
    }

    /// Answers with a plain HTTP response (for example a web page), then closes the
    /// transport.
    pub async fn respond(mut self, response: HttpResponse) -> Result<(), Error> {
        self.io.conn.respond(crate::clock::now(), response)?;
        poll_fn(|cx| self.io.start_poll().poll_finish_alone(cx)).await;
        Ok(())
    }
}

/// Reads the opening request of a client from `transport`.
///
/// An invalid upgrade request is answered by the core (400, 426, 431) and the
/// transport closed before this returns the error; so is a client that does not
/// finish its request within [`Config::handshake_timeout`].
///
/// `config` is a [`Config`] or an `Arc<Config>`: a server that passes clones of one
/// `Arc` keeps a single copy of its settings for all its connections.
pub fn read_request<T: Transport, R: Timer>(
    transport: T,
    config: impl Into<Arc<Config>>,
) -> impl Future<Output = Result<PendingRequest<T, R>, Error>> {
    // Built before the future, which then holds a single pointer.
    let io = Box::new(Io::<T, R>::new(transport, Connection::server(config, crate::clock::now())));
    read_request_into(io)
}

async fn read_request_into<T: Transport, R: Timer>(mut io: Box<Io<T, R>>) -> Result<PendingRequest<T, R>, Error> {
    loop {
        match poll_fn(|cx| io.start_poll().poll_event_alone(cx)).await {
            Some(Event::UpgradeRequest(request) | Event::HttpRequest(request)) => {
                return Ok(PendingRequest { io, request });
            }
            Some(Event::HandshakeFailed(e)) => {
                poll_fn(|cx| io.start_poll().poll_finish_alone(cx)).await;
                return Err(Error::Handshake(e));
            }
            Some(_) => {}
            None => return Err(Error::Handshake(HandshakeError::TransportClosed)),
        }
    }
}

/// Accepts a WebSocket on `transport`, whatever its path. A request that is not an
/// upgrade gets 426 Upgrade Required.
// The handshake runs in a boxed future that is freed once the connection is open,
// so a task awaiting this keeps no handshake state (see `PendingRequest`).
pub fn accept<T: Transport, R: Timer>(
    transport: T,
    config: impl Into<Arc<Config>>,
) -> impl Future<Output = Result<WebSocket<T, R>, Error>> {
    let config = config.into();
    Box::pin(async move {
        let pending = read_request(transport, config).await?;
        if *pending.request().kind() == chinwag_core::RequestKind::Upgrade {
            pending.accept(Accept::new()).await
        } else {
            let rejection = Rejection::websocket_only();
            let refused =
                HandshakeError::Refused { status: rejection.status.as_u16(), reason: rejection.reason.clone() };
            pending.reject(rejection).await?;
            Err(Error::Handshake(refused))
        }
    })
}

/// Performs the client's opening handshake over a connected `transport` (TCP, or TLS
/// for `wss`). The key and every frame's mask come from the operating system's
/// random source through a ChaCha-based generator.
pub fn client_handshake<T: Transport, R: Timer>(
    transport: T,
    request: &ClientRequest,
    config: Config,
) -> impl Future<Output = Result<WebSocket<T, R>, Error>> + use<T, R> {
    let mut rng = StdRng::from_os_rng();
    let key: [u8; 16] = rng.random();
    let masks: Box<dyn MaskSource> = Box::new(move || rng.random::<[u8; 4]>());
    let conn = Connection::client(request, key, masks, config, crate::clock::now());
    // Boxed, and built before the future, for the same reason as `PendingRequest`.
    client_handshake_into(Box::new(Io::<T, R>::new(transport, conn)))
}

async fn client_handshake_into<T: Transport, R: Timer>(mut io: Box<Io<T, R>>) -> Result<WebSocket<T, R>, Error> {
    loop {
        match poll_fn(|cx| io.start_poll().poll_event_alone(cx)).await {
            Some(Event::Open(_)) => return Ok(WebSocket::from_io(*io)),
            Some(Event::HandshakeFailed(e)) => {
                poll_fn(|cx| io.start_poll().poll_finish_alone(cx)).await;
                return Err(Error::Handshake(e));
            }
            Some(_) => {}
            None => return Err(Error::Handshake(HandshakeError::TransportClosed)),
        }
    }
}
