//! A control plane and one data-plane node in this process, provisioned through the REST API
//! as a person would: a tenant, a pipeline, an ingest key for its `web` source and a service
//! key for the node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

pub struct World {
    pub node: sluice_data_plane::RunningNode,
    /// `Basic` authorization with the ingest key, as Segment's SDKs send it.
    pub ingest_auth: String,
    cp: sluice_control_plane::RunningControlPlane,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn shutdown(self) {
        self.node.shutdown().await;
        self.cp.shutdown().await;
    }
}

pub async fn post(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http.post(url).bearer_auth(token).json(&body).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap_or_default()
    );
    Ok(response.json().await?)
}

/// Starts both planes on `server`; `configure` adjusts the node's settings (roles, bus)
/// given the temporary directory everything lives in.
pub async fn start(
    server: &tokio::runtime::Handle,
    spec: Value,
    configure: impl FnOnce(&mut sluice_data_plane::RawConfig, &std::path::Path),
) -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let config = sluice_control_plane::RawConfig {
        http_addr: "127.0.0.1:0".parse()?,
        grpc_addr: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("cp"),
        admin_email: Some("bench@example.com".into()),
        admin_password: Some("benchmark password".into()),
        ..Default::default()
    }
    .validate()?;
    let cp = server.spawn(sluice_control_plane::start(config)).await??;
    let base = format!("http://{}", cp.http_addr);
    let http = reqwest::Client::new();
    let login = post(
        &http,
        format!("{base}/api/v1/auth/login"),
        "",
        json!({"email": "bench@example.com", "password": "benchmark password"}),
    )
    .await?;
    let token = login["access_token"].as_str().context("token")?.to_owned();
    let tenant = post(
        &http,
        format!("{base}/api/v1/tenants"),
        &token,
        json!({"name": "bench"}),
    )
    .await?["id"]
        .as_str()
        .context("tenant")?
        .to_owned();
    let pipeline = post(
        &http,
        format!("{base}/api/v1/tenants/{tenant}/pipelines"),
        &token,
        json!({"name": "main", "spec": spec}),
    )
    .await?["id"]
        .as_str()
        .context("pipeline")?
        .to_owned();
    let keys = format!("{base}/api/v1/tenants/{tenant}/keys");
    let write_key = post(
        &http,
        keys.clone(),
        &token,
        json!({"name": "w", "type": "ingest", "pipeline_id": pipeline, "source": "web"}),
    )
    .await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let service = post(&http, keys, &token, json!({"name": "n", "type": "service"})).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let mut node_config = {
        let mut raw = sluice_data_plane::RawConfig::default();
        raw.node.roles = "receiver".into();
        raw.node.http_addr = "127.0.0.1:0".parse()?;
        raw.node.state_dir = dir.path().join("node");
        raw.node.control_url = Some(format!("http://{}", cp.grpc_addr));
        raw.node.service_key = Some(service);
        raw.bus.bus_max_bytes = 4 << 30;
        raw
    };
    configure(&mut node_config, dir.path());
    let node = server
        .spawn(sluice_data_plane::start(node_config.validate()?))
        .await??;
    for _ in 0..100 {
        if node
            .state
            .current()
            .is_some_and(|c| !c.ingest_keys.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(World {
        node,
        ingest_auth: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
        ),
        cp,
        _dir: dir,
    })
}

/// A directory for the node's secrets files, inside the world's directory.
pub fn secrets_dir(dir: &std::path::Path, secrets: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("secrets");
    let _ = std::fs::create_dir_all(&path);
    for (name, value) in secrets {
        let _ = std::fs::write(path.join(name), value);
    }
    path
}
