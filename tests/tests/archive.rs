//! Archive and query end to end: events go in through the Segment API, the processor routes
//! them to `archive`, the archiver writes Parquet to a local directory or a real S3-compatible
//! server (`SLUICE_TEST_S3_URL`, started by `.ci/run`), and the query role answers SQL over
//! it. An independent reader (pyarrow, `SLUICE_TEST_PYTHON`) reads the same files.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_data_plane::RunningNode;
use sluice_tests::{Cp, CpOptions, eventually, s3_url, start_node_with};

fn python() -> String {
    std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Where the node archives.
enum Store<'a> {
    Local(&'a Path),
    S3 { bucket: &'a str, endpoint: String },
}

struct World {
    cp: Cp,
    tenant: String,
    write_key: String,
    service_key: String,
    node: RunningNode,
    url: String,
    _state: tempfile::TempDir,
}

async fn world(store: Store<'_>, limits: Option<(u64, usize, usize)>) -> World {
    let spec = json!({"sources": [{"name": "web"}], "archive": {"dataset": "web_events"}});
    world_with(store, limits, spec).await
}

async fn world_with(store: Store<'_>, limits: Option<(u64, usize, usize)>, spec: Value) -> World {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,processor,delivery,archiver,query".into();
        raw.archive.archive_flush_secs = 1;
        raw.archive.archive_maintain_secs = 1;
        match store {
            Store::Local(dir) => raw.archive.archive_dir = Some(dir.to_path_buf()),
            Store::S3 { bucket, endpoint } => {
                raw.archive.s3_bucket = Some(bucket.to_owned());
                raw.archive.s3_endpoint = Some(endpoint);
                raw.archive.s3_access_key = Some("test".into());
                raw.archive.s3_secret_key = Some("test".into());
            }
        }
        if let Some((timeout, rows, memory)) = limits {
            raw.query.query_timeout_secs = timeout;
            raw.query.query_max_rows = rows;
            raw.query.query_memory_bytes = memory;
        }
    })
    .await;
    let url = format!("http://{}", node.http_addr);
    let version = cp.config_version(&tenant).await;
    eventually(Duration::from_secs(5), "the configuration", || async {
        node.state.current().filter(|c| c.version >= version)
    })
    .await;
    World {
        cp,
        tenant,
        write_key,
        service_key,
        node,
        url,
        _state: state,
    }
}

