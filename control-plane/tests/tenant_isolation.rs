//! Tenant isolation: nothing of one tenant is readable or writable from another (always 404,
//! so existence does not leak); viewers cannot mutate; an `api` key acts with its role in its
//! tenant only; a `service` key can do nothing but its connectivity check.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestDb;
use support::server::{Client, TestServer};

/// Every tenant-scoped operation, as (method, path, body, mutates).
fn operations(
    tenant: &str,
    key_id: &str,
    user_id: &str,
) -> Vec<(Method, String, Option<Value>, bool)> {
    let t = format!("/api/v1/tenants/{tenant}");
    vec![
        (Method::GET, t.clone(), None, false),
        (
            Method::PATCH,
            t.clone(),
            Some(json!({"name": "hijacked"})),
            true,
        ),
        (Method::GET, format!("{t}/members"), None, false),
        (
            Method::POST,
            format!("{t}/members"),
            Some(json!({"email": "x@example.com", "role": "viewer"})),
            true,
        ),
        (
            Method::PATCH,
            format!("{t}/members/{user_id}"),
            Some(json!({"role": "viewer"})),
            true,
        ),
        (Method::GET, format!("{t}/invitations"), None, false),
        (Method::GET, format!("{t}/keys"), None, false),
        (
            Method::POST,
            format!("{t}/keys"),
            Some(json!({"name": "k", "type": "service"})),
            true,
        ),
        (Method::GET, format!("{t}/keys/{key_id}"), None, false),
        (
            Method::POST,
            format!("{t}/keys/{key_id}/revoke"),
            None,
            true,
        ),
        (Method::GET, format!("{t}/audit"), None, false),
        (Method::DELETE, format!("{t}/members/{user_id}"), None, true),
        (Method::DELETE, t.clone(), None, true),
    ]
}

struct World {
    server: TestServer,
    ada: Client,
    bob: Client,
    ada_tenant: String,
    bob_tenant: String,
    bob_key_id: String,
    bob_user_id: String,
}

async fn world(db: &TestDb) -> World {
    let server = TestServer::start(db, |_| {}).await;
    let ada = server.admin().await;
    let bob = server.user("bob@example.com").await;
    let ada_tenant = ada.tenant("ada's").await;
    let bob_tenant = bob.tenant("bob's").await;
    let (bob_key_id, _) = bob
        .key(&bob_tenant, json!({"name": "bob dp", "type": "service"}))
        .await;
    let (_, me) = bob.get("/api/v1/auth/me").await;
    let bob_user_id = me["id"].as_str().expect("id").to_owned();
    World {
        server,
        ada,
        bob,
        ada_tenant,
        bob_tenant,
        bob_key_id,
        bob_user_id,
    }
}

/// A snapshot of everything in a tenant, to prove nothing changed.
async fn snapshot(owner: &Client, tenant: &str) -> Value {
    let mut parts = Vec::new();
    for path in ["", "/members", "/keys", "/audit", "/invitations"] {
        let (status, body) = owner.get(&format!("/api/v1/tenants/{tenant}{path}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        parts.push(body);
    }
    Value::Array(parts)
}

async fn another_tenant_is_invisible_to_everyone_outside_it(db: &TestDb) {
    let w = world(db).await;
    let (_, ada_service_key) = w
        .ada
        .key(&w.ada_tenant, json!({"name": "dp", "type": "service"}))
        .await;
    let (_, ada_admin_key) = w
        .ada
        .key(
            &w.ada_tenant,
            json!({"name": "ci", "type": "api", "role": "admin"}),
        )
        .await;
    let (_, ada_viewer_key) = w
        .ada
        .key(&w.ada_tenant, json!({"name": "ro", "type": "api"}))
        .await;
    let outsiders = [
        ("ada's session", w.ada.clone()),
        ("ada's service key", w.ada.with_token(&ada_service_key)),
        ("ada's admin api key", w.ada.with_token(&ada_admin_key)),
        ("ada's viewer api key", w.ada.with_token(&ada_viewer_key)),
    ];
    let before = snapshot(&w.bob, &w.bob_tenant).await;
    for (who, client) in &outsiders {
        for (method, path, body, _) in operations(&w.bob_tenant, &w.bob_key_id, &w.bob_user_id) {
            let (status, response) = client.call(method.clone(), &path, body).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{who}: {method} {path}: {response}"
            );
        }
        let (status, list) = client.get("/api/v1/tenants").await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<_> = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|t| t["id"].clone())
            .collect();
        assert_eq!(
            ids,
            vec![json!(w.ada_tenant)],
            "{who} sees only ada's tenant"
        );
    }
    // A tenant that does not exist looks exactly like one that does.
    let (status, ghost) = w
        .ada
        .get("/api/v1/tenants/00000000-0000-0000-0000-000000000000")
        .await;
    let (_, real) = w
        .ada
        .get(&format!("/api/v1/tenants/{}", w.bob_tenant))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(ghost, real);
    assert_eq!(
        snapshot(&w.bob, &w.bob_tenant).await,
        before,
        "bob's tenant is untouched"
    );
    let (_, bobs) = w.bob.get("/api/v1/tenants").await;
    assert_eq!(
        bobs["data"].as_array().expect("data").len(),
        1,
        "bob sees only his tenant"
    );
    assert_eq!(bobs["data"][0]["id"], json!(w.bob_tenant));
    w.server.stop().await;
}

