use sqlx::FromRow;

use super::audit::{AuditEvent, record};
use super::members::parse_role;
use super::{Result, Store, StoreError, new_id, now_ms};
use crate::role::Role;

#[derive(Debug, Clone, FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub config_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A tenant with the caller's role in it.
#[derive(Debug, Clone)]
pub struct TenantWithRole {
    pub tenant: Tenant,
    pub role: Role,
}

#[derive(FromRow)]
struct TenantRoleRow {
    id: String,
    name: String,
    config_version: i64,
    created_at: i64,
    updated_at: i64,
    role: String,
}

impl TenantRoleRow {
    fn into_domain(self) -> Result<TenantWithRole> {
        let role = parse_role(&self.role)?;
        Ok(TenantWithRole {
            tenant: Tenant {
                id: self.id,
                name: self.name,
                config_version: self.config_version,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
            role,
        })
    }
}

impl Store {
    /// Creates a tenant whose owner is `owner_user_id`; the audit entry's tenant id is filled in.
    pub async fn create_tenant(
        &self,
        name: &str,
        owner_user_id: &str,
        mut audit: AuditEvent,
    ) -> Result<Tenant> {
        let now = now_ms();
        let tenant = Tenant {
            id: new_id(),
            name: name.to_owned(),
            config_version: 0,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO tenants (id, name, config_version, created_at, updated_at) VALUES ($1, $2, 0, $3, $3)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&tenant.id)
            .bind(owner_user_id)
            .bind(Role::Owner.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit.tenant_id = tenant.id.clone();
        audit.target = format!("tenant:{}", tenant.id);
        record(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        Ok(sqlx::query_as::<_, Tenant>(
            "SELECT id, name, config_version, created_at, updated_at FROM tenants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The tenants `user_id` belongs to, ordered by id, after the cursor `after`.
    pub async fn tenants_of_user(
        &self,
        user_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TenantWithRole>> {
        sqlx::query_as::<_, TenantRoleRow>(
            "SELECT t.id, t.name, t.config_version, t.created_at, t.updated_at, m.role
             FROM memberships m JOIN tenants t ON t.id = m.tenant_id
             WHERE m.user_id = $1 AND ($2 IS NULL OR t.id > $2)
             ORDER BY t.id
             LIMIT $3",
        )
        .bind(user_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(TenantRoleRow::into_domain)
        .collect()
    }

    /// `user_id`'s role in `tenant_id`, if a member.
    pub async fn role_of(&self, user_id: &str, tenant_id: &str) -> Result<Option<Role>> {
        let role: Option<(String,)> =
            sqlx::query_as("SELECT role FROM memberships WHERE user_id = $1 AND tenant_id = $2")
                .bind(user_id)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
        role.map(|(r,)| parse_role(&r)).transpose()
    }

    pub async fn rename_tenant(&self, id: &str, name: &str, audit: &AuditEvent) -> Result<Tenant> {
        let mut tx = self.write_tx().await?;
        let updated = sqlx::query("UPDATE tenants SET name = $1, updated_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.tenant(id).await?.ok_or(StoreError::NotFound)
    }

    /// Deletes the tenant and, by cascade, everything it owns except its audit log, which
    /// keeps the deletion itself.
    pub async fn delete_tenant(&self, id: &str, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}
