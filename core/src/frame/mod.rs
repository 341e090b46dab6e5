//! The frame codec (RFC 6455 §5.2): headers with 7, 16 and 64-bit lengths, opcodes
//! and masking.
//!
//! These functions only translate between bytes and header fields. Whether a header
//! is acceptable in the current state of a connection (reserved bits, masking for the
//! role, control-frame rules, size limits) is decided by
//! [`Connection`](crate::Connection).

mod mask;

pub use mask::{apply_mask, copy_masked, copy_masked_binary};

use bytes::{BufMut, BytesMut};

/// The longest possible frame header: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame (close, ping, pong) may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode that RFC 6455 defines; the other values are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// A later fragment of a fragmented message.
    Continuation = 0x0,
    /// The first (or only) frame of a UTF-8 text message.
    Text = 0x1,
    /// The first (or only) frame of a binary message.
    Binary = 0x2,
    /// The close control frame.
    Close = 0x8,
    /// The ping control frame.
    Ping = 0x9,
    /// The pong control frame.
    Pong = 0xA,
}

impl OpCode {
    /// Maps the four opcode bits of a header to an opcode, or `None` if reserved.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control opcode (close, ping or pong).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The fields of one frame header, as they were on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The FIN bit: this frame ends its message.
    pub fin: bool,
    /// The three RSV bits, in the low bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The raw opcode bits; see [`OpCode::from_bits`].
    pub opcode: u8,
    /// The masking key, present exactly when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

/// Why a header could not be decoded at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A 64-bit length with its most significant bit set (§5.2 forbids it).
    LengthTooLarge,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// Returns the header and its length in bytes, or `Ok(None)` if `buf` holds only
    /// part of a header (at most [`MAX_HEADER_LEN`] bytes are ever needed). Lengths
    /// that do not use the shortest encoding are accepted, as most peers do.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, HeaderError> {
        let Some(&[b0, b1]) = buf.get(..2).map(|s| <&[u8; 2]>::try_from(s).expect("2 bytes")) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                    if len >> 63 != 0 {
                        return Err(HeaderError::LengthTooLarge);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            match buf.get(at..at + 4) {
                Some(m) => {
                    at += 4;
                    Some([m[0], m[1], m[2], m[3]])
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some((FrameHeader { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0F, mask, payload_len }, at)))
    }

    /// How many header bytes are needed in total, judging from the bytes at hand
    /// (at least 2 are needed to know).
    pub fn needed_len(buf: &[u8]) -> usize {
        match buf.get(1) {
            None => 2,
            Some(&b1) => {
                let length_bytes = match b1 & 0x7F {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                2 + length_bytes + if b1 & 0x80 != 0 { 4 } else { 0 }
            }
        }
    }

    /// Encodes this header into `out`, returning how many bytes were written.
    /// Lengths always use the shortest encoding.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0x0F);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(mask) = self.mask {
            out[at..at + 4].copy_from_slice(&mask);
            at += 4;
        }
        at
    }
}

/// Appends one complete frame (header and payload, masked when `mask` is given) to
/// `dst`.
pub fn encode_frame(dst: &mut BytesMut, fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    dst.reserve(MAX_HEADER_LEN + payload.len());
    encode_header_into(dst, fin, opcode, payload.len(), mask);
    let start = dst.len();
    dst.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut dst[start..], mask, 0);
    }
}

/// Appends only the header of a frame whose payload will follow separately.
pub fn encode_header_into(dst: &mut BytesMut, fin: bool, opcode: OpCode, payload_len: usize, mask: Option<[u8; 4]>) {
    encode_header(dst, fin, 0, opcode, payload_len, mask);
}

/// The RSV1 bit in [`FrameHeader::rsv`]: set on the first frame of a message
/// compressed with permessage-deflate (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// Appends a header with reserved bits `rsv` (see [`RSV1`]).
pub fn encode_header(
    dst: &mut BytesMut,
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader { fin, rsv, opcode: opcode as u8, mask, payload_len: payload_len as u64 };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    dst.put_slice(&buf[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_examples_decode() {
        // §5.7: a single-frame unmasked text message "Hello".
        let (h, n) = FrameHeader::decode(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.mask, h.payload_len, n), (true, 1, None, 5, 2));
        // §5.7: a masked "Hello".
        let (h, n) = FrameHeader::decode(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!((h.mask, h.payload_len, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6));
        // §5.7: 256 bytes binary in one unmasked frame.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (2, 256, 4));
        // 64 KiB binary.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn partial_headers_ask_for_more() {
        assert_eq!(FrameHeader::decode(&[]), Ok(None));
        assert_eq!(FrameHeader::decode(&[0x81]), Ok(None));
        assert_eq!(FrameHeader::decode(&[0x81, 0xFE, 0x01]), Ok(None));
        assert_eq!(FrameHeader::decode(&[0x81, 0xFE, 0x01, 0x00, 1, 2, 3]), Ok(None));
        assert_eq!(FrameHeader::needed_len(&[0x81]), 2);
        assert_eq!(FrameHeader::needed_len(&[0x81, 0xFE]), 8);
        assert_eq!(FrameHeader::needed_len(&[0x81, 0xFF]), 14);
        assert_eq!(FrameHeader::needed_len(&[0x81, 0x05]), 2);
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        let buf = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::decode(&buf), Err(HeaderError::LengthTooLarge));
    }

    proptest! {
        #[test]
        fn header_round_trip(
            fin in any::<bool>(),
            rsv in 0u8..8,
            opcode in 0u8..16,
            mask in any::<Option<[u8; 4]>>(),
            payload_len in prop_oneof![0u64..200, 0u64..70000, 0u64..(1 << 63)],
        ) {
            let header = FrameHeader { fin, rsv, opcode, mask, payload_len };
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut buf);
            prop_assert_eq!(FrameHeader::needed_len(&buf[..n]), n);
            prop_assert_eq!(FrameHeader::decode(&buf[..n]), Ok(Some((header, n))));
            for cut in 0..n {
                prop_assert_eq!(FrameHeader::decode(&buf[..cut]), Ok(None));
            }
        }
    }
}
