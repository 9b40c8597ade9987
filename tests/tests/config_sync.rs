//! Config sync end to end: real control planes and data planes over real gRPC on loopback.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sluice_proto::config::v1::config_sync_client::ConfigSyncClient;
use sluice_proto::config::v1::{
    Ack, ControlMessage, Hello, Nack, NodeMessage, Snapshot, Status, control_message, node_message,
};
use sluice_tests::{
    Cp, CpOptions, PgDatabase, eventually, nats_url, spec, start_node, start_node_trusting,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A config-sync stream driven by hand, to test the protocol itself.
struct RawStream {
    tx: mpsc::Sender<NodeMessage>,
    inbound: Streaming<ControlMessage>,
}

fn hello(node_id: &str, version: u64) -> Hello {
    Hello {
        node_id: node_id.into(),
        name: "raw".into(),
        agent_version: "test".into(),
        roles: vec!["receiver".into()],
        config_version: version,
        ..Hello::default()
    }
}

async fn open(
    grpc_url: &str,
    key: Option<&str>,
    first: NodeMessage,
) -> Result<RawStream, tonic::Status> {
    let mut client = ConfigSyncClient::connect(grpc_url.to_owned())
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queue hello");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
    }
    let inbound = client.stream(request).await?.into_inner();
    Ok(RawStream { tx, inbound })
}

fn msg(kind: node_message::Kind) -> NodeMessage {
    NodeMessage { kind: Some(kind) }
}

impl RawStream {
    /// The next snapshot within `within`, skipping heartbeats; `None` on timeout.
    async fn snapshot(&mut self, within: Duration) -> Option<Snapshot> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Ok(Ok(Some(ControlMessage {
                    kind: Some(control_message::Kind::SignedSnapshot(s)),
                }))) => return Some(s.decode_unverified().expect("a snapshot")),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => panic!("stream ended"),
                Ok(Err(status)) => panic!("stream failed: {status:?}"),
                Err(_) => return None,
            }
        }
    }

    /// How the stream ends, within `within`.
    async fn end(&mut self, within: Duration) -> Option<tonic::Status> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return None,
                Ok(Err(status)) => return Some(status),
                Err(_) => panic!("stream still open after {within:?}"),
            }
        }
    }

    async fn send(&self, kind: node_message::Kind) {
        self.tx.send(msg(kind)).await.expect("send");
    }
}

