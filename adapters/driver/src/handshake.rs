//! The opening handshake over a transport, for both roles.

use chinwag_core::{
    Accept, ClientRequest, Config, Connection, Event, HandshakeError, HttpResponse, MaskSource, Rejection, Request,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::future::poll_fn;
use std::time::Instant;

use crate::io::Io;
use crate::{Error, Timer, Transport, WebSocket};

/// A request read from a client, waiting for the application's answer.
pub struct PendingRequest<T, R> {
    io: Io<T, R>,
    request: Request,
}

impl<T: Transport, R: Timer> PendingRequest<T, R> {
    /// The request: path, query, headers, origin, offered subprotocols. Its
    /// [`kind`](Request::kind) says whether it is an upgrade or plain HTTP.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Accepts an upgrade request and returns the open WebSocket.
    pub async fn accept(mut self, accept: Accept) -> Result<WebSocket<T, R>, Error> {
        self.io.conn.accept(accept)?;
        let opened = self.io.conn.poll_event();
        debug_assert!(matches!(opened, Some(Event::Open(_))), "accept reports the opening first");
        poll_fn(|cx| self.io.poll_write(cx)).await?;
        Ok(WebSocket::from_io(self.io))
    }

    /// Refuses the request with an error status and a plain-text reason, then closes
    /// the transport.
    pub async fn reject(mut self, rejection: Rejection) -> Result<(), Error> {
        self.io.conn.reject(rejection)?;
        poll_fn(|cx| self.io.start_poll().poll_finish(cx)).await;
        Ok(())
    }

    /// Answers with a plain HTTP response (for example a web page), then closes the
    /// transport.
    pub async fn respond(mut self, response: HttpResponse) -> Result<(), Error> {
        self.io.conn.respond(response)?;
        poll_fn(|cx| self.io.start_poll().poll_finish(cx)).await;
        Ok(())
    }
}

/// Reads the opening request of a client from `transport`.
///
/// An invalid upgrade request is answered by the core (400, 426, 431) and the
/// transport closed before this returns the error; so is a client that does not
/// finish its request within [`Config::handshake_timeout`].
pub async fn read_request<T: Transport, R: Timer>(transport: T, config: Config) -> Result<PendingRequest<T, R>, Error> {
    let mut io = Io::<T, R>::new(transport, Connection::server(config, Instant::now()));
    loop {
        match poll_fn(|cx| io.start_poll().poll_event(cx)).await {
            Some(Event::UpgradeRequest(request) | Event::HttpRequest(request)) => {
                return Ok(PendingRequest { io, request: *request });
            }
            Some(Event::HandshakeFailed(e)) => {
                poll_fn(|cx| io.start_poll().poll_finish(cx)).await;
                return Err(Error::Handshake(e));
            }
            Some(_) => {}
            None => return Err(Error::Handshake(HandshakeError::TransportClosed)),
        }
    }
}

/// Accepts a WebSocket on `transport`, whatever its path. A request that is not an
/// upgrade gets 426 Upgrade Required.
pub async fn accept<T: Transport, R: Timer>(transport: T, config: Config) -> Result<WebSocket<T, R>, Error> {
    let pending = read_request(transport, config).await?;
    if *pending.request().kind() == chinwag_core::RequestKind::Upgrade {
        pending.accept(Accept::new()).await
    } else {
        let rejection = Rejection::websocket_only();
        let refused = HandshakeError::Refused { status: rejection.status.as_u16(), reason: rejection.reason.clone() };
        pending.reject(rejection).await?;
        Err(Error::Handshake(refused))
    }
}

/// Performs the client's opening handshake over a connected `transport` (TCP, or TLS
/// for `wss`). The key and every frame's mask come from the operating system's
/// random source through a ChaCha-based generator.
pub async fn client_handshake<T: Transport, R: Timer>(
    transport: T,
    request: &ClientRequest,
    config: Config,
) -> Result<WebSocket<T, R>, Error> {
    let mut rng = StdRng::from_os_rng();
    let key: [u8; 16] = rng.random();
    let masks: Box<dyn MaskSource> = Box::new(move || rng.random::<[u8; 4]>());
    let conn = Connection::client(request, key, masks, config, Instant::now());
    let mut io = Io::<T, R>::new(transport, conn);
    loop {
        match poll_fn(|cx| io.start_poll().poll_event(cx)).await {
            Some(Event::Open(_)) => return Ok(WebSocket::from_io(io)),
            Some(Event::HandshakeFailed(e)) => {
                poll_fn(|cx| io.start_poll().poll_finish(cx)).await;
                return Err(Error::Handshake(e));
            }
            Some(_) => {}
            None => return Err(Error::Handshake(HandshakeError::TransportClosed)),
        }
    }
}
