//! The deflate engine: raw DEFLATE streams through flate2 on zlib-rs, one message
//! at a time (RFC 7692 §7.2).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use super::{TRAILER, engine_bits};

/// How many idle compressors, and how many idle decompressors, a thread keeps.
const POOL: usize = 4;

thread_local! {
    /// Compressors (by level and window bits) and decompressors (by window bits)
    /// reset and kept for the next message on this thread. Without context
    /// takeover a connection needs one only while a message is compressed or
    /// inflated: taking it from here saves allocating and clearing its state
    /// (hundreds of KiB for a compressor) for every message, and keeps the
    /// allocator from scattering such blocks between connections' small ones,
    /// which made the resident memory grow by tens of KiB per connection. The
    /// output is the same as a fresh stream's: a reset stream is a new one.
    static COMPRESSORS: RefCell<Vec<(u8, u8, Compress)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSORS: RefCell<Vec<(u8, Decompress)>> = const { RefCell::new(Vec::new()) };
}

/// A compressor taken from this thread's pool (or made), given back reset when
/// dropped (if the pool has room).
struct PooledCompress {
    inner: Option<Compress>,
    level: u8,
    bits: u8,
}

impl PooledCompress {
    fn new(level: u8, bits: u8) -> Self {
        let pooled = COMPRESSORS
            .try_with(|pool| {
                let mut pool = pool.try_borrow_mut().ok()?;
                let at = pool.iter().position(|(l, b, _)| (*l, *b) == (level, bits))?;
                Some(pool.swap_remove(at).2)
            })
            .ok()
            .flatten();
        let inner =
            pooled.unwrap_or_else(|| Compress::new_with_window_bits(Compression::new(u32::from(level)), false, bits));
        Self { inner: Some(inner), level, bits }
    }
}

impl Deref for PooledCompress {
    type Target = Compress;
    fn deref(&self) -> &Compress {
        self.inner.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledCompress {
    fn deref_mut(&mut self) -> &mut Compress {
        self.inner.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledCompress {
    fn drop(&mut self) {
        let Some(mut compress) = self.inner.take() else { return };
        let _ = COMPRESSORS.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < POOL
            {
                compress.reset();
                pool.push((self.level, self.bits, compress));
            }
        });
    }
}

/// A decompressor taken from this thread's pool (or made), given back reset
/// when dropped (if the pool has room).
struct PooledDecompress {
    inner: Option<Decompress>,
    bits: u8,
}

impl PooledDecompress {
    fn new(bits: u8) -> Self {
        let pooled = DECOMPRESSORS
            .try_with(|pool| {
                let mut pool = pool.try_borrow_mut().ok()?;
                let at = pool.iter().position(|(b, _)| *b == bits)?;
                Some(pool.swap_remove(at).1)
            })
            .ok()
            .flatten();
        Self { inner: Some(pooled.unwrap_or_else(|| Decompress::new_with_window_bits(false, bits))), bits }
    }
}

impl Deref for PooledDecompress {
    type Target = Decompress;
    fn deref(&self) -> &Decompress {
        self.inner.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledDecompress {
    fn deref_mut(&mut self) -> &mut Decompress {
        self.inner.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledDecompress {
    fn drop(&mut self) {
        let Some(mut decompress) = self.inner.take() else { return };
        let _ = DECOMPRESSORS.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < POOL
            {
                decompress.reset(false);
                pool.push((self.bits, decompress));
            }
        });
    }
}

/// A compressor for one direction of a connection.
pub(crate) struct Deflater {
    compress: PooledCompress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").field("total_in", &self.compress.total_in()).finish()
    }
}

impl Deflater {
    /// A compressor at `level` (0 to 9) with a window of `window_bits` (8 to 15;
    /// 8 works as 9, see the module documentation).
    pub(crate) fn new(level: u8, window_bits: u8) -> Self {
        Self { compress: PooledCompress::new(level.min(9), engine_bits(window_bits)) }
    }

    /// Appends the compressed form of a whole message to `out`: the DEFLATE blocks
    /// up to a sync flush, without its trailing `00 00 ff ff` (RFC 7692 §7.2.1).
    /// The compressor keeps its window for the next message (context takeover);
    /// drop it for none.
    pub(crate) fn compress_message(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        // Room for the usual case in one call: incompressible data grows by a few
        // bytes per 16 KiB block plus the flush.
        out.reserve(input.len() + input.len() / 64 + 16);
        loop {
            let before = self.compress.total_in();
            // Compressing into a `Vec` with room cannot fail: errors are for bad
            // parameters or a misused stream, and neither happens here.
            let _ = self.compress.compress_vec(input, out, FlushCompress::Sync);
            let used = (self.compress.total_in() - before) as usize;
            input = &input[used..];
            // With input left, or the output full, the flush is not complete.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.len() == start {
            // Nothing new since the last flush (an empty message under context
            // takeover): zlib writes no second flush, so the message is the empty
            // stored block that RFC 7692 §7.2.3.6 shows, less its trailer.
            out.push(0x00);
        } else if out[start..].ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        } else {
            // A sync flush always ends with the empty stored block; were it not
            // there, the receiver's appended trailer would still be a valid
            // empty block after a byte boundary, so nothing is cut.
            debug_assert!(false, "a sync flush ends with an empty stored block");
        }
    }
}

/// Why inflating failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The data is not a valid DEFLATE stream.
    Invalid,
    /// The message inflates to more than the limit.
    TooLarge,
    /// The caller's check refused inflated bytes (invalid UTF-8 in a text message).
    Rejected,
}

/// A decompressor for one direction of a connection.
pub(crate) struct Inflater {
    decompress: PooledDecompress,
    /// The stream ended with a final block: what follows in the message is
    /// ignored, and the next message starts a new stream.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("total_out", &self.decompress.total_out()).finish()
    }
}

