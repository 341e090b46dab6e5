//! The runtime chosen on the command line.

use chinwag_driver::Runtime;
use std::future::Future;

/// Which runtime to run on (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// tokio, through chinwag-tokio.
    Tokio,
    /// async-std, through chinwag-futures.
    AsyncStd,
}

/// Something to run on whichever runtime was chosen.
pub trait Program {
    /// What it returns.
    type Output;
    /// The program on runtime `R`.
    fn run<R: Runtime>(self) -> impl Future<Output = Self::Output>;
}

impl RuntimeKind {
    /// Runs `program` to completion on this runtime.
    ///
    /// On tokio, `threads` picks the scheduler: 1 (the default) is a single
    /// current-thread runtime, more is a multi-thread runtime with that many workers.
    /// One thread won every measurement on the 2-core machine where the benchmarks
    /// ran with their clients (docs/benchmarks.md): lock-step echo, idle memory,
    /// and fan-out throughput equal to two threads. With cores to spare beyond what
    /// clients and other programs need, more threads may serve more connections.
    /// async-std sizes its own thread pool (`ASYNC_STD_THREAD_COUNT`).
    pub fn run<P: Program>(self, threads: usize, program: P) -> P::Output {
        match self {
            Self::Tokio => {
                let runtime = if threads <= 1 {
                    tokio::runtime::Builder::new_current_thread().enable_all().build()
                } else {
                    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
                };
                runtime.expect("tokio runtime").block_on(program.run::<chinwag_tokio::Tokio>())
            }
            Self::AsyncStd => chinwag_futures::AsyncStd::block_on(program.run::<chinwag_futures::AsyncStd>()),
        }
    }
}
