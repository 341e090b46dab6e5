//! Payload masking (RFC 6455 §5.3).
//!
//! Masking XORs each payload byte with one of four key bytes, chosen by the byte's
//! position in the frame payload. Payloads arrive in arbitrary pieces, so every
//! function takes the `phase`: how many payload bytes of the frame came before this
//! piece. The work is done sixteen bytes at a time on whole words; the compiler turns
//! the loop into vector instructions where the target has them.

/// XORs `buf` in place with `mask`, where `buf` starts `phase` bytes into the payload.
///
/// Applying the same mask twice restores the original bytes, so this both masks and
/// unmasks.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    if mask == [0; 4] {
        return;
    }
    let key = rotated(mask, phase);
    let key64 = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let key128 = (u128::from(key64) << 64) | u128::from(key64);

    let mut blocks = buf.chunks_exact_mut(16);
    for block in &mut blocks {
        let word = u128::from_ne_bytes(block.try_into().expect("16-byte block")) ^ key128;
        block.copy_from_slice(&word.to_ne_bytes());
    }
    // Each block is a multiple of four bytes, so the key phase is unchanged here.
    for (i, byte) in blocks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Appends `src` to `dst`, unmasked with `mask` from `phase` bytes into the
/// payload: the copy and the unmasking in one pass over the bytes, instead of a
/// copy followed by [`apply_mask`] over the copy.
pub fn copy_masked(dst: &mut bytes::BytesMut, src: &[u8], mask: [u8; 4], phase: usize) {
    let key = rotated(mask, phase);
    let key64 = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let key128 = (u128::from(key64) << 64) | u128::from(key64);
    dst.reserve(src.len());
    let spare = &mut dst.spare_capacity_mut()[..src.len()];
    let mut blocks = spare.chunks_exact_mut(16);
    let mut sources = src.chunks_exact(16);
    for (out, block) in (&mut blocks).zip(&mut sources) {
        let word = u128::from_ne_bytes(block.try_into().expect("16-byte block")) ^ key128;
        out.write_copy_of_slice(&word.to_ne_bytes());
    }
    // Blocks are multiples of four bytes, so the key phase is unchanged here.
    for (i, (o, b)) in blocks.into_remainder().iter_mut().zip(sources.remainder()).enumerate() {
        o.write(b ^ key[i & 3]);
    }
    let len = dst.len() + src.len();
    // SAFETY: the `src.len()` bytes of spare capacity after the current length were
    // all written above (the blocks and the remainder cover them exactly).
    #[allow(unsafe_code)]
    unsafe {
        dst.set_len(len);
    }
}

/// The mask as seen from a piece that starts `phase` bytes into the payload.
fn rotated(mask: [u8; 4], phase: usize) -> [u8; 4] {
    let mut key = mask;
    key.rotate_left(phase & 3);
    key
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
            data in proptest::collection::vec(any::<u8>(), 0..300),
            mask in any::<[u8; 4]>(),
            phase in 0usize..16,
        ) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, mask, phase);
            naive(&mut slow, mask, phase);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn fused_copy_equals_copy_then_unmask(
            before in proptest::collection::vec(any::<u8>(), 0..40),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            mask in any::<[u8; 4]>(),
            phase in 0usize..16,
        ) {
            let mut fused = bytes::BytesMut::from(&before[..]);
            copy_masked(&mut fused, &data, mask, phase);
            let mut expected = before.clone();
            let mut tail = data.clone();
            apply_mask(&mut tail, mask, phase);
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
