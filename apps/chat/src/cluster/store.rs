//! What the chat keeps in Redis, and the scripts that change it atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `chinwag:chat:log` | stream | the main chat's log (entries as `Entry::fields`) |
//! | `chinwag:chat:log:{room}` | stream | a room's log |
//! | `chinwag:chat:names` | hash | name → `"{node} {conn} {age or -}"`; conn 0 while the handshake is pending |
//! | `chinwag:chat:nodes` | sorted set | live nodes, scored by when they expire (Redis time, ms) |
//! | `chinwag:chat:reaped:{node}` | string | set when a node was declared dead (1 h) |
//! | `chinwag:chat:epoch` | string | random; a new one means Redis lost its data |
//! | `chinwag:chat:wake:{node}` | stream | one entry, written to interrupt the node's blocking read |
//!
//! Every change that must be all-or-nothing is one Lua script: a name's holder
//! and the entry that says so, a dead node's departures and the freeing of its
//! names. Redis runs a script alone, so two nodes racing for a name, or to reap
//! the same dead node, cannot both win.

use chinwag_core::chat::{Entry, Offset};
use redis::Value;

/// The main chat's log.
pub(crate) const MAIN_LOG: &str = "chinwag:chat:log";
/// The names in the chat, with their holders.
pub(crate) const NAMES: &str = "chinwag:chat:names";
/// Live nodes and when they expire.
pub(crate) const NODES: &str = "chinwag:chat:nodes";
/// The epoch: replaced when Redis lost its data.
pub(crate) const EPOCH: &str = "chinwag:chat:epoch";
/// The prefix of the reaped markers.
pub(crate) const REAPED: &str = "chinwag:chat:reaped:";

/// Entries a log keeps (approximately, `MAXLEN ~`): far more than any node falls
/// behind by while it is connected, so that a node that reconnects finds every
/// entry it missed.
pub(crate) const LOG_LENGTH: usize = 10_000;

/// The log key of `room` (the main chat is the empty name).
pub(crate) fn log_key(room: &str) -> String {
    if room.is_empty() { MAIN_LOG.to_owned() } else { format!("{MAIN_LOG}:{room}") }
}

/// The room of a log key.
pub(crate) fn room_of(key: &str) -> Option<&str> {
    if key == MAIN_LOG { Some("") } else { key.strip_prefix(MAIN_LOG)?.strip_prefix(':') }
}

/// The stream that wakes `node`'s reader.
pub(crate) fn wake_key(node: &str) -> String {
    format!("chinwag:chat:wake:{node}")
}

/// A name's holder as stored: a node, a connection (0 while its handshake is
/// pending), an age.
pub(crate) fn holder(node: &str, conn: u64, age: Option<u8>) -> String {
    match age {
        Some(age) => format!("{node} {conn} {age}"),
        None => format!("{node} {conn} -"),
    }
}

/// The prefix of the holder values of `node`'s connection `conn`.
pub(crate) fn holder_prefix(node: &str, conn: u64) -> String {
    format!("{node} {conn} ")
}

/// Reads a holder value: (node, conn, age).
pub(crate) fn parse_holder(value: &str) -> Option<(&str, u64, Option<u8>)> {
    let mut parts = value.split(' ');
    let node = parts.next()?;
    let conn = parts.next()?.parse().ok()?;
    let age = parts.next()?.parse().ok();
    Some((node, conn, age))
}

/// Reserves a name for a handshake: KEYS names; ARGV name, holder (conn 0),
/// how old in ms a pending reservation must be to count as abandoned. The
/// reservation carries its time: one whose answer never reached its node (the
/// wait timed out mid-call) would otherwise hold the name until that node
/// died. 1 if reserved, 0 if taken.
pub(crate) const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local conn, at = string.match(v, '^%S+ (%d+) %S+ (%d+)$')
  if conn ~= '0' or not at or now - tonumber(at) < tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
return 1
";