async fn node_row(cp: &Cp, tenant: &str, node_id: &str) -> serde_json::Value {
    cp.data_planes(tenant)
        .await
        .into_iter()
        .find(|n| n["id"] == node_id)
        .expect("node listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_syncs_applies_updates_and_runs_on_last_known_good_without_the_control_plane() {
    let mut cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec("v1")).await;
    let (_, key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");

    let node = start_node(&cp.grpc_url, &key, state.path()).await;
    let version = cp.config_version(&tenant).await;
    let (row, took) = eventually(
        Duration::from_secs(5),
        "the node to apply the first snapshot",
        || async {
            cp.data_planes(&tenant)
                .await
                .into_iter()
                .next()
                .filter(|n| n["applied_version"] == version && n["connected"] == true)
        },
    )
    .await;
    assert_eq!(row["name"], "test-node");
    assert_eq!(row["roles"], json!(["receiver"]));
    assert!(took < Duration::from_secs(2), "first sync took {took:?}");
    let applied = node.state.current().expect("applied");
    assert_eq!(
        (applied.version, applied.tenant_id.as_str()),
        (version, tenant.as_str())
    );

    // An edit reaches the node well within a second.
    let next = cp.update_pipeline(&tenant, &pipeline, spec("v2")).await;
    assert!(next > version);
    let (_, took) = eventually(
        Duration::from_secs(2),
        "the node to apply the edit",
        || async {
            node.state
                .current()
                .filter(|c| c.version == next)
                .map(|_| ())
        },
    )
    .await;
    assert!(took < Duration::from_secs(1), "edit took {took:?}");
    let (ready, _) = eventually(
        Duration::from_secs(2),
        "the ack to reach the fleet",
        || async {
            Some(node_row(&cp, &tenant, &node.state.node_id).await)
                .filter(|n| n["applied_version"] == next)
        },
    )
    .await;
    assert_eq!(ready["config_version"], next);

    let health: serde_json::Value = reqwest::get(format!("http://{}/health/ready", node.http_addr))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (health["config_version"].as_u64(), health["source"].as_str()),
        (Some(next), Some("control_plane"))
    );
    assert_eq!(health["node_id"], node.state.node_id.as_str());
    assert_eq!(health["roles"], serde_json::json!(node.state.config.roles));
    let metrics = reqwest::get(format!("http://{}/metrics", node.http_addr))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!("sluice_config_version {next}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_control_plane_connected 1"),
        "{metrics}"
    );

    // The last-known-good file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.path().join("last-known-good.json"))
            .expect("lkg")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Control plane gone, node restarted: it runs, ready, on its last-known-good config.
    node.shutdown().await;
    cp.stop().await;
    let node = start_node(&cp.grpc_url, &key, state.path()).await;
    let response = reqwest::get(format!("http://{}/health/ready", node.http_addr))
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let health: serde_json::Value = response.json().await.expect("json");
    assert_eq!(health["config_version"].as_u64(), Some(next));
    assert_eq!(health["source"], "last_known_good");
    assert_eq!(health["control_plane_connected"], false);
    let metrics = reqwest::get(format!("http://{}/metrics", node.http_addr))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sluice_control_plane_connected 0"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_config_age_seconds"), "{metrics}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_any_configuration_is_not_ready() {
    let mut cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let (_, key) = cp.service_key(&tenant).await;
    let grpc_url = cp.grpc_url.clone();
    cp.stop().await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node(&grpc_url, &key, state.path()).await;
    let response = reqwest::get(format!("http://{}/health/ready", node.http_addr))
        .await
        .expect("get");
    assert_eq!(response.status(), 503);
    let live = reqwest::get(format!("http://{}/health/live", node.http_addr))
        .await
        .expect("get");
    assert_eq!(live.status(), 200);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_sends_only_what_differs_honours_nonces_and_parks_nacks() {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec("v1")).await;
    let (_, key) = cp.service_key(&tenant).await;
    let v1 = cp.config_version(&tenant).await;

    let mut stream = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("raw-1", 0))),
    )
    .await
    .expect("open");
    let snapshot = stream
        .snapshot(Duration::from_secs(2))
        .await
        .expect("first snapshot");
    assert_eq!(
        (snapshot.version, snapshot.tenant_id.as_str()),
        (v1, tenant.as_str())
    );
    assert_eq!(snapshot.pipelines.len(), 1);
    assert!(!snapshot.nonce.is_empty() && !snapshot.jwks_json.is_empty());

    // An ack with a stale nonce is ignored; the right one is recorded.
    stream
        .send(node_message::Kind::Ack(Ack {
            version: v1,
            nonce: "stale".into(),
        }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node_row(&cp, &tenant, "raw-1").await["applied_version"], 0);
    stream
        .send(node_message::Kind::Ack(Ack {
            version: v1,
            nonce: snapshot.nonce.clone(),
        }))
        .await;
    eventually(Duration::from_secs(2), "the ack", || async {
        Some(node_row(&cp, &tenant, "raw-1").await).filter(|n| n["applied_version"] == v1)
    })
    .await;

    // A NACK keeps the old version, shows in the fleet, and parks the version.
    let v2 = cp.update_pipeline(&tenant, &pipeline, spec("v2")).await;
    let snapshot = stream
        .snapshot(Duration::from_secs(2))
        .await
        .expect("second snapshot");
    assert_eq!(snapshot.version, v2);
    stream
        .send(node_message::Kind::Nack(Nack {
            version: v2,
            nonce: snapshot.nonce,
            error: "secret CRM is not set".into(),
        }))
        .await;
    let (row, _) = eventually(Duration::from_secs(2), "the nack in the fleet", || async {
        Some(node_row(&cp, &tenant, "raw-1").await).filter(|n| n["nacked_version"] == v2)
    })
    .await;
    assert_eq!(
        (row["applied_version"].as_u64(), row["last_error"].as_str()),
        (Some(v1), Some("secret CRM is not set"))
    );
    drop(stream);

    // Reconnecting with the version held: no resend, and the parked version is not sent.
    let mut again = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("raw-1", v1))),
    )
    .await
    .expect("open");
    assert!(
        again.snapshot(Duration::from_millis(600)).await.is_none(),
        "a parked version is not resent"
    );
    let mut current = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("raw-2", v2))),
    )
    .await
    .expect("open");
    assert!(
        current.snapshot(Duration::from_millis(600)).await.is_none(),
        "an up-to-date node gets nothing"
    );

    // A change unparks: the new version goes to both.
    let v3 = cp.update_pipeline(&tenant, &pipeline, spec("v3")).await;
    assert_eq!(
        again
            .snapshot(Duration::from_secs(2))
            .await
            .expect("v3")
            .version,
        v3
    );
    assert_eq!(
        current
            .snapshot(Duration::from_secs(2))
            .await
            .expect("v3")
            .version,
        v3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_authenticated_and_tenants_see_only_their_configuration() {
    let cp = Cp::start(CpOptions::default()).await;
    let a = cp.tenant("a").await;
    let b = cp.tenant("b").await;
    let a_pipeline = cp.pipeline(&a, "a-main", spec("a")).await;
    let b_pipeline = cp.pipeline(&b, "b-main", spec("b")).await;
    let (_, a_key) = cp.service_key(&a).await;
    let hello_msg = || msg(node_message::Kind::Hello(hello("n", 0)));

    let mut stream = open(&cp.grpc_url, Some(&a_key), hello_msg())
        .await
        .expect("open");
    let snapshot = stream
        .snapshot(Duration::from_secs(2))
        .await
        .expect("snapshot");
    assert_eq!(snapshot.tenant_id, a);
    let ids: Vec<_> = snapshot.pipelines.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, vec![a_pipeline.clone()]);
    assert!(!ids.contains(&b_pipeline));
    // A change in tenant B sends tenant A's node nothing.
    cp.update_pipeline(&b, &b_pipeline, spec("b2")).await;
    assert!(stream.snapshot(Duration::from_millis(500)).await.is_none());

    let (status, api) = cp
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{a}/keys"),
            Some(json!({"name": "ci", "type": "api", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 201);
    let api_key = api["key"].as_str().expect("key").to_owned();
    for (what, key) in [
        ("no key", None),
        ("garbage", Some("slk_svc_garbage")),
        ("api key", Some(api_key.as_str())),
        ("jwt", Some(cp.token.as_str())),
    ] {
        let refused = open(&cp.grpc_url, key, hello_msg())
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(
            refused.code(),
            tonic::Code::Unauthenticated,
            "{what}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_messages_end_only_their_own_stream() {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec("v1")).await;
    let (_, key) = cp.service_key(&tenant).await;
    let mut healthy = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("healthy", 0))),
    )
    .await
    .expect("open");
    healthy
        .snapshot(Duration::from_secs(2))
        .await
        .expect("snapshot");

    // Not a hello first.
    let mut rude = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Ack(Ack {
            version: 1,
            nonce: "x".into(),
        })),
    )
    .await
    .expect("open");
    assert_eq!(
        rude.end(Duration::from_secs(2))
            .await
            .expect("refused")
            .code(),
        tonic::Code::InvalidArgument
    );
    // A hello with an invalid node id and an unknown role.
    let mut bad = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("../etc", 0))),
    )
    .await
    .expect("open");
    assert_eq!(
        bad.end(Duration::from_secs(2))
            .await
            .expect("refused")
            .code(),
        tonic::Code::InvalidArgument
    );
    let mut wrong_role = Hello {
        roles: vec!["router".into()],
        ..hello("ok-id", 0)
    };
    wrong_role.name = "x".into();
    let mut bad = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(wrong_role)),
    )
    .await
    .expect("open");
    assert_eq!(
        bad.end(Duration::from_secs(2))
            .await
            .expect("refused")
            .code(),
        tonic::Code::InvalidArgument
    );
    // An oversized message (default limit 256 KiB).
    let mut big = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("big", 0))),
    )
    .await
    .expect("open");
    big.snapshot(Duration::from_secs(2))
        .await
        .expect("snapshot");
    let counters = (0..20_000)
        .map(|i| (format!("counter-{i:08}"), i))
        .collect();
    big.send(node_message::Kind::Status(Status {
        counters,
        last_error: "x".repeat(100_000),
        ..Status::default()
    }))
    .await;
    assert!(
        big.end(Duration::from_secs(3)).await.is_some(),
        "oversized message ends the stream"
    );

    // The healthy stream never noticed.
    let next = cp.update_pipeline(&tenant, &pipeline, spec("v2")).await;
    assert_eq!(
        healthy
            .snapshot(Duration::from_secs(2))
            .await
            .expect("still served")
            .version,
        next
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_disconnects_within_a_second_and_reconnecting_fails() {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    cp.pipeline(&tenant, "main", spec("v1")).await;
    let (key_id, key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node(&cp.grpc_url, &key, state.path()).await;
    eventually(Duration::from_secs(5), "the node to connect", || async {
        Some(()).filter(|()| {
            node.state.connected.load(Ordering::Relaxed) && node.state.current().is_some()
        })
    })
    .await;
    cp.revoke(&tenant, &key_id).await;
    let (_, took) = eventually(Duration::from_secs(1), "the stream to close", || async {
        Some(()).filter(|()| !node.state.connected.load(Ordering::Relaxed))
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eventually(
        Duration::from_secs(2),
        "the fleet to show it disconnected",
        || async {
            cp.data_planes(&tenant)
                .await
                .into_iter()
                .next()
                .filter(|n| n["connected"] == false)
        },
    )
    .await;
    let refused = open(
        &cp.grpc_url,
        Some(&key),
        msg(node_message::Kind::Hello(hello("n", 0))),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // The node keeps serving its configuration and says why it is disconnected.
    assert!(node.state.current().is_some());
    assert!(
        node.state
            .last_error()
            .is_some_and(|e| e.contains("service key refused")),
        "{:?}",
        node.state.last_error()
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_changes_and_revocations_over_nats() {
    let db = PgDatabase::create().await;
    let options = CpOptions {
        database_url: Some(db.url.clone()),
        nats_url: Some(nats_url()),
        ..CpOptions::default()
    };
    let mut a = Cp::start(options.clone()).await;
    let mut b = Cp::start(options).await;
    let tenant = a.tenant("acme").await;
    let pipeline = a.pipeline(&tenant, "main", spec("v1")).await;
    let (key_id, key) = a.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    // The node talks to replica B; every change is made through replica A.
    let node = start_node(&b.grpc_url, &key, state.path()).await;
    let first = a.config_version(&tenant).await;
    eventually(Duration::from_secs(5), "the first sync via B", || async {
        node.state.current().filter(|c| c.version == first)
    })
    .await;
    let next = a.update_pipeline(&tenant, &pipeline, spec("v2")).await;
    let (_, took) = eventually(
        Duration::from_secs(2),
        "A's change to reach B's node",
        || async {
            node.state
                .current()
                .filter(|c| c.version == next)
                .map(|_| ())
        },
    )
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    a.revoke(&tenant, &key_id).await;
    let (_, took) = eventually(
        Duration::from_secs(1),
        "A's revocation to close B's stream",
        || async { Some(()).filter(|()| !node.state.connected.load(Ordering::Relaxed)) },
    )
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And B's REST API stops accepting the key at once, too.
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/tenants", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 401);
    node.shutdown().await;
    a.stop().await;
    b.stop().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_sync_runs_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("cert");
    let (cert, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_pem, certified.signing_key.serialize_pem()).expect("write key");
    let cp = Cp::start(CpOptions {
        tls: Some((cert.clone(), key_pem)),
        ..CpOptions::default()
    })
    .await;
    assert!(cp.grpc_url.starts_with("https://"));
    let tenant = cp.tenant("acme").await;
    cp.pipeline(&tenant, "main", spec("v1")).await;
    let (_, key) = cp.service_key(&tenant).await;
    let version = cp.config_version(&tenant).await;

    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_trusting(&cp.grpc_url, &key, state.path(), Some(&cert)).await;
    eventually(Duration::from_secs(5), "a sync over TLS", || async {
        node.state.current().filter(|c| c.version == version)
    })
    .await;
    node.shutdown().await;

    // Without trusting the certificate, the node does not connect (and says why).
    let untrusting = tempfile::tempdir().expect("tempdir");
    let node = start_node(&cp.grpc_url, &key, untrusting.path()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        node.state.current().is_none(),
        "an untrusted certificate must not be accepted"
    );
    node.shutdown().await;
}
