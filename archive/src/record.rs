//! The archive's one table schema. Envelope fields are typed columns; `properties`, `traits`
//! and `context` are JSON text (their shape differs per event, and every Parquet reader can
//! parse JSON text); whatever else governance left on the event goes to `extra`.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::ArchiveError;

/// String columns taken from the envelope's field of the same name (`message_id` is
/// `event_id`), in schema order; `true` when the column is never null.
const TEXT: [(&str, &str, bool); 10] = [
    ("event_id", "message_id", true),
    ("type", "type", true),
    ("event", "event", false),
    ("name", "name", false),
    ("user_id", "user_id", false),
    ("anonymous_id", "anonymous_id", false),
    ("group_id", "group_id", false),
    ("previous_id", "previous_id", false),
    ("source", "source", true),
    ("pipeline_id", "pipeline_id", true),
];

/// Timestamp columns (UTC, milliseconds) from RFC 3339 envelope fields.
const TIMES: [(&str, bool); 3] = [
    ("timestamp", false),
    ("sent_at", false),
    ("received_at", true),
];

/// JSON text columns (an empty object when the event has none).
const JSON: [&str; 3] = ["properties", "traits", "context"];

/// Envelope fields that have their own column (or are the tenant, which is the path), in the
/// order of `TEXT`, `TIMES` and `JSON`: a column's field is found by its position, not by name.
const KNOWN: [&str; 17] = [
    "message_id",
    "type",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "source",
    "pipeline_id",
    "timestamp",
    "sent_at",
    "received_at",
    "properties",
    "traits",
    "context",
    "tenant_id",
];
// A column's position in the schema is its field's position in `KNOWN`.
const FIRST_TIME: usize = TEXT.len();
const FIRST_JSON: usize = FIRST_TIME + TIMES.len();
const EVENT: usize = 2;
const RECEIVED_AT: usize = FIRST_TIME + 2;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields: Vec<Field> = TEXT
        .iter()
        .map(|(column, _, required)| Field::new(*column, DataType::Utf8, !required))
        .collect();
    fields.extend(
        TIMES
            .iter()
            .map(|(column, required)| Field::new(*column, time.clone(), !required)),
    );
    fields.extend(JSON.iter().map(|c| Field::new(*c, DataType::Utf8, false)));
    fields.push(Field::new("extra", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

/// The schema of every archived file (partition columns `dataset`, `dt`, `hour` are in the
/// path, not the file).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_time(text: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// One governed event, its fields borrowed from its JSON text. The archiver never builds a map
/// of an event: the JSON columns are the text as the processor wrote it.
pub struct Envelope<'a> {
    known: [Option<&'a RawValue>; KNOWN.len()],
    extra: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Envelope<'a> {
    /// Reads an event object; anything else is an error.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The event id (`message_id`), when the event has one.
    pub fn event_id(&self) -> Option<Cow<'a, str>> {
        self.text(0)
    }

    /// The receipt time, when the event has a valid one.
    pub fn received_at(&self) -> Option<i64> {
        self.text(RECEIVED_AT).and_then(|t| parse_time(&t))
    }

    /// A known field's value when it is a JSON string.
    fn text(&self, index: usize) -> Option<Cow<'a, str>> {
        let raw = self.known[index]?;
        serde_json::from_str::<Text<'a>>(raw.get())
            .ok()
            .map(|Text(t)| t)
    }

    /// `extra` as one JSON object, or `None` when there is nothing else.
    fn extra_json(&self) -> Option<String> {
        if self.extra.is_empty() {
            return None;
        }
        let mut out = String::from("{");
        for (i, (key, value)) in self.extra.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // A key as JSON text cannot fail to serialise.
            out.push_str(&serde_json::to_string(key.as_ref()).unwrap_or_default());
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        Some(out)
    }
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Envelope<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut envelope = Envelope {
                    known: [None; KNOWN.len()],
                    extra: Vec::new(),
                };
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    match KNOWN.iter().position(|k| *k == key) {
                        Some(i) => envelope.known[i] = Some(value),
                        None => envelope.extra.push((key, value)),
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A JSON string, borrowed from the input unless it has escapes.
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Rows being gathered for one file.
pub struct BatchBuilder {
    text: Vec<StringBuilder>,
    times: Vec<TimestampMillisecondBuilder>,
    json: Vec<StringBuilder>,
    extra: StringBuilder,
    rows: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            text: TEXT.iter().map(|_| StringBuilder::new()).collect(),
            times: TIMES
                .iter()
                .map(|_| TimestampMillisecondBuilder::new().with_timezone("UTC"))
                .collect(),
            json: JSON.iter().map(|_| StringBuilder::new()).collect(),
            extra: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl BatchBuilder {
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one governed event; `received_at_ms` is its (already parsed) receipt time.
    pub fn push(&mut self, event: &Envelope<'_>, received_at_ms: i64) {
        for (i, ((_, _, required), builder)) in TEXT.iter().zip(&mut self.text).enumerate() {
            match event.known[i] {
                Some(raw) if raw.get().starts_with('"') => match event.text(i) {
                    Some(text) => builder.append_value(text),
                    None => builder.append_value(raw.get()),
                },
                Some(raw) if raw.get() != "null" => builder.append_value(raw.get()),
                _ if !required => builder.append_null(),
                _ => builder.append_value(""),
            }
        }
        for (i, builder) in self.times.iter_mut().enumerate() {
            let index = FIRST_TIME + i;
            let at = if index == RECEIVED_AT {
                Some(received_at_ms)
            } else {
                event.text(index).and_then(|t| parse_time(&t))
            };
            builder.append_option(at);
        }
        for (i, builder) in self.json.iter_mut().enumerate() {
            match event.known[FIRST_JSON + i] {
                Some(raw) if raw.get().starts_with('{') => builder.append_value(raw.get()),
                _ => builder.append_value("{}"),
            }
        }
        self.extra.append_option(event.extra_json());
        self.rows += 1;
    }

    /// The gathered rows, sorted by event and then receipt time; the builder is empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, ArchiveError> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        columns.extend(
            self.text
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            self.times
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            self.json
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.extra.finish()));
        self.rows = 0;
        sorted(&RecordBatch::try_new(schema(), columns)?)
    }
}

