//! The runtime chosen on the command line.

use chinwag_driver::Runtime;
use chinwag_service::threads::Listeners;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

/// Which async runtime to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// tokio, through chinwag-tokio.
    Tokio,
    /// async-std, through chinwag-futures.
    AsyncStd,
}

/// What `--runtime` names: an async runtime, or chinwag-mio's event loops, which
/// run `chinwag echo` only (its handlers answer at once; the chat, the gateway
/// and the client wait on other connections, Redis and timers, which needs an
/// executor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeFlag {
    /// tokio, through chinwag-tokio (the default, but for `chinwag echo`).
    Tokio,
    /// async-std, through chinwag-futures.
    AsyncStd,
    /// One chinwag-mio event loop per thread (`chinwag echo` only, its default).
    EventLoop,
}

impl RuntimeFlag {
    /// The async runtime named, if it is one.
    pub fn asynchronous(self) -> Option<RuntimeKind> {
        match self {
            Self::Tokio => Some(RuntimeKind::Tokio),
            Self::AsyncStd => Some(RuntimeKind::AsyncStd),
            Self::EventLoop => None,
        }
    }
}

/// Something to run on whichever runtime was chosen.
pub trait Program {
    /// What it returns.
    type Output;
    /// The program on runtime `R`.
    fn run<R: Runtime>(self) -> impl Future<Output = Self::Output>;
}

impl RuntimeKind {
    /// Runs `program` to completion on this runtime, from the calling thread.
    ///
    /// On tokio that is a current-thread runtime: a server spreads its
    /// connections over more threads itself, each with a current-thread runtime
    /// of its own (`--threads`, see `chinwag_service::threads`), which cost less
    /// per message than tokio's work-stealing scheduler (docs/benchmarks.md).
    /// async-std runs tasks on its own pool (`ASYNC_STD_THREAD_COUNT`).
    pub fn run<P: Program>(self, program: P) -> P::Output {
        match self {
            Self::Tokio => chinwag_tokio::Tokio::block_on_thread(program.run::<chinwag_tokio::Tokio>()),
            Self::AsyncStd => chinwag_futures::AsyncStd::block_on(program.run::<chinwag_futures::AsyncStd>()),
        }
    }
}

/// The listeners of a server on runtime `R` at `addr`: one per thread on a
/// runtime that runs one executor per thread (tokio), else one (async-std spreads
/// tasks over its own pool).
pub fn bind<R: Runtime>(addr: SocketAddr, threads: NonZeroUsize) -> std::io::Result<Listeners> {
    Listeners::bind(addr, if R::THREAD_PER_CORE { threads } else { NonZeroUsize::MIN })
}
