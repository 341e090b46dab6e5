//! What a runtime adapter supplies: a byte transport and a timer.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};
use std::time::Instant;

/// A bidirectional byte stream (a TCP or TLS stream, a pipe), in poll form.
///
/// The runtime adapters implement it for their streams; the methods mean what they
/// mean on `AsyncRead`/`AsyncWrite`.
pub trait Transport: Unpin {
    /// Reads into `buf`; `Ok(0)` means end of stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from several buffers at once, returning how many bytes were taken.
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;
    /// Flushes buffered bytes down to the transport.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Shuts the writing side down (TCP FIN, TLS close_notify).
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A resettable one-shot timer of the runtime.
///
/// The timer remembers the deadline it is armed for ([`deadline`](Self::deadline)),
/// so the driver keeps no copy of it: every idle connection carries its timer.
pub trait Timer: Unpin {
    /// A timer that is not armed.
    fn unarmed() -> Self;
    /// Arms the timer for `deadline`, replacing any earlier deadline.
    fn reset(&mut self, deadline: Instant);
    /// The deadline the timer is armed for: set by [`reset`](Self::reset), and
    /// `None` once [`poll_elapsed`](Self::poll_elapsed) has returned `Ready` or
    /// [`disarm`](Self::disarm) was called (or before the first `reset`).
    fn deadline(&self) -> Option<Instant>;
    /// Forgets the deadline: the timer need not wake anyone any more. A timer
    /// that holds resources while armed (a runtime's timer entry) may free them.
    fn disarm(&mut self);
    /// Ready once the deadline has passed, which also disarms the timer. As for
    /// any future, a `Pending` must arrange for the waker of `cx` to be woken once
    /// the deadline passes: the driver does not poll a timer again until that
    /// waker (or another source of its wakes) has been woken. A timer that is not
    /// armed is `Pending` and need not wake anyone.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}
