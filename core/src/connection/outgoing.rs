//! The bytes a connection has queued for the transport.

use bytes::{Buf, Bytes, BytesMut};
use std::{collections::VecDeque, io::IoSlice};

/// Above this capacity, an emptied buffer is released so that idle connections stay
/// small.
const KEEP_CAPACITY: usize = 4 << 10;
/// Larger queues of shared chunks are released once empty, for the same reason.
const KEEP_CHUNKS: usize = 16;
/// A buffer of encoded frames at least this full is queued as a chunk when the
/// next frame does not fit, instead of being grown. A smaller one is grown:
/// allocators often grow a small block in place, where a fresh buffer costs an
/// allocation. With glibc's allocator, the core's echo of a burst of sixteen
/// 1 KiB messages took 5.5% longer than before when buffers were sealed from
/// 1 KiB on, and 3.9% less from 4 KiB on; with mimalloc, which copies on
/// growth, sealing from either size took about 12% less than glibc without it.
const SEAL_MIN: usize = 4 << 10;

/// The queued output of a connection, in order: frames it encoded itself are appended
/// to one buffer (queued as a chunk of its own once full, from 4 KiB on); frames
/// shared with other connections ([`SharedFrame`]) and large payloads are queued as
/// reference-counted chunks between them, without a copy.
///
/// It is a [`Buf`]: write [`Buf::chunks_vectored`] with one vectored write (many
/// frames, one system call), then [`Buf::advance`] by what the transport took.
///
/// [`SharedFrame`]: crate::SharedFrame
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Chunks that come before `tail`. Inline, not boxed: a broadcast pushes one
    /// into every recipient's queue, and a pointer to follow per recipient cost
    /// fan-out about 3% of its throughput (boxed, an idle connection would be 32
    /// bytes smaller).
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks` in the low bits, and [`RELEASE`] in the top bit. One word
    /// for both, because every idle connection carries this queue and a flag of
    /// its own took 8 bytes with padding (which put the driver's block of an idle
    /// connection into the next size class of mimalloc and jemalloc). The length
    /// never reaches the top bit: each chunk queued takes a slot of real memory.
    chunks_len: usize,
    /// Frames encoded in place, after all of `chunks`.
    tail: BytesMut,
}

/// In `chunks_len`: release the buffers, whatever their size, the next time the
/// queue drains.
const RELEASE: usize = 1 << (usize::BITS - 1);

impl Outgoing {
    /// The buffer to encode a frame into, at the end of the queue.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// The buffer to encode a frame of `len` bytes into, with room for it. When
    /// the buffer is full (from [`SEAL_MIN`] on), it is queued as a chunk and a
    /// fresh one of twice its capacity takes its place: growing it would copy
    /// everything encoded so far, at every doubling of the buffer.
    pub(crate) fn tail_for(&mut self, len: usize) -> &mut BytesMut {
        if self.tail.capacity() - self.tail.len() < len && self.tail.len() >= SEAL_MIN {
            let capacity = len.max(self.tail.capacity() * 2);
            let sealed = std::mem::replace(&mut self.tail, BytesMut::with_capacity(capacity)).freeze();
            self.chunks_len += sealed.len();
            self.chunks.push_back(sealed);
        }
        &mut self.tail
    }

    /// Queues a chunk as is, after everything queued so far.
    pub(crate) fn push_chunk(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            let encoded = self.tail.split().freeze();
            self.chunks_len += encoded.len();
            self.chunks.push_back(encoded);
        }
        self.chunks_len += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// How many buffers a vectored write of everything queued takes.
    pub fn buffer_count(&self) -> usize {
        self.chunks.len() + usize::from(!self.tail.is_empty())
    }

    /// Releases the buffers the next time everything queued has been written,
    /// even small ones: for output that is not expected to recur, such as the
    /// handshake's response.
    pub(crate) fn release_when_drained(&mut self) {
        self.chunks_len |= RELEASE;
    }

    /// Bytes in `chunks`.
    fn chunk_bytes(&self) -> usize {
        self.chunks_len & !RELEASE
    }

    fn release_if_drained(&mut self) {
        if self.chunk_bytes() == 0 && self.tail.is_empty() {
            let release = self.chunks_len & RELEASE != 0;
            if release || self.tail.capacity() > KEEP_CAPACITY {
                self.tail = BytesMut::new();
            }
            if release || self.chunks.capacity() > KEEP_CHUNKS {
                self.chunks = VecDeque::new();
            }
            self.chunks_len = 0;
        }
    }
}

impl Buf for Outgoing {
    fn remaining(&self) -> usize {
        self.chunk_bytes() + self.tail.len()
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&self.tail[..], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        if self.chunks_len == 0 && cnt == self.tail.len() {
            // The usual case: everything was encoded in place (no chunk queued,
            // no release asked for) and written whole. The buffer is emptied in
            // place, so the next frame is encoded at its start without `reserve`
            // having to move anything back.
            self.tail.clear();
            self.release_if_drained();
            return;
        }
        assert!(cnt <= self.remaining(), "advance past the end of the outgoing queue");
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(front) => {
                    let n = cnt.min(front.len());
                    front.advance(n);
                    self.chunks_len -= n;
                    cnt -= n;
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                }
                None => {
                    if cnt == self.tail.len() {
                        // Written whole (the usual case): emptied in place, so the
                        // next frame is encoded at the start of the same buffer
                        // without `reserve` having to move anything back.
                        self.tail.clear();
                    } else {
                        self.tail.advance(cnt);
                    }
                    cnt = 0;
                }
            }
        }
        self.release_if_drained();
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let slices = self.chunks.iter().map(|c| &c[..]).chain(std::iter::once(&self.tail[..]));
        let mut n = 0;
        for (slot, slice) in dst.iter_mut().zip(slices.filter(|s| !s.is_empty())) {
            *slot = IoSlice::new(slice);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn drain(out: &mut Outgoing, step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while out.has_remaining() {
            let n = step.min(out.chunk().len());
            all.extend_from_slice(&out.chunk()[..n]);
            out.advance(n);
        }
        all
    }

    #[test]
    fn keeps_order_across_tail_and_chunks() {
        let mut out = Outgoing::default();
        out.tail().put_slice(b"ab");
        out.push_chunk(Bytes::from_static(b"CD"));
        out.tail().put_slice(b"ef");
        out.push_chunk(Bytes::from_static(b"GH"));
        assert_eq!(out.remaining(), 8);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(out.chunks_vectored(&mut slices), 4);
        assert_eq!(drain(&mut out, 3), b"abCDefGH");
        assert_eq!(out.remaining(), 0);
    }

    #[test]
    fn releases_small_buffers_when_asked() {
        let mut out = Outgoing::default();
        out.tail().put_slice(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        out.release_when_drained();
        out.advance(10);
        assert!(out.tail.capacity() > 0, "not before everything is written");
        out.advance(out.remaining());
        assert_eq!(out.tail.capacity(), 0);
        // Once only: later frames keep their buffer.
        out.tail().put_slice(b"frame");
        out.advance(5);
        assert!(out.tail.capacity() > 0);
    }

    /// The flag shares a word with the count of bytes in chunks: it must not
    /// count as queued bytes, and chunks queued after it must still release.
    #[test]
    fn the_release_flag_is_not_counted_as_queued_bytes() {
        let mut out = Outgoing::default();
        out.tail().put_slice(b"response");
        out.release_when_drained();
        out.push_chunk(Bytes::from_static(b"shared"));
        out.tail().put_slice(b"frame");
        assert_eq!(out.remaining(), 19);
        assert_eq!(drain(&mut out, 4), b"responsesharedframe");
        assert_eq!(out.remaining(), 0);
        assert_eq!(out.tail.capacity(), 0);
        assert_eq!(out.chunks.capacity(), 0);
        assert_eq!(out.chunks_len, 0, "the flag is cleared once it has acted");
    }

    #[test]
    fn releases_large_buffers_when_drained() {
        let mut out = Outgoing::default();
        out.tail().put_slice(&vec![0u8; 64 << 10]);
        out.advance(64 << 10);
        assert_eq!(out.tail.capacity(), 0);
    }

    /// A full buffer is queued as it is when the next frame does not fit: what
    /// was encoded into it is not moved, and every frame still leaves in order.
    #[test]
    fn a_full_buffer_is_sealed_not_grown() {
        let mut out = Outgoing::default();
        let frames: Vec<Vec<u8>> = (0..32u8).map(|n| vec![n; 1038]).collect();
        let mut written = 0;
        while out.tail.len() < SEAL_MIN {
            out.tail_for(frames[written].len()).put_slice(&frames[written]);
            written += 1;
        }
        let full = out.tail.as_ptr();
        for frame in &frames[written..] {
            out.tail_for(frame.len()).put_slice(frame);
        }
        assert_eq!(out.chunk().as_ptr(), full, "the full buffer was moved");
        assert!(out.buffer_count() > 1 && out.buffer_count() <= 4, "{} buffers", out.buffer_count());
        assert_eq!(drain(&mut out, usize::MAX), frames.concat());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Encode(Vec<u8>),
        /// Encoded through [`Outgoing::tail_for`], which may seal the buffer.
        EncodeFor(Vec<u8>),
        Chunk(Vec<u8>),
        /// Writes this share (in 1/256ths) of what is queued.
        Write(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
        // Frames large enough to fill and seal buffers, as well as small ones.
        let frame = || prop_oneof![bytes(), proptest::collection::vec(any::<u8>(), 0..3000)];
        prop_oneof![
            bytes().prop_map(Op::Encode),
            frame().prop_map(Op::EncodeFor),
            bytes().prop_map(Op::Chunk),
            any::<u8>().prop_map(Op::Write)
        ]
    }

    proptest::proptest! {
        /// Whatever mix of encoded frames, shared chunks and partial writes, the
        /// queue hands out exactly the bytes queued, in order, and its counts
        /// agree with its buffers.
        #[test]
        fn queue_is_a_byte_fifo(ops in proptest::collection::vec(op(), 0..40)) {
            let mut out = Outgoing::default();
            let mut model = std::collections::VecDeque::new();
            for op in ops {
                match op {
                    Op::Encode(b) => { out.tail().put_slice(&b); model.extend(b); }
                    Op::EncodeFor(b) => { out.tail_for(b.len()).put_slice(&b); model.extend(b); }
                    Op::Chunk(b) => { out.push_chunk(Bytes::from(b.clone())); model.extend(b); }
                    Op::Write(share) => {
                        let n = out.remaining() * usize::from(share) / 255;
                        out.advance(n);
                        model.drain(..n);
                    }
                }
                let mut slices = [IoSlice::new(&[]); 128];
                let count = out.chunks_vectored(&mut slices);
                proptest::prop_assert_eq!(count, out.buffer_count());
                let queued: Vec<u8> = slices[..count].iter().flat_map(|s| s.iter().copied()).collect();
                proptest::prop_assert_eq!(&queued, &model.iter().copied().collect::<Vec<u8>>());
                proptest::prop_assert_eq!(out.remaining(), model.len());
                proptest::prop_assert_eq!(out.chunk().is_empty(), model.is_empty());
            }
        }
    }
}
