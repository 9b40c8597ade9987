//! The HTTP contract: bad input gets the right 4xx with a JSON error, the OpenAPI document
//! covers every route, health and metrics answer.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestDb;
use support::server::TestServer;

async fn raw(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    (status, value)
}

/// (method, path, content type, body, expected status, expected error code)
type BadRequestCase = (
    Method,
    String,
    Option<&'static str>,
    Vec<u8>,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn bad_input_gets_the_right_status_and_nothing_is_written() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db, |c| c.max_body_bytes = 4096).await;
    let admin = server.admin().await;
    let token = admin.token.clone().expect("token");
    let tenant = admin.tenant("acme").await;
    let json_ct = Some("application/json");
    let cases: Vec<BadRequestCase> = vec![
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            b"{\"name\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            b"[]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            br#"{"name":"x","extra":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            br#"{"name":42}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            br#"{"name":"  "}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            br#"{"name":"a\u0000b"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            format!(r#"{{"name":"{}"}}"#, "x".repeat(201)).into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            Some("text/plain"),
            br#"{"name":"x"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            None,
            Vec::new(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            json_ct,
            format!(r#"{{"name":"{}"}}"#, "x".repeat(5000)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{tenant}/keys"),
            json_ct,
            br#"{"name":"k","type":"root"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{tenant}/keys"),
            json_ct,
            br#"{"name":"k","type":"service","role":"admin"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{tenant}/keys"),
            json_ct,
            br#"{"name":"k","type":"api","role":"god"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{tenant}/keys"),
            json_ct,
            br#"{"name":"k","type":"api","expires_at":"tomorrow"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{tenant}/keys"),
            json_ct,
            br#"{"name":"k","type":"api","expires_at":"2001-01-01T00:00:00Z"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{tenant}/members"),
            json_ct,
            br#"{"email":"not-an-email","role":"viewer"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::GET,
            "/api/v1/tenants?limit=0".into(),
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/tenants?limit=-1".into(),
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/tenants?limit=99999999999".into(),
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/tenants?cursor=%%%".into(),
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/tenants?bogus=1".into(),
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{tenant}/audit?cursor=bm90LWEtbnVtYmVy"),
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/tenants/%00".into(),
            None,
            Vec::new(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            json_ct,
            br#"{"email":"a\u0000@example.com","password":"x"}"#.to_vec(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Method::GET,
            "/api/v1/nowhere".into(),
            None,
            Vec::new(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/api/v1/tenants".into(),
            None,
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let (got, value) = raw(&server, &token, method.clone(), &path, content_type, body).await;
        assert_eq!(got, status, "{method} {path}: {value}");
        assert_eq!(value["error"]["code"], code, "{method} {path}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (_, tenants) = admin.get("/api/v1/tenants").await;
    assert_eq!(
        tenants["data"].as_array().expect("data").len(),
        1,
        "no rejected request created anything"
    );
    let (_, keys) = admin.get(&format!("/api/v1/tenants/{tenant}/keys")).await;
    assert!(keys["data"].as_array().expect("data").is_empty());

    for header in [
        "",
        "Basic abc",
        "Bearer ",
        "Bearer not-a-jwt",
        "Bearer slk_svc_garbage",
    ] {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/tenants", server.base))
            .header("authorization", header)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn tenant_listing_pages_with_cursors() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db, |_| {}).await;
    let admin = server.admin().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(admin.tenant(&format!("t{i}")).await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/tenants?limit=2".to_owned();
    loop {
        let (status, page) = admin.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|t| t["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/tenants?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, created);
    server.stop().await;
    db.cleanup().await;
}

/// Every documented operation is served (not the 404/405 fallback), and the document lists
/// every route the API is known to have.
#[tokio::test]
async fn openapi_document_covers_every_route() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db, |_| {}).await;
    let (status, doc) = server.client().get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().expect("version").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations.sort();
    let mut expected = vec![
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/refresh",
        "POST /api/v1/auth/logout",
        "POST /api/v1/auth/setup",
        "POST /api/v1/auth/accept-invite",
        "POST /api/v1/auth/signup",
        "GET /api/v1/auth/me",
        "GET /api/v1/auth/jwks.json",
        "GET /api/v1/auth/status",
        "GET /api/v1/tenants",
        "POST /api/v1/tenants",
        "GET /api/v1/tenants/{tenant_id}",
        "PATCH /api/v1/tenants/{tenant_id}",
        "DELETE /api/v1/tenants/{tenant_id}",
        "GET /api/v1/tenants/{tenant_id}/members",
        "POST /api/v1/tenants/{tenant_id}/members",
        "PATCH /api/v1/tenants/{tenant_id}/members/{user_id}",
        "DELETE /api/v1/tenants/{tenant_id}/members/{user_id}",
        "GET /api/v1/tenants/{tenant_id}/invitations",
        "DELETE /api/v1/tenants/{tenant_id}/invitations/{invitation_id}",
        "POST /api/v1/tenants/{tenant_id}/invitations/{invitation_id}/renew",
        "GET /api/v1/tenants/{tenant_id}/keys",
        "POST /api/v1/tenants/{tenant_id}/keys",
        "GET /api/v1/tenants/{tenant_id}/keys/{key_id}",
        "POST /api/v1/tenants/{tenant_id}/keys/{key_id}/revoke",
        "GET /api/v1/tenants/{tenant_id}/audit",
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /api/v1/openapi.json",
        "GET /api/v1/schemas/pipeline.json",
        "GET /api/v1/schemas/destination-definition.json",
        "GET /api/v1/catalogue",
        "GET /api/v1/tenants/{tenant_id}/data-planes",
        "GET /api/v1/tenants/{tenant_id}/overview",
        "PUT /api/v1/tenants/{tenant_id}/milestones/{name}",
        "GET /api/v1/tenants/{tenant_id}/pipelines",
        "POST /api/v1/tenants/{tenant_id}/pipelines",
        "GET /api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}",
        "PUT /api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}",
        "DELETE /api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}",
        "GET /api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}/revisions",
        "POST /api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}/rollback",
        "POST /api/v1/tenants/{tenant_id}/query-token",
    ];
    expected.sort();
    assert_eq!(
        operations, expected,
        "the document and the known routes differ"
    );
    // Each documented operation reaches a handler: anything but the router's own fallbacks.
    for operation in &operations {
        let (method, path) = operation.split_once(' ').expect("pair");
        let concrete = path
            .replace("{tenant_id}", "t")
            .replace("{user_id}", "u")
            .replace("{key_id}", "k")
            .replace("{pipeline_id}", "p")
            .replace("{name}", "snippet_copied")
            .replace("{invitation_id}", "i");
        let response = reqwest::Client::new()
            .request(
                method.parse().expect("method"),
                format!("{}{concrete}", server.base),
            )
            .send()
            .await
            .expect("send");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{operation} is documented but not routed"
        );
        assert!(
            !body.contains("no such route"),
            "{operation} is documented but not routed"
        );
    }
    // Error bodies are documented as the shared shape.
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db, |_| {}).await;
    let client = server.client();
    assert_eq!(
        client.get("/health/live").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        client.get("/health/ready").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let _ = client.get("/api/v1/tenants").await;
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(text.contains("sluice_http_requests_total"), "{text}");
    assert!(text.contains("sluice_auth_failures_total"), "{text}");
    // Once the database is gone, readiness says so while liveness stays up.
    server.state().store.close().await;
    let ready = reqwest::get(format!("{}/health/ready", server.base))
        .await
        .expect("send");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"status": "unavailable"})
    );
    assert_eq!(client.get("/health/live").await.0, StatusCode::OK);
    server.stop().await;
    db.cleanup().await;
}
