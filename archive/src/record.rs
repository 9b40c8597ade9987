//! The archive's one table schema. Envelope fields are typed columns; `properties`, `traits`
//! and `context` are JSON text (their shape differs per event, and every Parquet reader can
//! parse JSON text); whatever else governance left on the event goes to `extra`.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};

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

/// Envelope fields that have their own column (or are the tenant, which is the path).
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
    pub fn push(&mut self, event: &Map<String, Value>, received_at_ms: i64) {
        for ((_, field, required), builder) in TEXT.iter().zip(&mut self.text) {
            match event.get(*field) {
                Some(Value::String(s)) => builder.append_value(s),
                Some(Value::Null) | None if !required => builder.append_null(),
                Some(Value::Null) | None => builder.append_value(""),
                Some(other) => builder.append_value(other.to_string()),
            }
        }
        for ((field, _), builder) in TIMES.iter().zip(&mut self.times) {
            let at = if *field == "received_at" {
                Some(received_at_ms)
            } else {
                event
                    .get(*field)
                    .and_then(Value::as_str)
                    .and_then(parse_time)
            };
            builder.append_option(at);
        }
        for (field, builder) in JSON.iter().zip(&mut self.json) {
            match event.get(*field) {
                Some(value @ Value::Object(_)) => builder.append_value(value.to_string()),
                _ => builder.append_value("{}"),
            }
        }
        let extra: Map<String, Value> = event
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if extra.is_empty() {
            self.extra.append_null();
        } else {
            self.extra.append_value(Value::Object(extra).to_string());
        }
        self.rows += 1;
    }

    /// The rows gathered so far, as one batch; the builder is empty afterwards.
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
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMillisecondType;

    #[test]
    fn envelope_fields_become_typed_columns() {
        let Value::Object(event) = serde_json::json!({
            "message_id": "m-1", "tenant_id": "t", "pipeline_id": "p", "source": "web",
            "type": "track", "event": "Order Completed", "user_id": "u-1",
            "timestamp": "2026-11-22T09:00:00.250+01:00", "received_at": "2026-11-22T08:00:01.000Z",
            "properties": {"revenue": 42.5}, "context": {"ip": "203.0.113.0"},
            "session_id": "s-1"
        }) else {
            unreachable!()
        };
        let mut builder = BatchBuilder::default();
        let received = parse_time("2026-11-22T08:00:01.000Z").expect("time");
        builder.push(&event, received);
        let batch = builder.finish().expect("batch");
        assert_eq!(batch.num_rows(), 1);
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .expect(name)
                .as_string::<i32>()
                .clone()
        };
        assert_eq!(text("event_id").value(0), "m-1");
        assert_eq!(text("event").value(0), "Order Completed");
        assert!(text("anonymous_id").is_null(0));
        assert_eq!(text("properties").value(0), r#"{"revenue":42.5}"#);
        assert_eq!(text("traits").value(0), "{}");
        assert_eq!(text("extra").value(0), r#"{"session_id":"s-1"}"#);
        let ts = batch
            .column_by_name("timestamp")
            .expect("timestamp")
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), received - 750, "the offset is applied");
        assert_eq!(builder.len(), 0);
    }
}
