//! The chinwag chat room: who may join under which name, the lines everyone sees,
//! and the text commands for direct messages and rooms. Pure functions over a
//! [`Hub`]; the service that hosts the chat calls them from its hooks.
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
use crate::Message;

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

/// Checks a newcomer's name (already percent-decoded from the path) and age (the
/// raw `age` query value, if present), and reserves the name for `conn`, a
/// connection already open in the hub, so that no one else can take it meanwhile.
///
/// A name is 1 to 32 characters, without control characters and without spaces at
/// either end; it must not be in use (409: two users who look the same would be a
/// trap). Names are compared and shown in Unicode normal form C, so the same name
/// typed with combining accents is the same name. An age is a whole number from 0
/// to 150. Returns the name as stored.
pub fn admit(hub: &mut Hub, conn: ConnId, name: &str, age: Option<&str>) -> Result<String, Refusal> {
    let (name, age) = check(hub, name, age)?;
    hub.store_name(conn, &name).map_err(|_| refuse(500, "the connection closed"))?;
    hub.set_attribute(conn, NAME, name.as_str()).map_err(|_| refuse(500, "the connection closed"))?;
    if let Some(age) = age {
        hub.set_attribute(conn, AGE, age.to_string()).map_err(|_| refuse(500, "the connection closed"))?;
    }
    Ok(name)
}

/// What [`admit`] would decide, without reserving anything: the name as it would be
/// stored and the age. (A page can ask this to explain a refused connection, since
/// browsers do not show a handshake's status to scripts.)
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
        return Err(refuse(409, format!("{name} is already in the chat; choose another name")));
    }
    Ok((name, age))
}

/// A newcomer's connection is open: greets them, then tells everyone. Returns the
/// lines everyone saw, for the log.
pub fn join(hub: &mut Hub, conn: ConnId) -> Vec<String> {
    let Some(name) = hub.attribute(conn, NAME).map(str::to_owned) else { return vec![] };
    let line = match hub.attribute(conn, AGE) {
        Some(age) => format!("{name} with age {age} connected to chat"),
        None => format!("{name} connected to chat"),
    };
    let _ = hub.push(conn, &Message::text(format!("Hi {name}! You have successfully connected to the chat")));
    let _ = hub.add_to_group(conn, CHAT);
    let _ = hub.push_to_group(CHAT, &Message::text(line.clone()));
    vec![line]
}

/// A member's connection closed: forgets them and tells everyone else. Returns the
/// line, for the log.
pub fn leave(hub: &mut Hub, conn: ConnId) -> Vec<String> {
    let Some(attributes) = hub.close(conn) else { return vec![] };
    let Some(name) = attributes.get(NAME) else { return vec![] };
    let line = format!("{name} left the chat");
    // The last member leaving leaves no group to tell: nobody is left to see it.
    let _ = hub.push_to_group(CHAT, &Message::text(line.clone()));
    vec![line]
}

/// Text from a member: a line for everyone, or a command. Returns the lines that
/// reached other members (chat lines, direct messages, room lines), for the log;
/// answers meant for the sender alone are not returned.
pub fn say(hub: &mut Hub, conn: ConnId, text: &str) -> Vec<String> {
    let Some(name) = hub.attribute(conn, NAME).map(str::to_owned) else { return vec![] };
    let text = match text.strip_prefix('/') {
        Some(rest) if rest.starts_with('/') => rest,
        Some(command) => return run_command(hub, conn, &name, command),
        None => text,
    };
    let line = format!("{name}: {text}");
    let _ = hub.push_to_group(CHAT, &Message::text(line.clone()));
    vec![line]
}

