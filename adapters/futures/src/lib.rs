//! # chinwag-futures: chinwag WebSockets on futures-io
//!
//! Plugs `futures-io` streams and `async-io` timers into [`chinwag_driver`], so the
//! same WebSocket runs on smol and on async-std (both drive their I/O and timers
//! with `async-io`). Everything else is shared with `chinwag-tokio`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let listener = async_net::TcpListener::bind("127.0.0.1:9001").await?;
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         smol::spawn(async move {
//!             let Ok(mut ws) = chinwag_futures::accept(stream).await else { return };
//!             while let Some(message) = ws.recv().await {
//!                 if ws.send(&message).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         })
//!         .detach();
//!     }
//! })
//! # }
//! ```

use chinwag_core::{ClientRequest, Config};
use chinwag_driver::{Timer, Transport};
use futures_io::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

pub use async_net::TcpStream;
pub use chinwag_driver::{Error, core};

/// A futures-io stream as a chinwag transport.
///
/// The driver closes a finished connection with `poll_close`, which must shut the
/// writing side down (a TCP FIN): the peer, a client above all, waits for that end
/// of stream. async-net's and smol's `TcpStream` do; async-std's does not (its
/// `poll_close` only flushes): with async-std, use [`TcpStream`] (async-net's, on
/// the same reactor) or a stream that shuts down on close.
#[derive(Debug)]
pub struct FuturesIo<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for FuturesIo<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// async-io's timer (the timer of smol and async-std), with the deadline it is
/// armed for (async-io does not say).
#[derive(Debug)]
pub struct AsyncIoTimer {
    timer: async_io::Timer,
    armed: Option<Instant>,
}

impl Timer for AsyncIoTimer {
    fn unarmed() -> Self {
        Self { timer: async_io::Timer::never(), armed: None }
    }

    fn reset(&mut self, deadline: Instant) {
        self.timer.set_at(deadline);
        self.armed = Some(deadline);
    }

    fn deadline(&self) -> Option<Instant> {
        self.armed
    }

    fn disarm(&mut self) {
        // Takes the timer out of the reactor's set: it must not wake the task
        // for a deadline that is gone.
        self.timer.clear();
        self.armed = None;
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed.is_none() {
            return Poll::Pending;
        }
        ready!(Pin::new(&mut self.timer).poll(cx));
        self.armed = None;
        Poll::Ready(())
    }
}

/// An open WebSocket over a futures-io stream.
pub type WebSocket<S = TcpStream> = chinwag_driver::WebSocket<FuturesIo<S>, AsyncIoTimer>;
/// The sending half of a [`WebSocket`].
pub type Sender<S = TcpStream> = chinwag_driver::Sender<FuturesIo<S>, AsyncIoTimer>;
/// The receiving half of a [`WebSocket`].
pub type Receiver<S = TcpStream> = chinwag_driver::Receiver<FuturesIo<S>, AsyncIoTimer>;
/// A client's request, waiting for the application's answer.
pub type PendingRequest<S = TcpStream> = chinwag_driver::PendingRequest<FuturesIo<S>, AsyncIoTimer>;

/// Accepts a WebSocket on any path with the default [`Config`]; see
/// [`chinwag_driver::accept`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<WebSocket<S>, Error> {
    chinwag_driver::accept(FuturesIo(stream), Config::default()).await
}

/// Accepts a WebSocket on any path with `config`.
pub async fn accept_with_config<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: impl Into<std::sync::Arc<Config>>,
) -> Result<WebSocket<S>, Error> {
    chinwag_driver::accept(FuturesIo(stream), config).await
}

/// Reads a client's request so the application can accept, reject or answer it;
/// see [`chinwag_driver::read_request`].
pub async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: impl Into<std::sync::Arc<Config>>,
) -> Result<PendingRequest<S>, Error> {
    chinwag_driver::read_request(FuturesIo(stream), config).await
}

/// Connects to a `ws://` URL over TCP (`TCP_NODELAY` on) and performs the handshake.
/// For `wss://`, connect a TLS stream yourself and use [`client_handshake`].
pub async fn connect(url: &str) -> Result<WebSocket, Error> {
    connect_with(&chinwag_driver::parse_url(url)?, Config::default()).await
}

/// Connects for a prepared request (subprotocols, headers) with `config`.
pub async fn connect_with(request: &ClientRequest, config: Config) -> Result<WebSocket, Error> {
    if request.is_tls() {
        let msg = "wss:// needs TLS: connect a TLS stream and use client_handshake";
        return Err(Error::Io(io::Error::new(io::ErrorKind::Unsupported, msg)));
    }
    let stream = TcpStream::connect((request.host(), request.port())).await?;
    stream.set_nodelay(true)?;
    client_handshake(stream, request, config).await
}

