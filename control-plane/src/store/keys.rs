use sqlx::FromRow;

use super::audit::{AuditEvent, record};
use super::pipelines::bump_config_version;
use super::{Result, Store, StoreError, now_ms};

/// What is stored about a key. `key_hash` is the keyed hash, never the key.
#[derive(Debug, Clone, FromRow)]
pub struct KeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub public_id: String,
    pub key_type: String,
    pub name: String,
    pub role: Option<String>,
    pub key_hash: Vec<u8>,
    pub created_at: i64,
    pub created_by: String,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// For ingest keys: the pipeline and the source in its spec.
    pub pipeline_id: Option<String>,
    pub source: Option<String>,
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub tenant_id: String,
    pub public_id: String,
    pub key_type: String,
    pub name: String,
    pub role: Option<String>,
    pub key_hash: Vec<u8>,
    pub created_by: String,
    pub expires_at: Option<i64>,
    /// SHA-256 of the key's text: what data planes verify it with (the pepper stays here).
    pub sha256: Vec<u8>,
    /// For ingest keys: the pipeline and the source they write to.
    pub ingest: Option<NewIngestBinding>,
}

/// What binds an ingest key to a pipeline source.
#[derive(Debug, Clone)]
pub struct NewIngestBinding {
    pub pipeline_id: String,
    pub source: String,
}

const KEY_COLUMNS: &str = "id, tenant_id, public_id, key_type, name, role, key_hash, created_at, created_by, last_used_at, expires_at, revoked_at, pipeline_id, source";

impl Store {
    pub async fn create_key(&self, new: NewKey, audit: &AuditEvent) -> Result<KeyRecord> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, public_id, key_type, name, role, key_hash, created_at, created_by, expires_at,
                                   pipeline_id, source, sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&new.id)
        .bind(&new.tenant_id)
        .bind(&new.public_id)
        .bind(&new.key_type)
        .bind(&new.name)
        .bind(&new.role)
        .bind(&new.key_hash)
        .bind(now)
        .bind(&new.created_by)
        .bind(new.expires_at)
        .bind(new.ingest.as_ref().map(|i| i.pipeline_id.clone()))
        .bind(new.ingest.as_ref().map(|i| i.source.clone()))
        .bind(&new.sha256)
        .execute(&mut *tx)
        .await?;
        // Data planes verify keys from their configuration: a new one is a new version.
        bump_config_version(&mut tx, &new.tenant_id).await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(KeyRecord {
            id: new.id,
            tenant_id: new.tenant_id,
            public_id: new.public_id,
            key_type: new.key_type,
            name: new.name,
            role: new.role,
            key_hash: new.key_hash,
            created_at: now,
            created_by: new.created_by,
            last_used_at: None,
            expires_at: new.expires_at,
            revoked_at: None,
            pipeline_id: new.ingest.as_ref().map(|i| i.pipeline_id.clone()),
            source: new.ingest.map(|i| i.source),
        })
    }

    /// The key with this public id, whatever its tenant: the first step of authenticating it.
    pub async fn key_by_public_id(&self, public_id: &str) -> Result<Option<KeyRecord>> {
        Ok(sqlx::query_as::<_, KeyRecord>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE public_id = $1"
        ))
        .bind(public_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn key(&self, tenant_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        Ok(sqlx::query_as::<_, KeyRecord>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A tenant's keys, oldest first.
    pub async fn keys(&self, tenant_id: &str) -> Result<Vec<KeyRecord>> {
        Ok(sqlx::query_as::<_, KeyRecord>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a key. Revoking a revoked key changes nothing and records nothing.
    pub async fn revoke_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        audit: &AuditEvent,
    ) -> Result<KeyRecord> {
        let mut tx = self.write_tx().await?;
        let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(tenant_id)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        let key = sqlx::query_as::<_, KeyRecord>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if revoked.rows_affected() > 0 {
            bump_config_version(&mut tx, tenant_id).await?;
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(key)
    }

    /// Records when keys were last used, in one transaction for the whole batch. A time never
    /// moves backwards.
    pub async fn touch_keys(&self, uses: &[(String, i64)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (key_id, at) in uses {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)")
                .bind(*at)
                .bind(key_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
