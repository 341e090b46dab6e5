//! JSON values built from fuzz input, for the targets whose inputs are JSON: most
//! random bytes are not JSON, so a parser's interesting paths need values that are.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// Strings worth trying as keys and values: the keys the gateway's messages and
/// envelopes know, and strings that look alike or break naive encodings.
pub const WORDS: &[&str] = &[
    "type",
    "payload",
    "username",
    "namespace",
    "reply_to",
    "reply",
    "fail",
    "node",
    "connection",
    "reply_type",
    "on_connect",
    "event",
    "message",
    "",
    " ",
    "\"",
    "\\",
    "[\"user\",\"a\"]",
    "chinwag:reply:",
    "ns",
    "a",
    "A",
    "é",
    "\u{0}",
];

/// A string: one of [`WORDS`] or arbitrary.
pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(2, 3)? { Ok((*u.choose(WORDS)?).to_owned()) } else { u.arbitrary() }
}

/// A number that survives a round trip through JSON text exactly: integers, and
/// floats that are small multiples of 1/8 (serde_json's float parsing may be off by
/// one unit in the last place for others, which is not what these targets test).
pub fn number(u: &mut Unstructured<'_>) -> Result<Number> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Number::from(u.arbitrary::<i64>()?),
        1 => Number::from(u.arbitrary::<u64>()?),
        _ => Number::from_f64(f64::from(u.arbitrary::<i16>()?) / 8.0).expect("finite"),
    })
}

/// Any JSON value, nested at most `depth` levels.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(number(u)?),
        3 => Value::String(string(u)?),
        4 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array((0..len).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// A JSON object, its values nested at most `depth` levels.
pub fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0..=5)?;
    let mut map = Map::new();
    for _ in 0..len {
        map.insert(string(u)?, value(u, depth)?);
    }
    Ok(map)
}

/// Text that is JSON, JSON damaged by a cut or an inserted byte, or arbitrary.
pub fn text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => value(u, 3)?.to_string(),
        2 => {
            let mut text = value(u, 3)?.to_string();
            let at = u.int_in_range(0..=text.len())?;
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            if u.arbitrary()? {
                text.truncate(at);
            } else {
                text.insert(at, u.arbitrary()?);
            }
            text
        }
        _ => u.arbitrary()?,
    })
}
