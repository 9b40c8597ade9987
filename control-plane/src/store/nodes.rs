use sqlx::FromRow;

use super::{Result, Store, now_ms};

/// The latest known state of one data-plane node.
#[derive(Debug, Clone, FromRow)]
pub struct NodeRecord {
    pub tenant_id: String,
    pub id: String,
    pub key_id: String,
    pub name: String,
    pub agent_version: String,
    /// JSON array of role names.
    pub roles: String,
    /// 1 while a stream is open.
    pub connected: i64,
    pub applied_version: i64,
    /// A version the node refused; not sent again until the configuration changes.
    pub nacked_version: Option<i64>,
    pub last_error: Option<String>,
    /// JSON object of counter name → value.
    pub counters: String,
    /// JSON array of destination health reports.
    pub destinations: String,
    /// JSON object role → URL where clients reach the node.
    pub urls: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

/// What a node says about itself when its stream opens.
#[derive(Debug, Clone)]
pub struct NodeHello<'a> {
    pub tenant_id: &'a str,
    pub id: &'a str,
    pub key_id: &'a str,
    pub name: &'a str,
    pub agent_version: &'a str,
    pub roles_json: &'a str,
    pub held_version: i64,
    /// JSON object role → URL.
    pub urls_json: &'a str,
}

const NODE_COLUMNS: &str = "tenant_id, id, key_id, name, agent_version, roles, connected, applied_version, nacked_version, last_error, counters, destinations, urls, first_seen_at, last_seen_at";

impl Store {
    /// Records a node's stream opening; returns the node as stored (with any parked NACK).
    pub async fn node_connected(&self, hello: &NodeHello<'_>) -> Result<NodeRecord> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO nodes (tenant_id, id, key_id, name, agent_version, roles, connected, applied_version, counters, urls, first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, '{}', $9, $8, $8)
             ON CONFLICT (tenant_id, id) DO UPDATE SET
               key_id = excluded.key_id, name = excluded.name, agent_version = excluded.agent_version,
               roles = excluded.roles, connected = 1, applied_version = excluded.applied_version,
               urls = excluded.urls, last_seen_at = excluded.last_seen_at",
        )
        .bind(hello.tenant_id)
        .bind(hello.id)
        .bind(hello.key_id)
        .bind(hello.name)
        .bind(hello.agent_version)
        .bind(hello.roles_json)
        .bind(hello.held_version)
        .bind(now)
        .bind(hello.urls_json)
        .execute(&self.pool)
        .await?;
        Ok(self
            .node(hello.tenant_id, hello.id)
            .await?
            .unwrap_or_else(|| unreachable_node(hello)))
    }

    /// The node applied `version`: clears a parked NACK and its error.
    pub async fn node_acked(&self, tenant_id: &str, id: &str, version: i64) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET applied_version = $1, nacked_version = NULL, last_error = NULL, last_seen_at = $2
             WHERE tenant_id = $3 AND id = $4",
        )
        .bind(version)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The node refused `version`: parks it and records why.
    pub async fn node_nacked(
        &self,
        tenant_id: &str,
        id: &str,
        version: i64,
        error: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE nodes SET nacked_version = $1, last_error = $2, last_seen_at = $3 WHERE tenant_id = $4 AND id = $5")
            .bind(version)
            .bind(error)
            .bind(now_ms())
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A status report: counters, and the node's own last error when it has one.
    pub async fn node_status(
        &self,
        tenant_id: &str,
        id: &str,
        counters_json: &str,
        destinations_json: &str,
        last_error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET counters = $1, last_error = COALESCE($2, last_error), last_seen_at = $3, destinations = $6
             WHERE tenant_id = $4 AND id = $5",
        )
        .bind(counters_json)
        .bind(last_error)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .bind(destinations_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn node_seen(&self, tenant_id: &str, id: &str) -> Result<()> {
        sqlx::query("UPDATE nodes SET last_seen_at = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(now_ms())
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn node_disconnected(&self, tenant_id: &str, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET connected = 0, last_seen_at = $1 WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn node(&self, tenant_id: &str, id: &str) -> Result<Option<NodeRecord>> {
        Ok(sqlx::query_as::<_, NodeRecord>(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A tenant's nodes by name.
    pub async fn nodes(&self, tenant_id: &str) -> Result<Vec<NodeRecord>> {
        Ok(sqlx::query_as::<_, NodeRecord>(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 ORDER BY name, id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Only reachable if the row vanished between the upsert and the read (the tenant was
/// deleted); the stream ends right after anyway.
fn unreachable_node(hello: &NodeHello<'_>) -> NodeRecord {
    NodeRecord {
        tenant_id: hello.tenant_id.to_owned(),
        id: hello.id.to_owned(),
        key_id: hello.key_id.to_owned(),
        name: hello.name.to_owned(),
        agent_version: hello.agent_version.to_owned(),
        roles: hello.roles_json.to_owned(),
        connected: 1,
        applied_version: hello.held_version,
        nacked_version: None,
        last_error: None,
        counters: "{}".to_owned(),
        destinations: "[]".to_owned(),
        urls: hello.urls_json.to_owned(),
        first_seen_at: now_ms(),
        last_seen_at: now_ms(),
    }
}