impl World {
    async fn send(&self, ids: &[String]) {
        let batch: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({"type": "track", "event": if i % 3 == 0 { "Signed Up" } else { "Order Completed" },
                    "userId": format!("u-{}", i % 7), "messageId": id,
                    "properties": {"revenue": i as f64 + 0.5, "plan": "pro"},
                    "context": {"page": {"path": "/checkout"}}})
            })
            .collect();
        let response = reqwest::Client::new()
            .post(format!("{}/v1/batch", self.url))
            .basic_auth(&self.write_key, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn query_with(&self, token: &str, sql: &str, format: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/query", self.url))
            .bearer_auth(token)
            .json(&json!({"sql": sql, "format": format}))
            .send()
            .await
            .expect("query");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn query(&self, sql: &str) -> (StatusCode, Value) {
        self.query_with(&self.service_key, sql, "json").await
    }

    /// Waits until the archive answers `want` distinct event ids.
    async fn archived(&self, want: usize) {
        eventually(
            Duration::from_secs(20),
            "the events in the archive",
            || async {
                let (status, body) = self
                    .query("SELECT count(DISTINCT event_id) AS n FROM events")
                    .await;
                (status == StatusCode::OK && body["rows"][0]["n"] == want).then_some(())
            },
        )
        .await;
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

async fn round_trip(world: &World) {
    let sent = ids("e", 60);
    world.send(&sent).await;
    world.archived(60).await;
    let (status, body) = world
        .query(
            "SELECT event, count(*) AS n, sum(json_get_float(properties, 'revenue')) AS revenue \
             FROM events WHERE dataset = 'web_events' GROUP BY event ORDER BY event",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rows"],
        json!([
            {"event": "Order Completed", "n": 40, "revenue": 1220.0},
            {"event": "Signed Up", "n": 20, "revenue": 580.0}
        ]),
        "{body}"
    );
    let (_, body) = world
        .query("SELECT event_id, user_id, json_get_str(context, 'page', 'path') AS path, dt, hour FROM events ORDER BY event_id LIMIT 2")
        .await;
    assert_eq!(body["rows"][0]["event_id"], "e-000");
    assert_eq!(body["rows"][0]["user_id"], "u-0");
    assert_eq!(body["rows"][0]["path"], "/checkout");
    assert_eq!(body["rows"][0]["dt"].as_str().map(str::len), Some(10));
    let column_names: Vec<&str> = body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(column_names, ["event_id", "user_id", "path", "dt", "hour"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_archived_locally_queried_and_readable_by_pyarrow() {
    let archive = tempfile::tempdir().expect("tempdir");
    let world = world(Store::Local(archive.path()), None).await;
    round_trip(&world).await;

    // An independent reader sees the same rows in the same files.
    let script = r#"
import json, sys, pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
t = d.to_table()
print(json.dumps({"rows": t.num_rows, "ids": sorted(set(t.column("event_id").to_pylist())),
    "columns": t.schema.names, "compression": __import__("pyarrow.parquet", fromlist=["x"]).ParquetFile(d.files[0]).metadata.row_group(0).column(0).compression}))
"#;
    let output = std::process::Command::new(python())
        .args(["-c", script])
        .arg(archive.path())
        .output()
        .expect("python (set SLUICE_TEST_PYTHON to a Python with pyarrow; .ci/run does)");
    assert!(
        output.status.success(),
        "pyarrow could not read the archive: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_slice(&output.stdout).expect("json");
    let want: Vec<String> = ids("e", 60);
    assert_eq!(read["ids"], json!(want));
    assert_eq!(read["compression"], "ZSTD");
    for column in [
        "event_id",
        "type",
        "received_at",
        "properties",
        "tenant",
        "dataset",
        "dt",
        "hour",
    ] {
        assert!(
            read["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .any(|c| c == column),
            "{column} in {:?}",
            read["columns"]
        );
    }
    // The Hive layout, under the tenant's prefix.
    let tenant_dir = archive.path().join(format!("tenant={}", world.tenant));
    assert!(tenant_dir.join("dataset=web_events").is_dir());
    world.node.shutdown().await;
}

/// A fresh bucket on the S3 server (a path-style PUT, as MinIO and moto take it).
async fn new_bucket() -> String {
    let bucket = format!("sluice-test-{}", uuid::Uuid::now_v7().simple());
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", s3_url()))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "an S3-compatible server is required at {} (SLUICE_TEST_S3_URL): {e}",
                s3_url()
            )
        });
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_archived_to_a_real_s3_server_and_queried() {
    let bucket = new_bucket().await;
    let world = world(
        Store::S3 {
            bucket: &bucket,
            endpoint: s3_url(),
        },
        None,
    )
    .await;
    round_trip(&world).await;
    // The objects are where the layout says, read back over HTTP.
    let listing = reqwest::get(format!(
        "{}/{bucket}?list-type=2&prefix=tenant%3D{}/dataset%3Dweb_events/",
        s3_url(),
        world.tenant
    ))
    .await
    .expect("list")
    .text()
    .await
    .expect("text");
    assert!(listing.contains(".parquet</Key>"), "{listing}");
    world.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_prune_and_hostile_sql_is_refused() {
    let archive = tempfile::tempdir().expect("tempdir");
    let world = world(
        Store::Local(archive.path()),
        Some((5, 1000, 32 * 1024 * 1024)),
    )
    .await;
    // Two earlier days, written in the archive's own format, beside today's events.
    for (day, n) in [("2026-01-01", 3), ("2026-01-02", 4)] {
        let store = sluice_archive::store::StoreConfig::Local(archive.path().to_path_buf())
            .open()
            .expect("store");
        let mut rows = sluice_archive::record::BatchBuilder::default();
        for i in 0..n {
            let event = json!({"message_id": format!("old-{day}-{i}"), "type": "track",
                "event": "Old", "source": "web", "pipeline_id": "p"})
            .to_string();
            let at = sluice_archive::record::parse_time(&format!("{day}T10:00:00Z")).expect("time");
            rows.push(
                &sluice_archive::record::Envelope::parse(&event).expect("event"),
                at,
            );
        }
        let bytes =
            sluice_archive::encode::parquet(&rows.finish().expect("batch")).expect("parquet");
        let path = sluice_archive::layout::object_path(
            &world.tenant,
            "web_events",
            day,
            "10",
            uuid::Uuid::now_v7(),
        );
        sluice_archive::encode::upload(&store, &path, bytes)
            .await
            .expect("upload");
    }
    world.send(&ids("p", 30)).await;
    world.archived(37).await;

    let (status, all) = world
        .query("SELECT count(DISTINCT event_id) AS n FROM events")
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    // A plain count(*) is answered from Parquet footers without a scan; counting distinct ids
    // makes the plan read the files, so `files_scanned` shows what pruning left.
    let (_, day) = world
        .query("SELECT count(DISTINCT event_id) AS n FROM events WHERE dt = '2026-01-02'")
        .await;
    assert_eq!(day["rows"][0]["n"], 4);
    assert_eq!(
        day["files_scanned"], 1,
        "only that day's file is read: {day}"
    );
    assert!(
        all["files_scanned"].as_u64().expect("files") >= 3,
        "every file without a dt filter: {all}"
    );

    // Hostile SQL: a clear 4xx every time, never a 500 and never data.
    let other = format!("tenant={}", uuid::Uuid::now_v7());
    let hostile = [
        "COPY (SELECT * FROM events) TO '/tmp/stolen.parquet'".to_owned(),
        "CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION '/'".to_owned(),
        "SELECT * FROM generate_series(1, 10)".to_owned(),
        "SELECT * FROM range(10)".to_owned(),
        format!("SELECT * FROM '{}/{other}/'", archive.path().display()),
        format!("SELECT * FROM 'sluice-archive://tenant/../{other}/'"),
        "SELECT * FROM information_schema.tables".to_owned(),
        "DROP TABLE events".to_owned(),
        "INSERT INTO events (event_id) VALUES ('x')".to_owned(),
        "SET datafusion.execution.target_partitions = 64".to_owned(),
        "SELECT 1; SELECT 2".to_owned(),
        "SELEC nonsense".to_owned(),
    ];
    for sql in &hostile {
        let (status, body) = world.query(sql).await;
        assert!(status.is_client_error(), "{sql}: {status} {body}");
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{sql}: {body}"
        );
    }
    // Over the row limit (1,000), and 37^4 distinct strings: over the 32 MiB memory limit.
    for sql in [
        "SELECT a.event_id FROM events a, events b",
        "SELECT count(DISTINCT a.event_id || b.event_id || c.event_id || d.event_id) \
         FROM events a, events b, events c, events d",
    ] {
        let (status, body) = world.query(sql).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("limit_exceeded")),
            "{sql}: {body}"
        );
    }
    let (status, _) = world
        .query_with(&world.service_key, "SELECT 1", "xml")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Still healthy afterwards.
    let (status, _) = world.query("SELECT count(*) FROM events").await;
    assert_eq!(status, StatusCode::OK);
    world.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_open_only_their_own_tenants_archive() {
    let archive = tempfile::tempdir().expect("tempdir");
    let world = world(Store::Local(archive.path()), None).await;
    world.send(&ids("t", 5)).await;
    world.archived(5).await;

    let own = world.cp.query_token(&world.tenant).await;
    let (status, body) = world
        .query_with(&own, "SELECT count(*) AS n FROM events", "json")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["n"], 5);

    // Tenant B: its token and its key are refused by tenant A's data plane.
    let other = world.cp.tenant("globex").await;
    let foreign = world.cp.query_token(&other).await;
    let (status, body) = world
        .query_with(&foreign, "SELECT count(*) FROM events", "json")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, other_key) = world.cp.service_key(&other).await;
    let (status, _) = world
        .query_with(&other_key, "SELECT count(*) FROM events", "json")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = world.query_with("not-a-token", "SELECT 1", "json").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = world.query_with(&world.write_key, "SELECT 1", "json").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "ingest keys only send events"
    );

    // CSV for downloads; CORS for the browser.
    let csv = reqwest::Client::new()
        .post(format!("{}/v1/query", world.url))
        .bearer_auth(&own)
        .header("origin", "http://ui.example.com")
        .json(&json!({"sql": "SELECT event_id FROM events ORDER BY event_id LIMIT 2", "format": "csv"}))
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.headers()["access-control-allow-origin"], "*");
    assert_eq!(csv.headers()["x-sluice-rows"], "2");
    assert_eq!(csv.text().await.expect("text"), "event_id\nt-000\nt-001\n");
    let preflight = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/v1/query", world.url))
        .header("origin", "http://ui.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    world.node.shutdown().await;
}

/// The S3 server is unreachable for a while: the archiver holds the events (nothing is
/// acknowledged, nothing lost), says so in its metrics, and writes them once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_an_unreachable_store_and_arrive_when_it_is_back() {
    let bucket = new_bucket().await;
    // A port that refuses connections until the gateway below opens it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let world = world(
        Store::S3 {
            bucket: &bucket,
            endpoint: format!("http://127.0.0.1:{port}"),
        },
        None,
    )
    .await;
    world.send(&ids("o", 25)).await;
    let stats = &world.node.state.archive_stats;
    eventually(Duration::from_secs(20), "failed uploads", || async {
        (stats.upload_failures.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", world.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("sluice_archive_store_up 0"), "{metrics}");
    assert!(
        metrics.contains("sluice_archive_buffered_events 25"),
        "{metrics}"
    );
    // The query role cannot list the archive either: a 503 that says why, not a 500.
    let (status, body) = world.query("SELECT count(*) FROM events").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // The store comes back: a gateway on that port to the real server.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the reserved port");
    let target = s3_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let gateway = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    world.archived(25).await;
    assert_eq!(stats.buffered.load(Ordering::Relaxed), 0);
    assert_eq!(stats.store_up.load(Ordering::Relaxed), 1);
    let (_, body) = world.query("SELECT count(*) AS n FROM events").await;
    assert_eq!(body["rows"][0]["n"], 25, "each event once: {body}");
    world.node.shutdown().await;
    gateway.abort();
}

/// The archive on a real S3 server after two months: the days a dataset's `retain_days` no
/// longer keeps are deleted by the archiver, the others stay, and the node counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_past_a_datasets_retention_are_deleted_from_s3() {
    let bucket = new_bucket().await;
    let spec = json!({"sources": [{"name": "web"}], "archive": {"retain_days": 30}});
    let world = world_with(
        Store::S3 {
            bucket: &bucket,
            endpoint: s3_url(),
        },
        None,
        spec,
    )
    .await;
    let store = sluice_archive::store::StoreConfig::S3 {
        bucket: bucket.clone(),
        endpoint: Some(s3_url()),
        access_key: Some("test".into()),
        secret_key: Some("test".into()),
        region: "us-east-1".into(),
    }
    .open()
    .expect("store");
    let now = sluice_pipeline::time::now_ms();
    // One small file a day for 60 days, the last one today.
    let written = sluice_tests::write_small_archive(
        &store,
        &world.tenant,
        now - 59 * 86_400_000,
        (60, 1, 1, 10),
    )
    .await;
    assert_eq!(written, 600);
    let first_kept = sluice_archive::layout::partition(now - 30 * 86_400_000).0;
    let (kept, _) = eventually(Duration::from_secs(30), "retention", || async {
        let (status, body) = world
            .query("SELECT count(DISTINCT dt) AS days, min(dt) AS first, count(*) AS n FROM events")
            .await;
        (status == StatusCode::OK && body["rows"][0]["first"] == first_kept.as_str())
            .then(|| body["rows"][0].clone())
    })
    .await;
    // Today and the 30 days before it.
    assert_eq!(kept["days"], 31, "{kept}");
    assert_eq!(kept["n"], 310, "{kept}");
    assert_eq!(
        world
            .node
            .state
            .counters
            .archive_expired_files
            .load(Ordering::Relaxed),
        29
    );
    world.node.shutdown().await;
}

/// `POST /v1/erasure` for a user who browsed anonymously first: their rows before and after
/// signing in leave the archive, their dead letters and their identity profile go, other
/// people's stay, and only an admin may ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_removes_a_person_from_archive_dead_letters_and_identity() {
    let vendor = sluice_tests::Vendor::start().await;
    vendor.always("/hook", sluice_tests::Reply::Status(400));
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = json!({
        "sources": [{"name": "web"}],
        "governance": [{"step": "identity"}],
        "destinations": [{"name": "hook", "webhook": {"url": format!("{}/hook", vendor.url)}}],
    });
    // Queries of at most 3 s: the erasure deletes the old files 8 s after rewriting them.
    let limits = (3, 100_000, 256 * 1024 * 1024);
    let world = world_with(Store::Local(dir.path()), Some(limits), spec).await;
    let event = |id: &str, anonymous: &str, user: Option<&str>| {
        let mut e =
            json!({"type": "track", "event": "Viewed", "messageId": id, "anonymousId": anonymous});
        if let Some(user) = user {
            e["userId"] = json!(user);
        }
        e
    };
    let batch = vec![
        event("m-1", "anon-1", None),
        json!({"type": "identify", "messageId": "m-2", "anonymousId": "anon-1", "userId": "ada"}),
        event("m-3", "anon-1", Some("ada")),
        event("m-4", "anon-2", Some("bob")),
    ];
    let response = reqwest::Client::new()
        .post(format!("{}/v1/batch", world.url))
        .basic_auth(&world.write_key, Some(""))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    world.archived(4).await;
    eventually(Duration::from_secs(10), "four dead letters", || async {
        let c = world.node.state.counters.snapshot();
        (c.get("main/hook.failed") == Some(&4)).then_some(())
    })
    .await;

    let erase = |key: String, body: Value| {
        let url = world.url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{url}/v1/erasure"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("erasure");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // A member may not; bad requests say why.
    let (status, member) = world
        .cp
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/keys", world.tenant),
            Some(json!({"name": "analyst", "type": "api", "role": "member"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member = member["key"].as_str().expect("key").to_owned();
    let version = world.cp.config_version(&world.tenant).await;
    eventually(Duration::from_secs(5), "the member's key", || async {
        world.node.state.current().filter(|c| c.version >= version)
    })
    .await;
    let (status, body) = erase(member, json!({"user_id": "ada"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    for bad in [
        json!({}),
        json!({"user_id": "ada", "anonymous_id": "anon-1"}),
        json!({"email": "a@b"}),
        json!({"user_id": ""}),
    ] {
        let (status, body) = erase(world.service_key.clone(), bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let (status, receipt) = erase(world.service_key.clone(), json!({"user_id": "ada"})).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(
        receipt["ids_linked"], 2,
        "ada and her anonymous id: {receipt}"
    );
    assert_eq!(receipt["archive"]["rows_removed"], 3, "{receipt}");
    assert_eq!(receipt["dead_letters_removed"], 3, "{receipt}");
    assert_eq!(receipt["identity_profiles_removed"], 1, "{receipt}");
    let (_, left) = world
        .query("SELECT event_id FROM events ORDER BY event_id")
        .await;
    assert_eq!(left["rows"], json!([{"event_id": "m-4"}]), "{left}");
    let (status, _) = reqwest::Client::new()
        .get(format!("{}/v1/identities/ada", world.url))
        .bearer_auth(&world.service_key)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .expect("profile");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        world.node.state.counters.snapshot().get("erasures"),
        Some(&1)
    );
    world.node.shutdown().await;
}
