use sqlx::{Any, FromRow, Transaction};

use super::{Result, Store, now_ms};

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was valid and is now used up; its successor is stored in `family_id`.
    Rotated { user_id: String, family_id: String },
    /// The token had already been used (or its family revoked): a sign that it was stolen. The
    /// whole family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

#[derive(FromRow)]
struct RefreshRow {
    family_id: String,
    user_id: String,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

async fn revoke_family(tx: &mut Transaction<'_, Any>, family_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    pub async fn insert_refresh_token(
        &self,
        token_hash: &[u8],
        family_id: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token_hash)
            .bind(family_id)
            .bind(user_id)
            .bind(now_ms())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Uses up a refresh token and, in the same transaction, stores its successor in the same
    /// family, so no concurrent reuse can slip between the two. Presenting a token that was
    /// already used (or whose family was revoked) revokes the whole family.
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        successor_expires_at: i64,
    ) -> Result<RefreshOutcome> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let Some(row) = sqlx::query_as::<_, RefreshRow>(
            "SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        if row.used_at.is_some() || row.revoked_at.is_some() {
            revoke_family(&mut tx, &row.family_id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        if row.expires_at <= now {
            return Ok(RefreshOutcome::Invalid);
        }
        // The guard on used_at makes two concurrent uses of one token end as one rotation and
        // one reuse (which then revokes the family, successor included), never two rotations.
        let marked = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            revoke_family(&mut tx, &row.family_id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(successor_hash)
            .bind(&row.family_id)
            .bind(&row.user_id)
            .bind(now)
            .bind(successor_expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated {
            user_id: row.user_id,
            family_id: row.family_id,
        })
    }

    /// Revokes the family `token_hash` belongs to (sign-out). Unknown tokens are ignored.
    pub async fn revoke_refresh_family(&self, token_hash: &[u8]) -> Result<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1
             WHERE revoked_at IS NULL AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
        )
        .bind(now_ms())
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes refresh tokens that expired before `before`; returns how many.
    pub async fn purge_expired_refresh_tokens(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
