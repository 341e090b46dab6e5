//! The chinwag chat room's rules: who may join under which name, the lines
//! everyone sees, and the text commands for direct messages and rooms. The
//! [`Replica`](super::Replica) carries them out (on one node or many); this module
//! holds the checks and texts they share.
//!
//! Joining, talking and leaving follow the chat guide (with its typo fixed):
//!
//! | when | who gets it | line |
//! |---|---|---|
//! | a newcomer's connection opens | the newcomer | `Hi {name}! You have successfully connected to the chat` |
//! | then | everyone, newcomer included | `{name} with age {age} connected to chat` (`{name} connected to chat` without an age) |
//! | a member sends text | everyone | `{name}: {text}` |
//! | a member leaves | everyone else | `{name} left the chat` |
//!
//! "Everyone" is everyone who has joined: the main chat is a room of its own (the
//! hub group [`CHAT`]), so a newcomer's screen starts with its greeting, even if
//! others spoke while its handshake was completing. Text that starts with `/` is a
//! command; a client that never sends one sees exactly the lines above. `//text`
//! sends `/text` as an ordinary line. Names and room names are compared in Unicode
//! normal form C.
//!
//! | command | effect |
//! |---|---|
//! | `/help` | lists the commands (to you) |
//! | `/users` | lists who is online (to you) |
//! | `/msg NAME TEXT` | `{you} -> {NAME}: {TEXT}` to NAME and to you (quote a NAME with spaces: `/msg "Ann Lee" hi`) |
//! | `/join ROOM` | joins room ROOM; its members (you included) get `{you} joined #{ROOM}` |
//! | `/say ROOM TEXT` | `#{ROOM} {you}: {TEXT}` to the room's members (you must be one) |
//! | `/leave ROOM` | its members (you included) get `{you} left #{ROOM}`, then you are out |
//! | `/rooms` | lists your rooms (to you) |
//!
//! Mistakes (an unknown command, a missing argument, a user or room that does not
//! exist) get a line starting with `error:` to the sender only; nothing else
//! happens.

use unicode_normalization::UnicodeNormalization;

use super::{ConnId, Hub};

/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// The greatest age accepted.
pub const MAX_AGE: u8 = 150;

/// The attribute that holds a member's name.
pub const NAME: &str = "name";
/// The attribute that holds a member's age, when given.
pub const AGE: &str = "age";

/// The hub group of everyone who has joined the chat: the main chat is a room
/// like the others, and its lines reach its members only. A connection admitted
/// (its name reserved) whose socket is not open yet has not joined: it sees no
/// line from before its greeting. The empty name is never a user's room (`/join`
/// needs a name), and `/rooms` does not list it.
pub const CHAT: &str = "";

/// Why a newcomer is refused, as the HTTP status and plain-text reason of the
/// handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400 for a bad name or age, 409 for a name already in the chat.
    pub status: u16,
    /// What is wrong, for the person who typed it.
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

/// Reserves a checked name (see [`check`]) for `conn`, a connection already open
/// in the hub, so that no one else on this node can take it meanwhile, and keeps
/// the age.
pub(crate) fn reserve(hub: &mut Hub, conn: ConnId, name: &str, age: Option<u8>) -> Result<(), Refusal> {
    let closed = |_| refuse(500, "the connection closed");
    hub.store_name(conn, name).map_err(closed)?;
    hub.set_attribute(conn, NAME, name).map_err(closed)?;
    if let Some(age) = age {
        hub.set_attribute(conn, AGE, age.to_string()).map_err(closed)?;
    }
    Ok(())
}

/// The refusal of a name someone has.
pub fn taken(name: &str) -> Refusal {
    refuse(409, format!("{name} is already in the chat; choose another name"))
}

/// The answer to a direct message for someone who is not online.
pub(crate) fn no_one_named(name: &str) -> String {
    format!("error: no one named {name} is online")
}

/// Checks a newcomer's name (already percent-decoded from the path) and age (the
/// raw `age` query value, if present) against the rules and this node's hub,
/// without reserving anything: the name as it would be stored and the age. (A
/// page can ask this to explain a refused connection, since browsers do not show
/// a handshake's status to scripts.)
///
/// A name is 1 to 32 characters, without control characters and without spaces at
/// either end; it must not be in use (409: two users who look the same would be a
/// trap). Names are compared and shown in Unicode normal form C, so the same name
/// typed with combining accents is the same name. An age is a whole number from 0
/// to 150.
pub fn check(hub: &Hub, name: &str, age: Option<&str>) -> Result<(String, Option<u8>), Refusal> {
    let name: String = name.nfc().collect();
    if name.is_empty() {
        return Err(refuse(400, "a name is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(refuse(400, format!("a name is at most {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(refuse(400, "a name cannot contain control characters"));
    }
    if name.trim() != name {
        return Err(refuse(400, "a name cannot start or end with a space"));
    }
    let age = match age {
        None => None,
        Some(text) => match text.parse::<u8>() {
            Ok(age) if age <= MAX_AGE && text.bytes().all(|b| b.is_ascii_digit()) => Some(age),
            _ => return Err(refuse(400, format!("the age must be a whole number from 0 to {MAX_AGE}"))),
        },
    };
    if hub.named(&name).is_some() {
        return Err(taken(&name));
    }
    Ok((name, age))
}

/// The answer to `/help`.
pub(crate) const HELP: &str = "commands:
/help - this list
/users - who is online
/msg NAME TEXT - a direct message (quote a NAME with spaces: /msg \"Ann Lee\" hi)
/join ROOM - join a room
/say ROOM TEXT - talk in a room you joined
/leave ROOM - leave a room
/rooms - the rooms you are in
//TEXT - send TEXT starting with /";

/// Splits `NAME TEXT` or `"NAME WITH SPACES" TEXT`.
pub(crate) fn split_name(args: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = args.strip_prefix('"') {
        let (name, rest) = quoted.split_once('"')?;
        Some((name, rest.trim_start()))
    } else {
        let (name, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        (!name.is_empty()).then_some((name, rest.trim_start()))
    }
}
