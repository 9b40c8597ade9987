//! Per-minute samples of each node's cumulative counters, the onboarding milestones a tenant
//! reached, and ingest-key use reported by nodes: what the overview page is drawn from.

use sqlx::FromRow;

use super::{Result, Store, now_ms};

/// How long samples are kept, in milliseconds: the overview's longest window (a day) and one
/// sample before it, so the first bucket has a difference.
pub const SAMPLE_RETENTION_MS: i64 = 25 * 60 * 60 * 1000;

/// One node's counters at one minute.
#[derive(Debug, Clone, FromRow)]
pub struct Sample {
    pub node_id: String,
    /// Unix minute (milliseconds / 60,000).
    pub minute: i64,
    /// JSON object name → cumulative value.
    pub counters: String,
}

/// An onboarding step and when the tenant first reached it.
#[derive(Debug, Clone, FromRow)]
pub struct Milestone {
    pub name: String,
    pub at: i64,
}

impl Store {
    /// Keeps `counters_json` as the node's sample for `minute` (the latest report of a minute
    /// wins) and drops samples past retention.
    pub async fn record_sample(
        &self,
        tenant_id: &str,
        node_id: &str,
        minute: i64,
        counters_json: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO node_samples (tenant_id, node_id, minute, counters) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, node_id, minute) DO UPDATE SET counters = excluded.counters",
        )
        .bind(tenant_id)
        .bind(node_id)
        .bind(minute)
        .bind(counters_json)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM node_samples WHERE tenant_id = $1 AND node_id = $2 AND minute < $3",
        )
        .bind(tenant_id)
        .bind(node_id)
        .bind((now_ms() - SAMPLE_RETENTION_MS) / 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node's samples from `since_minute` on, by node then minute.
    pub async fn samples(&self, tenant_id: &str, since_minute: i64) -> Result<Vec<Sample>> {
        Ok(sqlx::query_as::<_, Sample>(
            "SELECT node_id, minute, counters FROM node_samples
             WHERE tenant_id = $1 AND minute >= $2 ORDER BY node_id, minute",
        )
        .bind(tenant_id)
        .bind(since_minute)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that the tenant reached `name`, the first time only.
    pub async fn reach_milestone(&self, tenant_id: &str, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_milestones (tenant_id, name, at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn milestones(&self, tenant_id: &str) -> Result<Vec<Milestone>> {
        Ok(sqlx::query_as::<_, Milestone>(
            "SELECT name, at FROM tenant_milestones WHERE tenant_id = $1 ORDER BY at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Ingest keys a node saw used, by public id: last use never moves backwards, and only
    /// this tenant's ingest keys are touched.
    pub async fn touch_ingest_keys(&self, tenant_id: &str, uses: &[(String, i64)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (public_id, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1
                 WHERE tenant_id = $2 AND public_id = $3 AND key_type = 'ingest'
                   AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(tenant_id)
            .bind(public_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
