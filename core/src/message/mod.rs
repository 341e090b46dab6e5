//! Messages as the application sees them, and frames encoded once for many
//! connections.

use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::{fmt, ops::Deref};

use crate::connection::{DeflateClass, compress_for_class};
use crate::frame::{MAX_HEADER_LEN, OpCode, RSV1, encode_frame, encode_header};

/// Bytes that are known to be valid UTF-8: the payload of a text message.
///
/// Cloning is cheap (a reference count), and [`Utf8Bytes::as_str`] costs nothing:
/// the text was validated once, as it arrived.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes after checking that they are UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, crate::utf8::InvalidUtf8> {
        match simdutf8::basic::from_utf8(&bytes) {
            Ok(_) => Ok(Self(bytes)),
            Err(_) => Err(crate::utf8::InvalidUtf8),
        }
    }

    /// Wraps bytes the caller has already validated (the connection's reader).
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// A text that points at static memory; no copy is made.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor either validated the bytes or received them as a
        // `str`/`String`, and `Bytes` never changes its contents.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A complete data message: what an application sends and receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) => b,
        }
    }

    /// The opcode of the frame that carries this message.
    pub fn opcode(&self) -> OpCode {
        match self {
            Self::Text(_) => OpCode::Text,
            Self::Binary(_) => OpCode::Binary,
        }
    }
}

/// A complete, unmasked frame encoded once, to be queued on many server-side
/// connections without a copy per connection.
///
/// Queue it with [`Connection::send_shared`](crate::Connection::send_shared); each
/// connection holds a reference-counted handle to the same bytes. Clients mask every
/// frame with a fresh key, so only server connections accept shared frames.
///
/// Connections that agreed on permessage-deflate without context takeover (the
/// default, see [`deflate`](crate::deflate)) get the message compressed, once per
/// level and window among all the clones of this frame: the first such connection
/// compresses it, the others queue the same compressed bytes.
#[derive(Clone)]
pub struct SharedFrame(Arc<SharedInner>);

struct SharedInner {
    frame: Bytes,
    /// Where the payload starts in `frame`.
    header_len: usize,
    opcode: OpCode,
    /// The compressed frames made so far, by class (`None`: not worth it).
    compressed: Mutex<Vec<(DeflateClass, Option<Bytes>)>>,
}

impl PartialEq for SharedFrame {
    fn eq(&self, other: &Self) -> bool {
        self.0.frame == other.0.frame
    }
}

impl Eq for SharedFrame {}

impl SharedFrame {
    /// Encodes a message as a single final frame.
    pub fn new(message: &Message) -> Self {
        Self::encode(message.opcode(), message.payload())
    }

    /// Encodes a text message as a single final frame.
    pub fn text(text: &str) -> Self {
        Self::encode(OpCode::Text, text.as_bytes())
    }

    /// Encodes a binary message as a single final frame.
    pub fn binary(data: &[u8]) -> Self {
        Self::encode(OpCode::Binary, data)
    }

    fn encode(opcode: OpCode, payload: &[u8]) -> Self {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, true, opcode, payload, None);
        let header_len = buf.len() - payload.len();
        Self(Arc::new(SharedInner { frame: buf.freeze(), header_len, opcode, compressed: Mutex::new(Vec::new()) }))
    }

    /// The encoded frame, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0.frame
    }

    /// The message's payload.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.0.frame[self.0.header_len..]
    }

    /// The opcode of the message.
    pub(crate) fn opcode(&self) -> OpCode {
        self.0.opcode
    }

    /// The frame compressed for `class` (made on first use, then shared), or
    /// `None` when compressing does not make it shorter.
    pub(crate) fn compressed(&self, class: DeflateClass) -> Option<Bytes> {
        let mut made = self.0.compressed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, frame)) = made.iter().find(|(c, _)| *c == class) {
            return frame.clone();
        }
        let payload = self.payload();
        let compressed = compress_for_class(class, payload);
        let frame = (!class.skip_incompressible || compressed.len() < payload.len()).then(|| {
            let mut buf = BytesMut::with_capacity(MAX_HEADER_LEN + compressed.len());
            encode_header(&mut buf, true, RSV1, self.0.opcode, compressed.len(), None);
            buf.extend_from_slice(&compressed);
            buf.freeze()
        });
        made.push((class, frame.clone()));
        frame
    }
}

impl fmt::Debug for SharedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFrame").field("len", &self.0.frame.len()).finish()
    }
}
