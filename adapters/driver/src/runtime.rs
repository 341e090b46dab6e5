//! What a server or client needs from an async runtime besides a transport and a
//! timer: listening, connecting, spawning and sleeping.

use chinwag_core::{ClientRequest, Config};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{Error, Timer, Transport, WebSocket};

/// An async runtime, as chinwag servers, clients and tests use it. The adapters
/// implement it: `chinwag_tokio::Tokio`, `chinwag_futures::AsyncStd` and
/// `chinwag_futures::Smol`. Code written against it runs unchanged on each.
pub trait Runtime: Send + Sync + 'static {
    /// The TCP stream, as a transport.
    type Io: Transport + Send + 'static;
    /// The timer.
    type Timer: Timer + Send + 'static;
    /// A TCP listener.
    type Listener: Send + Sync + 'static;

    /// Runs a future to completion on a new instance of the runtime (the program's
    /// entry point).
    fn block_on<F: Future>(future: F) -> F::Output;
    /// Whether [`block_on_thread`](Self::block_on_thread) keeps every task it
    /// spawns on the calling thread. A server then uses N cores by running N such
    /// threads, each accepting from the same listener: a connection lives on one
    /// thread from its accept to its end, with no work stealing and no wake-up
    /// across threads between its reads and its writes. A runtime whose executor
    /// is a pool of its own (async-std, smol) says `false`: it spreads tasks over
    /// its threads itself, and one accepting thread is enough.
    const THREAD_PER_CORE: bool;
    /// Runs a future to completion on the calling thread, with an executor of its
    /// own when [`THREAD_PER_CORE`](Self::THREAD_PER_CORE) (else as
    /// [`block_on`](Self::block_on)).
    fn block_on_thread<F: Future>(future: F) -> F::Output;
    /// A listener bound elsewhere (shared between threads with
    /// `std::net::TcpListener::try_clone`), made ready for this runtime on the
    /// calling thread. Call it from within the runtime that will accept from it.
    fn listener_from_std(listener: std::net::TcpListener) -> io::Result<Self::Listener>;
    /// Binds a TCP listener.
    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// The address a listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Accepts a TCP connection (with `TCP_NODELAY` set: WebSocket frames are
    /// written whole, so Nagle's algorithm only adds latency).
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
    /// Opens a TCP connection (with `TCP_NODELAY` set).
    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<Self::Io>> + Send;
    /// Runs a task in the background.
    fn spawn(task: impl Future<Output = ()> + Send + 'static);
    /// Waits for `duration`.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send;
}

/// Connects to a `ws://` URL over TCP on runtime `R` and performs the handshake.
pub async fn connect<R: Runtime>(request: &ClientRequest, config: Config) -> Result<WebSocket<R::Io, R::Timer>, Error> {
    if request.is_tls() {
        let msg = "wss:// needs TLS: connect a TLS stream and use client_handshake";
        return Err(Error::Io(io::Error::new(io::ErrorKind::Unsupported, msg)));
    }
    let io = R::connect(request.host(), request.port()).await?;
    crate::client_handshake(io, request, config).await
}

/// Parses a `ws://` URL for [`connect`].
pub fn parse_url(url: &str) -> Result<ClientRequest, Error> {
    ClientRequest::new(url).map_err(|e| Error::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))
}
