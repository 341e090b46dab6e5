//! Incremental, fail-fast UTF-8 validation.
//!
//! Text messages arrive in pieces (TCP segments, frame fragments) and a code point
//! may be split across any two of them. [`Utf8Validator`] carries the few bytes of an
//! unfinished code point from one piece to the next and reports an error as soon as
//! the byte that makes the text invalid arrives, not at the end of the frame or
//! message. That is what RFC 6455 §8.1 asks of a strict endpoint, and it is what lets
//! a connection close with 1007 mid-frame.
//!
//! Whole pieces are checked with `simdutf8`, which uses vector instructions where the
//! CPU has them and otherwise matches `std::str::from_utf8`.

use simdutf8::compat::from_utf8;

/// The text seen so far is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl std::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Validates a stream of bytes as UTF-8, one piece at a time.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of a code point that the previous piece left unfinished.
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub const fn new() -> Self {
        Self { partial: [0; 4], partial_len: 0 }
    }

    /// Checks the next piece of the text.
    ///
    /// Returns an error if the bytes seen so far cannot be the start of valid UTF-8,
    /// that is, as soon as the offending byte is part of `piece`. An error is final:
    /// feed nothing more after it.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            piece = self.finish_partial(piece)?;
            if self.partial_len > 0 {
                // The piece ended inside the same code point.
                return Ok(());
            }
        }
        match from_utf8(piece) {
            Ok(_) => Ok(()),
            // `error_len() == None` means the piece ends in the valid beginning of a
            // code point (at most three bytes): keep them for the next piece.
            Err(e) if e.error_len().is_none() => {
                let tail = &piece[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks the next piece of the text, which the caller found to be all ASCII
    /// on its way in (see [`copy_masked`](crate::frame::copy_masked)): valid at
    /// once, without reading it again, unless the previous piece left a code point
    /// unfinished (which ASCII cannot finish: that is checked as by
    /// [`feed`](Self::feed)).
    pub fn feed_ascii(&mut self, piece: &[u8]) -> Result<(), InvalidUtf8> {
        debug_assert!(piece.is_ascii());
        if self.partial_len == 0 { Ok(()) } else { self.feed(piece) }
    }

    /// Checks that the text ended on a code point boundary.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.partial_len == 0 { Ok(()) } else { Err(InvalidUtf8) }
    }

    /// Completes the code point left over from the previous piece with bytes from
    /// `piece`, returning the bytes of `piece` after it.
    fn finish_partial<'a>(&mut self, piece: &'a [u8]) -> Result<&'a [u8], InvalidUtf8> {
        let have = usize::from(self.partial_len);
        let width = match self.partial[0] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4, // only valid lead bytes are ever kept
        };
        let take = (width - have).min(piece.len());
        let mut code_point = self.partial;
        code_point[have..have + take].copy_from_slice(&piece[..take]);
        match from_utf8(&code_point[..have + take]) {
            Ok(_) => {
                self.partial_len = 0;
                Ok(&piece[take..])
            }
            Err(e) if e.error_len().is_none() => {
                // Still a valid beginning; the piece was too short to finish it.
                self.partial = code_point;
                self.partial_len = (have + take) as u8;
                Ok(&piece[take..])
            }
            Err(_) => Err(InvalidUtf8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `pieces`, returning the index of the piece that failed, or `None`.
    fn failing_piece(pieces: &[&[u8]]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        pieces.iter().position(|p| v.feed(p).is_err())
    }

    /// The index of the byte whose arrival makes `bytes` invalid, per `std`.
    fn offending_byte(bytes: &[u8]) -> Option<usize> {
        let e = std::str::from_utf8(bytes).err()?;
        let len = e.error_len()?;
        let start = e.valid_up_to();
        // A byte that can never start a code point is itself the offender; otherwise
        // the lead byte was fine and the byte after the valid prefix broke it.
        Some(if matches!(bytes[start], 0x80..=0xC1 | 0xF5..=0xFF) { start } else { start + len })
    }

    #[test]
    fn rejects_at_the_offending_byte() {
        // Autobahn 6.4.1: a 4-byte lead F4 followed by 90 (> F4 8F) is invalid at 90.
        assert_eq!(failing_piece(&[b"\xce\xba\xe1\xbd\xb9\xcf\x83", b"\xf4", b"\x90", b"\x80"]), Some(2));
        assert_eq!(failing_piece(&[b"ok", b"\xed\xa0"]), Some(1)); // surrogate
        assert_eq!(failing_piece(&[b"\xc0"]), Some(0)); // overlong lead
        assert_eq!(failing_piece(&[b"\xe2\x82", b"\xac"]), None);
    }

    #[test]
    fn incomplete_text_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"abc\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
        v.feed(b"\xac").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }

    fn text_like() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..64),
            // Valid text with one byte changed: errors near realistic content.
            (any::<String>(), any::<usize>(), any::<u8>()).prop_map(|(s, at, b)| {
                let mut v = s.into_bytes();
                if !v.is_empty() {
                    let i = at % v.len();
                    v[i] = b;
                }
                v
            }),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_chunking(
            bytes in text_like(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ascii_short_way in any::<bool>(),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(&bytes[start..c]);
                start = c;
            }
            let mut v = Utf8Validator::new();
            let mut failed_at = None;
            let mut offset = 0;
            for (i, p) in pieces.iter().enumerate() {
                // As the reader does: pieces found to be ASCII take the short way.
                let checked = if ascii_short_way && p.is_ascii() { v.feed_ascii(p) } else { v.feed(p) };
                if checked.is_err() {
                    failed_at = Some((i, offset));
                    break;
                }
                offset += p.len();
            }
            match (offending_byte(&bytes), failed_at) {
                (Some(bad), Some((i, start))) => {
                    // Failed exactly in the piece that holds the offending byte.
                    prop_assert!(start <= bad && bad < start + pieces[i].len(),
                        "offending byte {} not in failing piece {}..{}", bad, start, start + pieces[i].len());
                }
                (None, None) => {
                    prop_assert_eq!(v.finish().is_ok(), std::str::from_utf8(&bytes).is_ok());
                }
                (expected, got) => prop_assert!(false, "std says {:?}, validator failed at {:?}", expected, got),
            }
        }
    }
}
