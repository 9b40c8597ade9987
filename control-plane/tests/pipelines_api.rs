//! Pipelines as code over the REST API, and ingest keys bound to their sources.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestDb;
use support::server::{Client, TestServer};

const EXAMPLE: &str = include_str!("../../examples/pipeline.yaml");

async fn post_yaml(client: &Client, path: &str, yaml: &str) -> (StatusCode, Value) {
    let response = client
        .http
        .post(format!("{}{path}", client.base))
        .bearer_auth(client.token.as_deref().unwrap_or_default())
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn version(client: &Client, tenant: &str) -> i64 {
    client.get(&format!("/api/v1/tenants/{tenant}")).await.1["config_version"]
        .as_i64()
        .expect("version")
}

async fn pipelines_are_code_with_revisions(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let base = format!("/api/v1/tenants/{tenant}/pipelines");
    assert_eq!(version(&admin, &tenant).await, 0);

    let (status, created) = post_yaml(&admin, &format!("{base}?name=web"), EXAMPLE).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (created["name"].as_str(), created["revision"].as_i64()),
        (Some("web"), Some(1))
    );
    assert_eq!(
        created["spec"]["destinations"][0]["webhook"]["signing_secret"],
        "CRM_WEBHOOK_SECRET"
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        version(&admin, &tenant).await,
        created["config_version"].as_i64().expect("v")
    );

    let (status, dup) = post_yaml(&admin, &format!("{base}?name=web"), EXAMPLE).await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");

    // JSON: a new revision, the name kept.
    let spec = json!({"sources": [{"name": "web"}, {"name": "app"}]});
    let (status, updated) = admin
        .call(
            Method::PUT,
            &format!("{base}/{id}"),
            Some(json!({"spec": spec})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (updated["revision"].as_i64(), updated["name"].as_str()),
        (Some(2), Some("web"))
    );
    assert!(updated["config_version"].as_i64() > created["config_version"].as_i64());

    let (_, revisions) = admin.get(&format!("{base}/{id}/revisions")).await;
    let numbers: Vec<_> = revisions["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["revision"].as_i64())
        .collect();
    assert_eq!(numbers, vec![Some(2), Some(1)]);
    assert_eq!(revisions["data"][1]["created_by"], "admin@example.com");

    // Roll back to revision 1: revision 3 with revision 1's spec.
    let (status, rolled) = admin
        .post(&format!("{base}/{id}/rollback"), json!({"revision": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["revision"], 3);
    assert_eq!(rolled["spec"], created["spec"]);
    let (status, _) = admin
        .post(&format!("{base}/{id}/rollback"), json!({"revision": 99}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, list) = admin.get(&base).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let (_, audit) = admin
        .get(&format!("/api/v1/tenants/{tenant}/audit?action=pipeline."))
        .await;
    let actions: Vec<_> = audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        vec!["pipeline.rollback", "pipeline.update", "pipeline.create"]
    );
    server.stop().await;
}

async fn invalid_specs_are_refused_with_every_problem_located(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let base = format!("/api/v1/tenants/{tenant}/pipelines");

    let typo = EXAMPLE.replace("      batch_size: 50", "      batch_sise: 50");
    let (status, body) = post_yaml(&admin, &base, &typo).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["path"], "destinations[0].webhook.batch_sise");
    let line = detail["line"].as_u64().expect("line") as usize;
    assert!(
        typo.lines()
            .nth(line - 1)
            .is_some_and(|l| l.contains("batch_sise"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("spec.destinations[0].webhook.batch_sise: unknown field")
    );

    let (status, body) = admin
        .post(&base, json!({"name": "x", "spec": {"sources": [{"name": "Web"}], "destinations": [{"name": "d"}]}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<_> = body["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(paths, vec!["sources[0].name", "destinations[0]"]);
    let (status, body) = admin.post(&base, json!({"name": "x", "spec": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["message"], "spec: missing field `sources`");

    for (content_type, bytes, expected) in [
        (
            "application/yaml",
            "sources: [".as_bytes().to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/yaml",
            vec![0xff, 0xfe],
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            b"{\"spec\":".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"{"spec":{},"extra":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "text/plain",
            b"sources: []".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let response = admin
            .http
            .post(format!("{}{base}", admin.base))
            .bearer_auth(admin.token.as_deref().unwrap_or_default())
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), expected, "{content_type}");
        let body: Value = response.json().await.expect("json error");
        assert!(body["error"]["code"].is_string());
    }
    assert_eq!(
        admin.get(&base).await.1["data"].as_array().map(Vec::len),
        Some(0),
        "nothing half-written"
    );
    assert_eq!(
        version(&admin, &tenant).await,
        0,
        "no version for refused changes"
    );

    let schema: Value = reqwest::get(format!("{}/api/v1/schemas/pipeline.json", server.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema.to_string().contains("signing_secret"));

    let catalogue: Value = reqwest::get(format!("{}/api/v1/catalogue", server.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = catalogue["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    for id in ["tiktok", "postgres", "ga4", "meta", "webhook", "amplitude"] {
        assert!(ids.contains(&id), "{id} is in the catalogue: {ids:?}");
    }
    let tiktok = catalogue["data"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == "tiktok"))
        .expect("tiktok");
    let token = tiktok["settings"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == "access_token"))
        .expect("access_token setting");
    assert_eq!(token["type"], "secret");
    assert_eq!(token["required"], true);
    let definition: Value = reqwest::get(format!(
        "{}/api/v1/schemas/destination-definition.json",
        server.base
    ))
    .await
    .expect("get")
    .json()
    .await
    .expect("json");
    assert_eq!(definition["additionalProperties"], false);
    assert!(definition.to_string().contains("rate_limit"));
    server.stop().await;
}

async fn ingest_keys_belong_to_a_pipeline_source(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let (_, created) = post_yaml(
        &admin,
        &format!("/api/v1/tenants/{tenant}/pipelines?name=web"),
        EXAMPLE,
    )
    .await;
    let pipeline = created["id"].as_str().expect("id").to_owned();
    let keys = format!("/api/v1/tenants/{tenant}/keys");
    let before = version(&admin, &tenant).await;

    let (status, key) = admin
        .post(
            &keys,
            json!({"name": "site", "type": "ingest", "pipeline_id": pipeline, "source": "web"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    assert!(key["key"].as_str().expect("key").starts_with("slk_ing_"));
    assert_eq!(
        (key["pipeline_id"].as_str(), key["source"].as_str()),
        (Some(pipeline.as_str()), Some("web"))
    );
    assert_eq!(
        version(&admin, &tenant).await,
        before + 1,
        "a new ingest key is a new configuration"
    );

    for (body, needle) in [
        (
            json!({"name": "k", "type": "ingest", "pipeline_id": pipeline, "source": "nope"}),
            "has no source \"nope\"",
        ),
        (
            json!({"name": "k", "type": "ingest", "pipeline_id": "missing", "source": "web"}),
            "no such pipeline",
        ),
        (json!({"name": "k", "type": "ingest"}), "needs both"),
        (
            json!({"name": "k", "type": "service", "pipeline_id": pipeline}),
            "only ingest keys",
        ),
    ] {
        let (status, error) = admin.post(&keys, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            error["error"]["message"]
                .as_str()
                .expect("message")
                .contains(needle),
            "{error}"
        );
    }
    // An ingest key is not a credential for the management API.
    let (status, _) = admin
        .with_token(key["key"].as_str().expect("key"))
        .get("/api/v1/tenants")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Deleting the pipeline revokes its keys (and is a new configuration).
    let at_delete = version(&admin, &tenant).await;
    let (status, _) = admin
        .call(
            Method::DELETE,
            &format!("/api/v1/tenants/{tenant}/pipelines/{pipeline}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = admin.get(&keys).await;
    assert_eq!(listed["data"][0]["status"], "revoked");
    assert!(version(&admin, &tenant).await > at_delete);
    server.stop().await;
}

async fn viewers_read_pipelines_and_members_edit_them(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let viewer = server.user("vera@example.com").await;
    let member = server.user("max@example.com").await;
    for (email, role) in [
        ("vera@example.com", "viewer"),
        ("max@example.com", "member"),
    ] {
        let (status, _) = admin
            .post(
                &format!("/api/v1/tenants/{tenant}/members"),
                json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let base = format!("/api/v1/tenants/{tenant}/pipelines");
    let spec = json!({"name": "p", "spec": {"sources": [{"name": "web"}]}});
    assert_eq!(
        viewer.post(&base, spec.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, created) = member.post(&base, spec).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().expect("id");
    assert_eq!(viewer.get(&format!("{base}/{id}")).await.0, StatusCode::OK);
    assert_eq!(
        viewer
            .get(&format!("/api/v1/tenants/{tenant}/data-planes"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        viewer
            .call(Method::DELETE, &format!("{base}/{id}"), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let outsider = server.user("eve@example.com").await;
    assert_eq!(
        outsider.get(&format!("{base}/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        outsider
            .get(&format!("/api/v1/tenants/{tenant}/data-planes"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

/// A YAML document is kept as written, with the change message, through revisions and
/// roll back; a number where a name is due is refused.
async fn documents_keep_their_comments_and_changes_their_message(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let base = format!("/api/v1/tenants/{tenant}/pipelines");
    let first = "# the site\nsources:\n  - name: web  # marketing\narchive:\n  dataset: events\n";
    let (status, created) = post_yaml(&admin, &format!("{base}?name=web"), first).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["source"], first);
    let id = created["id"].as_str().expect("id").to_owned();
    let put = |yaml: &'static str, message: &'static str| {
        let client = admin.http.clone();
        let url = format!("{}{base}/{id}?message={message}", admin.base);
        let token = admin.token.clone().unwrap_or_default();
        async move {
            let response = client
                .put(url)
                .bearer_auth(token)
                .header("content-type", "application/yaml")
                .body(yaml)
                .send()
                .await
                .expect("send");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, refused) = put("sources:\n  - name: web\narchive:\n  dataset: 42\n", "x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["error"]["details"][0]["path"], "archive.dataset",
        "{refused}"
    );
    assert_eq!(refused["error"]["details"][0]["line"], 4, "{refused}");
    let second = "# the site, now with the app\nsources:\n  - name: web\n  - name: app\n";
    let (status, updated) = put(second, "add%20the%20app").await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (updated["source"].as_str(), updated["message"].as_str()),
        (Some(second), Some("add the app"))
    );
    let (status, bad) = put(second, "two%0Alines").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

    let (_, revisions) = admin.get(&format!("{base}/{id}/revisions")).await;
    assert_eq!(revisions["data"][0]["message"], "add the app");
    assert_eq!(revisions["data"][1]["source"], first);
    let (status, rolled) = admin
        .post(&format!("{base}/{id}/rollback"), json!({"revision": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(
        rolled["source"], first,
        "a roll back restores the document as written"
    );
    assert_eq!(rolled["message"], "roll back to revision 1");
    let (_, audit) = admin
        .get(&format!(
            "/api/v1/tenants/{tenant}/audit?action=pipeline.update"
        ))
        .await;
    assert_eq!(
        audit["data"][0]["details"]["message"], "add the app",
        "{audit}"
    );
    server.stop().await;
}

on_both_backends!(
    documents_keep_their_comments_and_changes_their_message,
    pipelines_are_code_with_revisions,
    invalid_specs_are_refused_with_every_problem_located,
    ingest_keys_belong_to_a_pipeline_source,
    viewers_read_pipelines_and_members_edit_them,
);
