use sqlx::{Any, FromRow, Transaction};

use super::audit::{AuditEvent, record};
use super::{Backend, Result, Store, StoreError, User, new_id, now_ms};
use crate::role::Role;

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(FromRow)]
struct MemberRow {
    user_id: String,
    email: String,
    role: String,
    created_at: i64,
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;

    fn try_from(row: MemberRow) -> Result<Self> {
        Ok(Member {
            role: parse_role(&row.role)?,
            user_id: row.user_id,
            email: row.email,
            created_at: row.created_at,
        })
    }
}

/// A role read back from the store; an unknown one means the data is corrupt.
pub(super) fn parse_role(s: &str) -> Result<Role> {
    s.parse()
        .map_err(|_| StoreError::Database(format!("stored role {s:?} is unknown")))
}

#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub tenant_id: String,
    pub email: String,
    pub role: Role,
    pub token_hash: Vec<u8>,
    pub invited_by: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(FromRow)]
struct InvitationRow {
    id: String,
    tenant_id: String,
    email: String,
    role: String,
    invited_by: String,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<InvitationRow> for Invitation {
    type Error = StoreError;

    fn try_from(row: InvitationRow) -> Result<Self> {
        Ok(Invitation {
            role: parse_role(&row.role)?,
            id: row.id,
            tenant_id: row.tenant_id,
            email: row.email,
            invited_by: row.invited_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}

/// The result of redeeming an invitation.
#[derive(Debug, Clone)]
pub struct AcceptedInvitation {
    pub user: User,
    pub tenant_id: String,
    pub role: Role,
}

const MEMBER_COLUMNS: &str =
    "m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id";

/// Serialises membership changes of one tenant, so two concurrent changes cannot both see a
/// second owner and together leave none. SQLite's write transactions are already serial.
async fn lock_tenant(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    tenant_id: &str,
) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn owner_count(tx: &mut Transaction<'_, Any>, tenant_id: &str) -> Result<i64> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner'")
            .bind(tenant_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(n)
}

async fn member_in_tx(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    user_id: &str,
) -> Result<Member> {
    sqlx::query_as::<_, MemberRow>(&format!(
        "SELECT {MEMBER_COLUMNS} WHERE m.tenant_id = $1 AND m.user_id = $2"
    ))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?
    .try_into()
}

impl Store {
    pub async fn members(&self, tenant_id: &str) -> Result<Vec<Member>> {
        sqlx::query_as::<_, MemberRow>(&format!(
            "SELECT {MEMBER_COLUMNS} WHERE m.tenant_id = $1 ORDER BY u.email"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Member::try_from)
        .collect()
    }

    pub async fn member(&self, tenant_id: &str, user_id: &str) -> Result<Option<Member>> {
        sqlx::query_as::<_, MemberRow>(&format!(
            "SELECT {MEMBER_COLUMNS} WHERE m.tenant_id = $1 AND m.user_id = $2"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .map(Member::try_from)
        .transpose()
    }

    /// Adds an existing user; `Conflict` when already a member.
    pub async fn add_member(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Role,
        audit: &AuditEvent,
    ) -> Result<Member> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant_id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict("already a member of this tenant".into()),
                other => other,
            })?;
        record(&mut tx, audit).await?;
        let member = member_in_tx(&mut tx, tenant_id, user_id).await?;
        tx.commit().await?;
        Ok(member)
    }

    /// Changes a member's role; refuses (`Conflict`) to leave the tenant without an owner.
    pub async fn set_member_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Role,
        audit: &AuditEvent,
    ) -> Result<Member> {
        let mut tx = self.write_tx().await?;
        lock_tenant(&mut tx, self.backend, tenant_id).await?;
        let current = member_in_tx(&mut tx, tenant_id, user_id).await?;
        if current.role == Role::Owner
            && role != Role::Owner
            && owner_count(&mut tx, tenant_id).await? <= 1
        {
            return Err(StoreError::Conflict(
                "a tenant must keep at least one owner".into(),
            ));
        }
        sqlx::query("UPDATE memberships SET role = $1 WHERE tenant_id = $2 AND user_id = $3")
            .bind(role.as_str())
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        let member = member_in_tx(&mut tx, tenant_id, user_id).await?;
        tx.commit().await?;
        Ok(member)
    }

    /// Removes a member; refuses (`Conflict`) to remove the last owner.
    pub async fn remove_member(
        &self,
        tenant_id: &str,
        user_id: &str,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        lock_tenant(&mut tx, self.backend, tenant_id).await?;
        let current = member_in_tx(&mut tx, tenant_id, user_id).await?;
        if current.role == Role::Owner && owner_count(&mut tx, tenant_id).await? <= 1 {
            return Err(StoreError::Conflict(
                "a tenant must keep at least one owner".into(),
            ));
        }
        sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_invitation(
        &self,
        new: &NewInvitation,
        audit: &AuditEvent,
    ) -> Result<Invitation> {
        let invitation = Invitation {
            id: new_id(),
            tenant_id: new.tenant_id.clone(),
            email: new.email.clone(),
            role: new.role,
            invited_by: new.invited_by.clone(),
            created_at: now_ms(),
            expires_at: new.expires_at,
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO invitations (id, tenant_id, email, role, token_hash, invited_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&invitation.id)
        .bind(&invitation.tenant_id)
        .bind(&invitation.email)
        .bind(invitation.role.as_str())
        .bind(&new.token_hash)
        .bind(&invitation.invited_by)
        .bind(invitation.created_at)
        .bind(invitation.expires_at)
        .execute(&mut *tx)
        .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(invitation)
    }

    /// Pending (unaccepted, unexpired) invitations of a tenant.
    pub async fn invitations(&self, tenant_id: &str) -> Result<Vec<Invitation>> {
        sqlx::query_as::<_, InvitationRow>(
            "SELECT id, tenant_id, email, role, invited_by, created_at, expires_at FROM invitations
             WHERE tenant_id = $1 AND accepted_at IS NULL AND expires_at > $2 ORDER BY created_at",
        )
        .bind(tenant_id)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Invitation::try_from)
        .collect()
    }

    /// Withdraws an invitation not yet accepted: its link stops working.
    pub async fn revoke_invitation(
        &self,
        tenant_id: &str,
        id: &str,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query(
            "DELETE FROM invitations WHERE tenant_id = $1 AND id = $2 AND accepted_at IS NULL",
        )
        .bind(tenant_id)
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

    /// Gives an invitation not yet accepted a new token and expiry: the old link stops
    /// working, the new one is shown once.
    pub async fn renew_invitation(
        &self,
        tenant_id: &str,
        id: &str,
        token_hash: &[u8],
        expires_at: i64,
        audit: &AuditEvent,
    ) -> Result<Invitation> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query_as::<_, InvitationRow>(
            "UPDATE invitations SET token_hash = $1, expires_at = $2
             WHERE tenant_id = $3 AND id = $4 AND accepted_at IS NULL
             RETURNING id, tenant_id, email, role, invited_by, created_at, expires_at",
        )
        .bind(token_hash)
        .bind(expires_at)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Invitation::try_from(row)
    }

    /// One invitation of a tenant not yet accepted, expired or not.
    pub async fn invitation(&self, tenant_id: &str, id: &str) -> Result<Option<Invitation>> {
        sqlx::query_as::<_, InvitationRow>(
            "SELECT id, tenant_id, email, role, invited_by, created_at, expires_at FROM invitations
             WHERE tenant_id = $1 AND id = $2 AND accepted_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(Invitation::try_from)
        .transpose()
    }

    /// Whether `token_hash` names an invitation that can still be redeemed.
    pub async fn invitation_is_pending(&self, token_hash: &[u8]) -> Result<bool> {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM invitations WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Redeems an invitation: creates the user (or, if the e-mail has meanwhile got an account,
    /// `Conflict`), adds the membership and marks the invitation used, all at once. An unknown,
    /// used or expired token is `NotFound`.
    pub async fn accept_invitation(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        source_ip: Option<String>,
    ) -> Result<AcceptedInvitation> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // Claiming the row first makes a concurrent second redemption find nothing.
        let claimed = sqlx::query(
            "UPDATE invitations SET accepted_at = $1 WHERE token_hash = $2 AND accepted_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let invitation: Invitation = sqlx::query_as::<_, InvitationRow>(
            "SELECT id, tenant_id, email, role, invited_by, created_at, expires_at FROM invitations WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_one(&mut *tx)
        .await?
        .try_into()?;
        let user = User {
            id: new_id(),
            email: invitation.email.clone(),
            password_hash: password_hash.to_owned(),
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict("an account with this e-mail exists: sign in instead".into())
            }
            other => other,
        })?;
        sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&invitation.tenant_id)
            .bind(&user.id)
            .bind(invitation.role.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            &AuditEvent {
                tenant_id: invitation.tenant_id.clone(),
                actor: format!("user:{}", user.id),
                actor_name: user.email.clone(),
                action: "invitation.accept".into(),
                target: format!("member:{}", user.id),
                source_ip,
                details: Some(
                    serde_json::json!({ "invitation_id": invitation.id, "role": invitation.role })
                        .to_string(),
                ),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(AcceptedInvitation {
            user,
            tenant_id: invitation.tenant_id,
            role: invitation.role,
        })
    }
}
