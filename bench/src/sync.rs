//! Config-sync propagation: from the API call that changes a pipeline to every simulated
//! node's ACK, and the control plane's memory per idle connected node. The control plane runs
//! as its own process (the `sluice` binary) so its memory can be read from /proc.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::{ms, percentile};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_proto::config::v1::config_sync_client::ConfigSyncClient;
use sluice_proto::config::v1::{
    Ack, ControlMessage, Hello, NodeMessage, control_message, node_message,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub struct SyncArgs {
    pub nodes: usize,
    pub rounds: usize,
    pub sluice_bin: std::path::PathBuf,
}

struct ControlPlane {
    child: tokio::process::Child,
    /// Warnings and errors the control plane logged.
    warnings: Arc<std::sync::Mutex<Vec<String>>>,
    base: String,
    grpc: String,
    _dir: tempfile::TempDir,
}

async fn start_control_plane(bin: &std::path::Path) -> anyhow::Result<ControlPlane> {
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(bin)
        .args([
            "control-plane",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("SLUICE_DATA_DIR", dir.path())
        .env("SLUICE_LOG_FORMAT", "json")
        .env("SLUICE_LOG", "warn,sluice_control_plane::server=info")
        .env("SLUICE_ADMIN_EMAIL", "bench@example.com")
        .env("SLUICE_ADMIN_PASSWORD", "benchmark password")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let (base, grpc) = loop {
        let line = lines.next_line().await?.context("control plane exited")?;
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "control plane listening" {
            let http = entry["fields"]["http_addr"]
                .as_str()
                .context("http_addr")?
                .to_owned();
            let grpc = entry["fields"]["grpc_addr"]
                .as_str()
                .context("grpc_addr")?
                .to_owned();
            break (format!("http://{http}"), format!("http://{grpc}"));
        }
    };
    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = warnings.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        }
    });
    Ok(ControlPlane {
        child,
        warnings,
        base,
        grpc,
        _dir: dir,
    })
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

async fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "{}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}

/// One simulated node: like a real one, it reconnects when its stream fails.
async fn node(
    grpc: String,
    key: String,
    id: usize,
    acks: mpsc::UnboundedSender<(u64, Instant)>,
    reconnects: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
) {
    let mut held = 0;
    loop {
        match stream(&grpc, &key, id, &mut held, &acks).await {
            Ok(()) => return,
            // The bench is tearing the control plane down: not a failure.
            Err(_) if stopping.load(Ordering::Relaxed) => return,
            Err(e) => {
                reconnects.fetch_add(1, Ordering::Relaxed);
                eprintln!("node {id}: {e:#}; reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One stream: answers every snapshot with an ACK and reports when it did.
async fn stream(
    grpc: &str,
    key: &str,
    id: usize,
    held: &mut u64,
    acks: &mpsc::UnboundedSender<(u64, Instant)>,
) -> anyhow::Result<()> {
    let grpc = grpc.to_owned();
    let mut client = ConfigSyncClient::connect(grpc)
        .await?
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    tx.send(NodeMessage {
        kind: Some(node_message::Kind::Hello(Hello {
            node_id: format!("sim-{id:05}"),
            name: format!("sim-{id:05}"),
            agent_version: "bench".into(),
            roles: vec!["receiver".into()],
            config_version: *held,
            ..Hello::default()
        })),
    })
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let mut inbound = client.stream(request).await?.into_inner();
    while let Some(message) = inbound.message().await? {
        if let ControlMessage {
            kind: Some(control_message::Kind::SignedSnapshot(signed)),
        } = message
        {
            let snapshot = signed.decode_unverified()?;
            tx.send(NodeMessage {
                kind: Some(node_message::Kind::Ack(Ack {
                    version: snapshot.version,
                    nonce: snapshot.nonce,
                })),
            })
            .await?;
            *held = snapshot.version;
            let _ = acks.send((snapshot.version, Instant::now()));
        }
    }
    Ok(())
}

pub async fn run(args: SyncArgs) -> anyhow::Result<String> {
    let cp = start_control_plane(&args.sluice_bin).await?;
    let pid = cp.child.id().context("pid")?;
    let http = reqwest::Client::new();
    let login = api(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/auth/login", cp.base),
        "",
        json!({"email": "bench@example.com", "password": "benchmark password"}),
    )
    .await?;
    let token = login["access_token"].as_str().context("token")?.to_owned();
    let tenant = api(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/tenants", cp.base),
        &token,
        json!({"name": "bench"}),
    )
    .await?;
    let tenant = tenant["id"].as_str().context("tenant")?.to_owned();
    let spec = |round: usize| json!({"sources": [{"name": "web"}], "governance": [{"step": "drop_fields", "fields": [format!("properties.round{round}")]}]});
    let pipeline = api(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/tenants/{tenant}/pipelines", cp.base),
        &token,
        json!({"name": "main", "spec": spec(0)}),
    )
    .await?;
    let pipeline = pipeline["id"].as_str().context("pipeline")?.to_owned();
    let key = api(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/tenants/{tenant}/keys", cp.base),
        &token,
        json!({"name": "sim", "type": "service"}),
    )
    .await?;
    let key = key["key"].as_str().context("key")?.to_owned();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid)?;
    let (acks_tx, mut acks) = mpsc::unbounded_channel();
    let reconnects = Arc::new(AtomicU64::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let connect_started = Instant::now();
    for id in 0..args.nodes {
        let (grpc, key, acks_tx) = (cp.grpc.clone(), key.clone(), acks_tx.clone());
        tokio::spawn(node(
            grpc,
            key,
            id,
            acks_tx,
            reconnects.clone(),
            stopping.clone(),
        ));
    }
    // Everyone takes the initial snapshot.
    for _ in 0..args.nodes {
        tokio::time::timeout(Duration::from_secs(60), acks.recv())
            .await?
            .context("acks")?;
    }
    let connect_all = connect_started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid)?;
    let per_node_kib = rss_after.saturating_sub(rss_before) as f64 / args.nodes as f64;

    let mut latencies = Vec::new();
    let mut all_acked = Vec::new();
    for round in 1..=args.rounds {
        let started = Instant::now();
        let updated = api(
            &http,
            reqwest::Method::PUT,
            format!("{}/api/v1/tenants/{tenant}/pipelines/{pipeline}", cp.base),
            &token,
            json!({"spec": spec(round)}),
        )
        .await?;
        let target = updated["config_version"].as_u64().context("version")?;
        let mut got = 0;
        while got < args.nodes {
            let (version, at) = tokio::time::timeout(Duration::from_secs(60), acks.recv())
                .await?
                .context("acks")?;
            if version >= target {
                latencies.push(at.duration_since(started));
                got += 1;
            }
        }
        all_acked.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stopping.store(true, Ordering::Relaxed);
    latencies.sort_unstable();
    all_acked.sort_unstable();
    Ok(format!(
        "nodes={} rounds={} initial_sync_all={:.0}ms propagation p50={:.1}ms p99={:.1}ms max={:.1}ms all_acked_median={:.1}ms \
         rss_before={}KiB rss_after={}KiB per_idle_node={:.1}KiB reconnects={} control_plane_warnings={}",
        args.nodes,
        args.rounds,
        ms(connect_all),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        ms(percentile(&all_acked, 0.50)),
        rss_before,
        rss_after,
        per_node_kib,
        reconnects.load(Ordering::Relaxed),
        {
            let warnings = cp.warnings.lock().unwrap_or_else(|p| p.into_inner());
            for line in warnings.iter().take(5) {
                eprintln!("control plane: {line}");
            }
            warnings.len()
        },
    ))
}
