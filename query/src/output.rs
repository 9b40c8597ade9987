//! The answer's encodings.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::QueryError;

/// How rows are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `{"columns":[…],"rows":[{…}],…}`
    #[default]
    Json,
    /// RFC 4180 with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "arrow" => Some(Self::Arrow),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(format!("cannot encode the result: {e}"))
}

/// The rows as a JSON array of objects (nulls kept, so every row has every column).
pub fn json_rows(batches: &[RecordBatch]) -> Result<serde_json::Value, QueryError> {
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch).map_err(internal)?;
    }
    writer.finish().map_err(internal)?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_slice(&bytes).map_err(internal)
}

pub fn csv(batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    for batch in batches {
        writer.write(batch).map_err(internal)?;
    }
    Ok(writer.into_inner())
}

pub fn arrow_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(internal)?;
    for batch in batches {
        writer.write(batch).map_err(internal)?;
    }
    writer.finish().map_err(internal)?;
    writer.into_inner().map_err(internal)
}
