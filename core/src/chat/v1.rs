//! `chinwag.v1`: the chat's richer protocol, for clients that ask for it with
//! the WebSocket subprotocol [`PROTOCOL`]. Clients that do not ask see the
//! guide's plain lines, unchanged.
//!
//! A v1 client sends the same text as any client (lines and commands) and gets
//! one JSON object per message, each with a `type`:
//!
//! | type | fields | when |
//! |---|---|---|
//! | `welcome` | `name`, `text` (the greeting), `epoch` | first, on connecting |
//! | `line` | `room` (`""`: the main chat), `offset`, `epoch`, `text` (the plain line) | a line of a room it is in, live or recovered |
//! | `members` | `room`, `members` (names) | right after its own join line: who is in the chat |
//! | `presence` | `room`, `joined` or `left` (a name) | someone joined or left the chat or one of its rooms |
//! | `direct` | `text` (the plain line) | a direct message to or from it |
//! | `reply` | `text` | an answer to a command (`/users`, `/rooms`, `/help`...) |
//! | `error` | `text` (starting with `error:`) | a mistake, or a line refused |
//! | `recovered` | `room`, `recovered` (bool), `missed` or `lost_at_least` | after asking to recover |
//!
//! **Offsets and epochs.** Every line of a room's log has an offset, increasing
//! in the order everyone sees; the epoch names the log (it changes when the log
//! is lost: a new process alone, or a Redis that restarted empty). A client that
//! reconnects with `?since=OFFSET&epoch=EPOCH` (the last `line` it saw of the
//! main chat) gets every main-chat line it missed, in order, each once, then
//! `recovered` with `recovered: true` and how many it `missed`, then the live
//! lines. If the node no longer holds the lines after that offset (more than the
//! history length went by) or the epoch is another, it gets `recovered: false`
//! and `lost_at_least` (exact on one node, at least 1 on several, whose offsets
//! are not consecutive), never silence. `?history=N` asks for the last N lines
//! of the main chat on joining (at most the history length, 100 by default).
//!
//! Rooms are joined again after a reconnect with `/join ROOM OFFSET EPOCH`, the
//! last offset seen in that room and its epoch: its missed lines come before the
//! join line, then a `recovered` object for the room, in the same way.

use std::fmt::Write;

use super::Offset;

/// The subprotocol name a client offers to speak v1.
pub const PROTOCOL: &str = "chinwag.v1";

/// What a v1 client asked for on connecting: recent history, or recovery from
/// an offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// Lines of the main chat to show on joining (when not recovering).
    pub history: usize,
    /// The last offset seen, and its epoch: recover every line after it.
    pub since: Option<(Offset, String)>,
}

impl Resume {
    /// Reads `history`, `since` and `epoch` query values; `Err` says what is
    /// wrong (for a 400).
    pub fn from_query(history: Option<&str>, since: Option<&str>, epoch: Option<&str>) -> Result<Self, String> {
        let history = match history {
            None => 0,
            Some(n) => n.parse().map_err(|_| format!("history must be a whole number, not {n:?}"))?,
        };
        let since = match (since, epoch) {
            (None, None) => None,
            (Some(since), Some(epoch)) => {
                let offset = since.parse().map_err(|_| format!("since must be an offset like 0-12, not {since:?}"))?;
                Some((offset, epoch.to_owned()))
            }
            _ => return Err("since and epoch go together".to_owned()),
        };
        Ok(Self { history, since })
    }
}

/// Appends `text` as a JSON string.
fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"type":TYPE, then the fields}`: each field a key and an already encoded
/// value.
fn object(kind: &str, fields: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"type\":");
    string(&mut out, kind);
    for (key, value) in fields {
        out.push(',');
        string(&mut out, key);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    string(&mut out, value);
    out
}

/// A line of a room.
pub(crate) fn line(room: &str, offset: Offset, epoch: &str, line: &str) -> String {
    object(
        "line",
        &[("room", text(room)), ("offset", text(&offset.to_string())), ("epoch", text(epoch)), ("text", text(line))],
    )
}

/// The greeting.
pub(crate) fn welcome(name: &str, greeting: &str, epoch: &str) -> String {
    object("welcome", &[("name", text(name)), ("text", text(greeting)), ("epoch", text(epoch))])
}

/// An answer for the member alone: `error` if it is a mistake, else `reply`.
pub(crate) fn reply(answer: &str) -> String {
    let kind = if answer.starts_with("error:") { "error" } else { "reply" };
    object(kind, &[("text", text(answer))])
}

/// A direct message.
pub(crate) fn direct(line: &str) -> String {
    object("direct", &[("text", text(line))])
}

/// Someone joined (`joined`) or left a room.
pub(crate) fn presence(room: &str, joined: bool, name: &str) -> String {
    object("presence", &[("room", text(room)), (if joined { "joined" } else { "left" }, text(name))])
}

/// Who is in a room.
pub(crate) fn members<'a>(room: &str, names: impl Iterator<Item = &'a str>) -> String {
    let mut list = String::from("[");
    for (i, name) in names.enumerate() {
        if i > 0 {
            list.push(',');
        }
        string(&mut list, name);
    }
    list.push(']');
    object("members", &[("room", text(room)), ("members", list)])
}

/// The outcome of a recovery.
pub(crate) fn recovered(room: &str, outcome: Result<usize, u64>) -> String {
    match outcome {
        Ok(missed) => {
            object("recovered", &[("room", text(room)), ("recovered", "true".into()), ("missed", missed.to_string())])
        }
        Err(lost) => object(
            "recovered",
            &[("room", text(room)), ("recovered", "false".into()), ("lost_at_least", lost.to_string())],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_escape_what_json_needs() {
        assert_eq!(
            line("", Offset(0, 3), "e1", "Bob: \"hi\" \\ <b>\n\u{1}é"),
            r#"{"type":"line","room":"","offset":"0-3","epoch":"e1","text":"Bob: \"hi\" \\ <b>\n\u0001é"}"#
        );
        assert_eq!(reply("error: no"), r#"{"type":"error","text":"error: no"}"#);
        assert_eq!(reply("online (1): a"), r#"{"type":"reply","text":"online (1): a"}"#);
        assert_eq!(members("", ["a", "b\"c"].into_iter()), r#"{"type":"members","room":"","members":["a","b\"c"]}"#);
        assert_eq!(recovered("", Err(4)), r#"{"type":"recovered","room":"","recovered":false,"lost_at_least":4}"#);
    }

    #[test]
    fn resume_from_the_query() {
        assert_eq!(Resume::from_query(None, None, None), Ok(Resume::default()));
        assert_eq!(
            Resume::from_query(Some("20"), Some("0-7"), Some("e")),
            Ok(Resume { history: 20, since: Some((Offset(0, 7), "e".into())) })
        );
        assert!(Resume::from_query(Some("x"), None, None).is_err());
        assert!(Resume::from_query(None, Some("7"), Some("e")).is_err());
        assert!(Resume::from_query(None, Some("0-7"), None).is_err());
    }
}
