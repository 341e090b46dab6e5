//! Payload masking (RFC 6455 §5.3).
//!
//! Masking XORs each payload byte with one of four key bytes, chosen by the byte's
//! position in the frame payload. Payloads arrive in arbitrary pieces, so every
//! function takes the `phase`: how many payload bytes of the frame came before this
//! piece.
//!
//! The work is done [`BLOCK`] bytes at a time against the key repeated over a
//! block, a loop the compiler turns into vector instructions of the widest kind
//! it may use. A default x86-64 build may only assume SSE2 (16 bytes at once), so
//! on x86-64 the same loop is also compiled for AVX2 (32 bytes at once) and that
//! copy runs when the CPU has it, checked at run time (the check is a load of a
//! cached flag). Short pieces, the common case for chat messages, skip both and
//! take the plain loop.

/// Bytes handled per step of the vectorised loops: two AVX2 registers' worth.
const BLOCK: usize = 64;

/// Pieces shorter than this are unmasked byte by byte: a vector loop and its
/// dispatch cost more than they save on a few bytes.
const SHORT: usize = BLOCK;

/// XORs `buf` in place with `mask`, where `buf` starts `phase` bytes into the payload.
///
/// Applying the same mask twice restores the original bytes, so this both masks and
/// unmasks.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    if mask == [0; 4] {
        return;
    }
    let key = rotated(mask, phase);
    if buf.len() < SHORT {
        apply_mask_words(buf, key);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            return apply_mask_avx2(buf, key);
        }
    }
    apply_mask_blocks(buf, key);
}

/// `key` twice over, as the eight bytes of a native-endian word.
#[inline(always)]
fn key_word(key: [u8; 4]) -> u64 {
    let key32 = u64::from(u32::from_ne_bytes(key));
    key32 | (key32 << 32)
}

/// XORs a short `buf` with `key` repeated, eight bytes at a time in a `u64`.
#[inline]
fn apply_mask_words(buf: &mut [u8], key: [u8; 4]) {
    let key64 = key_word(key);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let unmasked = u64::from_ne_bytes(word.try_into().expect("8 bytes")) ^ key64;
        word.copy_from_slice(&unmasked.to_ne_bytes());
    }
    // Words are multiples of four bytes, so the key phase is unchanged here: a
    // half word, then at most three bytes.
    let mut rest = words.into_remainder();
    if rest.len() >= 4 {
        let (half, tail) = rest.split_at_mut(4);
        let unmasked = u32::from_ne_bytes((&*half).try_into().expect("4 bytes")) ^ u32::from_ne_bytes(key);
        half.copy_from_slice(&unmasked.to_ne_bytes());
        rest = tail;
    }
    for (byte, k) in rest.iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// [`apply_mask_blocks`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_mask_avx2(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_blocks(buf, key);
}

/// XORs `buf` with `key` repeated, [`BLOCK`] bytes at a time; `key` is already
/// rotated to `buf`'s phase.
#[inline(always)]
fn apply_mask_blocks(buf: &mut [u8], key: [u8; 4]) {
    let pattern = repeated::<BLOCK>(key);
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (byte, k) in block.iter_mut().zip(&pattern) {
            *byte ^= k;
        }
    }
    // Each block is a multiple of four bytes, so the key phase is unchanged here.
    apply_mask_words(blocks.into_remainder(), key);
}

/// Appends `src` to `dst`, unmasked with `mask` from `phase` bytes into the
/// payload: the copy and the unmasking in one pass over the bytes, instead of a
/// copy followed by [`apply_mask`] over the copy. Returns whether every byte
/// appended is ASCII, found in the same pass: an ASCII piece of text needs no
/// further UTF-8 validation ([`Utf8Validator::feed_ascii`]), so most text is
/// read once.
///
/// [`Utf8Validator::feed_ascii`]: crate::utf8::Utf8Validator::feed_ascii
pub fn copy_masked(dst: &mut bytes::BytesMut, src: &[u8], mask: [u8; 4], phase: usize) -> bool {
    copy_masked_checking::<true>(dst, src, mask, phase)
}

