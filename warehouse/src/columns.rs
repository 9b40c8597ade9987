//! How an event becomes a row: fixed columns for the envelope, a typed column per scalar
//! property (added as properties appear), JSON for the rest.

use serde_json::{Map, Value};

/// The type of a property column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Double,
    Boolean,
}

impl ColumnType {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Double => "double precision",
            Self::Boolean => "boolean",
        }
    }

    /// From `information_schema.columns.data_type`.
    pub fn from_sql(data_type: &str) -> Option<Self> {
        match data_type {
            "text" | "character varying" => Some(Self::Text),
            "double precision" | "real" | "numeric" | "bigint" | "integer" => Some(Self::Double),
            "boolean" => Some(Self::Boolean),
            _ => None,
        }
    }

    /// The type a JSON value gets its column created with; `None` for what goes to JSON.
    pub fn of(value: &Value) -> Option<Self> {
        match value {
            Value::String(_) => Some(Self::Text),
            Value::Number(_) => Some(Self::Double),
            Value::Bool(_) => Some(Self::Boolean),
            _ => None,
        }
    }
}

/// A column of the events table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
}

/// The envelope's columns, in table order: name, event path, type (`timestamptz` for times,
/// `jsonb` for objects).
pub const FIXED: &[(&str, &str, &str)] = &[
    ("id", "", "text PRIMARY KEY"),
    ("type", "type", "text"),
    ("event", "event", "text"),
    ("user_id", "user_id", "text"),
    ("anonymous_id", "anonymous_id", "text"),
    ("source", "source", "text"),
    ("timestamp", "timestamp", "timestamptz"),
    ("received_at", "received_at", "timestamptz"),
    ("context", "context", "jsonb"),
    ("traits", "traits", "jsonb"),
    // Properties without a typed column: nested values, and values whose type differs from
    // their column's.
    ("properties", "", "jsonb"),
];

/// A property's column name: lowercase letters, digits and `_`, at most 63 bytes, never
/// one of the envelope's.
pub fn column_name(property: &str) -> Option<String> {
    let mut name = String::with_capacity(property.len());
    for c in property.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    let mut name = name.trim_matches('_').to_owned();
    if name.is_empty() {
        return None;
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) || FIXED.iter().any(|(n, _, _)| *n == name) {
        name = format!("p_{name}");
    }
    name.truncate(63);
    Some(name)
}

/// A row's properties: the scalar ones (key, column, value), and what is left for the JSON
/// column.
/// The columns and values of a row's scalar properties, without copying anything (the
/// migration and the column list need no more).
pub fn scalar_columns(event: &Map<String, Value>) -> impl Iterator<Item = (String, &Value)> {
    event
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, value)| ColumnType::of(value).is_some())
        .filter_map(|(key, value)| Some((column_name(key)?, value)))
}

/// A scalar property: its key, its column, its value.
pub type Typed<'a> = (&'a str, String, &'a Value);

pub fn split_properties(event: &Map<String, Value>) -> (Vec<Typed<'_>>, Map<String, Value>) {
    let mut typed = Vec::new();
    let mut rest = Map::new();
    if let Some(Value::Object(properties)) = event.get("properties") {
        for (key, value) in properties {
            match (ColumnType::of(value), column_name(key)) {
                (Some(_), Some(column)) => typed.push((key.as_str(), column, value)),
                _ => {
                    rest.insert(key.clone(), value.clone());
                }
            }
        }
    }
    (typed, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_become_safe_column_names() {
        assert_eq!(column_name("Order Total").as_deref(), Some("order_total"));
        assert_eq!(column_name("type").as_deref(), Some("p_type"));
        assert_eq!(column_name("3d").as_deref(), Some("p_3d"));
        assert_eq!(
            column_name("\"; DROP TABLE x; --").as_deref(),
            Some("drop_table_x")
        );
        assert_eq!(column_name("---"), None);
        assert_eq!(column_name(&"x".repeat(100)).map(|n| n.len()), Some(63));
    }
}
