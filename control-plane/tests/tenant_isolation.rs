//! Tenant isolation: nothing of one tenant is readable or writable from another (always 404,
//! so existence does not leak); each role does what it may and is refused (403) the rest; an
//! `api` key acts with its role in its tenant only; a `service` key can do nothing but its
//! connectivity check. The list of operations is checked against the OpenAPI document, so a
//! tenant-scoped route added later without joining the sweep fails here.

mod support;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_control_plane::role::Role;
use support::TestDb;
use support::server::{Client, TestServer};

/// The ids an operation's path names.
struct Ids {
    tenant: String,
    key: String,
    user: String,
    pipeline: String,
    invitation: String,
    milestone: String,
}

impl Ids {
    /// The OpenAPI document's own placeholders, to compare the sweep with it.
    fn templates() -> Ids {
        Ids {
            tenant: "{tenant_id}".into(),
            key: "{key_id}".into(),
            user: "{user_id}".into(),
            pipeline: "{pipeline_id}".into(),
            invitation: "{invitation_id}".into(),
            milestone: "{name}".into(),
        }
    }
}

/// One tenant-scoped operation and the least role that may perform it.
struct Operation {
    method: Method,
    path: String,
    body: Option<Value>,
    needs: Role,
}

fn op(method: Method, path: String, body: Option<Value>, needs: Role) -> Operation {
    Operation {
        method,
        path,
        body,
        needs,
    }
}

/// Every tenant-scoped operation, in an order a role allowed to mutate can run them in (the
/// pipeline is edited and rolled back before it is deleted, the tenant is deleted last).
fn operations(ids: &Ids) -> Vec<Operation> {
    use Method as M;
    use Role::*;
    let t = format!("/api/v1/tenants/{}", ids.tenant);
    let p = format!("{t}/pipelines/{}", ids.pipeline);
    let i = format!("{t}/invitations/{}", ids.invitation);
    let spec = json!({"sources": [{"name": "web"}, {"name": "app"}]});
    vec![
        op(M::GET, t.clone(), None, Viewer),
        op(
            M::PATCH,
            t.clone(),
            Some(json!({"name": "hijacked"})),
            Owner,
        ),
        op(M::GET, format!("{t}/members"), None, Viewer),
        op(
            M::POST,
            format!("{t}/members"),
            Some(json!({"email": "x@example.com", "role": "viewer"})),
            Admin,
        ),
        op(
            M::PATCH,
            format!("{t}/members/{}", ids.user),
            Some(json!({"role": "viewer"})),
            Admin,
        ),
        op(M::GET, format!("{t}/invitations"), None, Admin),
        op(M::POST, format!("{i}/renew"), None, Admin),
        op(M::DELETE, i, None, Admin),
        op(M::GET, format!("{t}/keys"), None, Viewer),
        op(
            M::POST,
            format!("{t}/keys"),
            Some(json!({"name": "k", "type": "service"})),
            Admin,
        ),
        op(
            M::POST,
            format!("{t}/keys"),
            Some(
                json!({"name": "k", "type": "ingest", "pipeline_id": ids.pipeline, "source": "web"}),
            ),
            Admin,
        ),
        op(M::GET, format!("{t}/keys/{}", ids.key), None, Viewer),
        op(M::POST, format!("{t}/keys/{}/revoke", ids.key), None, Admin),
        op(M::GET, format!("{t}/audit"), None, Viewer),
        op(M::GET, format!("{t}/pipelines"), None, Viewer),
        op(
            M::POST,
            format!("{t}/pipelines"),
            Some(json!({"name": "hijack", "spec": {"sources": [{"name": "web"}]}})),
            Member,
        ),
        op(M::GET, p.clone(), None, Viewer),
        op(M::PUT, p.clone(), Some(json!({"spec": spec})), Member),
        op(M::GET, format!("{p}/revisions"), None, Viewer),
        op(
            M::POST,
            format!("{p}/rollback"),
            Some(json!({"revision": 1})),
            Member,
        ),
        op(M::DELETE, p, None, Member),
        op(M::GET, format!("{t}/data-planes"), None, Viewer),
        op(M::GET, format!("{t}/overview"), None, Viewer),
        op(
            M::PUT,
            format!("{t}/milestones/{}", ids.milestone),
            None,
            Viewer,
        ),
        op(M::POST, format!("{t}/query-token"), None, Viewer),
        op(M::DELETE, format!("{t}/members/{}", ids.user), None, Admin),
        op(M::DELETE, t, None, Owner),
    ]
}