/// [`copy_masked`] for a binary payload: the same copy without looking for
/// bytes that are not ASCII (one vector operation per register fewer; about 45
/// instructions per KiB with AVX2, callgrind).
pub fn copy_masked_binary(dst: &mut bytes::BytesMut, src: &[u8], mask: [u8; 4], phase: usize) {
    copy_masked_checking::<false>(dst, src, mask, phase);
}

/// [`copy_masked`], with the ASCII check only if `ASCII` (else it returns
/// `true`, meaningless).
#[inline(always)]
fn copy_masked_checking<const ASCII: bool>(dst: &mut bytes::BytesMut, src: &[u8], mask: [u8; 4], phase: usize) -> bool {
    let key = rotated(mask, phase);
    if dst.capacity() == 0 {
        // The first piece of a message (the whole of most): an allocation of its
        // exact size, without `reserve`'s general path.
        *dst = bytes::BytesMut::with_capacity(src.len());
    } else {
        dst.reserve(src.len());
    }
    let spare = &mut dst.spare_capacity_mut()[..src.len()];
    #[cfg(target_arch = "x86_64")]
    let vectorised = src.len() >= SHORT && std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let vectorised = false;
    let high_bits = if src.len() < SHORT {
        copy_masked_words::<ASCII>(spare, src, key)
    } else if vectorised {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            copy_masked_avx2::<ASCII>(spare, src, key)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!()
    } else {
        copy_masked_blocks::<ASCII>(spare, src, key)
    };
    let len = dst.len() + src.len();
    // SAFETY: the `src.len()` bytes of spare capacity after the current length were
    // all written above (the blocks and the remainder cover them exactly).
    #[allow(unsafe_code)]
    unsafe {
        dst.set_len(len);
    }
    high_bits & 0x80 == 0
}

/// Writes a short `src` XORed with `key` repeated into `out`, eight bytes at a
/// time in a `u64`; returns the high bit of the OR of the bytes written (0x80
/// if any is not ASCII, else 0), which is what callers of
/// [`copy_masked_blocks`] look at.
#[inline(always)]
fn copy_masked_words<const ASCII: bool>(out: &mut [std::mem::MaybeUninit<u8>], src: &[u8], key: [u8; 4]) -> u8 {
    debug_assert_eq!(out.len(), src.len());
    let key64 = key_word(key);
    let mut seen = 0u64;
    let mut words = out.chunks_exact_mut(8);
    let mut sources = src.chunks_exact(8);
    for (out, word) in (&mut words).zip(&mut sources) {
        let unmasked = u64::from_ne_bytes(word.try_into().expect("8 bytes")) ^ key64;
        if ASCII {
            seen |= unmasked;
        }
        out.write_copy_of_slice(&unmasked.to_ne_bytes());
    }
    // Words are multiples of four bytes, so the key phase is unchanged here: a
    // half word, then at most three bytes (a copy of a few bytes through a
    // buffer costs two calls to memcpy, more than these steps).
    let (mut out, mut rest) = (words.into_remainder(), sources.remainder());
    if rest.len() >= 4 {
        let unmasked = u32::from_ne_bytes(rest[..4].try_into().expect("4 bytes")) ^ u32::from_ne_bytes(key);
        seen |= u64::from(unmasked);
        out[..4].write_copy_of_slice(&unmasked.to_ne_bytes());
        (out, rest) = (&mut out[4..], &rest[4..]);
    }
    for ((o, b), k) in out.iter_mut().zip(rest).zip(key) {
        let u = b ^ k;
        seen |= u64::from(u);
        o.write(u);
    }
    // Only the high bit of the OR matters to the callers.
    if seen & 0x8080_8080_8080_8080 == 0 { 0 } else { 0x80 }
}

/// [`copy_masked_blocks`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn copy_masked_avx2<const ASCII: bool>(out: &mut [std::mem::MaybeUninit<u8>], src: &[u8], key: [u8; 4]) -> u8 {
    copy_masked_blocks::<ASCII>(out, src, key)
}

