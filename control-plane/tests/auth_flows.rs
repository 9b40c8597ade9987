//! Sign-in, refresh rotation and reuse detection, sign-out, setup, invitations, key lifecycle.

mod support;

use std::time::Duration;

use reqwest::header::{RETRY_AFTER, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::TestDb;
use support::server::{ADMIN_EMAIL, PASSWORD, TestServer};

async fn login_response(base: &str, email: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("send")
}

fn refresh_cookie(response: &reqwest::Response) -> String {
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sluice_refresh="))
        .expect("refresh cookie")
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1/auth"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    cookie.split(';').next().expect("pair").to_owned()
}

async fn refresh_with(base: &str, cookie: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/refresh"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("send")
}

async fn sign_in_refresh_rotation_and_reuse_detection(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let login = login_response(&server.base, ADMIN_EMAIL, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let first = refresh_cookie(&login);
    let body: serde_json::Value = login.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);

    let rotated = refresh_with(&server.base, &first).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let second = refresh_cookie(&rotated);
    assert_ne!(first, second, "the refresh token rotates");
    let token = rotated.json::<serde_json::Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, _) = server
        .client()
        .with_token(&token)
        .get("/api/v1/tenants")
        .await;
    assert_eq!(status, StatusCode::OK, "the new access token works");

    // Presenting the used token again revokes the whole family, including its successor.
    assert_eq!(
        refresh_with(&server.base, &first).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_with(&server.base, &second).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Sign-out ends a fresh session's refresh token too.
    let login = login_response(&server.base, ADMIN_EMAIL, PASSWORD).await;
    let cookie = refresh_cookie(&login);
    let logout = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/logout", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh_with(&server.base, &cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_with(&server.base, "sluice_refresh=garbage")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let no_cookie = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/refresh", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(no_cookie.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// A refresh token past its expiry is refused like a forged one (the TTL cannot be set below a
/// minute, so the test ages the stored row instead of waiting).
async fn an_expired_refresh_token_is_refused(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let login = login_response(&server.base, ADMIN_EMAIL, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = refresh_cookie(&login);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url()).await.expect("connect");
    let aged = sqlx::query("UPDATE refresh_tokens SET expires_at = $1 WHERE used_at IS NULL")
        .bind(sluice_control_plane::store::now_ms() - 1)
        .execute(&pool)
        .await
        .expect("age the token")
        .rows_affected();
    assert_eq!(aged, 1, "one live refresh token");
    pool.close().await;
    let refused = refresh_with(&server.base, &cookie).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .all(|v| !v.starts_with("sluice_refresh=") || v.starts_with("sluice_refresh=;")),
        "no new refresh token for an expired one"
    );
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    // A new sign-in starts a session whose refresh works.
    let login = login_response(&server.base, ADMIN_EMAIL, PASSWORD).await;
    let fresh = refresh_cookie(&login);
    assert_eq!(
        refresh_with(&server.base, &fresh).await.status(),
        StatusCode::OK
    );
    server.stop().await;
}

async fn wrong_credentials_are_401_and_rate_limited(db: &TestDb) {
    let server = TestServer::start(db, |c| {
        c.login_failures_per_account = 3;
        c.login_attempts_per_ip_per_minute = 8;
    })
    .await;
    assert_eq!(
        login_response(&server.base, ADMIN_EMAIL, "wrong password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_response(&server.base, "nobody@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..2 {
        assert_eq!(
            login_response(&server.base, ADMIN_EMAIL, "wrong password")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Three failures for the account: even the right password now waits.
    let limited = login_response(&server.base, ADMIN_EMAIL, PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&wait));
    // Another account is not locked, until the per-IP limit (8 a minute) is reached.
    let other = server.user("other@example.com").await;
    drop(other);
    assert_eq!(
        login_response(&server.base, "other@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            login_response(&server.base, "other@example.com", PASSWORD)
                .await
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    server.stop().await;
}

async fn first_run_setup_token(db: &TestDb) {
    let server = TestServer::start(db, |c| {
        c.admin_email = None;
        c.admin_password = None;
    })
    .await;
    let token = server
        .cp
        .as_ref()
        .and_then(|cp| cp.setup_token.clone())
        .expect("a setup token without an admin");
    let client = server.client();
    let body =
        |token: &str| json!({"token": token, "email": "Owner@Example.com", "password": PASSWORD});
    let (status, _) = client.post("/api/v1/auth/setup", body("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, weak) = client
        .post(
            "/api/v1/auth/setup",
            json!({"token": token, "email": "o@example.com", "password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
    let (status, created) = client.post("/api/v1/auth/setup", body(&token)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["access_token"].is_string());
    let (status, _) = client.post("/api/v1/auth/setup", body(&token)).await;
    assert_eq!(status, StatusCode::CONFLICT, "setup happens once");
    let mut owner = server.client();
    owner.login("owner@example.com", PASSWORD).await;
    server.stop().await;
}

async fn invitations_create_accounts_once(db: &TestDb) {
    let server = TestServer::start(db, |c| c.allow_signup = false).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let (status, invited) = admin
        .post(
            &format!("/api/v1/tenants/{tenant}/members"),
            json!({"email": "New@Example.com", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invited}");
    assert_eq!(invited["status"], "invited");
    let token = invited["invitation"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (_, pending) = admin
        .get(&format!("/api/v1/tenants/{tenant}/invitations"))
        .await;
    assert_eq!(pending["data"][0]["email"], "new@example.com");
    assert!(
        pending["data"][0].get("token").is_none(),
        "tokens are shown once"
    );

    let client = server.client();
    let (status, _) = client
        .post(
            "/api/v1/auth/accept-invite",
            json!({"token": "nope", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, session) = client
        .post(
            "/api/v1/auth/accept-invite",
            json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let newcomer = client.with_token(session["access_token"].as_str().expect("token"));
    let (_, tenants) = newcomer.get("/api/v1/tenants").await;
    assert_eq!(tenants["data"][0]["id"], json!(tenant));
    assert_eq!(tenants["data"][0]["role"], "member");
    let (status, _) = client
        .post(
            "/api/v1/auth/accept-invite",
            json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an invitation is redeemed once"
    );
    // Without --allow-signup there is no open sign-up.
    let (status, _) = client
        .post(
            "/api/v1/auth/signup",
            json!({"email": "x@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, audit) = admin.get(&format!("/api/v1/tenants/{tenant}/audit")).await;
    let actions: Vec<_> = audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        vec!["invitation.accept", "invitation.create", "tenant.create"]
    );
    server.stop().await;
}

async fn keys_are_shown_once_revoked_at_once_and_expire(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let (status, created) = admin
        .post(
            &format!("/api/v1/tenants/{tenant}/keys"),
            json!({"name": "edge-1", "type": "service"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["key"].as_str().expect("key");
    let prefix = created["prefix"].as_str().expect("prefix");
    assert!(
        key.starts_with(prefix)
            && prefix.starts_with("slk_svc_")
            && prefix.len() == "slk_svc_".len() + 8
    );
    let (_, list) = admin.get(&format!("/api/v1/tenants/{tenant}/keys")).await;
    let listed = list.to_string();
    assert!(
        !listed.contains(key) && !listed.contains(&key[prefix.len()..]),
        "no secret in listings"
    );
    assert!(!listed.contains("hash"));
    assert_eq!(list["data"][0]["prefix"], prefix);
    assert_eq!(list["data"][0]["created_by"], ADMIN_EMAIL);
    assert_eq!(list["data"][0]["status"], "active");

    let dp = admin.with_token(key);
    assert_eq!(dp.get("/api/v1/tenants").await.0, StatusCode::OK);
    // last_used_at is written in batches, not per request.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let id = created["id"].as_str().expect("id");
    let stored = server
        .state()
        .store
        .key(&tenant, id)
        .await
        .expect("store")
        .expect("key");
    assert!(stored.last_used_at.is_some(), "usage flushed to the store");

    let (status, revoked) = admin
        .post(
            &format!("/api/v1/tenants/{tenant}/keys/{id}/revoke"),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(
        dp.get("/api/v1/tenants").await.0,
        StatusCode::UNAUTHORIZED,
        "revocation is immediate"
    );

    // A mistyped key is refused without a look-up; a deleted tenant's keys stop working.
    let mut typo = key.to_owned();
    typo.replace_range(20..21, if &key[20..21] == "a" { "b" } else { "a" });
    assert_eq!(
        admin.with_token(&typo).get("/api/v1/tenants").await.0,
        StatusCode::UNAUTHORIZED
    );

    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let expires_at = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let (_, short) = admin
        .key(
            &tenant,
            json!({"name": "short", "type": "api", "expires_at": expires_at}),
        )
        .await;
    assert_eq!(
        admin.with_token(&short).get("/api/v1/tenants").await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(
        admin.with_token(&short).get("/api/v1/tenants").await.0,
        StatusCode::UNAUTHORIZED,
        "expired"
    );

    let (_, other) = admin
        .key(&tenant, json!({"name": "x", "type": "api"}))
        .await;
    assert_eq!(
        admin
            .call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin.with_token(&other).get("/api/v1/tenants").await.0,
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

async fn state_survives_a_restart(db: &TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let server = TestServer::start(db, |c| c.data_dir = data_dir.clone()).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("persistent").await;
    let (_, key) = admin
        .key(&tenant, json!({"name": "dp", "type": "service"}))
        .await;
    let token = admin.token.clone().expect("token");
    server.stop().await;
    let server = TestServer::start(db, |c| c.data_dir = data_dir.clone()).await;
    let again = server.client();
    assert_eq!(
        again.with_token(&key).get("/api/v1/tenants").await.0,
        StatusCode::OK,
        "same pepper after restart"
    );
    assert_eq!(
        again.with_token(&token).get("/api/v1/tenants").await.0,
        StatusCode::OK,
        "same signing key after restart"
    );
    server.stop().await;
}

/// An invitation gets a new link (the old one stops working) or is withdrawn.
async fn invitations_are_renewed_and_revoked(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let invite = |email: &'static str| {
        let admin = &admin;
        let tenant = &tenant;
        async move {
            let (status, invited) = admin
                .post(
                    &format!("/api/v1/tenants/{tenant}/members"),
                    json!({"email": email, "role": "viewer"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{invited}");
            (
                invited["invitation"]["id"].as_str().expect("id").to_owned(),
                invited["invitation"]["token"]
                    .as_str()
                    .expect("token")
                    .to_owned(),
            )
        }
    };
    let (id, old_token) = invite("late@example.com").await;
    let base = format!("/api/v1/tenants/{tenant}/invitations");
    let (status, renewed) = admin.post(&format!("{base}/{id}/renew"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let new_token = renewed["token"].as_str().expect("a new token").to_owned();
    assert_ne!(new_token, old_token);
    let client = server.client();
    let accept = |token: String| {
        let client = &client;
        async move {
            client
                .post(
                    "/api/v1/auth/accept-invite",
                    json!({"token": token, "password": PASSWORD}),
                )
                .await
                .0
        }
    };
    assert_eq!(
        accept(old_token).await,
        StatusCode::NOT_FOUND,
        "the old link stopped working"
    );
    assert_eq!(accept(new_token).await, StatusCode::CREATED);
    let (status, _) = admin.post(&format!("{base}/{id}/renew"), json!({})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an accepted invitation is not renewed"
    );

    let (id, token) = invite("never@example.com").await;
    let (status, _) = admin
        .call(Method::DELETE, &format!("{base}/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        accept(token).await,
        StatusCode::NOT_FOUND,
        "a withdrawn link"
    );
    let (status, _) = admin
        .call(Method::DELETE, &format!("{base}/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, pending) = admin.get(&base).await;
    assert_eq!(
        pending["data"].as_array().map(Vec::len),
        Some(0),
        "{pending}"
    );
    let (_, audit) = admin
        .get(&format!(
            "/api/v1/tenants/{tenant}/audit?action=invitation."
        ))
        .await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"invitation.renew") && actions.contains(&"invitation.revoke"),
        "{actions:?}"
    );
    server.stop().await;
}

on_both_backends!(
    invitations_are_renewed_and_revoked,
    sign_in_refresh_rotation_and_reuse_detection,
    an_expired_refresh_token_is_refused,
    wrong_credentials_are_401_and_rate_limited,
    first_run_setup_token,
    invitations_create_accounts_once,
    keys_are_shown_once_revoked_at_once_and_expire,
    state_survives_a_restart,
);

/// Replicas installed together (a Kubernetes Deployment's pods start at once) share one
/// PostgreSQL database: the migrations run once under sqlx's advisory lock, the first owner
/// is created once, and both sign with the same key, so a session begun at one replica is
/// good at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_share_the_schema_the_owner_and_the_signing_key() {
    let db = TestDb::postgres().await;
    let pepper = |raw: &mut sluice_control_plane::config::RawConfig| {
        raw.key_pepper = Some("a-pepper-shared-by-both-replicas-0123456789".into());
    };
    let (a, b) = tokio::join!(
        TestServer::start(&db, pepper),
        TestServer::start(&db, pepper)
    );
    let jwks = |base: String| async move {
        reqwest::get(format!("{base}/api/v1/auth/jwks.json"))
            .await
            .expect("jwks")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    let (ja, jb) = (jwks(a.base.clone()).await, jwks(b.base.clone()).await);
    assert_eq!(ja, jb, "both replicas publish the same keys");
    assert_eq!(ja["keys"].as_array().map(Vec::len), Some(1), "{ja}");
    let at_a = a.admin().await;
    let mut at_b = at_a.clone();
    at_b.base = b.base.clone();
    let (status, me) = at_b.call(Method::GET, "/api/v1/auth/me", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a token from replica a at replica b: {me}"
    );
    assert_eq!(me["name"], ADMIN_EMAIL);
    let owners = a.state().store.count_users().await.expect("count");
    assert_eq!(owners, 1, "the first owner is created once");
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}
