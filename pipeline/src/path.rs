//! Dot-separated field paths (`properties.order.total`) into an event object.

use serde_json::{Map, Value};

/// Splits at the first `.`. A byte search: paths are short, and `split_once` with a char
/// pattern (a `memchr` set-up per call) showed in the processor's profile.
fn split_first(path: &str) -> Option<(&str, &str)> {
    let at = path.bytes().position(|b| b == b'.')?;
    // A `.` is one byte of ASCII, so both sides are on character boundaries.
    Some((&path[..at], &path[at + 1..]))
}

pub fn get<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let Some((first, mut rest)) = split_first(path) else {
        return root.get(path);
    };
    let mut current = root.get(first)?;
    loop {
        let object = current.as_object()?;
        match split_first(rest) {
            Some((part, after)) => {
                current = object.get(part)?;
                rest = after;
            }
            None => return object.get(rest),
        }
    }
}

pub fn get_mut<'a>(root: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let Some((first, mut rest)) = split_first(path) else {
        return root.get_mut(path);
    };
    let mut current = root.get_mut(first)?;
    loop {
        let object = current.as_object_mut()?;
        match split_first(rest) {
            Some((part, after)) => {
                current = object.get_mut(part)?;
                rest = after;
            }
            None => return object.get_mut(rest),
        }
    }
}

pub fn remove(root: &mut Map<String, Value>, path: &str) -> Option<Value> {
    match path.bytes().rposition(|b| b == b'.') {
        None => root.remove(path),
        Some(at) => get_mut(root, &path[..at])?
            .as_object_mut()?
            .remove(&path[at + 1..]),
    }
}

/// Sets a value, creating objects on the way; false when something on the way is not an
/// object (the value is then left alone).
pub fn set(root: &mut Map<String, Value>, path: &str, value: Value) -> bool {
    let mut current = root;
    let mut rest = path;
    while let Some((part, after)) = split_first(rest) {
        let next = current
            .entry(part)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = next else {
            return false;
        };
        current = next;
        rest = after;
    }
    current.insert(rest.to_owned(), value);
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> Map<String, Value> {
        let Value::Object(map) =
            json!({"event": "x", "properties": {"order": {"total": 5}, "list": [1]}})
        else {
            unreachable!()
        };
        map
    }

    #[test]
    fn paths_reach_nested_fields_and_stop_at_non_objects() {
        let mut e = event();
        assert_eq!(get(&e, "properties.order.total"), Some(&json!(5)));
        assert_eq!(get(&e, "event"), Some(&json!("x")));
        assert_eq!(get(&e, "properties.list.0"), None);
        assert_eq!(get(&e, "properties.missing.x"), None);
        assert!(set(&mut e, "traits.address.city", json!("Oslo")));
        assert_eq!(e["traits"]["address"]["city"], "Oslo");
        assert!(!set(&mut e, "event.sub", json!(1)), "event is a string");
        assert_eq!(remove(&mut e, "properties.order.total"), Some(json!(5)));
        assert_eq!(remove(&mut e, "properties.order.total"), None);
        assert_eq!(remove(&mut e, "event"), Some(json!("x")));
    }
}
