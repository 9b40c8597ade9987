//! Parquet with zstd, written in memory and uploaded in one piece or in parts.

use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::ArchiveError;

/// Objects larger than this go up as a multipart upload, in parts of this size.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// One Parquet file holding `batch`.
pub fn parquet(batch: &RecordBatch) -> Result<Bytes, ArchiveError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
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
