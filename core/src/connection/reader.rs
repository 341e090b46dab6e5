//! The incoming side of an open connection: frames out of bytes, messages out of
//! frames, with every check of RFC 6455 §5 applied as early as the bytes allow.

use bytes::{Bytes, BytesMut};

use super::{Connection, Event, Oversized, Phase, ProtocolError, Role, SkippedMessage};
use crate::Utf8Bytes;
use crate::close::{BadClosePayload, parse_close_payload};
use crate::deflate::InflateError;
use crate::frame::{
    FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, RSV1, apply_mask, copy_masked, copy_masked_binary,
};
use crate::utf8::Utf8Validator;

/// Read state between calls to `receive`. It holds no heap memory between
/// messages, and is small: every idle connection carries it. The frame and the
/// message in progress are boxed, since most messages arrive whole and are read
/// in one step without either (`read_whole_message`).
#[derive(Debug, Default)]
pub(super) struct Reader {
    /// A header split across calls.
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    /// The frame whose payload is being read.
    frame: Option<Box<FrameInProgress>>,
    /// The data message being assembled, possibly over several frames.
    message: Option<Box<MessageInProgress>>,
}

#[derive(Debug)]
struct FrameInProgress {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes read so far.
    read: u64,
    remaining: u64,
    /// The payload of a control frame (at most 125 bytes; empty for data frames).
    control: Vec<u8>,
}

#[derive(Debug)]
struct MessageInProgress {
    text: bool,
    data: BytesMut,
    utf8: Utf8Validator,
    /// The payload lengths of its frames so far, the current one included.
    len: u64,
    /// Over a size limit, with [`Oversized::Skip`]: read past, never kept.
    skip: bool,
    /// Compressed (RSV1 on its first frame): `data` is unused, and the payload is
    /// inflated as it arrives into the connection's compression state.
    compressed: bool,
}

/// Unmasked compressed input is handed to the decompressor in pieces of this
/// size, from a buffer on the stack: the payload is never copied whole, and UTF-8
/// is checked on what each piece inflates to.
const INFLATE_STEP: usize = 4096;

impl Reader {
    /// Takes a frame header from `data`, keeping a partial one for the next call.
    ///
    /// A header split across calls is decoded after every piece, so that an invalid
    /// length is caught at the same byte as when the header arrives whole.
    fn take_header(&mut self, data: &mut &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
        if self.header_len == 0 {
            match FrameHeader::decode(data) {
                Ok(Some((header, used))) => {
                    *data = &data[used..];
                    return Ok(Some(header));
                }
                Ok(None) => {}
                Err(_) => return Err(ProtocolError::InvalidLength),
            }
        }
        loop {
            let have = usize::from(self.header_len);
            match FrameHeader::decode(&self.header[..have]) {
                Ok(Some((header, _))) => {
                    self.header_len = 0;
                    return Ok(Some(header));
                }
                Ok(None) if data.is_empty() => return Ok(None),
                Ok(None) => {}
                Err(_) => {
                    self.header_len = 0;
                    return Err(ProtocolError::InvalidLength);
                }
            }
            let take = (FrameHeader::needed_len(&self.header[..have]) - have).min(data.len());
            self.header[have..have + take].copy_from_slice(&data[..take]);
            self.header_len += take as u8;
            *data = &data[take..];
        }
    }
}

/// How many events parsing may leave waiting: after the first event, further
/// whole data messages in the same bytes are read too (up to this many events in
/// all), so that a burst of pipelined messages is not copied aside to wait for
/// its turn (natively, the core's echo of a burst of sixteen 1 KiB messages read
/// at once took about 5% less; callgrind, which counts a large copy byte by
/// byte, overstates the gain many times). The bound keeps what
/// waits small: its payloads are at most the bytes of the call, and each event
/// adds its own few dozen bytes.
pub(super) const PARSE_AHEAD: usize = 32;
/// Reading ahead pays only for a large rest: below this many bytes, copying the
/// rest aside costs less than queueing its events (the queue is allocated for
/// the burst and released once drained).
const PARSE_AHEAD_MIN_BYTES: usize = 2 << 10;

