//! The hub: every connection of a service, its names and groups, and the deliveries
//! that operations on them produce.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use crate::frame::MAX_CONTROL_PAYLOAD;
use crate::{CloseCode, LocalError, Message, SharedFrame};

/// The id of a connection in a [`Hub`]: unique for the hub's lifetime, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Free-form attributes of a connection (a user name, an age, a user id...).
pub type Attributes = BTreeMap<String, String>;

/// What the hub asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Queue `frame` on each connection in `to` (in this order). The frame was
    /// encoded once; every recipient shares it.
    Frame {
        /// The recipients, each an open connection, each once.
        to: Vec<ConnId>,
        /// The encoded frame.
        frame: SharedFrame,
    },
    /// Close connection `conn` with this code and reason. The hub has already
    /// forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
        /// The reason.
        reason: String,
    },
}

/// An operation named something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// No open connection has this id.
    NoSuchConnection(ConnId),
    /// No connection is stored under this name.
    NoSuchName(String),
    /// No group has this name.
    NoSuchGroup(String),
    /// A close code that may not be sent, or a reason over 123 bytes
    /// ([`LocalError::InvalidCloseCode`] or [`LocalError::CloseReasonTooLong`]).
    InvalidClose(LocalError),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchConnection(id) => write!(f, "no connection {id}"),
            Self::NoSuchName(name) => write!(f, "no connection is named {name:?}"),
            Self::NoSuchGroup(group) => write!(f, "no group {group:?}"),
            Self::InvalidClose(e) => write!(f, "cannot close with that: {e}"),
        }
    }
}

impl std::error::Error for HubError {}

#[derive(Debug, Default)]
struct Member {
    attributes: Attributes,
    names: BTreeSet<String>,
    groups: BTreeSet<String>,
}

/// Every connection of a service, with the connector operations of the design
/// documents: push to the sender, broadcast, store a connection under a unique name
/// and push to it, and groups (add, push, remove a member, remove the whole group).
///
/// Operations only change state and queue [`Delivery`] values; take them with
/// [`Hub::poll_delivery`] and carry them out. A message for many recipients is
/// encoded once into a [`SharedFrame`]. Nothing is ever delivered to a closed
/// connection, every member of a group gets each group message exactly once, in
/// the order pushed, and non-members get none (these are checked against a model
/// by property tests).
#[derive(Debug, Default)]
pub struct Hub {
    next_id: u64,
    members: BTreeMap<ConnId, Member>,
    names: HashMap<String, ConnId>,
    groups: HashMap<String, BTreeSet<ConnId>>,
    deliveries: VecDeque<Delivery>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    // ----- connections ------------------------------------------------------------

    /// Adds a connection and returns its new id.
    pub fn open(&mut self) -> ConnId {
        self.next_id += 1;
        let id = ConnId(self.next_id);
        self.members.insert(id, Member::default());
        id
    }

    /// Removes a connection: it leaves every group (a group left empty is removed)
    /// and loses every name. Returns its attributes, or `None` if it was not open.
    pub fn close(&mut self, conn: ConnId) -> Option<Attributes> {
        let member = self.members.remove(&conn)?;
        for name in &member.names {
            self.names.remove(name);
        }
        for group in &member.groups {
            self.drop_member(group, conn);
        }
        Some(member.attributes)
    }

