use sqlx::FromRow;

use super::{Backend, Result, Store, now_ms};

/// The PostgreSQL advisory lock that serialises signing-key rotation across replicas (an
/// arbitrary constant: "sluice" in ASCII).
const ROTATION_LOCK: i64 = 0x736c_7569_6365;

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

    /// Inserts `kid`/`seed` unless the newest key is younger than `max_age_ms`; returns
    /// whether it did. Replicas that start together would otherwise each insert a key and
    /// each sign with its own, so that a token or snapshot one of them signs fails at the
    /// other: on PostgreSQL the check and the insert hold an advisory lock, on SQLite the
    /// write lock.
    pub async fn rotate_signing_key(
        &self,
        kid: &str,
        seed: &[u8],
        max_age_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ROTATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let newest: Option<(i64,)> =
            sqlx::query_as("SELECT created_at FROM signing_keys ORDER BY created_at DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let now = now_ms();
        if newest.is_some_and(|(created,)| now - created <= max_age_ms) {
            return Ok(false);
        }
        sqlx::query("INSERT INTO signing_keys (kid, seed, created_at) VALUES ($1, $2, $3)")
            .bind(kid)
            .bind(seed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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