impl Connection {
    /// Reads frames from `data` until it is used up, the connection ended, or a
    /// frame produced an event and what follows is not a whole data message that
    /// can be read ahead (see [`PARSE_AHEAD`]). Returns how many bytes were used.
    ///
    /// Reading ahead is limited to whole, valid data messages, which have no
    /// effect but their event: anything else (a control frame, a fragment, a
    /// violation) waits until every earlier event was taken, so that what the
    /// application sends in answer to them goes out before any pong, close or
    /// error this frame causes, as when each frame is read in its turn.
    pub(super) fn read_frames(&mut self, data: &[u8]) -> usize {
        let total = data.len();
        let mut data = data;
        // Both callers parse only once every event was taken.
        debug_assert!(self.events.is_empty(), "parsing starts with no event waiting");
        while !matches!(self.phase, Phase::Closed { .. }) {
            if !self.events.is_empty() {
                if data.len() < PARSE_AHEAD_MIN_BYTES {
                    break;
                }
                match self.read_whole_message::<true>(data) {
                    Some(used) => {
                        data = &data[used..];
                        continue;
                    }
                    None => break,
                }
            }
            if let Some(used) = self.read_whole_message::<false>(data) {
                data = &data[used..];
                continue;
            }
            if self.reader.frame.is_none() {
                let header = match self.reader.take_header(&mut data) {
                    Ok(Some(header)) => header,
                    Ok(None) => break,
                    Err(e) => {
                        self.fail(e);
                        break;
                    }
                };
                if let Err(e) = self.start_frame(header) {
                    self.fail(e);
                    break;
                }
            }
            let frame = self.reader.frame.as_mut().expect("a frame is in progress");
            let n = frame.remaining.min(data.len() as u64) as usize;
            let (piece, rest) = data.split_at(n);
            data = rest;
            let (mask, phase) = (frame.mask, frame.read as usize);
            frame.read += n as u64;
            frame.remaining -= n as u64;
            let done = frame.remaining == 0;
            if frame.opcode.is_control() {
                let buf = &mut frame.control;
                let start = buf.len();
                buf.extend_from_slice(piece);
                apply_mask(&mut buf[start..], mask, phase);
            } else {
                let message = self.reader.message.as_mut().expect("a message is in progress");
                // A skipped message is read past: its bytes are not kept, unmasked or
                // validated.
                if message.compressed {
                    if !message.skip
                        && let Err(e) = self.inflate_piece(piece, mask, phase)
                    {
                        self.fail(e);
                        break;
                    }
                } else if !message.skip && !message.text {
                    copy_masked_binary(&mut message.data, piece, mask, phase);
                } else if !message.skip {
                    let start = message.data.len();
                    let ascii = copy_masked(&mut message.data, piece, mask, phase);
                    let fresh = &message.data[start..];
                    // Fail fast: the byte that breaks UTF-8 closes the connection now,
                    // not when the frame or message ends. ASCII, found while
                    // unmasking, needs no second pass.
                    let utf8 = &mut message.utf8;
                    if if ascii { utf8.feed_ascii(fresh) } else { utf8.feed(fresh) }.is_err() {
                        self.fail(ProtocolError::InvalidUtf8);
                        break;
                    }
                }
            }
            if !done {
                break; // `data` is used up
            }
            self.end_frame();
        }
        total - data.len()
    }

    /// The common case in one step: `data` starts with a whole unfragmented,
    /// uncompressed data frame, read between messages and within the size limits.
    /// Such a frame is the whole message, so it needs none of the state that
    /// carries a frame or a message across calls: it is unmasked into a buffer
    /// of its exact size, checked for UTF-8 at once and reported. Returns the
    /// bytes used, or `None` (nothing done) for anything else, which the general
    /// path reads with the same outcome.
    ///
    /// `AHEAD`: read while events wait, within [`PARSE_AHEAD`]: a message that is
    /// not valid UTF-8 is then left unread (`None`), to fail the connection in
    /// its turn.
    #[inline]
    fn read_whole_message<const AHEAD: bool>(&mut self, data: &[u8]) -> Option<usize> {
        if self.reader.header_len != 0 || self.reader.frame.is_some() || self.reader.message.is_some() {
            return None;
        }
        if AHEAD && self.events.len() >= PARSE_AHEAD {
            return None;
        }
        let (header, header_len) = FrameHeader::decode(data).ok()??;
        let text = match (header.fin, header.rsv, header.opcode) {
            (true, 0, 0x1) => true,
            (true, 0, 0x2) => false,
            _ => return None,
        };
        if header.mask.is_some() != (self.role == Role::Server) {
            return None;
        }
        let len = header.payload_len;
        let limit = self.config.max_frame_size.min(self.config.max_message_size);
        if len > limit as u64 || len > (data.len() - header_len) as u64 {
            return None;
        }
        let payload = &data[header_len..header_len + len as usize];
        let mut message = BytesMut::new();
        let mask = header.mask.unwrap_or([0; 4]);
        let event = if !text {
            copy_masked_binary(&mut message, payload, mask, 0);
            Event::Binary(message.freeze())
        } else if copy_masked(&mut message, payload, mask, 0) || simdutf8::basic::from_utf8(&message).is_ok() {
            Event::Text(Utf8Bytes::from_validated(message.freeze()))
        } else if AHEAD {
            return None;
        } else {
            self.fail(ProtocolError::InvalidUtf8);
            return Some(header_len + len as usize);
        };
        self.events.push(event);
        if AHEAD {
            self.read_ahead += 1;
        }
        Some(header_len + len as usize)
    }

