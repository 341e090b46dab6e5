//! What only some connections carry, kept behind one pointer.

use super::compression::Compression;
use super::{CloseFrame, Closed, MaskSource};

/// What a connection has only if it agreed on more than RFC 6455 itself, is a
/// client, or is closing or closed. Boxed in the connection and absent otherwise: a plain
/// server connection, idle most of its life, carries one pointer for all of it
/// (every idle connection costs its size, many times over on a busy server).
#[derive(Default)]
pub(super) struct Extras {
    pub(super) subprotocol: Option<String>,
    /// Boxed: its engines' state is several hundred bytes, and every closing
    /// connection has this struct for a while.
    pub(super) deflate: Option<Box<Compression>>,
    /// (Client) Where the masking keys come from.
    pub(super) masks: Option<Box<dyn MaskSource>>,
    /// The close frame we sent, reported in [`Closed::sent`](crate::Closed::sent).
    pub(super) sent_close: Option<CloseFrame>,
    /// How the connection ended, once it has (see [`Connection::closed`](crate::Connection::closed)).
    pub(super) closed: Option<Closed>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("subprotocol", &self.subprotocol)
            .field("deflate", &self.deflate)
            .field("masks", &self.masks.is_some())
            .field("sent_close", &self.sent_close)
            .field("closed", &self.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    /// A server connection gets this box when it closes (to keep how it ended),
    /// so at a mass shutdown every lingering connection holds one: it stays small,
    /// with compression's engines behind a pointer of their own.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_box_a_closing_connection_gets_stays_small() {
        let size = std::mem::size_of::<super::Extras>();
        assert!(size <= 144, "Extras is {size} bytes");
    }
}
