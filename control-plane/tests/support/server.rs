//! A control plane on an ephemeral port, and a small JSON client for it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_control_plane::{RawConfig, RunningControlPlane};

use super::TestDb;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    pub cp: Option<RunningControlPlane>,
    pub base: String,
    pub _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a control plane on `db` (which the caller cleans up) with the test admin and sign-up enabled; `tweak` adjusts
    /// the configuration first.
    pub async fn start(db: &TestDb, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raw = RawConfig {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            database_url: Some(db.url()),
            data_dir: dir.path().to_path_buf(),
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(PASSWORD.into()),
            allow_signup: true,
            key_usage_flush_ms: 100,
            ..RawConfig::default()
        };
        tweak(&mut raw);
        let cp = sluice_control_plane::start(raw.validate().expect("valid config"))
            .await
            .expect("start");
        let base = format!("http://{}", cp.http_addr);
        Self {
            cp: Some(cp),
            base,
            _dir: dir,
        }
    }

    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .expect("client"),
            token: None,
        }
    }

    /// A signed-in client for the test admin.
    pub async fn admin(&self) -> Client {
        let mut client = self.client();
        client.login(ADMIN_EMAIL, PASSWORD).await;
        client
    }

    /// A new user signed up and signed in.
    pub async fn user(&self, email: &str) -> Client {
        let mut client = self.client();
        let (status, body) = client
            .call(
                Method::POST,
                "/api/v1/auth/signup",
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        client.token = Some(body["access_token"].as_str().expect("token").to_owned());
        client
    }

    pub async fn stop(mut self) {
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }

    pub fn state(&self) -> &sluice_control_plane::state::AppState {
        &self.cp.as_ref().expect("running").state
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
}

impl Client {
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            base: self.base.clone(),
            http: reqwest::Client::new(),
            token: Some(token.to_owned()),
        }
    }

    pub async fn login(&mut self, email: &str, password: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.token = Some(body["access_token"].as_str().expect("token").to_owned());
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_client_error() || status.is_server_error() {
            assert!(
                value["error"]["code"].is_string() && value["error"]["message"].is_string(),
                "error shape: {value}"
            );
        }
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {value}");
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a tenant and returns its id.
    pub async fn tenant(&self, name: &str) -> String {
        let (status, body) = self.post("/api/v1/tenants", json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates a key and returns (id, plaintext).
    pub async fn key(&self, tenant_id: &str, body: Value) -> (String, String) {
        let (status, created) = self
            .post(&format!("/api/v1/tenants/{tenant_id}/keys"), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["id"].as_str().expect("id").to_owned(),
            created["key"].as_str().expect("key").to_owned(),
        )
    }
}
