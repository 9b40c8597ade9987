use sqlx::{Any, FromRow, Transaction};

use super::audit::{AuditEvent, record};
use super::{Result, Store, StoreError, new_id, now_ms};

/// A pipeline at its current revision.
#[derive(Debug, Clone, FromRow)]
pub struct PipelineRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub revision: i64,
    /// The current revision's spec, canonical JSON.
    pub spec: String,
    /// The tenant's configuration version the current revision produced.
    pub config_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The current revision's document as its author wrote it, when it came as text.
    pub source: Option<String>,
    /// The current revision's change message.
    pub message: Option<String>,
}

/// What a new revision is made of.
#[derive(Debug, Clone, Copy)]
pub struct NewRevision<'a> {
    /// Canonical JSON.
    pub spec: &'a str,
    /// The document as written (YAML with its comments), when it came as text.
    pub source: Option<&'a str>,
    pub message: Option<&'a str>,
    pub created_by: &'a str,
}

/// One immutable revision of a pipeline.
#[derive(Debug, Clone, FromRow)]
pub struct RevisionRecord {
    pub pipeline_id: String,
    pub revision: i64,
    pub spec: String,
    /// The tenant's configuration version this revision produced.
    pub config_version: i64,
    pub created_at: i64,
    pub created_by: String,
    pub source: Option<String>,
    pub message: Option<String>,
}

/// An ingest key as a data plane needs it.
#[derive(Debug, Clone, FromRow)]
pub struct IngestKeyRecord {
    pub public_id: String,
    pub sha256: Vec<u8>,
    pub pipeline_id: String,
    pub source: String,
    pub expires_at: Option<i64>,
}

/// A tenant's whole configuration at one version, read consistently.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub tenant_id: String,
    pub version: i64,
    pub pipelines: Vec<PipelineRecord>,
    pub ingest_keys: Vec<IngestKeyRecord>,
    pub access_keys: Vec<AccessKeyRecord>,
}

/// A service or api key as a data plane needs it (for its DLQ and query APIs).
#[derive(Debug, Clone, FromRow)]
pub struct AccessKeyRecord {
    pub public_id: String,
    pub sha256: Vec<u8>,
    pub key_type: String,
    pub role: Option<String>,
    pub expires_at: Option<i64>,
}

const PIPELINE_SELECT: &str = "SELECT p.id, p.tenant_id, p.name, p.revision, r.spec, r.config_version, p.created_at, p.updated_at, r.source, r.message
     FROM pipelines p JOIN pipeline_revisions r ON r.pipeline_id = p.id AND r.revision = p.revision";

/// Bumps the tenant's configuration version; returns the new one.
pub(super) async fn bump_config_version(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
) -> Result<i64> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE tenants SET config_version = config_version + 1, updated_at = $2 WHERE id = $1 RETURNING config_version",
    )
    .bind(tenant_id)
    .bind(now_ms())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|(v,)| v).ok_or(StoreError::NotFound)
}

