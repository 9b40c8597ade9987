//! Which archive files hold an event: what a trace names once the event has left the live
//! inspector's ring. Files are sorted by `event_id` (see [`crate::record`]), so each row
//! group's statistics rule most of a partition out before a byte of data is read.

use std::sync::Arc;

use arrow::array::{Array, StringArray};
use futures_util::StreamExt as _;
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
#[expect(
    deprecated,
    reason = "parquet 59 deprecates its object_store reader for a hand-written AsyncFileReader (apache/arrow-rs#10308); it still works, and DataFusion reads the same files"
)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::statistics::Statistics;

use crate::ArchiveError;
use crate::layout::{is_safe_segment, tenant_prefix};

/// The files of one partition (`dataset`, `dt`, `hour`) that hold `event_id`, by path.
pub async fn files_holding(
    store: &Arc<dyn ObjectStore>,
    tenant_id: &str,
    (dataset, dt, hour): (&str, &str, &str),
    event_id: &str,
) -> Result<Vec<String>, ArchiveError> {
    let safe_date = dt.len() == 10 && dt.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    if ![tenant_id, dataset, hour]
        .iter()
        .all(|s| is_safe_segment(s))
        || !safe_date
    {
        return Ok(Vec::new());
    }
    let view = crate::store::tenant_view(store.clone(), tenant_id);
    let partition = format!("dataset={dataset}/dt={dt}/hour={hour}");
    let live =
        crate::commit::live_files(view.as_ref(), &crate::commit::Notes::default(), &partition)
            .await?;
    let mut found = Vec::new();
    for meta in live {
        #[expect(deprecated, reason = "see the import")]
        let reader =
            ParquetObjectReader::new(view.clone(), meta.location.clone()).with_file_size(meta.size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let metadata = builder.metadata().clone();
        let schema = metadata.file_metadata().schema_descr();
        let Some(column) =
            (0..schema.num_columns()).find(|i| schema.column(*i).name() == "event_id")
        else {
            continue;
        };
        let groups: Vec<usize> = metadata
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, group)| may_hold(group.column(column).statistics(), event_id))
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            continue;
        }
        let mut batches = builder
            .with_projection(ProjectionMask::leaves(schema, [column]))
            .with_row_groups(groups)
            .build()?;
        'file: while let Some(batch) = batches.next().await {
            let batch = batch?;
            if let Some(ids) = batch.column(0).as_any().downcast_ref::<StringArray>()
                && (0..ids.len()).any(|i| ids.is_valid(i) && ids.value(i) == event_id)
            {
                found.push(format!("{}/{}", tenant_prefix(tenant_id), meta.location));
                break 'file;
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether a row group whose `event_id` column has these statistics may hold `event_id`.
fn may_hold(statistics: Option<&Statistics>, event_id: &str) -> bool {
    let Some(Statistics::ByteArray(s)) = statistics else {
        return true;
    };
    let id = event_id.as_bytes();
    s.min_opt().is_none_or(|min| min.data() <= id) && s.max_opt().is_none_or(|max| max.data() >= id)
}