async fn a_viewer_reads_but_cannot_mutate(db: &TestDb) {
    let w = world(db).await;
    let viewer = w.server.user("vera@example.com").await;
    let (status, added) = w
        .bob
        .post(
            &format!("/api/v1/tenants/{}/members", w.bob_tenant),
            json!({"email": "vera@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(
        (status, added["status"].as_str()),
        (StatusCode::CREATED, Some("added")),
        "{added}"
    );
    let (_, bob_viewer_key) = w
        .bob
        .key(
            &w.bob_tenant,
            json!({"name": "ro", "type": "api", "role": "viewer"}),
        )
        .await;
    let before = snapshot(&w.bob, &w.bob_tenant).await;
    for (who, client) in [
        ("viewer", viewer.clone()),
        ("viewer api key", w.bob.with_token(&bob_viewer_key)),
    ] {
        for (method, path, body, mutates) in
            operations(&w.bob_tenant, &w.bob_key_id, &w.bob_user_id)
        {
            let (status, response) = client.call(method.clone(), &path, body).await;
            // Pending invitations are for admins, like every mutation.
            let expected = if mutates || path.ends_with("/invitations") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            };
            assert_eq!(status, expected, "{who}: {method} {path}: {response}");
        }
    }
    let after = snapshot(&w.bob, &w.bob_tenant).await;
    // Reads leave key usage behind (last_used_at) but nothing else; compare without it.
    assert_eq!(strip_last_used(after), strip_last_used(before));
    w.server.stop().await;
}

async fn an_api_key_acts_with_its_role_in_its_tenant_only(db: &TestDb) {
    let w = world(db).await;
    let (_, admin_key) = w
        .bob
        .key(
            &w.bob_tenant,
            json!({"name": "ci", "type": "api", "role": "admin"}),
        )
        .await;
    let ci = w.bob.with_token(&admin_key);
    let t = format!("/api/v1/tenants/{}", w.bob_tenant);
    // Admin work is allowed.
    let (status, created) = ci
        .post(
            &format!("{t}/keys"),
            json!({"name": "made by ci", "type": "service"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "made by ci");
    let (status, _) = ci
        .post(
            &format!("{t}/keys"),
            json!({"name": "member key", "type": "api", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // But no more than its role.
    let (status, body) = ci
        .post(
            &format!("{t}/keys"),
            json!({"name": "escalate", "type": "api", "role": "owner"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = ci
        .call(Method::PATCH, &t, Some(json!({"name": "renamed by ci"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "renaming is for owners");
    let (status, _) = ci.call(Method::DELETE, &t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = ci.post("/api/v1/tenants", json!({"name": "new"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "keys cannot create tenants");
    // Its actions are audited under the key.
    let (_, audit) = w
        .bob
        .get(&format!("{t}/audit?action=key.create&limit=1"))
        .await;
    assert_eq!(audit["data"][0]["actor_name"], "key ci");
    assert!(
        audit["data"][0]["actor"]
            .as_str()
            .expect("actor")
            .starts_with("key:")
    );
    // Nor can it revoke a key more powerful than itself.
    let (owner_key_id, _) = w
        .bob
        .key(
            &w.bob_tenant,
            json!({"name": "owner key", "type": "api", "role": "owner"}),
        )
        .await;
    let (status, body) = ci
        .post(&format!("{t}/keys/{owner_key_id}/revoke"), json!(null))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    w.server.stop().await;
}

async fn a_service_key_only_checks_connectivity(db: &TestDb) {
    let w = world(db).await;
    let (_, service_key) = w
        .bob
        .key(&w.bob_tenant, json!({"name": "dp", "type": "service"}))
        .await;
    let dp = w.bob.with_token(&service_key);
    let (status, list) = dp.get("/api/v1/tenants").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    assert_eq!(list["data"][0]["id"], json!(w.bob_tenant));
    assert_eq!(list["data"][0]["name"], "bob's");
    let (status, _) = dp.get(&format!("/api/v1/tenants/{}", w.bob_tenant)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "its own tenant by id is part of the check"
    );
    for (method, path, body, _) in operations(&w.bob_tenant, &w.bob_key_id, &w.bob_user_id)
        .into_iter()
        .skip(1)
    {
        let (status, response) = dp.call(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {response}");
    }
    let (status, _) = dp.post("/api/v1/tenants", json!({"name": "new"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    w.server.stop().await;
}

fn strip_last_used(mut v: Value) -> Value {
    if let Some(keys) = v[2]["data"].as_array_mut() {
        for key in keys {
            key["last_used_at"] = Value::Null;
        }
    }
    v
}

on_both_backends!(
    another_tenant_is_invisible_to_everyone_outside_it,
    a_viewer_reads_but_cannot_mutate,
    an_api_key_acts_with_its_role_in_its_tenant_only,
    a_service_key_only_checks_connectivity,
);
