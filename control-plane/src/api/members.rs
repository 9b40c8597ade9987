use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{List, audit_event, require_role, rfc3339};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ClientIp};
use crate::role::Role;
use crate::state::AppState;
use crate::store::{Invitation, Member, NewInvitation, now_ms};
use crate::validate;

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub created_at: String,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            role: m.role,
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub created_at: String,
    pub expires_at: String,
    /// The one-time token to pass to `POST /api/v1/auth/accept-invite`; returned only when the
    /// invitation is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl InvitationView {
    fn new(i: Invitation, token: Option<String>) -> Self {
        Self {
            id: i.id,
            email: i.email,
            role: i.role,
            invited_by: i.invited_by,
            created_at: rfc3339(i.created_at),
            expires_at: rfc3339(i.expires_at),
            token,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    #[schema(
        max_length = 254,
        pattern = r"^\s*[^@\s\u0000-\u001F\u007F-\u009F]+@[^@.\s\u0000-\u001F\u007F-\u009F]([^@\s\u0000-\u001F\u007F-\u009F]*[^@.\s\u0000-\u001F\u007F-\u009F])?\s*$"
    )]
    pub email: String,
    pub role: Role,
}

/// Either the member that was added, or the invitation created for someone without an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddMemberResponse {
    /// `added` or `invited`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation: Option<InvitationView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    pub role: Role,
}

/// Only an owner may make or unmake owners.
fn check_grant(actor_role: Role, from: Option<Role>, to: Role) -> Result<(), ApiError> {
    if actor_role < Role::Owner && (to == Role::Owner || from == Some(Role::Owner)) {
        return Err(ApiError::forbidden(
            "only an owner may grant, change or remove the owner role",
        ));
    }
    Ok(())
}

/// The tenant's members.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/members", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = List<MemberView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<List<MemberView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let members = state.store.members(&tenant_id).await?;
    Ok(axum::Json(List {
        data: members.into_iter().map(MemberView::from).collect(),
    }))
}

/// Pending invitations (tokens are never shown again).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/invitations", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = List<InvitationView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_invitations(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<List<InvitationView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Admin).await?;
    let invitations = state.store.invitations(&tenant_id).await?;
    Ok(axum::Json(List {
        data: invitations
            .into_iter()
            .map(|i| InvitationView::new(i, None))
            .collect(),
    }))
}

/// Add a member by e-mail. Someone without an account gets an invitation whose one-time token
/// (valid 7 days) is returned here, once.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/members", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path)), request_body = AddMember,
    responses((status = 201, body = AddMemberResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Already a member", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<(StatusCode, axum::Json<AddMemberResponse>), ApiError> {
    let actor_role = require_role(&state, &principal, &tenant_id, Role::Admin).await?;
    check_grant(actor_role, None, body.role)?;
    let email = validate::email(&body.email)?;
    if let Some(user) = state.store.user_by_email(&email).await? {
        let audit = audit_event(
            &principal,
            ip,
            &tenant_id,
            "member.add",
            format!("member:{}", user.id),
            Some(serde_json::json!({ "email": email, "role": body.role })),
        );
        let member = state
            .store
            .add_member(&tenant_id, &user.id, body.role, &audit)
            .await?;
        return Ok((
            StatusCode::CREATED,
            axum::Json(AddMemberResponse {
                status: "added",
                member: Some(member.into()),
                invitation: None,
            }),
        ));
    }
    let token = sluice_keys::random::token::<32>()?;
    let ttl_ms = i64::try_from(state.config.invitation_ttl.as_millis()).unwrap_or(i64::MAX);
    let new = NewInvitation {
        tenant_id: tenant_id.clone(),
        email: email.clone(),
        role: body.role,
        token_hash: state.hasher.hash_text(&token),
        invited_by: principal.actor_name(),
        expires_at: now_ms().saturating_add(ttl_ms),
    };
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "invitation.create",
        format!("invitation:{email}"),
        Some(serde_json::json!({ "email": email, "role": body.role })),
    );
    let invitation = state.store.create_invitation(&new, &audit).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(AddMemberResponse {
            status: "invited",
            member: None,
            invitation: Some(InvitationView::new(invitation, Some(token))),
        }),
    ))
}

