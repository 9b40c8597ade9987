use sqlx::{Any, FromRow, Transaction};

use super::{Result, Store, now_ms};

/// What a mutation records about itself.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub tenant_id: String,
    /// `user:<id>` or `key:<id>`.
    pub actor: String,
    /// The actor as a person reads it: an e-mail or a key's name.
    pub actor_name: String,
    /// `tenant.create`, `key.revoke`, …
    pub action: String,
    /// What was acted on: `key:<id>`, `member:<user id>`, …
    pub target: String,
    pub source_ip: Option<String>,
    /// Extra JSON (a new name, a role), never a secret.
    pub details: Option<String>,
}

/// One stored audit entry.
#[derive(Debug, Clone, FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub tenant_id: String,
    pub actor: String,
    pub actor_name: String,
    pub action: String,
    pub target: String,
    pub source_ip: Option<String>,
    pub details: Option<String>,
    pub created_at: i64,
}

/// Which entries a listing returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries older than this id (the cursor).
    pub before_id: Option<i64>,
    /// Only this actor (`user:<id>` or `key:<id>`).
    pub actor: Option<String>,
    /// Only this action, or with a trailing `.` every action under it (`key.`).
    pub action: Option<String>,
    /// Only entries at or after this time (Unix milliseconds).
    pub since: Option<i64>,
    /// Only entries before this time (Unix milliseconds).
    pub until: Option<i64>,
}

pub(super) async fn record(tx: &mut Transaction<'_, Any>, event: &AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor, actor_name, action, target, source_ip, details, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&event.tenant_id)
    .bind(&event.actor)
    .bind(&event.actor_name)
    .bind(&event.action)
    .bind(&event.target)
    .bind(&event.source_ip)
    .bind(&event.details)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// A tenant's audit entries, newest first.
    pub async fn audit(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let action_prefix = filter.action.as_deref().filter(|a| a.ends_with('.'));
        let action_exact = filter.action.as_deref().filter(|a| !a.ends_with('.'));
        // Unused filters bind NULL, which keeps one statement for every combination.
        Ok(sqlx::query_as::<_, AuditEntry>(
            "SELECT id, tenant_id, actor, actor_name, action, target, source_ip, details, created_at
             FROM audit_log
             WHERE tenant_id = $1
               AND ($2 IS NULL OR id < $2)
               AND ($3 IS NULL OR actor = $3)
               AND ($4 IS NULL OR action = $4)
               AND ($5 IS NULL OR substr(action, 1, length($5)) = $5)
               AND ($7 IS NULL OR created_at >= $7)
               AND ($8 IS NULL OR created_at < $8)
             ORDER BY id DESC
             LIMIT $6",
        )
        .bind(tenant_id)
        .bind(filter.before_id)
        .bind(&filter.actor)
        .bind(action_exact)
        .bind(action_prefix)
        .bind(limit)
        .bind(filter.since)
        .bind(filter.until)
        .fetch_all(&self.pool)
        .await?)
    }
}
