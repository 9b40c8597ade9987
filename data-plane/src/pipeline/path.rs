//! Dot-separated field paths (`properties.order.total`) into an event object.

use serde_json::{Map, Value};

pub fn get<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let Some((first, mut rest)) = path.split_once('.') else {
        return root.get(path);
    };
    let mut current = root.get(first)?;
    loop {
        let object = current.as_object()?;
        match rest.split_once('.') {
            Some((part, after)) => {
                current = object.get(part)?;
                rest = after;
            }
            None => return object.get(rest),
        }
    }
}

pub fn get_mut<'a>(root: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let mut current = root.get_mut(parts.next()?)?;
    for part in parts {
        current = current.as_object_mut()?.get_mut(part)?;
    }
    Some(current)
}

pub fn remove(root: &mut Map<String, Value>, path: &str) -> Option<Value> {
    match path.rsplit_once('.') {
        None => root.remove(path),
        Some((parent, last)) => get_mut(root, parent)?.as_object_mut()?.remove(last),
    }
}

/// Sets a value, creating objects on the way; false when something on the way is not an
/// object (the value is then left alone).
pub fn set(root: &mut Map<String, Value>, path: &str, value: Value) -> bool {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut current = root;
    for part in parts {
        let next = current
            .entry(part)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = next else {
            return false;
        };
        current = next;
    }
    current.insert(last.to_owned(), value);
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
