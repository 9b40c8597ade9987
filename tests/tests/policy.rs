//! The node's own policy against a configuration that tries to turn it on its own network: a
//! real control plane edits the pipeline, a real node with the default policy refuses it
//! (NACK, shown in the fleet), and nothing reaches the address it named.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_data_plane::RunningNode;
use sluice_tests::{Cp, CpOptions, Reply, Vendor, eventually, start_node_with};

struct World {
    cp: Cp,
    tenant: String,
    pipeline: String,
    write_key: String,
    service_key: String,
    node: RunningNode,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A node running receiver, processor and delivery with `allow_hosts` as its policy's
/// allowed hosts ("" is the default: public addresses only), `secrets` in its secrets
/// directory, and a pipeline with `spec`.
async fn world(spec: Value, allow_hosts: &str, secrets: &[(&str, &str)]) -> World {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    for (name, value) in secrets {
        std::fs::write(secrets_dir.path().join(name), value).expect("secret");
    }
    let state = tempfile::tempdir().expect("tempdir");
    let secrets_path = secrets_dir.path().to_path_buf();
    let allow_hosts = allow_hosts.to_owned();
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,processor,delivery".into();
        raw.node.secrets_dir = Some(secrets_path);
        raw.node.status_interval_secs = 1;
        raw.policy.policy_allow_hosts = allow_hosts;
    })
    .await;
    let world = World {
        cp,
        tenant,
        pipeline,
        write_key,
        service_key,
        node,
        _dirs: (secrets_dir, state),
    };
    let version = world.cp.config_version(&world.tenant).await;
    eventually(
        Duration::from_secs(5),
        "the first configuration",
        || async { world.node.state.current().filter(|c| c.version >= version) },
    )
    .await;
    world
}

impl World {
    /// Edits the pipeline to `spec` and waits for the node's NACK of it; its reason.
    async fn refused(&self, spec: Value) -> String {
        let before = self.node.state.current().expect("running").version;
        let version = self
            .cp
            .update_pipeline(&self.tenant, &self.pipeline, spec)
            .await;
        let (row, _) = eventually(Duration::from_secs(10), "the node's NACK", || async {
            self.cp
                .data_planes(&self.tenant)
                .await
                .into_iter()
                .find(|n| n["nacked_version"] == version)
        })
        .await;
        // It keeps running what it ran.
        assert_eq!(self.node.state.current().expect("running").version, before);
        row["last_error"].as_str().unwrap_or_default().to_owned()
    }

