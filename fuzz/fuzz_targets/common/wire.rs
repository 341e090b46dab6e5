//! Reads back what one end wrote, frame by frame, and fails on anything a
//! connection must never write. The connection's own encoder is not trusted: the
//! frames are decoded with [`FrameHeader::decode`] and checked against RFC 6455.

use chinwag_core::frame::{FrameHeader, OpCode, apply_mask};
use chinwag_core::{CloseCode, CloseFrame, Role};

/// Where the reader is in the byte stream of one end.
#[derive(Debug)]
enum Stage {
    /// Not known yet: the first byte tells an HTTP head from a frame.
    Unknown,
    /// Reading an HTTP head (a client's request, a server's response).
    Head,
    /// Reading frames.
    Frames,
    /// After a response other than 101: its body, which is not frames.
    HttpBody,
    /// After our close frame: nothing may follow.
    Done,
}

/// The written stream of one end, checked as it grows.
#[derive(Debug)]
pub struct WireCheck {
    role: Role,
    stage: Stage,
    /// Bytes of an unfinished head or frame.
    pending: Vec<u8>,
    close: Option<CloseFrame>,
    frames: usize,
}

/// The longest head we expect a connection to write; a head that never ends is a
/// bug of the writer, not something to buffer forever.
const MAX_HEAD: usize = 64 << 10;

impl WireCheck {
    /// A stream that starts with a frame (a connection made with
    /// `Connection::open`, or whose handshake output was already taken).
    pub fn frames(role: Role) -> Self {
        Self { role, stage: Stage::Frames, pending: Vec::new(), close: None, frames: 0 }
    }

    /// A stream that starts with an HTTP head (a client's request or a server's
    /// response), then frames if the handshake succeeded.
    pub fn with_head(role: Role) -> Self {
        Self { role, stage: Stage::Head, pending: Vec::new(), close: None, frames: 0 }
    }

    /// A stream that may start either way. No frame we write can start with `G` or
    /// `H` (both set RSV1, which we never set), so the first byte decides.
    pub fn auto(role: Role) -> Self {
        Self { role, stage: Stage::Unknown, pending: Vec::new(), close: None, frames: 0 }
    }

    /// The close frame written, once all of it was.
    pub fn close_written(&self) -> Option<&CloseFrame> {
        self.close.as_ref()
    }

    /// How many complete frames were written.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Takes the next bytes the connection wrote, checking every frame they
    /// complete.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.stage, Stage::Unknown) {
            self.stage = if matches!(bytes[0], b'G' | b'H') { Stage::Head } else { Stage::Frames };
        }
        match self.stage {
            Stage::Done => panic!(
                "{:?} wrote {} more bytes after its close frame {:?}: {:02x?}",
                self.role,
                bytes.len(),
                self.close,
                &bytes[..bytes.len().min(16)]
            ),
            Stage::HttpBody => return,
            _ => {}
        }
        self.pending.extend_from_slice(bytes);
        self.parse();
    }

    fn parse(&mut self) {
        loop {
            match self.stage {
                Stage::Head => {
                    let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        assert!(self.pending.len() <= MAX_HEAD, "{:?} wrote a head that never ends", self.role);
                        return;
                    };
                    let head = &self.pending[..end];
                    let upgraded = match self.role {
                        Role::Client => {
                            assert!(head.starts_with(b"GET "), "a client's head is a GET request: {head:?}");
                            true
                        }
                        Role::Server => {
                            assert!(head.starts_with(b"HTTP/1.1 "), "a server's head is a response: {head:?}");
                            head.starts_with(b"HTTP/1.1 101 ")
                        }
                    };
                    self.pending.drain(..end + 4);
                    if !upgraded {
                        self.stage = Stage::HttpBody;
                        self.pending.clear();
                        return;
                    }
                    self.stage = Stage::Frames;
                }
                Stage::Frames => {
                    let (header, header_len) = match FrameHeader::decode(&self.pending) {
                        Ok(Some(decoded)) => decoded,
                        Ok(None) => return,
                        Err(e) => panic!("{:?} wrote an undecodable frame header: {e:?}", self.role),
                    };
                    let len = usize::try_from(header.payload_len).expect("a payload we could have written");
                    if self.pending.len() < header_len + len {
                        return;
                    }
                    let mut payload = self.pending[header_len..header_len + len].to_vec();
                    self.pending.drain(..header_len + len);
                    if let Some(mask) = header.mask {
                        apply_mask(&mut payload, mask, 0);
                    }
                    self.frame(&header, &payload);
                    if matches!(self.stage, Stage::Done) {
                        assert!(
                            self.pending.is_empty(),
                            "{:?} wrote {} bytes after its close frame",
                            self.role,
                            self.pending.len()
                        );
                        return;
                    }
                }
                Stage::Unknown | Stage::HttpBody | Stage::Done => return,
            }
        }
    }

    /// Checks one complete frame against what RFC 6455 lets an endpoint send.
    fn frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        self.frames += 1;
        let role = self.role;
        assert_eq!(header.rsv, 0, "{role:?} set reserved bits");
        assert!(header.fin, "{role:?} fragmented a message (it never does)");
        assert_eq!(header.mask.is_some(), role == Role::Client, "{role:?}: clients mask, servers do not (§5.1)");
        let Some(opcode) = OpCode::from_bits(header.opcode) else {
            panic!("{role:?} wrote reserved opcode {:#x}", header.opcode)
        };
        if opcode.is_control() {
            assert!(payload.len() <= 125, "{role:?} wrote a {opcode:?} of {} bytes", payload.len());
        }
        match opcode {
            OpCode::Continuation => panic!("{role:?} wrote a continuation (it never fragments)"),
            OpCode::Text => assert!(std::str::from_utf8(payload).is_ok(), "{role:?} wrote text that is not UTF-8"),
            OpCode::Close => {
                let frame = match payload {
                    [] => CloseFrame { code: CloseCode::NO_STATUS, reason: String::new() },
                    [_] => panic!("{role:?} wrote a one-byte close payload"),
                    [hi, lo, reason @ ..] => {
                        let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                        assert!(code.is_sendable(), "{role:?} wrote close code {code:?}, which must never be sent");
                        let Ok(reason) = std::str::from_utf8(reason) else {
                            panic!("{role:?} wrote a close reason that is not UTF-8")
                        };
                        CloseFrame { code, reason: reason.to_owned() }
                    }
                };
                self.close = Some(frame);
                self.stage = Stage::Done;
            }
            OpCode::Binary | OpCode::Ping | OpCode::Pong => {}
        }
    }
}