    /// Inflates a piece of a compressed message's payload (masked with `mask`
    /// from `phase` on) onto the message, checking UTF-8 as the text comes out
    /// and the size against `max_message_size`.
    fn inflate_piece(&mut self, piece: &[u8], mask: [u8; 4], phase: usize) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size;
        let message = self.reader.message.as_mut().expect("a message is in progress");
        let compression = self.extras.as_mut().and_then(|e| e.deflate.as_mut()).expect("compression agreed");
        let remote_no_takeover = compression.remote_no_takeover;
        let (inflater, inflated) = compression.inflating();
        let mut buf = [0u8; INFLATE_STEP];
        for (n, chunk) in piece.chunks(INFLATE_STEP).enumerate() {
            let buf = &mut buf[..chunk.len()];
            buf.copy_from_slice(chunk);
            apply_mask(buf, mask, phase + n * INFLATE_STEP);
            let (text, utf8) = (message.text, &mut message.utf8);
            match inflater.inflate(buf, inflated, limit, |fresh| !text || utf8.feed(fresh).is_ok()) {
                Ok(()) => {}
                Err(InflateError::TooLarge) if self.config.oversized == Oversized::Skip => {
                    // Read past the rest, as for any message over the limit; the
                    // peer resets its context after every message (or the frame
                    // would have closed the connection), so dropping ours is safe.
                    if !remote_no_takeover {
                        return Err(ProtocolError::MessageTooLarge);
                    }
                    compression.inflater = None;
                    compression.inflated = Vec::new();
                    message.skip = true;
                    return Ok(());
                }
                Err(e) => return Err(inflate_error(e)),
            }
        }
        Ok(())
    }

    /// Ends a compressed message: inflates the trailer and lets the decompressor
    /// go unless context takeover keeps it. Returns the inflated payload.
    fn finish_inflating(&mut self, message: &mut MessageInProgress) -> Result<Bytes, ProtocolError> {
        let limit = self.config.max_message_size;
        let compression = self.extras.as_mut().and_then(|e| e.deflate.as_mut()).expect("compression agreed");
        let (text, utf8) = (message.text, &mut message.utf8);
        let (inflater, inflated) = compression.inflating();
        let go_on =
            inflater.finish_message(inflated, limit, |fresh| !text || utf8.feed(fresh).is_ok()).map_err(inflate_error);
        // Without the peer's context takeover (or after a final block) the next
        // message starts afresh: nothing is kept in between.
        if !matches!(go_on, Ok(true)) || compression.remote_no_takeover {
            compression.inflater = None;
        }
        let inflated = std::mem::take(&mut compression.inflated);
        go_on?;
        Ok(Bytes::from(inflated))
    }

    /// Checks a new frame header against the state of the connection.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        // RSV1 marks the first frame of a compressed message, once permessage-deflate
        // was agreed (RFC 7692 §6): never on a continuation or control frame.
        let compressed = header.rsv == RSV1
            && matches!(header.opcode, 0x1 | 0x2)
            && self.extras.as_ref().is_some_and(|e| e.deflate.is_some());
        if header.rsv != 0 && !compressed {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_bits(header.opcode).ok_or(ProtocolError::ReservedOpcode(header.opcode))?;
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len = header.payload_len;
        if opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong);
            }
        } else {
            match (opcode, &self.reader.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
                _ => {}
            }
            let (so_far, skipping, continues_compressed) =
                self.reader.message.as_ref().map_or((0, false, false), |m| (m.len, m.skip, m.compressed));
            // A compressed message is limited by its inflated size; its frames may be
            // a little longer than that, as deflate adds a few bytes to what does
            // not compress (a stored block's 5 bytes per 64 KiB; slack for more).
            let slack = |limit: usize| {
                let limit = limit as u64;
                if compressed || continues_compressed { limit + limit / 256 + 64 } else { limit }
            };
            let over = if len > slack(self.config.max_frame_size) {
                Some(ProtocolError::FrameTooLarge)
            } else if so_far.saturating_add(len) > slack(self.config.max_message_size) {
                Some(ProtocolError::MessageTooLarge)
            } else {
                None
            };
            // Skipping a compressed message would leave the peer's context (its
            // window, kept across messages) out of step with ours: with context
            // takeover such a message closes with 1009 even with `Oversized::Skip`.
            let keeps_context = (compressed || continues_compressed)
                && self.extras.as_ref().and_then(|e| e.deflate.as_ref()).is_some_and(|d| !d.remote_no_takeover);
            let skip = match (over, self.config.oversized) {
                (Some(error), Oversized::Close) => return Err(error),
                (Some(error), Oversized::Skip) if keeps_context => return Err(error),
                (Some(_), Oversized::Skip) => true,
                (None, _) => skipping,
            };
            // Skipping keeps no memory, but a message without end (endless
            // continuations, a 2^62-byte frame) would keep the connection reading
            // forever: past `max_skipped_size` it closes with 1009 after all.
            if skip && so_far.saturating_add(len) > self.config.max_skipped_size as u64 {
                return Err(ProtocolError::MessageTooLarge);
            }
            if opcode != OpCode::Continuation {
                self.reader.message = Some(Box::new(MessageInProgress {
                    text: opcode == OpCode::Text,
                    data: BytesMut::new(),
                    utf8: Utf8Validator::new(),
                    len: 0,
                    skip: false,
                    compressed,
                }));
            }
            let message = self.reader.message.as_mut().expect("a message is in progress");
            message.len = so_far.saturating_add(len);
            if skip && !message.skip {
                // What was kept of it so far is freed at once.
                message.skip = true;
                message.data = BytesMut::new();
                if message.compressed {
                    // The peer resets its context after every message (checked
                    // above), so the next message needs none of ours.
                    if let Some(compression) = self.extras.as_mut().and_then(|e| e.deflate.as_mut()) {
                        compression.inflater = None;
                        compression.inflated = Vec::new();
                    }
                }
            }
            // Nothing is reserved ahead of the payload: a header alone claims no
            // memory. The message grows with the bytes that arrive (a frame that
            // arrives whole is copied into an allocation of its exact size).
        }
        self.reader.frame = Some(Box::new(FrameInProgress {
            opcode,
            fin: header.fin,
            mask: header.mask.unwrap_or([0; 4]),
            read: 0,
            remaining: len,
            control: if opcode.is_control() { Vec::with_capacity(len as usize) } else { Vec::new() },
        }));
        Ok(())
    }

    /// Acts on a frame whose payload is complete.
    fn end_frame(&mut self) {
        let frame = self.reader.frame.take().expect("a frame is in progress");
        match frame.opcode {
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if frame.fin {
                    let mut message = self.reader.message.take().expect("a message is in progress");
                    if message.skip {
                        // A compressed message skipped with its frames under the
                        // limit was skipped for what it inflated to: over it.
                        let len = if message.compressed {
                            message.len.max(self.config.max_message_size as u64 + 1)
                        } else {
                            message.len
                        };
                        let skipped = SkippedMessage { text: message.text, len };
                        self.events.push(Event::Skipped(skipped));
                        return;
                    }
                    let data = if message.compressed {
                        match self.finish_inflating(&mut message) {
                            Ok(data) => data,
                            Err(e) => return self.fail(e),
                        }
                    } else {
                        message.data.freeze()
                    };
                    if message.text {
                        if message.utf8.finish().is_err() {
                            return self.fail(ProtocolError::InvalidUtf8);
                        }
                        self.events.push(Event::Text(Utf8Bytes::from_validated(data)));
                    } else {
                        self.events.push(Event::Binary(data));
                    }
                }
            }
            OpCode::Ping => {
                let payload = Bytes::from(frame.control);
                // Answered while open. Our close frame is the last frame we send, so
                // a ping that arrives after it goes unanswered: the peer has our
                // close frame instead, and answering would put a frame after it.
                if matches!(self.phase, Phase::Open) {
                    self.queue_control(OpCode::Pong, &payload);
                }
                self.events.push(Event::Ping(payload));
            }
            OpCode::Pong => {
                let payload = Bytes::from(frame.control);
                self.events.push(Event::Pong(payload));
            }
            OpCode::Close => {
                let payload = frame.control;
                match parse_close_payload(&payload) {
                    Ok((code, reason)) => {
                        let reason = reason.to_owned();
                        self.close_received(code, &reason);
                    }
                    Err(BadClosePayload::Truncated) => self.fail(ProtocolError::TruncatedClose),
                    Err(BadClosePayload::Code(code)) => self.fail(ProtocolError::InvalidCloseCode(code)),
                    Err(BadClosePayload::Reason) => self.fail(ProtocolError::InvalidUtf8),
                }
            }
        }
    }
}

