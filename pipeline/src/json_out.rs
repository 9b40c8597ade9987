//! Compact JSON output of `serde_json` values, byte for byte what `serde_json::to_vec` writes,
//! for the processor's hot path. Nearly every string in an event needs no escaping: checking
//! that eight bytes at a time and copying the string whole replaces `serde_json`'s
//! byte-by-byte escape loop (writing outputs went from about 11% of the processor's profile
//! to 9%; BENCHMARKS.md).

use serde_json::{Map, Value};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes is a control character, `"` or `\`.
fn needs_escape(chunk: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    // Bytes below 0x20: the same trick with 0x20 subtracted from every lane.
    let control = chunk.wrapping_sub(ONES * 0x20) & !chunk & HIGHS;
    (control
        | has_zero(chunk ^ (ONES * u64::from(b'"')))
        | has_zero(chunk ^ (ONES * u64::from(b'\\'))))
        != 0
}

/// Whether a JSON string of `text` is the text between two quotes.
fn plain(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut lanes = [0u8; 8];
        lanes.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(lanes)) {
            return false;
        }
    }
    // The tail (most keys are all tail) as one more chunk, padded with a byte that needs no
    // escaping: one test instead of a loop.
    let rest = chunks.remainder();
    let mut lanes = [b'a'; 8];
    lanes[..rest.len()].copy_from_slice(rest);
    !needs_escape(u64::from_le_bytes(lanes))
}

pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if plain(text) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

pub fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// A JSON object written field by field, straight from borrowed parts: shaping a payload
/// this way copies nothing into an intermediate `Value` (a deep copy of `properties` for
/// Meta's `custom_data` was most of its cost).
pub struct Object<'o> {
    out: &'o mut Vec<u8>,
    empty: bool,
}

impl<'o> Object<'o> {
    pub fn start(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Writes the key; the caller writes its value into the returned buffer.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) {
        write_str(self.key(key), value);
    }

    pub fn value(&mut self, key: &str, value: &Value) {
        write_value(self.key(key), value);
    }

    pub fn i64(&mut self, key: &str, n: i64) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(self.key(key), &n);
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn to_vec(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn output_is_what_serde_json_writes() {
        let value = json!({
            "plain": "hello world, a string longer than eight bytes",
            "quote": "say \"hi\"", "slash": "a\\b", "newline": "a\nb", "tab": "\t",
            "control": "\u{1}\u{1f}", "unicode": "Zürich — 東京 😀", "del": "\u{7f}",
            "edge": "1234567\"", "short": "ab", "empty": "",
            "numbers": [0, -1, 1.5, 1e300, u64::MAX, i64::MIN],
            "nested": {"a": [null, true, false, {"b": []}], "c": {}},
        });
        assert_eq!(
            to_vec(&value),
            serde_json::to_vec(&value).expect("serialises")
        );
        // Every byte value in every position of a chunk.
        for b in 0u8..128 {
            for at in 0..9 {
                let mut text = "x".repeat(9);
                text.replace_range(at..=at, &char::from(b).to_string());
                let value = Value::String(text);
                assert_eq!(
                    to_vec(&value),
                    serde_json::to_vec(&value).expect("serialises"),
                    "byte {b} at {at}"
                );
            }
        }
    }
}