/// The client handshake over a stream the caller connected.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    request: &ClientRequest,
    config: Config,
) -> Result<WebSocket<S>, Error> {
    chinwag_driver::client_handshake(FuturesIo(stream), request, config).await
}

/// Implements [`Runtime`](chinwag_driver::Runtime) for a runtime whose TCP types are
/// futures-io streams driven by async-io.
#[cfg(any(feature = "async-std", feature = "smol"))]
macro_rules! async_io_runtime {
    ($(#[$doc:meta])* $name:ident, stream = $stream:ty, listener = $listener:ty, block_on = $block_on:path, spawn = $spawn:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl chinwag_driver::Runtime for $name {
            type Io = FuturesIo<$stream>;
            type Timer = AsyncIoTimer;
            type Listener = $listener;

            fn block_on<F: Future>(future: F) -> F::Output {
                $block_on(future)
            }

            const THREAD_PER_CORE: bool = false;

            fn block_on_thread<F: Future>(future: F) -> F::Output {
                $block_on(future)
            }

            fn listener_from_std(listener: std::net::TcpListener) -> io::Result<Self::Listener> {
                <Self::Listener>::try_from(listener)
            }

            async fn bind(addr: std::net::SocketAddr) -> io::Result<Self::Listener> {
                <Self::Listener>::bind(addr).await
            }

            fn local_addr(listener: &Self::Listener) -> io::Result<std::net::SocketAddr> {
                listener.local_addr()
            }

            async fn accept(listener: &Self::Listener) -> io::Result<(Self::Io, std::net::SocketAddr)> {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((FuturesIo(stream), peer))
            }

            async fn connect(host: &str, port: u16) -> io::Result<Self::Io> {
                let stream = <$stream>::connect((host, port)).await?;
                stream.set_nodelay(true)?;
                Ok(FuturesIo(stream))
            }

            fn spawn(task: impl Future<Output = ()> + Send + 'static) {
                $spawn(task);
            }

            async fn sleep(duration: std::time::Duration) {
                async_io::Timer::after(duration).await;
            }
        }
    };
}

#[cfg(feature = "async-std")]
async_io_runtime!(
    /// async-std as a chinwag [`Runtime`](chinwag_driver::Runtime) (feature `async-std`):
    /// tasks run on async-std's executor.
    ///
    /// Its sockets are async-net's, which run on the same reactor (async-io) as
    /// async-std's own: `async_std::net::TcpStream`'s `poll_close` only flushes and
    /// never shuts the writing side down, so a server could not send its FIN while
    /// a `Sender` of the connection was still alive, and the client waited out its
    /// close timeout for the end of the stream.
    AsyncStd,
    stream = async_net::TcpStream,
    listener = async_net::TcpListener,
    block_on = async_std::task::block_on,
    spawn = |task| drop(async_std::task::spawn(task))
);

#[cfg(feature = "smol")]
async_io_runtime!(
    /// smol as a chinwag [`Runtime`](chinwag_driver::Runtime) (feature `smol`): tasks
    /// run on smol's global executor.
    Smol,
    stream = smol::net::TcpStream,
    listener = smol::net::TcpListener,
    block_on = smol::block_on,
    spawn = |task| smol::spawn(task).detach()
);

#[cfg(test)]
mod tests {
    /// The driver keeps no copy of the deadline: the timer must say what it is
    /// armed for until it fires, and nothing after it fired or was disarmed.
    #[test]
    fn the_timer_says_what_it_is_armed_for_until_it_fires() {
        use chinwag_driver::Timer;
        use std::time::{Duration, Instant};
        let mut timer = super::AsyncIoTimer::unarmed();
        assert_eq!(timer.deadline(), None);
        let at = Instant::now() + Duration::from_millis(20);
        timer.reset(at);
        assert_eq!(timer.deadline(), Some(at));
        smol::block_on(std::future::poll_fn(|cx| timer.poll_elapsed(cx)));
        assert!(Instant::now() >= at, "fired early");
        assert_eq!(timer.deadline(), None, "still armed after it fired");
        timer.reset(Instant::now() + Duration::from_millis(20));
        timer.disarm();
        assert_eq!(timer.deadline(), None);
        // Disarmed, it does not fire: the reactor no longer has it.
        std::thread::sleep(Duration::from_millis(40));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(timer.poll_elapsed(&mut cx).is_pending());
        assert!(!timer.timer.will_fire(), "a disarmed timer is still in the reactor");
    }
}
