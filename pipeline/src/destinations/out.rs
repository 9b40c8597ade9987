//! The tree a payload template evaluates to, and what a template sees. Shared by the
//! template engine and the named transforms, which both build and read it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

/// What a template evaluates to.
#[derive(Debug, Clone)]
pub enum Out<'a> {
    Borrowed(&'a Value),
    Map(&'a Map<String, Value>),
    Owned(Value),
    Object(BTreeMap<Cow<'a, str>, Out<'a>>),
    Array(Vec<Out<'a>>),
    /// The batch's payloads in an envelope, spliced in after serialising.
    Events,
}

/// What serialising [`Out::Events`] writes, to be replaced by the payloads.
pub const EVENTS_MARK: &str = "@@sluice.events@@";

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Borrowed(v) => v.serialize(s),
            Out::Map(m) => m.serialize(s),
            Out::Owned(v) => v.serialize(s),
            Out::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Out::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Out::Events => s.serialize_str(EVENTS_MARK),
        }
    }
}

impl<'a> Out<'a> {
    /// The value, when it is a plain one.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Out::Borrowed(v) => Some(v),
            Out::Owned(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.value().and_then(Value::as_str)
    }

    /// A field of the payload by dot-separated path.
    pub fn get(&self, path: &str) -> Option<Out<'_>> {
        let mut here: Out<'_> = self.reborrow();
        for segment in path.split('.') {
            here = match here {
                Out::Object(fields) => fields.get(segment)?.clone(),
                Out::Map(map) => Out::Borrowed(map.get(segment)?),
                Out::Borrowed(Value::Object(map)) => Out::Borrowed(map.get(segment)?),
                Out::Array(items) => items.get(segment.parse::<usize>().ok()?)?.clone(),
                _ => return None,
            };
        }
        Some(here).filter(|out| !out.is_nothing())
    }

    fn reborrow(&self) -> Out<'_> {
        match self {
            Out::Borrowed(v) => Out::Borrowed(v),
            Out::Map(m) => Out::Map(m),
            Out::Owned(v) => Out::Borrowed(v),
            Out::Object(fields) => Out::Object(
                fields
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_ref()), v.reborrow()))
                    .collect(),
            ),
            Out::Array(items) => Out::Array(items.iter().map(Out::reborrow).collect()),
            Out::Events => Out::Events,
        }
    }

    /// Null or an empty string: what a path lookup treats as absent.
    pub(super) fn is_nothing(&self) -> bool {
        matches!(self.value(), Some(Value::Null))
            || self.value().and_then(Value::as_str) == Some("")
    }

    pub(super) fn into_value(self) -> Value {
        match self {
            Out::Borrowed(v) => v.clone(),
            Out::Map(m) => Value::Object(m.clone()),
            Out::Owned(v) => v,
            other => serde_json::to_value(&other).unwrap_or(Value::Null),
        }
    }
}

/// What a template sees.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub event: &'a Map<String, Value>,
    pub output: Option<&'a Map<String, Value>>,
    pub settings: &'a Map<String, Value>,
    pub name: Option<&'a str>,
    pub item: Option<&'a Value>,
}

/// The value of an [`Out`] as a `Value`, for the named transforms that rewrite one.
pub fn owned(out: Out<'_>) -> Value {
    out.into_value()
}
