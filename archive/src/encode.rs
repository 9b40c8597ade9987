//! Parquet with zstd, written in memory and uploaded in one piece or in parts.

use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::ArchiveError;

/// Columns with a bloom filter, and its false-positive rate.
const BLOOM_COLUMNS: [(&str, f64); 3] = [
    ("event_id", 0.01),
    ("user_id", 0.01),
    ("anonymous_id", 0.01),
];
/// Rows per row group (parquet's default).
const ROW_GROUP_ROWS: u64 = 1024 * 1024;

/// Objects larger than this go up as a multipart upload, in parts of this size.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// One Parquet file holding `batch`.
pub fn parquet(batch: &RecordBatch) -> Result<Bytes, ArchiveError> {
    let mut properties = WriterProperties::builder()
        // Level 1: encoding is the archiver's one-core hot path, and on rows sorted by event
        // it still stores 38 bytes per event (level 3 on unsorted rows: 40). BENCHMARKS.md.
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")));
    // Bloom filters on the ids a lookup names: whether a redelivered event is archived
    // already, which files hold a person's rows for an erasure, and `WHERE user_id = …`
    // queries all skip the row groups that cannot hold the value. Sized for the rows, then
    // folded down by the writer to what the values need.
    let rows = (batch.num_rows() as u64).clamp(1, ROW_GROUP_ROWS);
    for (column, fpp) in BLOOM_COLUMNS {
        let column = ColumnPath::from(column);
        properties = properties
            .set_column_bloom_filter_enabled(column.clone(), true)
            .set_column_bloom_filter_fpp(column.clone(), fpp)
            .set_column_bloom_filter_max_ndv(column, rows);
    }
    let properties = properties
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS as usize))
        .build();
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

/// Writes `bytes` at `path`; the object exists (whole) once this returns `Ok`.
pub async fn upload(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    bytes: Bytes,
) -> Result<(), ArchiveError> {
    if bytes.len() <= PART_BYTES {
        store.put(path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(path).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    writer.put(bytes);
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use parquet::basic::BoundaryOrder;
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;

    use crate::record::{BatchBuilder, Envelope};

    #[test]
    fn pages_of_one_event_lie_together_and_are_indexed() {
        let mut rows = BatchBuilder::default();
        for i in 0..60_000 {
            let name = ["Signed Up", "Order Completed", "Page Viewed"][i % 3];
            let event = serde_json::json!({
                "message_id": format!("m-{i}"), "type": "track", "source": "web", "pipeline_id": "p",
                "event": name,
                "properties": {"n": i},
            })
            .to_string();
            rows.push(&Envelope::parse(&event).expect("event"), 1_700_000_000_000);
        }
        let bytes = super::parquet(&rows.finish().expect("batch")).expect("parquet");
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let file = SerializedFileReader::new_with_options(bytes, options).expect("read back");
        let index = file
            .metadata()
            .column_index()
            .expect("a page index is written");
        let column = &index[0][2];
        assert_eq!(column.get_boundary_order(), Some(BoundaryOrder::ASCENDING));
        let ColumnIndexMetaData::BYTE_ARRAY(event) = column else {
            panic!("event is a byte array column");
        };
        let pages = event.num_pages() as usize;
        let mixed = (0..pages)
            .filter(|&p| event.min_value(p) != event.max_value(p))
            .count();
        assert!(pages >= 3, "{pages} pages");
        // Sorted, at most one page per event boundary holds two events; a reader skips the rest.
        assert!(
            mixed <= 2,
            "{mixed} of {pages} pages hold more than one event"
        );
    }
}
