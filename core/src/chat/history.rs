//! The last lines of each room a node has shown, with their offsets: what a
//! newcomer asks to see, and what a client that reconnects recovers from.

use std::collections::{HashMap, VecDeque};

use super::Offset;

/// Lines kept per room by default.
pub const DEFAULT_HISTORY: usize = 100;

/// One room's last lines.
#[derive(Debug, Default)]
struct Window {
    /// The offset of the newest line no longer held (or before the first one
    /// held): recovery from an offset older than this has lost lines.
    floor: Offset,
    lines: VecDeque<(Offset, String)>,
}

/// The last lines of every room, up to a length.
#[derive(Debug)]
pub(crate) struct History {
    len: usize,
    rooms: HashMap<String, Window>,
}

impl History {
    pub(crate) fn new(len: usize) -> Self {
        Self { len, rooms: HashMap::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
        for window in self.rooms.values_mut() {
            while window.lines.len() > len {
                if let Some((offset, _)) = window.lines.pop_front() {
                    window.floor = offset;
                }
            }
        }
    }

    /// Keeps `line`, shown at `offset` (after every line kept for the room).
    pub(crate) fn record(&mut self, room: &str, offset: Offset, line: &str) {
        if self.len == 0 {
            return;
        }
        let window = self.rooms.entry(room.to_owned()).or_default();
        if window.lines.len() == self.len
            && let Some((oldest, _)) = window.lines.pop_front()
        {
            window.floor = oldest;
        }
        window.lines.push_back((offset, line.to_owned()));
    }

    /// Says that the lines up to `offset` are not held (a node that loaded its
    /// window from a log that goes further back).
    pub(crate) fn set_floor(&mut self, room: &str, offset: Offset) {
        self.rooms.entry(room.to_owned()).or_default().floor = offset;
    }

    /// Forgets a room's lines (this node stopped reading it).
    pub(crate) fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Forgets everything (the log was lost: its offsets mean nothing now).
    pub(crate) fn clear(&mut self) {
        self.rooms.clear();
    }

    /// The lines after `since`, or, if some of them are no longer held, how many
    /// at least were lost (exactly, when offsets count lines one by one as a
    /// lone node's do; else at least one).
    pub(crate) fn since(&self, room: &str, since: Offset) -> Result<Vec<&(Offset, String)>, u64> {
        let Some(window) = self.rooms.get(room) else {
            return if since == Offset::default() { Ok(Vec::new()) } else { Err(1) };
        };
        if since < window.floor {
            let exact = since.0 == 0 && window.floor.0 == 0;
            return Err(if exact { window.floor.1 - since.1 } else { 1 });
        }
        Ok(window.lines.iter().filter(|(offset, _)| *offset > since).collect())
    }

    /// The last `n` lines of a room.
    pub(crate) fn last(&self, room: &str, n: usize) -> Vec<&(Offset, String)> {
        let Some(window) = self.rooms.get(room) else { return Vec::new() };
        window.lines.iter().skip(window.lines.len().saturating_sub(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_keep_the_last_lines_and_know_what_they_lost() {
        let mut history = History::new(3);
        for n in 1..=5 {
            history.record("", Offset(0, n), &format!("line {n}"));
        }
        let texts = |lines: Vec<&(Offset, String)>| lines.into_iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();
        assert_eq!(texts(history.last("", 2)), ["line 4", "line 5"]);
        assert_eq!(texts(history.since("", Offset(0, 2)).unwrap()), ["line 3", "line 4", "line 5"]);
        assert_eq!(texts(history.since("", Offset(0, 5)).unwrap()), Vec::<String>::new());
        assert_eq!(history.since("", Offset(0, 1)), Err(1), "line 2 was lost");
        assert_eq!(history.since("", Offset(0, 0)), Err(2));
        history.set_floor("r", Offset(7, 2));
        assert_eq!(history.since("r", Offset(7, 1)), Err(1), "at least one, offsets not consecutive");
        assert_eq!(history.since("unknown", Offset(0, 0)), Ok(Vec::new()));
        history.clear();
        assert_eq!(history.since("", Offset(0, 5)), Err(1));
    }
}