/// Writes `src` XORed with `key` repeated into `out` (of the same length): two
/// [`BLOCK`]s at a time, then one, then words; `key` is already rotated to
/// `src`'s phase. Returns the OR of every byte written (its high bit says whether
/// any is not ASCII), which costs one more vector operation per register while
/// the bytes are in registers anyway.
///
/// The double step halves the loop's own instructions (its counter, compare and
/// branch) per byte: with AVX2, 1 KiB took 225 instructions in steps of 64
/// bytes (callgrind).
#[inline(always)]
fn copy_masked_blocks<const ASCII: bool>(out: &mut [std::mem::MaybeUninit<u8>], src: &[u8], key: [u8; 4]) -> u8 {
    debug_assert_eq!(out.len(), src.len());
    let (wide, out, src) = copy_masked_steps::<{ 2 * BLOCK }, ASCII>(out, src, key);
    let (narrow, out, src) = copy_masked_steps::<BLOCK, ASCII>(out, src, key);
    // Steps are multiples of four bytes, so the key phase is unchanged here.
    wide | narrow | copy_masked_words::<ASCII>(out, src, key)
}

/// Writes the leading whole steps of `STEP` bytes of `src`, unmasked, into `out`;
/// returns the OR of the bytes written and what is left of both.
#[inline(always)]
fn copy_masked_steps<'o, 's, const STEP: usize, const ASCII: bool>(
    out: &'o mut [std::mem::MaybeUninit<u8>],
    src: &'s [u8],
    key: [u8; 4],
) -> (u8, &'o mut [std::mem::MaybeUninit<u8>], &'s [u8]) {
    if src.len() < STEP {
        return (0, out, src);
    }
    // Split at the same length, so that the loop below has one counter and one
    // test (over two slices of lengths it cannot tell equal, it kept both).
    let whole = src.len() / STEP * STEP;
    let (out, out_rest) = out.split_at_mut(whole);
    let (src, src_rest) = src.split_at(whole);
    let pattern = repeated::<STEP>(key);
    let mut seen = [0u8; STEP];
    for (out, step) in out.chunks_exact_mut(STEP).zip(src.chunks_exact(STEP)) {
        let mut unmasked = [0u8; STEP];
        for (((u, b), k), s) in unmasked.iter_mut().zip(step).zip(&pattern).zip(&mut seen) {
            *u = b ^ k;
            if ASCII {
                *s |= *u;
            }
        }
        out.write_copy_of_slice(&unmasked);
    }
    let seen = if ASCII { seen.iter().fold(0, |acc, b| acc | b) } else { 0 };
    (seen, out_rest, src_rest)
}

/// The key repeated over `N` bytes (a multiple of four). Built from whole 4-byte
/// words, which the compiler turns into one broadcast (byte by byte it was a loop
/// of 64 stores).
#[inline(always)]
fn repeated<const N: usize>(key: [u8; 4]) -> [u8; N] {
    let word = u32::from_ne_bytes(key).to_ne_bytes();
    let mut pattern = [0u8; N];
    for chunk in pattern.chunks_exact_mut(4) {
        chunk.copy_from_slice(&word);
    }
    pattern
}

