//! permessage-deflate on an open connection: what was agreed, and the engines of
//! each direction, which exist only while a message is compressed or inflated
//! unless context takeover keeps them between messages.

use crate::deflate::{DeflateConfig, DeflateParams, Deflater, Inflater, engine_bits};

use super::Role;

/// permessage-deflate as agreed, seen from this end.
#[derive(Debug)]
pub(crate) struct Compression {
    pub(super) params: DeflateParams,
    level: u8,
    pub(super) min_size: usize,
    skip_incompressible: bool,
    /// This end resets its compressor after every message.
    local_no_takeover: bool,
    local_bits: u8,
    /// The peer resets its compressor after every message.
    pub(super) remote_no_takeover: bool,
    remote_bits: u8,
    /// The compressor, kept between messages only with context takeover.
    deflater: Option<Deflater>,
    /// The decompressor of the message being read, kept between messages only
    /// with the peer's context takeover.
    pub(super) inflater: Option<Inflater>,
    /// The inflated payload of the message being read. Here rather than in the
    /// reader's message, so that connections without compression do not carry
    /// the field; empty (no heap memory) between messages.
    pub(super) inflated: Vec<u8>,
}

/// Messages compressed with the same level and window, without context takeover,
/// are the same bytes: the key under which a [`SharedFrame`](crate::SharedFrame)
/// keeps its compressed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DeflateClass {
    pub(crate) level: u8,
    pub(crate) window_bits: u8,
    /// A message that does not shrink goes uncompressed.
    pub(crate) skip_incompressible: bool,
}

impl Compression {
    pub(super) fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        let (server, client) = (
            (params.server_no_context_takeover, params.server_window_bits()),
            (params.client_no_context_takeover, params.client_window_bits()),
        );
        let ((local_no_takeover, local_bits), (remote_no_takeover, remote_bits)) = match role {
            Role::Server => (server, client),
            Role::Client => (client, server),
        };
        Self {
            params,
            level: config.level(),
            min_size: config.min_size,
            skip_incompressible: config.skip_incompressible,
            local_no_takeover,
            local_bits,
            remote_no_takeover,
            remote_bits,
            deflater: None,
            inflater: None,
            inflated: Vec::new(),
        }
    }

    /// The class of this end's compressed messages, if they are the same for every
    /// connection of that class (no context takeover).
    pub(super) fn shared_class(&self) -> Option<DeflateClass> {
        self.local_no_takeover.then(|| DeflateClass {
            level: self.level,
            window_bits: engine_bits(self.local_bits),
            skip_incompressible: self.skip_incompressible,
        })
    }

    /// Compresses one outgoing message, or `None` if it goes uncompressed: too
    /// short, or (without context takeover, where skipping one message costs
    /// nothing) no shorter compressed.
    pub(super) fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < self.min_size {
            return None;
        }
        let mut deflater = self.deflater.take().unwrap_or_else(|| Deflater::new(self.level, self.local_bits));
        let mut out = Vec::new();
        deflater.compress_message(payload, &mut out);
        if self.local_no_takeover {
            // Dropped: nothing stays allocated between messages.
            return (!self.skip_incompressible || out.len() < payload.len()).then_some(out);
        }
        self.deflater = Some(deflater);
        Some(out)
    }

    /// The decompressor for an incoming compressed message, and the buffer its
    /// output goes to.
    pub(super) fn inflating(&mut self) -> (&mut Inflater, &mut Vec<u8>) {
        let remote_bits = self.remote_bits;
        (self.inflater.get_or_insert_with(|| Inflater::new(remote_bits)), &mut self.inflated)
    }

    /// Frees what a closed connection no longer needs.
    pub(super) fn release(&mut self) {
        self.deflater = None;
        self.inflater = None;
        self.inflated = Vec::new();
    }
}

/// Compresses a message for a class of connections (see [`DeflateClass`]).
pub(crate) fn compress_for_class(class: DeflateClass, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Deflater::new(class.level, class.window_bits).compress_message(payload, &mut out);
    out
}