    /// Removes a connection as [`close`](Self::close) does, and asks the driver to
    /// close it with `code` and `reason`.
    ///
    /// A code that may not be sent ([`CloseCode::is_sendable`]) or a reason over 123
    /// bytes is refused with [`HubError::InvalidClose`] and changes nothing: the
    /// connection could not be closed with them, and a connection the hub forgot
    /// while its socket stayed open would be unreachable yet still counted.
    pub fn disconnect(&mut self, conn: ConnId, code: CloseCode, reason: &str) -> Result<Attributes, HubError> {
        if !code.is_sendable() {
            return Err(HubError::InvalidClose(LocalError::InvalidCloseCode(code.0)));
        }
        if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
            return Err(HubError::InvalidClose(LocalError::CloseReasonTooLong));
        }
        let attributes = self.close(conn).ok_or(HubError::NoSuchConnection(conn))?;
        self.deliveries.push_back(Delivery::Close { conn, code, reason: reason.to_owned() });
        Ok(attributes)
    }

    /// Whether a connection is open.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.members.contains_key(&conn)
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many names are stored (for monitoring: names leave with their connection).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// How many groups exist (for monitoring: a group left empty is removed).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The open connections, oldest first.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.members.keys().copied()
    }

    /// An attribute of a connection.
    pub fn attribute(&self, conn: ConnId, key: &str) -> Option<&str> {
        self.members.get(&conn)?.attributes.get(key).map(String::as_str)
    }

    /// All attributes of a connection.
    pub fn attributes(&self, conn: ConnId) -> Option<&Attributes> {
        self.members.get(&conn).map(|m| &m.attributes)
    }

    /// Sets an attribute of a connection.
    pub fn set_attribute(&mut self, conn: ConnId, key: &str, value: impl Into<String>) -> Result<(), HubError> {
        let member = self.members.get_mut(&conn).ok_or(HubError::NoSuchConnection(conn))?;
        member.attributes.insert(key.to_owned(), value.into());
        Ok(())
    }

    // ----- sending ------------------------------------------------------------------

    /// Sends a message to one connection.
    pub fn push(&mut self, conn: ConnId, message: &Message) -> Result<(), HubError> {
        if !self.is_open(conn) {
            return Err(HubError::NoSuchConnection(conn));
        }
        self.deliver(vec![conn], message);
        Ok(())
    }

    /// Sends a message to every open connection; returns how many.
    pub fn broadcast(&mut self, message: &Message) -> usize {
        let to: Vec<ConnId> = self.connections().collect();
        let n = to.len();
        self.deliver(to, message);
        n
    }

    /// Sends a message to every open connection but one; returns how many.
    pub fn broadcast_except(&mut self, except: ConnId, message: &Message) -> usize {
        let to: Vec<ConnId> = self.connections().filter(|&c| c != except).collect();
        let n = to.len();
        self.deliver(to, message);
        n
    }

    fn deliver(&mut self, to: Vec<ConnId>, message: &Message) {
        if !to.is_empty() {
            self.deliveries.push_back(Delivery::Frame { to, frame: SharedFrame::new(message) });
        }
    }

    // ----- named connections ----------------------------------------------------

    /// Stores `conn` under `name`. A name names one connection: a connection stored
    /// earlier under the same name loses it (and is returned); it stays open.
    pub fn store_name(&mut self, conn: ConnId, name: &str) -> Result<Option<ConnId>, HubError> {
        let member = self.members.get_mut(&conn).ok_or(HubError::NoSuchConnection(conn))?;
        member.names.insert(name.to_owned());
        let previous = self.names.insert(name.to_owned(), conn).filter(|&p| p != conn);
        if let Some(previous) = previous
            && let Some(m) = self.members.get_mut(&previous)
        {
            m.names.remove(name);
        }
        Ok(previous)
    }

    /// The connection stored under `name`.
    pub fn named(&self, name: &str) -> Option<ConnId> {
        self.names.get(name).copied()
    }

    /// Sends a message to the connection stored under `name`; returns it.
    pub fn push_to_name(&mut self, name: &str, message: &Message) -> Result<ConnId, HubError> {
        let conn = self.named(name).ok_or_else(|| HubError::NoSuchName(name.to_owned()))?;
        self.deliver(vec![conn], message);
        Ok(conn)
    }

    /// Forgets `name`; returns the connection it named (which stays open).
    pub fn remove_name(&mut self, name: &str) -> Option<ConnId> {
        let conn = self.names.remove(name)?;
        if let Some(member) = self.members.get_mut(&conn) {
            member.names.remove(name);
        }
        Some(conn)
    }

    // ----- groups -----------------------------------------------------------------

    /// Adds a connection to a group, creating the group if needed. Returns false if
    /// it was already a member.
    pub fn add_to_group(&mut self, conn: ConnId, group: &str) -> Result<bool, HubError> {
        let member = self.members.get_mut(&conn).ok_or(HubError::NoSuchConnection(conn))?;
        member.groups.insert(group.to_owned());
        Ok(self.groups.entry(group.to_owned()).or_default().insert(conn))
    }

    /// Removes a connection from a group (a group left empty is removed). Returns
    /// false if it was not a member.
    pub fn remove_from_group(&mut self, conn: ConnId, group: &str) -> Result<bool, HubError> {
        let member = self.members.get_mut(&conn).ok_or(HubError::NoSuchConnection(conn))?;
        if !member.groups.remove(group) {
            return Ok(false);
        }
        self.drop_member(group, conn);
        Ok(true)
    }

    fn drop_member(&mut self, group: &str, conn: ConnId) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(&conn);
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// Sends a message to every member of a group; returns how many.
    pub fn push_to_group(&mut self, group: &str, message: &Message) -> Result<usize, HubError> {
        let members = self.groups.get(group).ok_or_else(|| HubError::NoSuchGroup(group.to_owned()))?;
        let to: Vec<ConnId> = members.iter().copied().collect();
        let n = to.len();
        self.deliver(to, message);
        Ok(n)
    }

    /// Removes a whole group; its members stay open. Returns the former members.
    pub fn remove_group(&mut self, group: &str) -> Result<Vec<ConnId>, HubError> {
        let members = self.groups.remove(group).ok_or_else(|| HubError::NoSuchGroup(group.to_owned()))?;
        for conn in &members {
            if let Some(member) = self.members.get_mut(conn) {
                member.groups.remove(group);
            }
        }
        Ok(members.into_iter().collect())
    }

    /// The members of a group, oldest first (empty if there is no such group).
    pub fn group_members(&self, group: &str) -> impl Iterator<Item = ConnId> + '_ {
        self.groups.get(group).into_iter().flatten().copied()
    }

    /// Whether a connection is in a group.
    pub fn is_member(&self, conn: ConnId, group: &str) -> bool {
        self.members.get(&conn).is_some_and(|m| m.groups.contains(group))
    }

    /// The groups a connection is in, in name order.
    pub fn groups_of(&self, conn: ConnId) -> impl Iterator<Item = &str> + '_ {
        self.members.get(&conn).into_iter().flat_map(|m| m.groups.iter().map(String::as_str))
    }

    // ----- out --------------------------------------------------------------------

    /// The next delivery to carry out.
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s)
    }

    #[test]
    fn a_later_store_replaces_the_earlier_holder() {
        let mut hub = Hub::new();
        let (a, b) = (hub.open(), hub.open());
        assert_eq!(hub.store_name(a, "desk"), Ok(None));
        assert_eq!(hub.store_name(b, "desk"), Ok(Some(a)));
        assert_eq!(hub.named("desk"), Some(b));
        hub.close(a); // must not take b's name with it
        assert_eq!(hub.named("desk"), Some(b));
        hub.close(b);
        assert_eq!(hub.named("desk"), None);
    }

    #[test]
    fn one_frame_for_all_recipients() {
        let mut hub = Hub::new();
        let ids: Vec<ConnId> = (0..3).map(|_| hub.open()).collect();
        assert_eq!(hub.broadcast(&text("hi")), 3);
        match hub.poll_delivery() {
            Some(Delivery::Frame { to, frame }) => {
                assert_eq!(to, ids);
                assert_eq!(frame, SharedFrame::text("hi"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(hub.poll_delivery(), None);
    }

    #[test]
    fn groups_come_and_go() {
        let mut hub = Hub::new();
        let (a, b) = (hub.open(), hub.open());
        assert_eq!(hub.add_to_group(a, "g"), Ok(true));
        assert_eq!(hub.add_to_group(a, "g"), Ok(false));
        hub.add_to_group(b, "g").unwrap();
        assert_eq!(hub.push_to_group("g", &text("x")), Ok(2));
        hub.poll_delivery();
        assert_eq!(hub.remove_from_group(a, "g"), Ok(true));
        hub.close(b);
        assert_eq!(hub.push_to_group("g", &text("x")), Err(HubError::NoSuchGroup("g".into())), "empty groups vanish");
        hub.add_to_group(a, "h").unwrap();
        assert_eq!(hub.remove_group("h"), Ok(vec![a]));
        assert!(hub.is_open(a));
        assert_eq!(hub.groups_of(a).count(), 0);
    }

    #[test]
    fn disconnect_forgets_and_asks_for_a_close() {
        let mut hub = Hub::new();
        let a = hub.open();
        hub.set_attribute(a, "name", "ann").unwrap();
        assert_eq!(hub.disconnect(a, CloseCode::POLICY_VIOLATION, "bye").unwrap()["name"], "ann");
        assert_eq!(
            hub.poll_delivery(),
            Some(Delivery::Close { conn: a, code: CloseCode::POLICY_VIOLATION, reason: "bye".into() })
        );
        assert_eq!(hub.push(a, &text("x")), Err(HubError::NoSuchConnection(a)));
    }

    #[test]
    fn an_invalid_close_is_refused_and_changes_nothing() {
        let mut hub = Hub::new();
        let a = hub.open();
        hub.store_name(a, "ann").unwrap();
        hub.add_to_group(a, "g").unwrap();
        let long = "r".repeat(124);
        for (code, reason, error) in [
            (CloseCode::ABNORMAL, "", LocalError::InvalidCloseCode(1006)),
            (CloseCode(999), "", LocalError::InvalidCloseCode(999)),
            (CloseCode::NORMAL, long.as_str(), LocalError::CloseReasonTooLong),
        ] {
            assert_eq!(hub.disconnect(a, code, reason), Err(HubError::InvalidClose(error)));
            assert!(hub.is_open(a));
            assert_eq!((hub.named("ann"), hub.is_member(a, "g")), (Some(a), true));
            assert_eq!(hub.poll_delivery(), None);
        }
        assert!(hub.disconnect(a, CloseCode(4999), &long[1..]).is_ok(), "123 bytes is the longest reason");
        assert!(!hub.is_open(a));
    }
}