/// The mask as seen from a piece that starts `phase` bytes into the payload.
fn rotated(mask: [u8; 4], phase: usize) -> [u8; 4] {
    // Rotating the bytes left by one is rotating their little-endian word right
    // by eight bits: one instruction, where rotating the array took a loop.
    u32::from_le_bytes(mask).rotate_right(8 * (phase & 3) as u32).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(buf: &mut [u8], mask: [u8; 4], phase: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(i + phase) % 4];
        }
    }

    proptest! {
        #[test]
        fn matches_bytewise_definition(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            mask in any::<[u8; 4]>(),
            phase in 0usize..16,
        ) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, mask, phase);
            naive(&mut slow, mask, phase);
            prop_assert_eq!(fast, slow);
        }

        /// Each compiled form of the block loop against the definition, whichever
        /// one `apply_mask` picks on this CPU.
        #[test]
        fn every_block_loop_matches_bytewise_definition(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            mask in any::<[u8; 4]>(),
            phase in 0usize..16,
        ) {
            let mut expected = data.clone();
            naive(&mut expected, mask, phase);
            let key = rotated(mask, phase);
            let mut portable = data.clone();
            apply_mask_blocks(&mut portable, key);
            prop_assert_eq!(&portable, &expected);
            let mut words = data.clone();
            apply_mask_words(&mut words, key);
            prop_assert_eq!(&words, &expected);
            let mut word_copy = bytes::BytesMut::with_capacity(data.len());
            let high_bits = copy_masked_words::<true>(&mut word_copy.spare_capacity_mut()[..data.len()], &data, key);
            prop_assert_eq!(high_bits & 0x80 == 0, expected.is_ascii());
            // SAFETY: copy_masked_words wrote all `data.len()` bytes.
            #[allow(unsafe_code)]
            unsafe { word_copy.set_len(data.len()) };
            prop_assert_eq!(&word_copy[..], &expected[..]);
            let mut copied = bytes::BytesMut::new();
            copied.reserve(data.len());
            let high_bits = copy_masked_blocks::<true>(&mut copied.spare_capacity_mut()[..data.len()], &data, key);
            prop_assert_eq!(high_bits & 0x80 == 0, expected.is_ascii());
            // SAFETY: copy_masked_blocks wrote all `data.len()` bytes.
            #[allow(unsafe_code)]
            unsafe { copied.set_len(data.len()) };
            prop_assert_eq!(&copied[..], &expected[..]);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut wide = data.clone();
                let mut wide_copy = bytes::BytesMut::with_capacity(data.len());
                // SAFETY: the CPU has AVX2, checked just above; copy_masked_avx2
                // writes all `data.len()` bytes.
                #[allow(unsafe_code)]
                unsafe {
                    apply_mask_avx2(&mut wide, key);
                    let high_bits = copy_masked_avx2::<true>(&mut wide_copy.spare_capacity_mut()[..data.len()], &data, key);
                    assert_eq!(high_bits & 0x80 == 0, expected.is_ascii());
                    wide_copy.set_len(data.len());
                }
                prop_assert_eq!(&wide, &expected);
                prop_assert_eq!(&wide_copy[..], &expected[..]);
            }
        }

        /// The binary copy writes the same bytes as the checking one, whichever
        /// loop its length takes.
        #[test]
        fn binary_copy_equals_checking_copy(
            before in proptest::collection::vec(any::<u8>(), 0..40),
            data in proptest::collection::vec(any::<u8>(), 0..600),
            mask in any::<[u8; 4]>(),
            phase in 0usize..16,
        ) {
            let mut binary = bytes::BytesMut::from(&before[..]);
            copy_masked_binary(&mut binary, &data, mask, phase);
            let mut checked = bytes::BytesMut::from(&before[..]);
            copy_masked(&mut checked, &data, mask, phase);
            prop_assert_eq!(&binary[..], &checked[..]);
        }

        #[test]
        fn fused_copy_equals_copy_then_unmask(
            before in proptest::collection::vec(any::<u8>(), 0..40),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            mask in any::<[u8; 4]>(),
            phase in 0usize..16,
        ) {
            let mut fused = bytes::BytesMut::from(&before[..]);
            let ascii = copy_masked(&mut fused, &data, mask, phase);
            let mut expected = before.clone();
            let mut tail = data.clone();
            apply_mask(&mut tail, mask, phase);
            prop_assert_eq!(ascii, tail.is_ascii(), "whether the appended bytes are ASCII");
            expected.extend_from_slice(&tail);
            prop_assert_eq!(&fused[..], &expected[..]);
        }

        #[test]
        fn pieces_with_phase_equal_whole(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            mask in any::<[u8; 4]>(),
            cut in 0usize..300,
        ) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, mask, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            prop_assert_eq!(whole, pieces);
        }
    }
}