const HELP: &str = "commands:
/help - this list
/users - who is online
/msg NAME TEXT - a direct message (quote a NAME with spaces: /msg \"Ann Lee\" hi)
/join ROOM - join a room
/say ROOM TEXT - talk in a room you joined
/leave ROOM - leave a room
/rooms - the rooms you are in
//TEXT - send TEXT starting with /";

fn run_command(hub: &mut Hub, conn: ConnId, name: &str, command: &str) -> Vec<String> {
    let (verb, args) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
    let args = args.trim_start();
    let reply = |hub: &mut Hub, text: String| {
        let _ = hub.push(conn, &Message::text(text));
        vec![]
    };
    match verb {
        "help" => reply(hub, HELP.to_owned()),
        "users" => {
            let mut names: Vec<&str> = hub.connections().filter_map(|c| hub.attribute(c, NAME)).collect();
            names.sort_unstable();
            let list = format!("online ({}): {}", names.len(), names.join(", "));
            reply(hub, list)
        }
        "msg" => {
            let Some((to, text)) = split_name(args).filter(|(_, text)| !text.is_empty()) else {
                return reply(hub, "error: usage: /msg NAME TEXT".to_owned());
            };
            // Names are stored in NFC (see `check`): a name typed with combining
            // accents must find the same member, and be shown as stored.
            let to: String = to.nfc().collect();
            let line = format!("{name} -> {to}: {text}");
            let message = Message::text(line.clone());
            match hub.push_to_name(&to, &message) {
                Ok(recipient) if recipient == conn => vec![line],
                Ok(_) => {
                    let _ = hub.push(conn, &message);
                    vec![line]
                }
                Err(_) => reply(hub, format!("error: no one named {to} is online")),
            }
        }
        "join" | "leave" | "say" => {
            let (room, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            let room = room.strip_prefix('#').unwrap_or(room);
            let text = text.trim_start();
            if room.is_empty() || (verb == "say" && text.is_empty()) {
                let usage =
                    if verb == "say" { "error: usage: /say ROOM TEXT" } else { &format!("error: usage: /{verb} ROOM") };
                return reply(hub, usage.to_owned());
            }
            if room.chars().count() > MAX_ROOM_CHARS || room.chars().any(char::is_control) {
                return reply(hub, format!("error: a room name is 1 to {MAX_ROOM_CHARS} characters without spaces"));
            }
            // Rooms, like names, are one room whatever normal form a client types
            // (a keyboard's "é" or "e" and a combining accent): kept in NFC.
            let room: String = room.nfc().collect();
            room_command(hub, conn, name, verb, &room, text)
        }
        "rooms" => {
            let rooms: Vec<String> = hub.groups_of(conn).filter(|r| *r != CHAT).map(|r| format!("#{r}")).collect();
            let list = if rooms.is_empty() {
                "you are in no rooms".to_owned()
            } else {
                format!("your rooms: {}", rooms.join(", "))
            };
            reply(hub, list)
        }
        _ => reply(hub, format!("error: unknown command /{verb} (try /help)")),
    }
}

fn room_command(hub: &mut Hub, conn: ConnId, name: &str, verb: &str, room: &str, text: &str) -> Vec<String> {
    let member = hub.is_member(conn, room);
    let line = match (verb, member) {
        ("join", true) => {
            let _ = hub.push(conn, &Message::text(format!("you are already in #{room}")));
            return vec![];
        }
        ("join", false) => {
            let _ = hub.add_to_group(conn, room);
            format!("{name} joined #{room}")
        }
        ("say", true) => format!("#{room} {name}: {text}"),
        ("leave", true) => format!("{name} left #{room}"),
        _ => {
            let _ = hub.push(conn, &Message::text(format!("error: you are not in #{room} (try /join {room})")));
            return vec![];
        }
    };
    let _ = hub.push_to_group(room, &Message::text(line.clone()));
    if verb == "leave" {
        let _ = hub.remove_from_group(conn, room);
    }
    vec![line]
}

/// Splits `NAME TEXT` or `"NAME WITH SPACES" TEXT`.
fn split_name(args: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = args.strip_prefix('"') {
        let (name, rest) = quoted.split_once('"')?;
        Some((name, rest.trim_start()))
    } else {
        let (name, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        (!name.is_empty()).then_some((name, rest.trim_start()))
    }
}
