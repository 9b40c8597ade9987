//! The object store the archive lives in: a local directory by default, any S3-compatible
//! endpoint from the `S3_*` settings (path-style addressing, as MinIO wants), or a
//! `gs://…`/`az://…` URL that `object_store` understands, with credentials from the
//! environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::ArchiveError;
use crate::layout::tenant_prefix;

/// `object_store`'s own retries of one S3 request, kept short. Its default (ten retries over
/// up to three minutes, connection refusals included) sat under the archiver's own retry
/// loop, so one failed upload could take a minute to surface and the `store_up` metric and
/// the log said nothing meanwhile; the archiver retries with its own backoff anyway.
const S3_RETRIES: usize = 3;
/// The longest `object_store` keeps retrying one request.
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A directory on this machine (created if missing).
    Local(PathBuf),
    /// An S3 bucket, on AWS or any S3-compatible server.
    S3 {
        bucket: String,
        /// `http(s)://host:port` of an S3-compatible server; unset means AWS.
        endpoint: Option<String>,
        access_key: Option<String>,
        secret_key: Option<String>,
        region: String,
    },
    /// `gs://bucket/prefix` or `az://container/prefix` (or `s3://…`), credentials from the
    /// environment as `object_store` reads them.
    Url(String),
}

impl StoreConfig {
    /// What the logs may show: never a secret.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(dir) => format!("file://{}", dir.display()),
            Self::S3 {
                bucket, endpoint, ..
            } => match endpoint {
                Some(endpoint) => format!("s3://{bucket} at {endpoint}"),
                None => format!("s3://{bucket}"),
            },
            Self::Url(url) => url.split('?').next().unwrap_or_default().to_owned(),
        }
    }

    /// Whether the archive is on this machine's disk, where a read waits on the disk, not on
    /// the network.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::S3 { .. } => false,
            Self::Url(url) => url.starts_with("file://"),
        }
    }

    pub fn open(&self) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
        match self {
            Self::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ArchiveError::Config(format!("archive directory {}: {e}", dir.display()))
                })?;
                Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
            }
            Self::S3 {
                bucket,
                endpoint,
                access_key,
                secret_key,
                region,
            } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: S3_RETRIES,
                        retry_timeout: S3_RETRY_TIMEOUT,
                    });
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let (Some(key), Some(secret)) = (access_key, secret_key) {
                    builder = builder
                        .with_access_key_id(key)
                        .with_secret_access_key(secret);
                }
                Ok(Arc::new(builder.build()?))
            }
            Self::Url(url) => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| ArchiveError::Config(format!("archive url: {e}")))?;
                let (store, prefix) = object_store::parse_url_opts(&parsed, std::env::vars())?;
                let store: Arc<dyn ObjectStore> = Arc::from(store);
                if prefix.as_ref().is_empty() {
                    Ok(store)
                } else {
                    Ok(Arc::new(PrefixStore::new(store, prefix)))
                }
            }
        }
    }
}

/// A view of `store` that sees one tenant's objects and nothing else: every path it is given
/// is below `tenant=<id>/`, so no path can name another tenant's files.
pub fn tenant_view(store: Arc<dyn ObjectStore>, tenant_id: &str) -> Arc<dyn ObjectStore> {
    Arc::new(PrefixStore::new(store, tenant_prefix(tenant_id)))
}