    async fn send(&self, id: &str) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/batch", self.node.http_addr))
            .basic_auth(&self.write_key, Some(""))
            .json(&json!({"batch": [{"type": "track", "event": "Order Completed", "userId": "u-1", "messageId": id}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// The dead letters of `destination`, once there are `n`.
    async fn dead_letters(&self, destination: &str, n: usize) -> Vec<Value> {
        let url = format!(
            "http://{}/v1/dlq/{}/{destination}",
            self.node.http_addr, self.pipeline
        );
        eventually(Duration::from_secs(10), "dead letters", || async {
            let body: Value = reqwest::Client::new()
                .request(Method::GET, &url)
                .bearer_auth(&self.service_key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["data"].as_array().filter(|d| d.len() == n).cloned()
        })
        .await
        .0
    }
}

fn hook(name: &str, url: &str) -> Value {
    json!({"name": name, "webhook": {"url": url}})
}

fn spec(destinations: Vec<Value>) -> Value {
    json!({"sources": [{"name": "web"}], "destinations": destinations})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_policy_refuses_loopback_metadata_private_ranges_and_the_nodes_settings() {
    let vendor = Vendor::start().await;
    let port = vendor.url.rsplit(':').next().expect("port").to_owned();
    // S3_SECRET_KEY is there to be found, were the policy to let a destination name it.
    let w = world(
        spec(vec![hook("hook", "https://hooks.example.com/in")]),
        "",
        &[
            ("S3_SECRET_KEY", "the-archive-credential"),
            ("HOOK_SECRET", "s"),
        ],
    )
    .await;

    let loopback = w
        .refused(spec(vec![hook("hook", &format!("{}/hook", vendor.url))]))
        .await;
    assert!(
        loopback.contains(r#"destination "hook": refused by this node's policy: 127.0.0.1 is a loopback address; list it in SLUICE_POLICY_ALLOW_HOSTS"#),
        "{loopback}"
    );
    let metadata = w
        .refused(spec(vec![hook(
            "hook",
            "http://169.254.169.254/latest/meta-data/iam",
        )]))
        .await;
    assert!(
        metadata.contains("169.254.169.254 is a link-local (cloud metadata) address"),
        "{metadata}"
    );
    for (url, range) in [
        ("http://10.0.0.8/x", "private"),
        ("http://[::ffff:127.0.0.1]:8080/x", "loopback"),
        ("http://localhost:8080/x", "loopback"),
        ("http://0x7f000001/x", "loopback"),
    ] {
        let why = w.refused(spec(vec![hook("hook", url)])).await;
        assert!(
            why.contains(&format!("is a {range} address")),
            "{url}: {why}"
        );
    }
    // A vendor kind's endpoint is a URL like any other.
    let ga4 = w
        .refused(spec(vec![json!({"name": "ga4", "ga4": {
            "measurement_id": "G-TEST123", "api_secret": "HOOK_SECRET",
            "endpoint": format!("http://127.0.0.1:{port}")}})]))
        .await;
    assert!(
        ga4.contains(r#"destination "ga4": refused by this node's policy: 127.0.0.1"#),
        "{ga4}"
    );

    let exfiltration = w
        .refused(spec(vec![json!({"name": "hook", "webhook": {
            "url": "https://hooks.example.com/in", "signing_secret": "S3_SECRET_KEY"}})]))
        .await;
    assert!(
        exfiltration.contains(
            "secret S3_SECRET_KEY is one of the node's own settings, which no destination may use"
        ),
        "{exfiltration}"
    );
    for own in ["SLUICE_SERVICE_KEY", "AWS_SECRET_ACCESS_KEY", "NATS_URL"] {
        let why = w
            .refused(spec(vec![json!({"name": "hook", "webhook": {
                "url": "https://hooks.example.com/in", "signing_secret": own}})]))
            .await;
        assert!(
            why.contains(&format!("secret {own} is one of the node's own settings")),
            "{why}"
        );
    }

    // Events sent meanwhile go where the running configuration says, never to the vendor.
    w.send("e-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(vendor.received("/hook").is_empty());
}

/// A value that fits `setting` of `kind`, for the settings a destination must give.
fn a_value_for(kind: &str, setting: &sluice_proto::catalogue::Setting) -> Value {
    use sluice_proto::catalogue::SettingKind;
    let patterned = match (kind, setting.key.as_str()) {
        ("ga4", "measurement_id") => Some("G-TEST123"),
        ("google_ads", "customer_id") => Some("1234567890"),
        ("google_ads", "conversion_action") => Some("customers/1234567890/conversionActions/7"),
        ("linkedin", "conversion") => Some("urn:lla:llaPartnerConversion:7"),
        ("reddit", "pixel_id") => Some("t2_abc"),
        ("posthog", "api_key") => Some("phc_abc"),
        _ => None,
    };
    match setting.kind {
        SettingKind::Secret => json!("VENDOR_TOKEN"),
        SettingKind::Url => json!(METADATA),
        SettingKind::Enum => json!(setting.values.first().cloned().unwrap_or_default()),
        SettingKind::Boolean => json!(true),
        SettingKind::Integer => json!(setting.min.unwrap_or(1).max(1)),
        _ => json!(patterned.unwrap_or("7")),
    }
}

const METADATA: &str = "http://169.254.169.254/latest/meta-data";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_destination_kind_s_addresses_are_held_to_the_policy() {
    use sluice_proto::catalogue::SettingKind;
    let vendor = Vendor::start().await;
    let w = world(
        spec(vec![hook("hook", "https://hooks.example.com/in")]),
        "",
        &[("VENDOR_TOKEN", "t")],
    )
    .await;
    // Every kind of the catalogue that takes an address, each pointed at the cloud metadata
    // service: a vendor added later is covered without a change here.
    let mut kinds = Vec::new();
    let mut destinations = Vec::new();
    for definition in sluice_proto::catalogue::all() {
        if !definition
            .settings
            .iter()
            .any(|s| s.kind == SettingKind::Url)
        {
            continue;
        }
        let settings: serde_json::Map<String, Value> = definition
            .settings
            .iter()
            .filter(|s| s.required || s.kind == SettingKind::Url)
            .map(|s| (s.key.clone(), a_value_for(&definition.id, s)))
            .collect();
        kinds.push(definition.id.clone());
        destinations
            .push(json!({"name": definition.id, "type": definition.id, "settings": settings}));
    }
    assert!(
        kinds.len() >= 15,
        "the catalogue's kinds with an address: {kinds:?}"
    );
    let why = w.refused(spec(destinations)).await;
    for kind in &kinds {
        assert!(
            why.contains(&format!(
                "destination {kind:?}: refused by this node's policy: 169.254.169.254 is a link-local (cloud metadata) address"
            )),
            "{kind}: {why}"
        );
    }
    // One kind at the node's loopback vendor, in three spellings of loopback.
    let port = vendor.url.rsplit(':').next().expect("port").to_owned();
    for alias in [
        format!("http://127.0.0.1:{port}"),
        format!("http://2130706433:{port}"),
        format!("http://[::1]:{port}"),
    ] {
        let why = w
            .refused(spec(vec![
                json!({"name": "mixpanel", "type": "mixpanel", "settings": {
                "project_id": "7", "username": "u", "secret": "VENDOR_TOKEN", "endpoint": alias}}),
            ]))
            .await;
        assert!(why.contains("is a loopback address"), "{alias}: {why}");
    }
    w.send("e-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(vendor.requests(), 0, "nothing reached the vendor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_refused_address_is_dead_lettered_never_followed() {
    let vendor = Vendor::start().await;
    let target = Vendor::start().await;
    let port = vendor.url.rsplit(':').next().expect("port").to_owned();
    vendor.always(
        "/to-metadata",
        Reply::Redirect(307, "http://169.254.169.254/latest/meta-data/".into()),
    );
    vendor.always(
        "/to-loopback",
        Reply::Redirect(308, format!("{}/stolen", target.url)),
    );
    // Only the vendor's own address and port are allowed.
    let w = world(
        spec(vec![
            hook("metadata", &format!("{}/to-metadata", vendor.url)),
            hook("loopback", &format!("{}/to-loopback", vendor.url)),
        ]),
        &format!("127.0.0.1:{port}"),
        &[],
    )
    .await;
    w.send("r-1").await;
    let metadata = w.dead_letters("metadata", 1).await;
    assert_eq!(
        metadata[0]["error"].as_str().unwrap_or_default(),
        "refused by this node's policy: a redirect: 169.254.169.254 is a link-local (cloud metadata) address; list it in SLUICE_POLICY_ALLOW_HOSTS to allow it",
        "{}",
        metadata[0]
    );
    assert_eq!(metadata[0]["attempts"], 1, "{}", metadata[0]);
    let loopback = w.dead_letters("loopback", 1).await;
    let error = loopback[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("a redirect: 127.0.0.1 is a loopback address"),
        "{error}"
    );
    assert_eq!(vendor.received("/to-metadata").len(), 1);
    assert!(target.received("/stolen").is_empty());

    // The node's own port needs its exact entry, even with loopback allowed.
    let own = w
        .refused(spec(vec![hook(
            "self",
            &format!("http://{}/v1/batch", w.node.http_addr),
        )]))
        .await;
    assert!(
        own.contains(&format!(
            "refused by this node's policy: 127.0.0.1 is this node's own port {}",
            w.node.http_addr.port()
        )),
        "{own}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_altered_between_the_planes_or_older_than_the_nodes_is_refused() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp
        .pipeline(
            &tenant,
            "main",
            spec(vec![hook("hook", "https://hooks.example.com/in")]),
        )
        .await;
    let (_, service_key) = cp.service_key(&tenant).await;
    let tampering = Arc::new(AtomicBool::new(true));
    let relay = sluice_tests::tampering_relay(
        cp.grpc_url.trim_start_matches("http://").to_owned(),
        b"hooks.example.com",
        b"hooks.attacker.io",
        tampering.clone(),
    )
    .await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&relay, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,delivery".into();
        raw.node.status_interval_secs = 1;
    })
    .await;
    // The fleet's record of a NACK of `version` whose reason contains `saying`.
    let nack = |version: u64, saying: &'static str| {
        let cp = &cp;
        let tenant = &tenant;
        async move {
            eventually(Duration::from_secs(10), "the node's NACK", || async {
                cp.data_planes(tenant).await.into_iter().find(|n| {
                    n["nacked_version"] == version
                        && n["last_error"].as_str().is_some_and(|e| e.contains(saying))
                })
            })
            .await
            .0["last_error"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };

    // Even the first snapshot, altered, is refused: it is not signed by the keys it names.
    let first = cp.config_version(&tenant).await;
    let why = nack(first, "").await;
    assert_eq!(
        why, "the first snapshot is not signed by a key it names; refusing to trust it",
        "{why}"
    );
    assert!(node.state.current().is_none());

    // Untouched, it is applied and its keys pinned.
    tampering.store(false, Ordering::Relaxed);
    let second = cp
        .update_pipeline(
            &tenant,
            &pipeline,
            spec(vec![hook("hook", "https://hooks.example.com/v2")]),
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "the signed snapshot applied",
        || async { node.state.current().filter(|c| c.version == second) },
    )
    .await;
    assert!(state.path().join("config-keys.json").exists());

    // Altered again, now against the pinned keys.
    tampering.store(true, Ordering::Relaxed);
    let third = cp
        .update_pipeline(
            &tenant,
            &pipeline,
            spec(vec![hook("hook", "https://hooks.example.com/v3")]),
        )
        .await;
    let why = nack(third, "").await;
    assert!(
        why.starts_with("the snapshot's signature does not verify with the control plane's keys this node trusts (cfg-"),
        "{why}"
    );
    let running = node.state.current().expect("running");
    assert_eq!(running.version, second);
    let url = running.pipelines[0].spec.destinations[0]
        .webhook
        .as_ref()
        .map(|w| w.url.clone());
    assert_eq!(url.as_deref(), Some("https://hooks.example.com/v2"));
    let metrics = reqwest::get(format!("http://{}/metrics", node.http_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "sluice_config_signature_failures_total 2"),
        "{metrics}"
    );

    // A node that already ran a newer version refuses an older one, however well signed (a
    // replay, or a control plane rolled back).
    node.shutdown().await;
    tampering.store(false, Ordering::Relaxed);
    let lkg = state.path().join("last-known-good.json");
    let mut saved: Value =
        serde_json::from_slice(&std::fs::read(&lkg).expect("lkg")).expect("json");
    saved["version"] = json!(1000);
    std::fs::write(&lkg, serde_json::to_vec(&saved).expect("json")).expect("write");
    let node = start_node_with(&relay, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,delivery".into();
        raw.node.status_interval_secs = 1;
    })
    .await;
    let fourth = cp
        .update_pipeline(
            &tenant,
            &pipeline,
            spec(vec![hook("hook", "https://hooks.example.com/v4")]),
        )
        .await;
    let why = nack(fourth, "older than").await;
    assert_eq!(
        why,
        format!(
            "version {fourth} is older than version 1000, which this node already had: a replayed or rolled-back snapshot"
        )
    );
    assert_eq!(node.state.current().expect("running").version, 1000);
    node.shutdown().await;
}
