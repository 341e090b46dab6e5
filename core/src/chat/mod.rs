//! Chat state, as deterministic state machines with no I/O.
//!
//! - [`Hub`]: the connector. Connections with ids and attributes, named
//!   connections, groups, push to one, to a name, to a group, or to everyone.
//!   Operations go in; [`Delivery`] values come out, each naming its recipients and
//!   one frame encoded once for all of them.
//! - [`room`]: the rules of the chat room built on the hub: who may join under which
//!   name, the lines everyone sees, and the text commands.
//! - [`Replica`]: the chat room as a log of entries per room, applied in order on
//!   every node that serves it: one node alone, or a cluster whose store (Redis)
//!   orders the entries.

mod history;
mod hub;
mod replica;
pub mod room;
pub mod v1;

pub use history::DEFAULT_HISTORY;
pub use hub::{Attributes, ConnId, Delivery, Hub, HubError};
pub use replica::{Entry, EntryError, MemberId, Offset, Output, Record, Replica, UNAVAILABLE};
