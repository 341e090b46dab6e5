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
    pub fn run<P: Program>(self, program: P) -> P::Output {
        match self {
            Self::Tokio => chinwag_tokio::Tokio::block_on(program.run::<chinwag_tokio::Tokio>()),
            Self::AsyncStd => chinwag_futures::AsyncStd::block_on(program.run::<chinwag_futures::AsyncStd>()),
        }
    }
}
