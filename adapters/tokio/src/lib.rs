//! # chinwag-tokio: chinwag WebSockets on tokio
//!
//! Plugs tokio's `AsyncRead`/`AsyncWrite` streams and timers into
//! [`chinwag_driver`]; everything else (the protocol, the I/O strategy) is shared
//! with `chinwag-futures`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use chinwag_tokio::core::Message;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let Ok(mut ws) = chinwag_tokio::accept(stream).await else { return };
//!         while let Some(message) = ws.recv().await {
//!             if ws.send(&message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```

use chinwag_core::{ClientRequest, Config};
use chinwag_driver::{Runtime, Timer, Transport};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use chinwag_driver::{Error, core};

/// A tokio stream as a chinwag transport.
#[derive(Debug)]
pub struct TokioIo<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for TokioIo<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// tokio's timer, allocated when first armed.
#[derive(Debug)]
pub struct TokioTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl Timer for TokioTimer {
    fn unarmed() -> Self {
        Self(None)
    }

    fn reset(&mut self, deadline: Instant) {
        let deadline = tokio::time::Instant::from_std(deadline);
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        // An elapsed `Sleep` is kept for the next `reset` (a keepalive timer is
        // re-armed every interval), but no longer armed.
        self.0.as_ref().filter(|sleep| !sleep.is_elapsed()).map(|sleep| sleep.deadline().into_std())
    }

    fn disarm(&mut self) {
        // Frees tokio's timer entry: a connection without deadlines holds none.
        self.0 = None;
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// An open WebSocket over a tokio stream.
pub type WebSocket<S = TcpStream> = chinwag_driver::WebSocket<TokioIo<S>, TokioTimer>;
/// The sending half of a [`WebSocket`].
pub type Sender<S = TcpStream> = chinwag_driver::Sender<TokioIo<S>, TokioTimer>;
/// The receiving half of a [`WebSocket`].
pub type Receiver<S = TcpStream> = chinwag_driver::Receiver<TokioIo<S>, TokioTimer>;
/// A client's request, waiting for the application's answer.
pub type PendingRequest<S = TcpStream> = chinwag_driver::PendingRequest<TokioIo<S>, TokioTimer>;

/// Accepts a WebSocket on any path with the default [`Config`]; see
/// [`chinwag_driver::accept`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<WebSocket<S>, Error> {
    chinwag_driver::accept(TokioIo(stream), Config::default()).await
}

/// Accepts a WebSocket on any path with `config`.
pub async fn accept_with_config<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: impl Into<std::sync::Arc<Config>>,
) -> Result<WebSocket<S>, Error> {
    chinwag_driver::accept(TokioIo(stream), config).await
}

/// Reads a client's request so the application can accept, reject or answer it;
/// see [`chinwag_driver::read_request`].
pub async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: impl Into<std::sync::Arc<Config>>,
) -> Result<PendingRequest<S>, Error> {
    chinwag_driver::read_request(TokioIo(stream), config).await
}

/// Connects to a `ws://` URL over TCP (`TCP_NODELAY` on) and performs the handshake.
/// For `wss://`, connect a TLS stream yourself and use [`client_handshake`].
pub async fn connect(url: &str) -> Result<WebSocket, Error> {
    chinwag_driver::connect::<Tokio>(&chinwag_driver::parse_url(url)?, Config::default()).await
}

/// Connects for a prepared request (subprotocols, headers) with `config`.
pub async fn connect_with(request: &ClientRequest, config: Config) -> Result<WebSocket, Error> {
    chinwag_driver::connect::<Tokio>(request, config).await
}

/// The client handshake over a stream the caller connected.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    request: &ClientRequest,
    config: Config,
) -> Result<WebSocket<S>, Error> {
    chinwag_driver::client_handshake(TokioIo(stream), request, config).await
}

/// The tokio runtime (multi-threaded) as a chinwag [`Runtime`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Io = TokioIo<TcpStream>;
    type Timer = TokioTimer;
    type Listener = tokio::net::TcpListener;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(future)
    }

    const THREAD_PER_CORE: bool = true;

    fn block_on_thread<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(future)
    }

    fn listener_from_std(listener: std::net::TcpListener) -> io::Result<Self::Listener> {
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    async fn bind(addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((TokioIo(stream), peer))
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(TokioIo(stream))
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
#[cfg(test)]
mod tests {
    /// What an idle connection costs: the block its handles share stays in the
    /// 384-byte size class of mimalloc (the binary's allocator) and jemalloc.
    /// One byte more costs 64 per connection (the next class is 448).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_connections_shared_block_fits_the_384_byte_size_class() {
        let size = super::WebSocket::<tokio::net::TcpStream>::SHARED_BLOCK_SIZE;
        assert!(size <= 384, "the shared block is {size} bytes");
    }

    /// The driver keeps no copy of the deadline: the timer must say what it is
    /// armed for until it fires, and nothing after it fired or was disarmed.
    #[tokio::test]
    async fn the_timer_says_what_it_is_armed_for_until_it_fires() {
        use chinwag_driver::Timer;
        use std::time::{Duration, Instant};
        let mut timer = super::TokioTimer::unarmed();
        assert_eq!(timer.deadline(), None);
        let at = Instant::now() + Duration::from_millis(20);
        timer.reset(at);
        assert_eq!(timer.deadline(), Some(at));
        std::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
        assert!(Instant::now() >= at, "fired early");
        assert_eq!(timer.deadline(), None, "still armed after it fired");
        // Re-armed, it keeps tokio's entry; disarmed, it frees it.
        timer.reset(at + Duration::from_secs(60));
        assert_eq!(timer.deadline(), Some(at + Duration::from_secs(60)));
        timer.disarm();
        assert_eq!(timer.deadline(), None);
        assert!(timer.0.is_none(), "a disarmed timer holds tokio's entry");
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(timer.poll_elapsed(&mut cx).is_pending());
    }
}