/// Change a member's role.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant_id}/members/{user_id}", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("user_id" = String, Path)), request_body = UpdateMember,
    responses((status = 200, body = MemberView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Would leave no owner", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn update_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateMember>,
) -> Result<axum::Json<MemberView>, ApiError> {
    let actor_role = require_role(&state, &principal, &tenant_id, Role::Admin).await?;
    let current = state
        .store
        .member(&tenant_id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member not found"))?;
    check_grant(actor_role, Some(current.role), body.role)?;
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "member.role",
        format!("member:{user_id}"),
        Some(serde_json::json!({ "from": current.role, "to": body.role })),
    );
    let member = state
        .store
        .set_member_role(&tenant_id, &user_id, body.role, &audit)
        .await?;
    Ok(axum::Json(member.into()))
}

/// Remove a member. Anyone may remove themselves; removing others takes the admin role.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant_id}/members/{user_id}", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Would leave no owner", body = ErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let is_self = matches!(&principal, Principal::User { id, .. } if *id == user_id);
    let actor_role = require_role(
        &state,
        &principal,
        &tenant_id,
        if is_self { Role::Viewer } else { Role::Admin },
    )
    .await?;
    let current = state
        .store
        .member(&tenant_id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member not found"))?;
    if !is_self && actor_role < Role::Owner && current.role == Role::Owner {
        return Err(ApiError::forbidden("only an owner may remove an owner"));
    }
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "member.remove",
        format!("member:{user_id}"),
        Some(serde_json::json!({ "email": current.email })),
    );
    state
        .store
        .remove_member(&tenant_id, &user_id, &audit)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn invitation_not_found(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::NotFound => ApiError::not_found("invitation not found"),
        other => other.into(),
    }
}

/// An invitation the caller may change: an admin's, of a role they may grant.
async fn pending_invitation(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    invitation_id: &str,
) -> Result<crate::store::Invitation, ApiError> {
    let actor_role = require_role(state, principal, tenant_id, Role::Admin).await?;
    let invitation = state
        .store
        .invitation(tenant_id, invitation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("invitation not found"))?;
    check_grant(actor_role, None, invitation.role)?;
    Ok(invitation)
}

/// Withdraw an invitation not yet accepted: its link stops working.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant_id}/invitations/{invitation_id}", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("invitation_id" = String, Path)),
    responses((status = 204, description = "Withdrawn"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, invitation_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let invitation = pending_invitation(&state, &principal, &tenant_id, &invitation_id).await?;
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "invitation.revoke",
        format!("invitation:{}", invitation.email),
        Some(serde_json::json!({ "email": invitation.email, "role": invitation.role })),
    );
    state
        .store
        .revoke_invitation(&tenant_id, &invitation_id, &audit)
        .await
        .map_err(invitation_not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new link for an invitation not yet accepted (expired or not): the old link stops
/// working, the new one is returned once and is valid for the full invitation lifetime.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/invitations/{invitation_id}/renew", tag = "members", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("invitation_id" = String, Path)),
    responses((status = 200, body = InvitationView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn renew_invitation(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, invitation_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<InvitationView>, ApiError> {
    let invitation = pending_invitation(&state, &principal, &tenant_id, &invitation_id).await?;
    let token = sluice_keys::random::token::<32>()?;
    let ttl_ms = i64::try_from(state.config.invitation_ttl.as_millis()).unwrap_or(i64::MAX);
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "invitation.renew",
        format!("invitation:{}", invitation.email),
        Some(serde_json::json!({ "email": invitation.email, "role": invitation.role })),
    );
    let renewed = state
        .store
        .renew_invitation(
            &tenant_id,
            &invitation_id,
            &state.hasher.hash_text(&token),
            now_ms().saturating_add(ttl_ms),
            &audit,
        )
        .await
        .map_err(invitation_not_found)?;
    Ok(axum::Json(InvitationView::new(renewed, Some(token))))
}
