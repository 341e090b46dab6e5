//! The two runtimes the binary runs on, behind one small interface: bind a
//! listener, accept streams as chinwag transports, spawn tasks, connect.

use chinwag_driver::{Timer, Transport};
use std::future::Future;
use std::io;
use std::net::SocketAddr;

/// Which runtime to run on (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// tokio, through chinwag-tokio.
    Tokio,
    /// async-std, through chinwag-futures.
    AsyncStd,
}

/// What a server or client needs from a runtime.
pub(crate) trait Runtime: 'static {
    type Io: Transport + Send + 'static;
    type Timer: Timer + Send + 'static;
    type Listener: Send + 'static;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<Self::Io>> + Send;
    fn spawn(task: impl Future<Output = ()> + Send + 'static);
}

/// tokio.
pub(crate) struct Tokio;

impl Runtime for Tokio {
    type Io = chinwag_tokio::TokioIo<tokio::net::TcpStream>;
    type Timer = chinwag_tokio::TokioTimer;
    type Listener = tokio::net::TcpListener;

    async fn bind(addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((chinwag_tokio::TokioIo(stream), peer))
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(chinwag_tokio::TokioIo(stream))
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }
}

/// async-std.
pub(crate) struct AsyncStd;

impl Runtime for AsyncStd {
    type Io = chinwag_futures::FuturesIo<async_std::net::TcpStream>;
    type Timer = chinwag_futures::AsyncIoTimer;
    type Listener = async_std::net::TcpListener;

    async fn bind(addr: SocketAddr) -> io::Result<Self::Listener> {
        async_std::net::TcpListener::bind(addr).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((chinwag_futures::FuturesIo(stream), peer))
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = async_std::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(chinwag_futures::FuturesIo(stream))
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        async_std::task::spawn(task);
    }
}

/// Runs `main` to completion on the chosen runtime.
pub(crate) fn run<F, G>(kind: RuntimeKind, tokio_main: F, async_std_main: G) -> io::Result<()>
where
    F: Future<Output = io::Result<()>>,
    G: Future<Output = io::Result<()>>,
{
    match kind {
        RuntimeKind::Tokio => tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(tokio_main),
        RuntimeKind::AsyncStd => async_std::task::block_on(async_std_main),
    }
}