/// `batch` (of the archive's schema) sorted by event and then receipt time, as every archive
/// file is.
pub fn sorted(batch: &RecordBatch) -> Result<RecordBatch, ArchiveError> {
    // Rows of one event lie together, so each page's statistics name one or two events and
    // a query on an event decodes only its own pages of every other column.
    let order = lexsort_to_indices(
        &[
            SortColumn {
                values: batch.column(EVENT).clone(),
                options: None,
            },
            SortColumn {
                values: batch.column(RECEIVED_AT).clone(),
                options: None,
            },
        ],
        None,
    )?;
    Ok(take_record_batch(batch, &order)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, StringArray};
    use arrow::datatypes::TimestampMillisecondType;

    fn batch_of(events: &[serde_json::Value]) -> RecordBatch {
        let mut builder = BatchBuilder::default();
        for event in events {
            let text = event.to_string();
            let envelope = Envelope::parse(&text).expect("an event");
            let received = envelope.received_at().expect("received_at");
            builder.push(&envelope, received);
        }
        builder.finish().expect("batch")
    }

    fn text(batch: &RecordBatch, name: &str) -> StringArray {
        batch
            .column_by_name(name)
            .expect(name)
            .as_string::<i32>()
            .clone()
    }

    #[test]
    fn fields_are_found_by_position() {
        let schema = schema();
        for (i, field) in KNOWN.iter().take(FIRST_JSON + JSON.len()).enumerate() {
            let column = schema.field(i).name();
            let expected = if *field == "message_id" {
                "event_id"
            } else {
                field
            };
            assert_eq!(column, expected, "column {i}");
        }
        assert_eq!(KNOWN[EVENT], "event");
        assert_eq!(KNOWN[RECEIVED_AT], "received_at");
    }

    #[test]
    fn envelope_fields_become_typed_columns() {
        let batch = batch_of(&[serde_json::json!({
            "message_id": "m-1", "tenant_id": "t", "pipeline_id": "p", "source": "web",
            "type": "track", "event": "Order Completed", "user_id": "u-1",
            "timestamp": "2026-11-22T09:00:00.250+01:00", "received_at": "2026-11-22T08:00:01.000Z",
            "properties": {"revenue": 42.5}, "context": {"ip": "203.0.113.0"},
            "session_id": "s-1"
        })]);
        let received = parse_time("2026-11-22T08:00:01.000Z").expect("time");
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(text(&batch, "event_id").value(0), "m-1");
        assert_eq!(text(&batch, "event").value(0), "Order Completed");
        assert!(text(&batch, "anonymous_id").is_null(0));
        assert_eq!(text(&batch, "properties").value(0), r#"{"revenue":42.5}"#);
        assert_eq!(text(&batch, "traits").value(0), "{}");
        assert_eq!(text(&batch, "extra").value(0), r#"{"session_id":"s-1"}"#);
        let ts = batch
            .column_by_name("timestamp")
            .expect("timestamp")
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), received - 750, "the offset is applied");
    }

    #[test]
    fn escapes_odd_values_and_extra_keys_survive() {
        let batch = batch_of(&[serde_json::json!({
            "message_id": "m-\"1\"\u{e9}", "type": "track", "source": "web", "pipeline_id": "p",
            "event": null, "user_id": 42, "received_at": "2026-11-22T08:00:01Z",
            "properties": [1, 2], "traits": {"name": "A \"B\""},
            "key \"q\"": {"nested": [true]}
        })]);
        assert_eq!(text(&batch, "event_id").value(0), "m-\"1\"\u{e9}");
        assert!(text(&batch, "event").is_null(0), "null is null");
        assert_eq!(
            text(&batch, "user_id").value(0),
            "42",
            "a number as its JSON text"
        );
        assert_eq!(text(&batch, "properties").value(0), "{}", "not an object");
        assert_eq!(text(&batch, "traits").value(0), r#"{"name":"A \"B\""}"#);
        let extra: serde_json::Value =
            serde_json::from_str(text(&batch, "extra").value(0)).expect("extra is JSON");
        assert_eq!(extra, serde_json::json!({"key \"q\"": {"nested": [true]}}));
    }

    #[test]
    fn a_file_is_sorted_by_event_then_receipt() {
        let at = |s: u32| format!("2026-11-22T08:00:{s:02}Z");
        let batch = batch_of(&[
            serde_json::json!({"message_id": "1", "type": "track", "event": "b", "received_at": at(3)}),
            serde_json::json!({"message_id": "2", "type": "page", "received_at": at(1)}),
            serde_json::json!({"message_id": "3", "type": "track", "event": "a", "received_at": at(2)}),
            serde_json::json!({"message_id": "4", "type": "track", "event": "b", "received_at": at(0)}),
        ]);
        let ids = text(&batch, "event_id");
        let ids: Vec<&str> = ids.iter().flatten().collect();
        assert_eq!(
            ids,
            ["2", "3", "4", "1"],
            "nulls first, then by event, then by time"
        );
    }

    #[test]
    fn only_an_object_is_an_event() {
        for bad in ["[]", "\"x\"", "{\"a\":", "null"] {
            assert!(Envelope::parse(bad).is_err(), "{bad}");
        }
    }
}