/// How old a pending reservation must be to be taken over: well past any
/// handshake's timeout.
pub(crate) const ABANDONED_AFTER_MS: u64 = 60_000;

/// Frees a name if its holder starts with a prefix: KEYS names; ARGV name,
/// prefix.
pub(crate) const RELEASE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) return 1 end
return 0
";

/// Appends an entry and updates its member's name with it: KEYS log, names;
/// ARGV op (`set`, `del` or `-`), name, holder (or its prefix for `del`),
/// maxlen, then the entry's fields. Returns the entry's id.
pub(crate) const APPEND: &str = r"
if ARGV[1] == 'set' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
elseif ARGV[1] == 'del' then
  local v = redis.call('HGET', KEYS[2], ARGV[2])
  if v and string.sub(v, 1, #ARGV[3]) == ARGV[3] then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
";

/// A node's heartbeat: KEYS nodes, epoch, the node's reaped marker; ARGV node,
/// ttl in ms, an epoch to set if there is none. Returns the epoch and whether
/// the node was reaped.
pub(crate) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[3])
  epoch = ARGV[3]
end
local reaped = redis.call('EXISTS', KEYS[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {epoch, reaped}
";

/// Reaps every node whose heartbeat expired: frees its names, appends a
/// departure for each of its members, marks it reaped. KEYS nodes, names, main
/// log; ARGV maxlen, reaped prefix. Returns the reaped nodes.
pub(crate) const REAP_EXPIRED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, node in ipairs(dead) do
  redis.call('ZREM', KEYS[1], node)
  redis.call('SET', ARGV[2] .. node, '1', 'EX', 3600)
  local cursor = '0'
  repeat
    local r = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', 1000)
    cursor = r[1]
    local kv = r[2]
    for i = 1, #kv, 2 do
      local name, v = kv[i], kv[i + 1]
      local n, conn = string.match(v, '^(%S+) (%d+) ')
      if n == node then
        redis.call('HDEL', KEYS[2], name)
        if conn ~= '0' then
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*',
            'node', node, 'conn', conn, 'seq', '0', 'k', 'left', 'name', name)
        end
      end
    end
  until cursor == '0'
end
return dead
";

/// Reaps a node that some replica still lists but that is not registered (Redis
/// lost its data while the node was gone): once, unless it is alive. KEYS nodes,
/// names, main log, its reaped marker; ARGV node, maxlen, then conn and name of
/// each member. 1 if this call reaped it.
pub(crate) const REAP_LISTED: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', 3600) then return 0 end
for i = 3, #ARGV, 2 do
  local conn, name = ARGV[i], ARGV[i + 1]
  local prefix = ARGV[1] .. ' ' .. conn .. ' '
  local v = redis.call('HGET', KEYS[2], name)
  if v and string.sub(v, 1, #prefix) == prefix then redis.call('HDEL', KEYS[2], name) end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*',
    'node', ARGV[1], 'conn', conn, 'seq', '0', 'k', 'left', 'name', name)
end
return 1
";

/// A bulk string or status as text.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The items of an array (or of a map, flattened), RESP2 or RESP3.
fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items.iter().collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// A stream id as an offset.
pub(crate) fn offset(id: &str) -> Option<Offset> {
    id.parse().ok()
}

/// One entry read from a log, or why it could not be read.
pub(crate) type ReadEntry = (String, Offset, Result<Entry, String>);

/// The entries of an `XREAD` reply, per stream key, in order: (key, offset,
/// entry). An entry that cannot be read is returned as an error (to skip and
/// log: one bad entry must not stop a log).
pub(crate) fn xread_reply(reply: &Value) -> Vec<ReadEntry> {
    let mut out = Vec::new();
    match reply {
        // RESP3: a map of key to entries.
        Value::Map(streams) => {
            for (key, entries) in streams {
                push_stream(&mut out, key, entries);
            }
        }
        // RESP2: an array of [key, entries] arrays.
        Value::Array(streams) => {
            for stream in streams {
                if let [key, entries] = items(stream)[..] {
                    push_stream(&mut out, key, entries);
                }
            }
        }
        _ => {}
    }
    out
}

fn push_stream(out: &mut Vec<ReadEntry>, key: &Value, entries: &Value) {
    let Some(key) = text(key) else { return };
    for entry in items(entries) {
        let [id, fields] = items(entry)[..] else { continue };
        let (Some(id), fields) = (text(id), items(fields)) else { continue };
        let Some(at) = offset(&id) else { continue };
        let mut pairs = Vec::with_capacity(fields.len() / 2);
        for kv in fields.chunks(2) {
            if let [Value::BulkString(k), Value::BulkString(v)] = kv {
                pairs.push((k.as_slice(), v.as_slice()));
            }
        }
        let parsed = pairs
            .iter()
            .map(|(k, v)| std::str::from_utf8(k).map(|k| (k, *v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "a field name is not UTF-8".to_owned())
            .and_then(|pairs| Entry::from_fields(pairs).map_err(|e| e.to_string()));
        out.push((key.clone(), at, parsed));
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` reply, in the reply's order.
pub(crate) fn xrevrange_reply(reply: &Value) -> Vec<(Offset, Result<Entry, String>)> {
    let mut out = Vec::new();
    push_stream(&mut out, &Value::BulkString(b"-".to_vec()), reply);
    out.into_iter().map(|(_, offset, entry)| (offset, entry)).collect()
}

/// The id just before `offset`: reading after it starts at `offset`.
pub(crate) fn before(offset: Offset) -> Offset {
    match offset {
        Offset(ms, 0) => Offset(ms.saturating_sub(1), u64::MAX),
        Offset(ms, seq) => Offset(ms, seq - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chinwag_core::chat::{MemberId, Record};

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn keys_and_holders_round_trip() {
        assert_eq!(log_key(""), "chinwag:chat:log");
        assert_eq!(log_key("ops"), "chinwag:chat:log:ops");
        assert_eq!(room_of(&log_key("ops")), Some("ops"));
        assert_eq!(room_of(&log_key("")), Some(""));
        assert_eq!(room_of("chinwag:chat:wake:n"), None);
        assert_eq!(parse_holder(&holder("n1", 7, Some(30))), Some(("n1", 7, Some(30))));
        assert_eq!(parse_holder(&holder("n1", 0, None)), Some(("n1", 0, None)));
        assert!(holder("n1", 12, None).starts_with(&holder_prefix("n1", 12)));
        assert!(!holder("n1", 12, None).starts_with(&holder_prefix("n1", 1)));
        assert_eq!(before(Offset(5, 0)), Offset(4, u64::MAX));
        assert_eq!(before(Offset(5, 3)), Offset(5, 2));
    }

    #[test]
    fn xread_replies_in_both_protocols() {
        let entry = Entry {
            member: MemberId { node: "n1".into(), conn: 3 },
            seq: 9,
            record: Record::Said { name: "ann".into(), text: "hi".into() },
        };
        let fields: Vec<Value> = entry.fields().into_iter().flat_map(|(k, v)| [bulk(k), bulk(&v)]).collect();
        let one = Value::Array(vec![bulk("1-2"), Value::Array(fields)]);
        let bad = Value::Array(vec![bulk("1-3"), Value::Array(vec![bulk("k"), bulk("nonsense")])]);
        let entries = Value::Array(vec![one, bad]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(MAIN_LOG), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk(MAIN_LOG), entries)]);
        for reply in [resp2, resp3] {
            let read = xread_reply(&reply);
            assert_eq!(read.len(), 2);
            assert_eq!((read[0].0.as_str(), read[0].1), (MAIN_LOG, Offset(1, 2)));
            assert_eq!(read[0].2, Ok(entry.clone()));
            assert!(read[1].2.is_err());
        }
        assert!(xread_reply(&Value::Nil).is_empty());
    }
}