/// The sweep names every tenant-scoped route of the API, and only those.
async fn the_sweep_covers_every_tenant_scoped_route(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let (status, doc) = server.client().get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.starts_with("/api/v1/tenants/{tenant_id}"))
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| ["get", "put", "post", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let swept: BTreeSet<String> = operations(&Ids::templates())
        .into_iter()
        .map(|o| format!("{} {}", o.method, o.path))
        .collect();
    assert_eq!(swept, documented);
    server.stop().await;
}

struct World {
    server: TestServer,
    ada: Client,
    bob: Client,
    ada_tenant: String,
    bob_tenant: String,
    ids: Ids,
}

async fn world(db: &TestDb) -> World {
    let server = TestServer::start(db, |_| {}).await;
    let ada = server.admin().await;
    let bob = server.user("bob@example.com").await;
    let ada_tenant = ada.tenant("ada's").await;
    let bob_tenant = bob.tenant("bob's").await;
    let (key, _) = bob
        .key(&bob_tenant, json!({"name": "bob dp", "type": "service"}))
        .await;
    let (_, me) = bob.get("/api/v1/auth/me").await;
    let user = me["id"].as_str().expect("id").to_owned();
    let (status, pipeline) = bob
        .post(
            &format!("/api/v1/tenants/{bob_tenant}/pipelines"),
            json!({"name": "web", "spec": {"sources": [{"name": "web"}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pipeline}");
    let (status, invited) = bob
        .post(
            &format!("/api/v1/tenants/{bob_tenant}/members"),
            json!({"email": "ivy@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invited}");
    let ids = Ids {
        tenant: bob_tenant.clone(),
        key,
        user,
        pipeline: pipeline["id"].as_str().expect("id").to_owned(),
        invitation: invited["invitation"]["id"].as_str().expect("id").to_owned(),
        milestone: "snippet_copied".into(),
    };
    World {
        server,
        ada,
        bob,
        ada_tenant,
        bob_tenant,
        ids,
    }
}

/// A snapshot of everything in a tenant, to prove nothing changed.
async fn snapshot(owner: &Client, tenant: &str) -> Value {
    let mut parts = Vec::new();
    for path in [
        "",
        "/members",
        "/keys",
        "/audit",
        "/invitations",
        "/pipelines",
        "/data-planes",
    ] {
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
        for Operation {
            method, path, body, ..
        } in operations(&w.ids)
        {
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

/// A person added to bob's tenant with `role`, and an API key of bob's with the same role.
async fn colleague(w: &World, email: &str, role: Role) -> (Client, Client) {
    let person = w.server.user(email).await;
    let (status, added) = w
        .bob
        .post(
            &format!("/api/v1/tenants/{}/members", w.bob_tenant),
            json!({"email": email, "role": role}),
        )
        .await;
    assert_eq!(
        (status, added["status"].as_str()),
        (StatusCode::CREATED, Some("added")),
        "{added}"
    );
    let (_, key) = w
        .bob
        .key(
            &w.bob_tenant,
            json!({"name": format!("{role} key"), "type": "api", "role": role}),
        )
        .await;
    (person, w.bob.with_token(&key))
}

/// Runs every operation as `client`: those needing at most `allowed` succeed, the rest are
/// exactly 403 `forbidden`. Query tokens are for people, so a key is refused one.
async fn sweep_as(who: &str, client: &Client, ids: &Ids, allowed: Role) {
    let is_key = who.ends_with("key");
    for Operation {
        method,
        path,
        body,
        needs,
    } in operations(ids)
    {
        let (status, response) = client.call(method.clone(), &path, body).await;
        assert_eq!(
            status.is_success(),
            needs <= allowed && !(is_key && path.ends_with("/query-token")),
            "{who}: {method} {path}: {status} {response}"
        );
        if !status.is_success() {
            assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {method} {path}");
            assert_eq!(response["error"]["code"], "forbidden");
        }
    }
}

async fn a_viewer_reads_but_cannot_mutate(db: &TestDb) {
    let w = world(db).await;
    let (viewer, viewer_key) = colleague(&w, "vera@example.com", Role::Viewer).await;
    let before = snapshot(&w.bob, &w.bob_tenant).await;
    for (who, client) in [("viewer", viewer), ("viewer api key", viewer_key)] {
        sweep_as(who, &client, &w.ids, Role::Viewer).await;
    }
    let after = snapshot(&w.bob, &w.bob_tenant).await;
    // Reads leave key usage behind (last_used_at) but nothing else; compare without it.
    assert_eq!(strip_last_used(after), strip_last_used(before));
    w.server.stop().await;
}

/// A member edits pipelines (and only them) but manages neither people, keys nor the tenant.
async fn a_member_edits_pipelines_but_nothing_else(db: &TestDb) {
    let mut w = world(db).await;
    let (member, member_key) = colleague(&w, "max@example.com", Role::Member).await;
    let before = snapshot(&w.bob, &w.bob_tenant).await;
    for (who, client) in [("member", member), ("member api key", member_key)] {
        // Each pass edits, rolls back and deletes a pipeline of its own.
        w.ids.pipeline = fresh_pipeline(&w.bob, &w.bob_tenant).await;
        sweep_as(who, &client, &w.ids, Role::Member).await;
        let (_, pipelines) = w
            .bob
            .get(&format!("/api/v1/tenants/{}/pipelines", w.bob_tenant))
            .await;
        let names: Vec<_> = pipelines["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect();
        assert_eq!(names, ["hijack"], "{who} created one and deleted the other");
    }
    // People, keys, invitations and the tenant itself are as they were.
    let after = strip_last_used(snapshot(&w.bob, &w.bob_tenant).await);
    let before = strip_last_used(before);
    for part in [0, 1, 2, 4] {
        let (mut a, mut b) = (after[part].clone(), before[part].clone());
        // The tenant's configuration version moved with the pipelines.
        for v in [&mut a, &mut b] {
            if let Some(o) = v.as_object_mut() {
                o.remove("config_version");
                o.remove("updated_at");
            }
        }
        assert_eq!(a, b, "part {part}");
    }
    w.server.stop().await;
}

/// Deletes every pipeline of the tenant and creates `web` afresh; returns its id.
async fn fresh_pipeline(owner: &Client, tenant: &str) -> String {
    let base = format!("/api/v1/tenants/{tenant}/pipelines");
    let (_, list) = owner.get(&base).await;
    for p in list["data"].as_array().expect("data") {
        let id = p["id"].as_str().expect("id");
        let (status, body) = owner
            .call(Method::DELETE, &format!("{base}/{id}"), None)
            .await;
        assert!(status.is_success(), "{body}");
    }
    let (status, created) = owner
        .post(
            &base,
            json!({"name": "web", "spec": {"sources": [{"name": "web"}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().expect("id").to_owned()
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
    for Operation {
        method, path, body, ..
    } in operations(&w.ids).into_iter().skip(1)
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
    a_member_edits_pipelines_but_nothing_else,
    the_sweep_covers_every_tenant_scoped_route,
    an_api_key_acts_with_its_role_in_its_tenant_only,
    a_service_key_only_checks_connectivity,
);