/// The close a decompression failure earns.
fn inflate_error(e: InflateError) -> ProtocolError {
    match e {
        InflateError::Invalid => ProtocolError::InvalidCompressedData,
        InflateError::TooLarge => ProtocolError::MessageTooLarge,
        InflateError::Rejected => ProtocolError::InvalidUtf8,
    }
}

#[cfg(test)]
mod tests {
    use super::{PARSE_AHEAD, PARSE_AHEAD_MIN_BYTES};
    use crate::frame::FrameHeader;
    use crate::{Accept, Config, Connection, Event};
    use std::time::Instant;

    /// A server connection, open.
    fn open_server(now: Instant) -> Connection {
        let mut conn = Connection::server(Config::default(), now);
        conn.receive(
            now,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        while conn.poll_event(now).is_some() {}
        conn.accept(now, Accept::new()).unwrap();
        while conn.poll_event(now).is_some() {}
        while let Some(out) = conn.poll_transmit() {
            bytes::Buf::advance(out, bytes::Buf::remaining(out));
        }
        conn
    }

    /// A masked text frame of 1,000 bytes carrying `n` as decimal.
    fn text_frame(n: usize) -> Vec<u8> {
        let payload = format!("{n:01000}").into_bytes();
        let header =
            FrameHeader { fin: true, rsv: 0, opcode: 0x1, mask: Some([0; 4]), payload_len: payload.len() as u64 };
        let mut buf = [0u8; crate::frame::MAX_HEADER_LEN];
        let len = header.encode(&mut buf);
        [&buf[..len], &payload].concat()
    }

    fn numbers(conn: &mut Connection, now: Instant) -> Vec<usize> {
        std::iter::from_fn(|| conn.poll_event(now))
            .map(|event| match event {
                Event::Text(text) => text.parse().unwrap(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    /// A pipelined burst read at once is parsed in that call (the events wait):
    /// only its last bytes are copied aside for later (less than
    /// [`PARSE_AHEAD_MIN_BYTES`]), not the messages after the first.
    #[test]
    fn a_burst_of_whole_messages_is_parsed_without_keeping_input() {
        let now = Instant::now();
        let mut conn = open_server(now);
        let mut wire: Vec<u8> = (0..16).flat_map(text_frame).collect();
        let next = text_frame(16);
        wire.extend_from_slice(&next[..3]);
        conn.receive(now, &wire);
        assert!(conn.input.len() < PARSE_AHEAD_MIN_BYTES, "{} bytes kept aside", conn.input.len());
        // Frames of 1,008 bytes: all but the last two, whose 2,019 bytes are under
        // the bound, are read.
        assert_eq!(conn.events.len(), 14);
        conn.receive(now, &next[3..]);
        assert_eq!(numbers(&mut conn, now), (0..17).collect::<Vec<_>>());
    }

    /// What is read ahead is bounded: beyond [`PARSE_AHEAD`] events the rest
    /// waits as bytes, and every message still comes out, in order.
    #[test]
    fn reading_ahead_stops_at_its_bound() {
        let now = Instant::now();
        let mut conn = open_server(now);
        let count = 3 * PARSE_AHEAD + 5;
        let wire: Vec<u8> = (0..count).flat_map(text_frame).collect();
        conn.receive(now, &wire);
        assert_eq!(conn.events.len(), PARSE_AHEAD);
        assert!(!conn.input.is_empty());
        assert_eq!(numbers(&mut conn, now), (0..count).collect::<Vec<_>>());
        assert!(conn.input.is_empty());
    }
}
