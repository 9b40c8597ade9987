use sqlx::FromRow;

use super::{Result, Store, now_ms};

#[derive(Debug, Clone, FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub seed: Vec<u8>,
    pub created_at: i64,
}

impl Store {
    /// JWT signing keys, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        Ok(sqlx::query_as::<_, SigningKeyRow>(
            "SELECT kid, seed, created_at FROM signing_keys ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn insert_signing_key(&self, kid: &str, seed: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO signing_keys (kid, seed, created_at) VALUES ($1, $2, $3)")
            .bind(kid)
            .bind(seed)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