impl Inflater {
    /// A decompressor for a peer that compresses with a window of up to
    /// `window_bits`.
    pub(crate) fn new(window_bits: u8) -> Self {
        Self { decompress: PooledDecompress::new(engine_bits(window_bits)), ended: false }
    }

    /// Inflates `input` (the next compressed bytes of a message) onto `out`,
    /// which must not grow beyond `limit` bytes: memory grows with the output,
    /// never past `limit + 1` bytes, whatever the compression ratio. `check` sees
    /// the bytes each step adds, as they come out, and may refuse them.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        mut check: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), InflateError> {
        while !self.ended {
            if out.len() == out.capacity() {
                // Grow geometrically, but never past one byte over the limit (the
                // byte that proves the message too large).
                let room = (limit + 1).saturating_sub(out.len());
                if room == 0 {
                    return Err(InflateError::TooLarge);
                }
                let want = out.len().max(input.len().saturating_mul(2)).clamp(256, 1 << 20);
                out.reserve_exact(want.min(room));
            }
            let (before, start) = (self.decompress.total_in(), out.len());
            let status = self.decompress.decompress_vec(input, out, FlushDecompress::None);
            let used = (self.decompress.total_in() - before) as usize;
            input = &input[used..];
            // What came out up to the limit is checked first, so that the error
            // is that of the first bad byte however the input was cut.
            if !check(&out[start..out.len().min(limit)]) {
                return Err(InflateError::Rejected);
            }
            if out.len() > limit {
                return Err(InflateError::TooLarge);
            }
            match status {
                Ok(Status::StreamEnd) => self.ended = true,
                Ok(Status::Ok | Status::BufError) => {}
                Err(_) => return Err(InflateError::Invalid),
            }
            // Done once the input is used up and the output had room to spare
            // (nothing is held back inside the decompressor).
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the trailer the sender stripped. Returns whether
    /// the decompressor can go on to the next message (context takeover): not
    /// after a final block.
    pub(crate) fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        check: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, InflateError> {
        self.inflate(&TRAILER, out, limit, check)?;
        Ok(!self.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inflate_all(inflater: &mut Inflater, data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        inflater.inflate(data, &mut out, limit, |_| true)?;
        inflater.finish_message(&mut out, limit, |_| true)?;
        Ok(out)
    }

    #[test]
    fn rfc_7692_examples() {
        // §7.2.3.1: "Hello" compressed.
        let mut d = Deflater::new(6, 15);
        let mut out = Vec::new();
        d.compress_message(b"Hello", &mut out);
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // §7.2.3.2: the same again with context takeover is shorter.
        let mut again = Vec::new();
        d.compress_message(b"Hello", &mut again);
        assert_eq!(again, [0xf2, 0x00, 0x11, 0x00, 0x00]);
        let mut i = Inflater::new(15);
        assert_eq!(inflate_all(&mut i, &out, 100).unwrap(), b"Hello");
        assert_eq!(inflate_all(&mut i, &again, 100).unwrap(), b"Hello");
        // §7.2.3.3: a stored block; §7.2.3.6: an empty message compresses to 00.
        let mut i = Inflater::new(15);
        assert_eq!(
            inflate_all(&mut i, &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00], 100).unwrap(),
            b"Hello"
        );
        let mut empty = Vec::new();
        Deflater::new(6, 15).compress_message(b"", &mut empty);
        assert_eq!(empty, [0x00]);
        // A final block (BFINAL) ends the stream: §7.2.3.5 "Hello" with BFINAL set.
        let mut i = Inflater::new(15);
        let mut out = Vec::new();
        i.inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100, |_| true).unwrap();
        assert_eq!(i.finish_message(&mut out, 100, |_| true), Ok(false));
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut compressed = Vec::new();
        Deflater::new(9, 15).compress_message(&zeros, &mut compressed);
        assert!(compressed.len() < 20_000, "{}", compressed.len());
        let mut out = Vec::new();
        let mut i = Inflater::new(15);
        assert_eq!(i.inflate(&compressed, &mut out, 64 << 10, |_| true), Err(InflateError::TooLarge));
        assert!(out.capacity() <= (64 << 10) + 1, "{}", out.capacity());
        assert_eq!(
            Inflater::new(15).inflate(&[0xff, 0xff, 0xff], &mut Vec::new(), 100, |_| true),
            Err(InflateError::Invalid)
        );
    }

    /// The longest distance back any match in a raw DEFLATE stream reaches.
    fn max_distance(data: &[u8]) -> usize {
        // A small inflater that records distances: enough for the streams zlib
        // writes (fixed and dynamic Huffman blocks, stored blocks).
        struct Bits<'a> {
            data: &'a [u8],
            at: usize,
        }
        impl Bits<'_> {
            fn bit(&mut self) -> u32 {
                let b = (self.data[self.at / 8] >> (self.at % 8)) & 1;
                self.at += 1;
                u32::from(b)
            }
            fn bits(&mut self, n: u32) -> u32 {
                (0..n).fold(0, |acc, i| acc | (self.bit() << i))
            }
        }
        fn huffman(lengths: &[u8]) -> std::collections::HashMap<(u8, u32), u32> {
            let mut map = std::collections::HashMap::new();
            let max = *lengths.iter().max().unwrap_or(&0);
            let mut code = 0u32;
            for len in 1..=max {
                for (sym, &l) in lengths.iter().enumerate() {
                    if l == len {
                        map.insert((len, code), sym as u32);
                        code += 1;
                    }
                }
                code <<= 1;
            }
            map
        }
        fn decode(b: &mut Bits<'_>, table: &std::collections::HashMap<(u8, u32), u32>) -> u32 {
            let mut code = 0u32;
            for len in 1..=15u8 {
                code = (code << 1) | b.bit();
                if let Some(&sym) = table.get(&(len, code)) {
                    return sym;
                }
            }
            panic!("bad code");
        }
        const LEN_EXTRA: [u32; 29] =
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
        const DIST_BASE: [u32; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
            4097, 6145, 8193, 12289, 16385, 24577,
        ];
        let mut b = Bits { data, at: 0 };
        let mut max = 0;
        while b.at + 3 <= data.len() * 8 {
            let _final = b.bit();
            match b.bits(2) {
                0 => {
                    b.at = b.at.div_ceil(8) * 8;
                    if b.at / 8 + 4 > data.len() {
                        break;
                    }
                    let len = b.bits(16);
                    b.bits(16);
                    b.at += len as usize * 8;
                }
                kind => {
                    let (lit, dist) = if kind == 1 {
                        let mut l = vec![8u8; 144];
                        l.extend([9u8; 112]);
                        l.extend([7u8; 24]);
                        l.extend([8u8; 8]);
                        (huffman(&l), huffman(&[5u8; 30]))
                    } else {
                        let hlit = b.bits(5) as usize + 257;
                        let hdist = b.bits(5) as usize + 1;
                        let hclen = b.bits(4) as usize + 4;
                        const ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
                        let mut cl = [0u8; 19];
                        for &i in &ORDER[..hclen] {
                            cl[i] = b.bits(3) as u8;
                        }
                        let clt = huffman(&cl);
                        let mut lengths = Vec::new();
                        while lengths.len() < hlit + hdist {
                            match decode(&mut b, &clt) {
                                s @ 0..=15 => lengths.push(s as u8),
                                16 => {
                                    let prev = *lengths.last().unwrap();
                                    let n = 3 + b.bits(2);
                                    lengths.extend(std::iter::repeat_n(prev, n as usize));
                                }
                                17 => lengths.extend(std::iter::repeat_n(0, 3 + b.bits(3) as usize)),
                                _ => lengths.extend(std::iter::repeat_n(0, 11 + b.bits(7) as usize)),
                            }
                        }
                        (huffman(&lengths[..hlit]), huffman(&lengths[hlit..]))
                    };
                    loop {
                        let sym = decode(&mut b, &lit);
                        match sym {
                            0..=255 => {}
                            256 => break,
                            _ => {
                                b.bits(LEN_EXTRA[(sym - 257) as usize]);
                                let d = decode(&mut b, &dist) as usize;
                                let extra = if d < 4 { 0 } else { (d as u32 - 2) / 2 };
                                let distance = DIST_BASE[d] + b.bits(extra);
                                max = max.max(distance as usize);
                            }
                        }
                    }
                }
            }
        }
        max
    }

    proptest! {
        /// Any message, compressed and cut into any pieces, inflates to itself,
        /// with and without context takeover, at any level and window.
        #[test]
        fn round_trips(
            messages in prop::collection::vec(prop::collection::vec(prop_oneof![any::<u8>(), Just(b'a'), Just(b'b')], 0..3000), 1..4),
            level in 0u8..10,
            bits in 8u8..16,
            cut in 1usize..500,
            takeover in any::<bool>(),
        ) {
            let mut d = Deflater::new(level, bits);
            let mut i = Inflater::new(bits);
            for m in &messages {
                if !takeover {
                    d = Deflater::new(level, bits);
                    i = Inflater::new(bits);
                }
                let mut c = Vec::new();
                d.compress_message(m, &mut c);
                let mut out = Vec::new();
                for piece in c.chunks(cut) {
                    i.inflate(piece, &mut out, m.len(), |_| true).unwrap();
                }
                prop_assert!(i.finish_message(&mut out, m.len(), |_| true).unwrap());
                prop_assert_eq!(&out, m);
            }
        }

        /// Compressing with 9 bits for an agreed 8 never reaches back beyond a
        /// 256-byte window.
        #[test]
        fn nine_bits_fit_a_window_of_eight(
            data in prop::collection::vec(prop_oneof![Just(b'x'), Just(b'y'), any::<u8>()], 0..4000),
            period in 200usize..300,
            level in 1u8..10,
        ) {
            // Repeats at a period near 256 tempt matches at the window's edge.
            let message: Vec<u8> = data.iter().enumerate().map(|(n, &b)| if n % 3 == 0 { data[n % period] } else { b }).collect();
            let mut c = Vec::new();
            Deflater::new(level, 8).compress_message(&message, &mut c);
            prop_assert!(max_distance(&c) <= 256, "{}", max_distance(&c));
        }
    }
}
