//! Collecting an HTTP message head from bytes that arrive in pieces.

use bytes::BytesMut;

/// Accumulates bytes until the blank line that ends an HTTP head, with a size bound.
///
/// Each byte is scanned once, so a head that arrives one byte at a time costs no more
/// than one that arrives whole.
#[derive(Debug)]
pub(crate) struct HeadReader {
    buf: BytesMut,
    /// How far `buf` has been searched for the end of the head.
    scanned: usize,
    max_len: usize,
}

/// The head grew past its bound before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadTooLarge;

impl HeadReader {
    pub(crate) fn new(max_len: usize) -> Self {
        Self { buf: BytesMut::new(), scanned: 0, max_len }
    }

    /// Adds bytes. Returns `Ok(Some(len))` once the buffer holds a complete head of
    /// `len` bytes (anything after it is the start of the next protocol).
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Option<usize>, HeadTooLarge> {
        self.buf.extend_from_slice(data);
        // A head ends with an empty line: "\n\n" or "\n\r\n" (RFC 9112 §2.2 lets
        // recipients accept a bare LF as a line ending). Only the line feeds are
        // looked at, found with SIMD (a head has a dozen of them in hundreds of
        // bytes); the last two bytes scanned before are looked at again, since the
        // empty line may have been cut between pieces.
        let start = self.scanned.saturating_sub(2);
        let buf = &self.buf[..];
        let end = memchr::memchr_iter(b'\n', &buf[start..]).find_map(|i| {
            let after = start + i + 1;
            match buf.get(after..) {
                Some([b'\n', ..]) => Some(after + 1),
                Some([b'\r', b'\n', ..]) => Some(after + 2),
                _ => None,
            }
        });
        match end {
            Some(end) if end <= self.max_len => Ok(Some(end)),
            Some(_) => Err(HeadTooLarge),
            None if self.buf.len() > self.max_len => Err(HeadTooLarge),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }

    /// Takes the buffered bytes, leaving the reader empty.
    pub(crate) fn take(&mut self) -> BytesMut {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_end_in_any_split() {
        let msg = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for cut in 0..msg.len() {
            let mut r = HeadReader::new(1024);
            let first = r.push(&msg[..cut]).unwrap();
            let end = first.or_else(|| r.push(&msg[cut..]).unwrap());
            assert_eq!(end, Some(msg.len() - 4), "cut at {cut}");
        }
        let mut r = HeadReader::new(1024);
        for b in msg.iter() {
            if let Some(end) = r.push(std::slice::from_ref(b)).unwrap() {
                assert_eq!(end, msg.len() - 4);
                return;
            }
        }
        panic!("end not found byte by byte");
    }

    #[test]
    fn bounded() {
        let mut r = HeadReader::new(16);
        assert_eq!(r.push(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(r.push(b"X"), Err(HeadTooLarge));
        let mut r = HeadReader::new(16);
        assert_eq!(r.push(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), Err(HeadTooLarge));
    }

    /// The plain definition: the end of the first empty line ("\n\n" or
    /// "\n\r\n") in the whole input, by a byte-pair scan.
    fn reference_end(input: &[u8]) -> Option<usize> {
        input.windows(2).enumerate().find_map(|(i, w)| match w {
            [b'\n', b'\n'] => Some(i + 2),
            [b'\n', b'\r'] if input.get(i + 2) == Some(&b'\n') => Some(i + 3),
            _ => None,
        })
    }

    proptest::proptest! {
        /// Whatever the bytes (mostly line endings) and however they are cut
        /// into pieces, the reader finds the end the plain definition finds, or
        /// reports the bound exceeded exactly when that end (or, without one,
        /// the input) is past it.
        #[test]
        fn agrees_with_the_plain_definition_in_any_split(
            input in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'a', b':', b' ']), 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            max_len in 0usize..220,
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.sort_unstable();
            points.push(input.len());
            let mut reader = HeadReader::new(max_len);
            let mut start = 0;
            let mut got = Ok(None);
            for end in points {
                got = reader.push(&input[start..end]);
                start = end;
                if got != Ok(None) {
                    break;
                }
            }
            let expected = match reference_end(&input) {
                Some(end) if end <= max_len => Ok(Some(end)),
                Some(_) => Err(HeadTooLarge),
                None if input.len() > max_len => Err(HeadTooLarge),
                None => Ok(None),
            };
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn bare_lf() {
        let mut r = HeadReader::new(100);
        assert_eq!(r.push(b"GET / HTTP/1.1\nHost: a\n\n"), Ok(Some(24)));
    }
}