async fn add_revision(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    pipeline_id: &str,
    revision: i64,
    new: &NewRevision<'_>,
) -> Result<i64> {
    let version = bump_config_version(tx, tenant_id).await?;
    sqlx::query(
        "INSERT INTO pipeline_revisions (pipeline_id, revision, spec, config_version, created_at, created_by, source, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(pipeline_id)
    .bind(revision)
    .bind(new.spec)
    .bind(version)
    .bind(now_ms())
    .bind(new.created_by)
    .bind(new.source)
    .bind(new.message)
    .execute(&mut **tx)
    .await?;
    Ok(version)
}

async fn pipeline_in_tx(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    id: &str,
) -> Result<PipelineRecord> {
    sqlx::query_as::<_, PipelineRecord>(&format!(
        "{PIPELINE_SELECT} WHERE p.tenant_id = $1 AND p.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)
}

fn name_conflict(e: StoreError) -> StoreError {
    match e {
        StoreError::Conflict(_) => {
            StoreError::Conflict("a pipeline with this name exists in the tenant".into())
        }
        other => other,
    }
}

impl Store {
    /// Creates a pipeline at revision 1; `audit.target` is filled in.
    pub async fn create_pipeline(
        &self,
        tenant_id: &str,
        name: &str,
        new: &NewRevision<'_>,
        mut audit: AuditEvent,
    ) -> Result<PipelineRecord> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO pipelines (id, tenant_id, name, revision, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $4)")
            .bind(&id)
            .bind(tenant_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| name_conflict(e.into()))?;
        add_revision(&mut tx, tenant_id, &id, 1, new).await?;
        audit.target = format!("pipeline:{id}");
        record(&mut tx, &audit).await?;
        let pipeline = pipeline_in_tx(&mut tx, tenant_id, &id).await?;
        tx.commit().await?;
        Ok(pipeline)
    }

    /// Adds a revision with `spec` (and renames the pipeline when `name` is given).
    pub async fn update_pipeline(
        &self,
        tenant_id: &str,
        id: &str,
        name: Option<&str>,
        new: &NewRevision<'_>,
        audit: &AuditEvent,
    ) -> Result<PipelineRecord> {
        let mut tx = self.write_tx().await?;
        let current = pipeline_in_tx(&mut tx, tenant_id, id).await?;
        let revision = current.revision + 1;
        sqlx::query("UPDATE pipelines SET revision = $1, name = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5")
            .bind(revision)
            .bind(name.unwrap_or(&current.name))
            .bind(now_ms())
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| name_conflict(e.into()))?;
        add_revision(&mut tx, tenant_id, id, revision, new).await?;
        record(&mut tx, audit).await?;
        let pipeline = pipeline_in_tx(&mut tx, tenant_id, id).await?;
        tx.commit().await?;
        Ok(pipeline)
    }

    /// Deletes a pipeline with its revisions and revokes its ingest keys.
    pub async fn delete_pipeline(
        &self,
        tenant_id: &str,
        id: &str,
        audit: &AuditEvent,
    ) -> Result<Vec<String>> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query("DELETE FROM pipelines WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let revoked: Vec<(String,)> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND pipeline_id = $3 AND revoked_at IS NULL RETURNING public_id",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        bump_config_version(&mut tx, tenant_id).await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(revoked.into_iter().map(|(p,)| p).collect())
    }

    pub async fn pipeline(&self, tenant_id: &str, id: &str) -> Result<Option<PipelineRecord>> {
        Ok(sqlx::query_as::<_, PipelineRecord>(&format!(
            "{PIPELINE_SELECT} WHERE p.tenant_id = $1 AND p.id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A tenant's pipelines by name.
    pub async fn pipelines(&self, tenant_id: &str) -> Result<Vec<PipelineRecord>> {
        Ok(sqlx::query_as::<_, PipelineRecord>(&format!(
            "{PIPELINE_SELECT} WHERE p.tenant_id = $1 ORDER BY p.name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A pipeline's revisions, newest first.
    pub async fn revisions(&self, tenant_id: &str, id: &str) -> Result<Vec<RevisionRecord>> {
        Ok(sqlx::query_as::<_, RevisionRecord>(
            "SELECT r.pipeline_id, r.revision, r.spec, r.config_version, r.created_at, r.created_by, r.source, r.message
             FROM pipeline_revisions r JOIN pipelines p ON p.id = r.pipeline_id
             WHERE p.tenant_id = $1 AND p.id = $2 ORDER BY r.revision DESC",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn revision(
        &self,
        tenant_id: &str,
        id: &str,
        revision: i64,
    ) -> Result<Option<RevisionRecord>> {
        Ok(sqlx::query_as::<_, RevisionRecord>(
            "SELECT r.pipeline_id, r.revision, r.spec, r.config_version, r.created_at, r.created_by, r.source, r.message
             FROM pipeline_revisions r JOIN pipelines p ON p.id = r.pipeline_id
             WHERE p.tenant_id = $1 AND p.id = $2 AND r.revision = $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(revision)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Everything a data plane of the tenant receives, at one consistent version.
    pub async fn tenant_config(&self, tenant_id: &str) -> Result<Option<TenantConfig>> {
        let mut tx = self.read_tx().await?;
        let Some((version,)) =
            sqlx::query_as::<_, (i64,)>("SELECT config_version FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let pipelines = sqlx::query_as::<_, PipelineRecord>(&format!(
            "{PIPELINE_SELECT} WHERE p.tenant_id = $1 ORDER BY p.name"
        ))
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        let ingest_keys = sqlx::query_as::<_, IngestKeyRecord>(
            "SELECT public_id, sha256, pipeline_id, source, expires_at FROM api_keys
             WHERE tenant_id = $1 AND key_type = 'ingest' AND revoked_at IS NULL
               AND pipeline_id IS NOT NULL AND source IS NOT NULL AND sha256 IS NOT NULL
             ORDER BY public_id",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        let access_keys = sqlx::query_as::<_, AccessKeyRecord>(
            "SELECT public_id, sha256, key_type, role, expires_at FROM api_keys
             WHERE tenant_id = $1 AND key_type IN ('service', 'api') AND revoked_at IS NULL
               AND sha256 IS NOT NULL
             ORDER BY public_id",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(TenantConfig {
            tenant_id: tenant_id.to_owned(),
            version,
            pipelines,
            ingest_keys,
            access_keys,
        }))
    }
}
