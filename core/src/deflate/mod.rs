//! permessage-deflate (RFC 7692): negotiation on both roles, and the settings of
//! the compression a connection applies to its messages.
//!
//! ## Negotiation
//!
//! A client offers with [`ClientRequest::with_deflate`](crate::ClientRequest::with_deflate)
//! (the offer is [`DeflateConfig::offer`]) and checks the server's answer
//! ([`check_response`]); a server accepts with
//! [`Accept::with_deflate`](crate::Accept::with_deflate), which answers the first of
//! the client's offers it can honour ([`negotiate`]). The agreed parameters are
//! reported in [`Opened::deflate`](crate::Opened::deflate).
//!
//! The offers are read as RFC 6455 §9.1 and RFC 7692 §5 and §7 say:
//! - a malformed `Sec-WebSocket-Extensions` header (not a list of tokens with
//!   `;`-separated parameters whose values are tokens or quoted strings) makes the
//!   server negotiate no extension at all; the handshake itself still succeeds;
//! - an offer with an unknown parameter, a parameter given twice, or a value that
//!   is not a decimal from 8 to 15 without leading zeros is declined, and the next
//!   offer is tried;
//! - a client fails the handshake on an answer that names another extension, more
//!   than one, a parameter it did not offer (`client_max_window_bits`), a bad or
//!   duplicate parameter, a window larger than it asked for, or no
//!   `server_no_context_takeover` when it asked for it.
//!
//! ## Defaults: no context takeover either way
//!
//! [`DeflateConfig::default`] asks for no context takeover in both directions: a
//! server answers with `server_no_context_takeover` and `client_no_context_takeover`
//! (RFC 7692 §7.1.1.2 allows the latter even when the offer did not include it, and
//! browsers never offer it). Then no connection keeps a zlib window between
//! messages (nothing is allocated on an idle connection), and a message compresses
//! to the same bytes for every recipient with the same level and window: a
//! [`SharedFrame`](crate::SharedFrame) is compressed once per such class and shared.
//! With context takeover configured, the connection keeps its compressor (or
//! decompressor) between messages, bounded by the window bits, and compresses
//! broadcast frames itself.
//!
//! ## Memory
//!
//! Without context takeover, a compressor exists only while a message is
//! compressed, and a decompressor while a message is inflated (from its first
//! frame to its last). They come from a small pool per thread (at most four of
//! each, reset between uses: a reset stream is a fresh one), so that a message
//! does not allocate and clear a compressor's state of some 300 KiB, and the
//! allocator does not scatter such blocks between connections. The pool is the
//! only state the core keeps outside a connection; it changes no output.
//!
//! ## Window bits
//!
//! zlib (and so zlib-rs) cannot compress or decompress with a raw window of 8 bits.
//! An agreed window of 8 bits is used as 9 bits: decompressing with a larger window
//! than the peer's always works; compressing with 9 bits keeps every match within
//! 250 bytes (zlib keeps 262 bytes of lookahead out of its 512-byte window), which
//! a 256-byte window decodes. So offers with `server_max_window_bits=8` are
//! accepted and answered with 8, as the RFC asks; a property test checks that
//! output of the 9-bit compressor never reaches back further than 256 bytes.

mod engine;
mod negotiate;

pub(crate) use engine::{Deflater, InflateError, Inflater};
pub use negotiate::{
    DeflateParams, Extension, MalformedExtensions, check_response, negotiate, parse_extensions, parse_header_values,
};

/// The name of the extension in `Sec-WebSocket-Extensions`.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The four octets a sender strips from the end of a compressed message and the
/// receiver appends again (RFC 7692 §7.2.1 and §7.2.2).
pub(crate) const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What one end is willing to do with permessage-deflate: the server's answer to
/// offers, or the client's offer, and how this end compresses.
///
/// Values out of range are brought into it when used: the level into 0 to 9, the
/// window bits into 8 to 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateConfig {
    /// The zlib compression level, 0 (store only) to 9 (smallest). The default, 6,
    /// is zlib's own.
    pub level: u8,
    /// Messages shorter than this many bytes are sent uncompressed (RSV1 clear,
    /// as RFC 7692 allows message by message): compressing a few bytes costs more
    /// than it saves.
    pub min_size: usize,
    /// Whether a message whose compressed form is no shorter than itself is sent
    /// uncompressed instead (when this end resets its context after every
    /// message, so that skipping one costs nothing). On by default: RFC 7692 lets
    /// any message go uncompressed. Off (with `min_size` 0, see
    /// [`DeflateConfig::compress_everything`]) for peers that mishandle
    /// uncompressed messages on a compressed connection, as the conformance tool
    /// kosoku does.
    pub skip_incompressible: bool,
    /// Whether the server resets its compressor after every message. A server
    /// always answers with `server_no_context_takeover` when this is set (and when
    /// the client asked for it); a client asks for it.
    pub server_no_context_takeover: bool,
    /// Whether the client resets its compressor after every message. A server
    /// answers with `client_no_context_takeover` when this is set (or when the
    /// client offered it); a client offers it.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window, as a power of two (8 to 15), the server compresses
    /// with. A client asks for it (`server_max_window_bits`) when under 15; a
    /// server answers with the smaller of this and what the client asked for.
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with. A client offers
    /// `client_max_window_bits` (with this value when under 15) so that a server
    /// may limit it; a server limits it to this value when the client offered the
    /// parameter (when it did not, the client may use 15 and the server decodes
    /// with 15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            level: 6,
            min_size: 32,
            skip_incompressible: true,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

impl DeflateConfig {
    /// Context takeover on for both directions (each connection keeps a compressor
    /// and a decompressor between messages: better ratios on long conversations,
    /// more memory per connection, and broadcasts compressed per connection).
    pub fn with_context_takeover(mut self) -> Self {
        self.server_no_context_takeover = false;
        self.client_no_context_takeover = false;
        self
    }

    /// Every message compressed, however short and even when it does not shrink
    /// (`min_size` 0, `skip_incompressible` off): for peers that expect every
    /// message of a compressed connection to be compressed.
    pub fn compress_everything(mut self) -> Self {
        self.min_size = 0;
        self.skip_incompressible = false;
        self
    }

    /// The level in force (0 to 9).
    pub(crate) fn level(&self) -> u8 {
        self.level.min(9)
    }

    /// The value of `Sec-WebSocket-Extensions` a client sends to offer this.
    pub fn offer(&self) -> String {
        let mut out = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        let server_bits = clamp_bits(self.server_max_window_bits);
        if server_bits < 15 {
            out.push_str(&format!("; server_max_window_bits={server_bits}"));
        }
        // Always offered, so that a server may ask for a smaller window.
        match clamp_bits(self.client_max_window_bits) {
            15 => out.push_str("; client_max_window_bits"),
            bits => out.push_str(&format!("; client_max_window_bits={bits}")),
        }
        out
    }
}

/// Window bits in the range RFC 7692 allows.
pub(crate) fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(8, 15)
}

/// The window bits zlib works with for an agreed value (8 is not supported by
/// zlib's raw deflate; see the module documentation).
pub(crate) fn engine_bits(bits: u8) -> u8 {
    clamp_bits(bits).max(9)
}
