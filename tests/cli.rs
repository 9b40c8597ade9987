//! The `sluice` binary as an operator runs it: flags, environment, the first owner from the
//! environment, the connectivity check with a service key, revocation, restarts and signals.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_tests::free_port;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const ADMIN: &str = "ops@example.com";
const PASSWORD: &str = "a long operator password";

struct Running {
    child: Child,
    base: String,
    /// The gRPC address, for control planes.
    grpc: String,
}

/// Starts `sluice control-plane` on an ephemeral port and waits until it listens.
async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Running {
    let mut command = Command::new(SLUICE);
    command
        .args([
            "control-plane",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("SLUICE_DATA_DIR", data_dir)
        .env("SLUICE_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn sluice");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let (addr, grpc) = listening(&mut lines, "control plane listening").await;
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running {
        child,
        base: format!("http://{addr}"),
        grpc: format!("http://{grpc}"),
    }
}

/// Reads the JSON log until `message`; returns its http_addr and grpc_addr (empty if none).
async fn listening(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    message: &str,
) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut last = std::collections::VecDeque::new();
        while let Some(line) = lines.next_line().await.expect("read log") {
            if last.len() == 5 {
                last.pop_front();
            }
            last.push_back(line);
            let Ok(entry) = serde_json::from_str::<Value>(last.back().expect("a line")) else {
                continue;
            };
            if entry["fields"]["message"] == message {
                let field = |name: &str| {
                    entry["fields"][name]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                };
                return (field("http_addr"), field("grpc_addr"));
            }
        }
        panic!(
            "sluice exited before logging {message:?}; its last lines:\n{}",
            Vec::from(last).join("\n")
        );
    })
    .await
    .expect("sluice listens within 30 s")
}

/// Starts `sluice data-plane` on an ephemeral port.
async fn start_data_plane(state_dir: &Path, control_url: &str, key: &str) -> (Child, String) {
    start_data_plane_with_roles(state_dir, control_url, key, "receiver").await
}

/// Starts `sluice data-plane --roles <roles>` and waits until it listens.
async fn start_data_plane_with_roles(
    state_dir: &Path,
    control_url: &str,
    key: &str,
    roles: &str,
) -> (Child, String) {
    start_data_plane_with_env(state_dir, control_url, key, roles, &[]).await
}

/// Starts `sluice data-plane --roles <roles>` with more environment and waits until it listens.
async fn start_data_plane_with_env(
    state_dir: &Path,
    control_url: &str,
    key: &str,
    roles: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut child = Command::new(SLUICE)
        .args(["data-plane", "--roles", roles, "--http-addr", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state_dir)
        .env("SLUICE_CONTROL_URL", control_url)
        .env("SLUICE_SERVICE_KEY", key)
        .env("SLUICE_NODE_NAME", "edge-1")
        .env("SLUICE_LOG_FORMAT", "json")
        // The tests' vendors listen on loopback, which the default policy refuses.
        .env("SLUICE_POLICY_ALLOW_HOSTS", "127.0.0.1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn data plane");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (addr, _) = listening(&mut lines, "data plane listening").await;
    // SLUICE_TEST_LOG_DIR keeps each node's log (data-plane-<port>.log) for a failure's cause.
    let mut keep = std::env::var_os("SLUICE_TEST_LOG_DIR").map(|dir| {
        let port = addr.rsplit(':').next().unwrap_or("0").to_owned();
        std::fs::File::create(Path::new(&dir).join(format!("data-plane-{port}.log")))
            .expect("log file")
    });
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(file) = &mut keep {
                let _ = std::io::Write::write_all(file, format!("{line}\n").as_bytes());
            }
        }
    });
    (child, format!("http://{addr}"))
}

impl Running {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new().request(
            method.parse().expect("method"),
            format!("{}{path}", self.base),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, email: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// SIGTERM, and the exit status.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(killed.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s")
            .expect("wait")
    }
}

#[tokio::test]
async fn help_explains_every_flag_and_its_environment_variable() {
    let top = std::process::Command::new(SLUICE)
        .arg("--help")
        .output()
        .expect("run");
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("control-plane"), "{text}");
    let sub = std::process::Command::new(SLUICE)
        .args(["control-plane", "--help"])
        .output()
        .expect("run");
    assert!(sub.status.success());
    let text = String::from_utf8_lossy(&sub.stdout);
    for needle in [
        "--http-addr",
        "SLUICE_HTTP_ADDR",
        "127.0.0.1:8080",
        "--grpc-addr",
        "SLUICE_GRPC_ADDR",
        "127.0.0.1:8081",
        "--database-url",
        "DATABASE_URL",
        "--data-dir",
        "SLUICE_DATA_DIR",
        "./sluice-data",
        "--allow-signup",
        "SLUICE_ADMIN_EMAIL",
    ] {
        assert!(
            text.contains(needle),
            "`sluice control-plane --help` does not mention {needle}:\n{text}"
        );
    }
}

/// (arguments, environment, what stderr must mention)
type ConfigCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn invalid_configuration_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [ConfigCase; 3] = [
        (
            &[],
            &[("SLUICE_ADMIN_EMAIL", ADMIN)],
            "SLUICE_ADMIN_PASSWORD",
        ),
        (
            &["--database-url", "mysql://localhost/x"],
            &[],
            "database_url",
        ),
        (&["--http-addr", "not-an-address"], &[], "--http-addr"),
    ];
    for (args, env, needle) in cases {
        let output = std::process::Command::new(SLUICE)
            .arg("control-plane")
            .args(args)
            .env("SLUICE_DATA_DIR", dir.path())
            .env_remove("SLUICE_ADMIN_EMAIL")
            .env_remove("SLUICE_ADMIN_PASSWORD")
            .envs(env.iter().copied())
            .output()
            .expect("run");
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr lacks {needle}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn data_plane_bus_limits_are_checked_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (env, needle) in [
        (("SLUICE_BUS_MAX_BYTES", "1000"), "bus_max_bytes"),
        (("SLUICE_NATS_FETCH_BYTES", "1000"), "nats_fetch_bytes"),
        (("SLUICE_NATS_MAX_BYTES", "1000"), "nats_max_bytes"),
        (("SLUICE_NATS_REPLICAS", "0"), "nats_replicas"),
        (
            ("SLUICE_NATS_PACKS_IN_FLIGHT", "5000"),
            "nats_packs_in_flight",
        ),
        (("SLUICE_BUS_MAX_BYTES", "lots"), "--bus-max-bytes"),
    ] {
        let output = std::process::Command::new(SLUICE)
            .args([
                "data-plane",
                "--roles",
                "receiver",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(dir.path())
            .env(env.0, env.1)
            .output()
            .expect("run");
        assert!(!output.status.success(), "{env:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(needle),
            "{env:?}: stderr lacks {needle}:\n{stderr}"
        );
    }
}

/// The check an operator (and the issue) runs, word for word, against the real binary.
#[tokio::test]
async fn operator_flow_with_a_service_key_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("SLUICE_ADMIN_EMAIL", ADMIN),
        ("SLUICE_ADMIN_PASSWORD", PASSWORD),
    ];
    let cp = start(dir.path(), &env).await;
    assert!(
        dir.path().join("control-plane.db").exists(),
        "SQLite under the data dir"
    );

    let owner = cp.login(ADMIN).await;
    let (status, tenant) = cp
        .call(
            "POST",
            "/api/v1/tenants",
            Some(&owner),
            Some(json!({"name": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let tenant_id = tenant["id"].as_str().expect("id");
    let keys = format!("/api/v1/tenants/{tenant_id}/keys");
    let (status, created) = cp
        .call(
            "POST",
            &keys,
            Some(&owner),
            Some(json!({"name": "on-prem", "type": "service"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["id"].as_str().expect("id").to_owned();

    let (_, listed) = cp.call("GET", &keys, Some(&owner), None).await;
    assert_eq!(listed["data"][0]["prefix"], created["prefix"]);
    assert!(
        !listed.to_string().contains(&key),
        "listed without its secret"
    );

    let (status, mine) = cp.call("GET", "/api/v1/tenants", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["data"][0]["id"], tenant["id"]);

    // A second person with an account of their own sees none of it.
    let (_, invited) = cp
        .call(
            "POST",
            "/api/v1/tenants/x/members",
            Some(&owner),
            Some(json!({"email": "eve@example.com", "role": "owner"})),
        )
        .await;
    assert_eq!(invited["error"]["code"], "not_found");
    let (status, other) = cp
        .call(
            "POST",
            "/api/v1/tenants",
            Some(&owner),
            Some(json!({"name": "side project"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let other_id = other["id"].as_str().expect("id");
    let (_, invite) = cp
        .call(
            "POST",
            &format!("/api/v1/tenants/{other_id}/members"),
            Some(&owner),
            Some(json!({"email": "eve@example.com", "role": "owner"})),
        )
        .await;
    let token = invite["invitation"]["token"]
        .as_str()
        .expect("invitation token");
    let (status, _) = cp
        .call(
            "POST",
            "/api/v1/auth/accept-invite",
            None,
            Some(json!({"token": token, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let eve = cp.login("eve@example.com").await;
    let (_, eves) = cp.call("GET", "/api/v1/tenants", Some(&eve), None).await;
    let ids: Vec<_> = eves["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(other_id)]);
    for path in [
        format!("/api/v1/tenants/{tenant_id}"),
        keys.clone(),
        format!("/api/v1/tenants/{tenant_id}/audit"),
    ] {
        assert_eq!(
            cp.call("GET", &path, Some(&eve), None).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }

    let (status, _) = cp
        .call(
            "POST",
            &format!("{keys}/{key_id}/revoke"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = cp.call("GET", "/api/v1/tenants", Some(&key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let exit = cp.terminate().await;
    assert!(exit.success(), "graceful shutdown on SIGTERM: {exit:?}");

    // Everything survives a restart; the admin variables do not create a second owner.
    let cp = start(dir.path(), &env).await;
    let owner = cp.login(ADMIN).await;
    let (_, audit) = cp
        .call(
            "GET",
            &format!("/api/v1/tenants/{tenant_id}/audit"),
            Some(&owner),
            None,
        )
        .await;
    let actions: Vec<_> = audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, vec!["key.revoke", "key.create", "tenant.create"]);
    assert_eq!(
        cp.call("GET", "/api/v1/tenants", Some(&key), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(cp.terminate().await.success());
}

#[tokio::test]
async fn without_admin_variables_a_setup_token_is_logged_never_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base, token) = start_awaiting_setup(dir.path()).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/setup"))
        .json(&json!({"token": token, "email": ADMIN, "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    child.kill().await.ok();
}

/// A tenant with one pipeline and a service key, made through the REST API.
struct Provisioned {
    tenant: String,
    pipeline: String,
    service_key: String,
}

/// An ingest key for the pipeline's `web` source.
async fn ingest_key(cp: &Running, owner: &str, tenant: &str, pipeline: &str) -> String {
    let keys = format!("/api/v1/tenants/{tenant}/keys");
    let ingest = json!({"name": "web", "type": "ingest", "pipeline_id": pipeline, "source": "web"});
    let (status, key) = cp.call("POST", &keys, Some(owner), Some(ingest)).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["key"].as_str().expect("key").to_owned()
}

async fn provision(cp: &Running, owner: &str, spec: Value) -> Provisioned {
    let (status, tenant) = cp
        .call(
            "POST",
            "/api/v1/tenants",
            Some(owner),
            Some(json!({"name": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let tenant = tenant["id"].as_str().expect("id").to_owned();
    let body = json!({"name": "main", "spec": spec});
    let (status, pipeline) = cp
        .call(
            "POST",
            &format!("/api/v1/tenants/{tenant}/pipelines"),
            Some(owner),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pipeline}");
    let pipeline = pipeline["id"].as_str().expect("id").to_owned();
    let body = json!({"name": "edge", "type": "service"});
    let (status, key) = cp
        .call(
            "POST",
            &format!("/api/v1/tenants/{tenant}/keys"),
            Some(owner),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let service_key = key["key"].as_str().expect("key").to_owned();
    Provisioned {
        tenant,
        pipeline,
        service_key,
    }
}

/// The issue's own check of config sync, with the real binaries: a node appears with the
/// tenant's version, an edit is applied, and without the control plane a restarted node is
/// ready on its last-known-good configuration.
#[tokio::test]
async fn data_plane_binary_syncs_and_keeps_running_without_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("SLUICE_ADMIN_EMAIL", ADMIN),
        ("SLUICE_ADMIN_PASSWORD", PASSWORD),
    ];
    let cp = start(&dir.path().join("cp"), &env).await;
    let owner = cp.login(ADMIN).await;
    let spec = |tag: &str| json!({"sources": [{"name": "web"}], "governance": [{"step": "drop_fields", "fields": [tag]}]});
    let Provisioned {
        tenant,
        pipeline,
        service_key: key,
    } = provision(&cp, &owner, spec("a")).await;
    let pipelines = format!("/api/v1/tenants/{tenant}/pipelines");

    let state = dir.path().join("node");
    let (node, _) = start_data_plane(&state, &cp.grpc, &key).await;
    let fleet = format!("/api/v1/tenants/{tenant}/data-planes");
    let (_, t) = cp
        .call(
            "GET",
            &format!("/api/v1/tenants/{tenant}"),
            Some(&owner),
            None,
        )
        .await;
    let first = t["config_version"].as_u64().expect("version");
    wait_for_node(&cp, &owner, &fleet, first).await;
    let body = json!({"spec": spec("b")});
    let (_, updated) = cp
        .call(
            "PUT",
            &format!("{pipelines}/{pipeline}"),
            Some(&owner),
            Some(body),
        )
        .await;
    let version = updated["config_version"].as_u64().expect("version");
    wait_for_node(&cp, &owner, &fleet, version).await;

    drop(node);
    assert!(cp.terminate().await.success());
    let (_node, url) = start_data_plane(&state, "http://127.0.0.1:9", &key).await;
    let ready: Value = reqwest::get(format!("{url}/health/ready"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["config_version"].as_u64(), Some(version), "{ready}");
    assert_eq!(ready["source"], "last_known_good");
}

async fn wait_for_node(cp: &Running, owner: &str, fleet: &str, version: u64) {
    for _ in 0..100 {
        let (_, nodes) = cp.call("GET", fleet, Some(owner), None).await;
        let node = &nodes["data"][0];
        if node["connected"] == true
            && node["applied_version"] == version
            && node["name"] == "edge-1"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not apply version {version}");
}

#[tokio::test]
async fn data_plane_help_and_bad_configuration() {
    let help = std::process::Command::new(SLUICE)
        .args(["data-plane", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--roles",
        "SLUICE_ROLES",
        "--http-addr",
        "127.0.0.1:8090",
        "--state-dir",
        "./sluice-data/node",
        "SLUICE_CONTROL_URL",
        "SLUICE_SERVICE_KEY",
        "SLUICE_NODE_NAME",
        "SLUICE_CA_FILE",
    ] {
        assert!(
            text.contains(needle),
            "`sluice data-plane --help` does not mention {needle}:\n{text}"
        );
    }
    let key = "slk_svc_AAAAAAAA_".to_owned() + &"A".repeat(49);
    let cases: [ConfigCase<'_>; 4] = [
        (&["data-plane"], &[], "SLUICE_CONTROL_URL"),
        (
            &["data-plane", "--control-url", "http://127.0.0.1:1"],
            &[],
            "SLUICE_SERVICE_KEY",
        ),
        (
            &[
                "data-plane",
                "--control-url",
                "http://127.0.0.1:1",
                "--service-key",
                &key,
            ],
            &[],
            "copy-paste",
        ),
        (&["data-plane", "--roles", "router"], &[], "unknown role"),
    ];
    for (args, env, needle) in cases {
        let output = std::process::Command::new(SLUICE)
            .args(args)
            .env_remove("SLUICE_CONTROL_URL")
            .env_remove("SLUICE_SERVICE_KEY")
            .envs(env.iter().copied())
            .output()
            .expect("run");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("stack backtrace"), "{stderr}");
    }
}

/// `kill -9` of a receiver under load: every event it acknowledged is on the bus afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_under_load_keeps_every_acknowledged_event() {
    use sluice_bus::embedded::{EmbeddedBus, EmbeddedConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("node");
    let stored = kill_a_receiver_under_load(dir.path(), &state, &[], async || {
        let bus =
            EmbeddedBus::open(EmbeddedConfig::new(state.join("bus"))).expect("reopen the bus");
        stored_ids(&bus).await
    })
    .await;
    assert!(stored > 500, "{stored} events stored");
}

/// The same on NATS, where concurrent requests share stored messages: an acknowledged request
/// is in a message the server stored, whatever else shared it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_under_load_keeps_every_acknowledged_event_on_nats() {
    use sluice_bus::Bus as _;
    use sluice_bus::nats::{NatsBus, NatsConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let url = sluice_tests::nats_url();
    let prefix = format!("k{}", uuid::Uuid::now_v7().simple());
    let env = [("NATS_URL", url.as_str()), ("SLUICE_NATS_PREFIX", &prefix)];
    let state = dir.path().join("node");
    let stored = kill_a_receiver_under_load(dir.path(), &state, &env, async || {
        let bus = NatsBus::connect(NatsConfig {
            prefix: prefix.clone(),
            ..NatsConfig::new(url.clone())
        })
        .await
        .expect("NATS");
        let stored = stored_ids(&bus).await;
        let messages = bus.depth("raw").await.expect("depth");
        assert_eq!(messages, 0, "drained");
        bus.delete_stages(&["raw"]).await.expect("clean up");
        stored
    })
    .await;
    assert!(stored > 500, "{stored} events stored");
}

/// Every message id on `raw`, consumed.
async fn stored_ids<B: sluice_bus::Bus>(bus: &B) -> std::collections::HashSet<String> {
    sluice_tests::drain_stage(bus, "raw")
        .await
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// Sends batches from 16 connections to a receiver, kills it with SIGKILL after 1.5 s, and
/// checks every acknowledged event is among the ids `read_back` finds on the bus; returns how
/// many that found.
async fn kill_a_receiver_under_load(
    dir: &Path,
    state: &Path,
    env: &[(&str, &str)],
    read_back: impl AsyncFnOnce() -> std::collections::HashSet<String>,
) -> usize {
    let (
        cp,
        owner,
        Provisioned {
            tenant,
            pipeline,
            service_key: service,
        },
    ) = provisioned(dir, json!({"sources": [{"name": "web"}]})).await;
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;

    let (mut node, url) =
        start_data_plane_with_env(state, &cp.grpc, &service, "receiver", env).await;
    wait_ready(&url).await;
    let acked = load_then_kill(
        &mut node,
        &url,
        &write_key,
        16,
        |id| json!({"type": "track", "event": "e", "userId": "u", "messageId": id}),
    )
    .await;
    assert!(
        acked.len() > 500,
        "only {} events acknowledged before the kill",
        acked.len()
    );

    let stored = read_back().await;
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(3)]
    );
    assert!(cp.terminate().await.success());
    stored.len()
}

/// Sends batches of five events from `workers` connections to the receiver at `url`, kills
/// the node with SIGKILL after 1.5 s, and returns the ids of the events it acknowledged
/// (`event` makes an event from its id).
async fn load_then_kill(
    node: &mut Child,
    url: &str,
    write_key: &str,
    workers: usize,
    event: fn(&str) -> Value,
) -> Vec<String> {
    let load = Load::start(url, write_key, workers, event);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill().await.expect("kill -9");
    load.stop().await.acked
}

/// Waits until the node at `url` is ready (it has applied a configuration).
async fn wait_ready(url: &str) {
    for _ in 0..200 {
        if let Ok(ready) = reqwest::get(format!("{url}/health/ready")).await
            && ready.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not become ready");
}

/// `kill -9` of a node running delivery while requests to a slow vendor are in flight: after
/// a restart every acknowledged event reaches the vendor, and the ones sent twice carry the
/// same idempotency key both times, so the vendor can drop the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_killed_mid_batch_redelivers_with_the_same_idempotency_keys() {
    use sluice_tests::{Reply, Vendor};

    let vendor = Vendor::start().await;
    vendor.always("/hook", Reply::Slow(Duration::from_millis(150)));
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("SLUICE_ADMIN_EMAIL", ADMIN),
        ("SLUICE_ADMIN_PASSWORD", PASSWORD),
    ];
    let cp = start(&dir.path().join("cp"), &env).await;
    let owner = cp.login(ADMIN).await;
    let spec = json!({"sources": [{"name": "web"}], "destinations": [
        {"name": "hook", "concurrency": 4, "webhook": {"url": format!("{}/hook", vendor.url)}}]});
    let Provisioned {
        tenant,
        pipeline,
        service_key: service,
    } = provision(&cp, &owner, spec).await;
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;

    let state = dir.path().join("node");
    let roles = "receiver,processor,delivery";
    let (mut node, url) = start_data_plane_with_roles(&state, &cp.grpc, &service, roles).await;
    wait_ready(&url).await;
    let client = reqwest::Client::new();
    let mut acked = std::collections::BTreeSet::new();
    for n in 0..20 {
        let ids: Vec<String> = (0..20).map(|i| format!("k-{n}-{i}")).collect();
        let batch: Vec<_> = ids
            .iter()
            .map(
                |id| json!({"type": "track", "event": "Signed Up", "userId": "u", "messageId": id}),
            )
            .collect();
        let response = client
            .post(format!("{url}/v1/batch"))
            .bearer_auth(&write_key)
            .json(&json!({"batch": batch}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        acked.extend(ids);
    }
    // Kill while the vendor has seen some but far from all (4 in flight, 150 ms each).
    for _ in 0..400 {
        if vendor.received("/hook").len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_kill = vendor.accepted_keys("/hook").len();
    assert!(
        (20..acked.len()).contains(&before_kill),
        "{before_kill} delivered before the kill"
    );
    node.kill().await.expect("kill -9");
    let _ = node.wait().await;

    vendor.always("/hook", Reply::Status(200));
    let (_node, _) = start_data_plane_with_roles(&state, &cp.grpc, &service, roles).await;
    let mut delivered = std::collections::BTreeSet::new();
    for _ in 0..600 {
        delivered = vendor.accepted_keys("/hook");
        if delivered == acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        delivered.len(),
        acked.len(),
        "every acknowledged event reaches the vendor after the restart"
    );
    let requests = vendor.received("/hook");
    for request in &requests {
        assert!(
            acked.contains(&request.key()),
            "unknown key {}",
            request.key()
        );
        assert_eq!(
            request.json()["message_id"],
            request.key(),
            "the idempotency key is the event id"
        );
    }
    // The kill cut requests short: those events went out again, under the same key.
    let arrivals = vendor.arrivals("/hook");
    let mut sent = std::collections::BTreeMap::<&str, usize>::new();
    for key in &arrivals {
        assert!(acked.contains(key), "unknown key {key}");
        *sent.entry(key).or_default() += 1;
    }
    let twice = sent.values().filter(|n| **n > 1).count();
    assert!(
        twice >= 1,
        "the requests in flight at the kill were sent again: {} arrivals of {} events",
        arrivals.len(),
        sent.len()
    );
    assert!(cp.terminate().await.success());
}

/// Starts `sluice dev` and reads its banner: (child, the banner's `name  value` lines).
async fn start_dev(data_dir: &Path, ports: &[u16; 5]) -> (Child, Vec<(String, String)>) {
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut child = Command::new(SLUICE)
        .arg("dev")
        .args(["--data-dir", data_dir.to_str().expect("utf-8 path")])
        .args(["--http-addr", &addr(0), "--grpc-addr", &addr(1)])
        .args(["--node-addr", &addr(2), "--proxy-addr", &addr(3)])
        .args(["--echo-addr", &addr(4)])
        .env("SLUICE_LOG_FORMAT", "json")
        .env_remove("SLUICE_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sluice dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.starts_with("Query the archive") {
                return;
            }
            if let Some((name, value)) = line.trim().split_once("   ") {
                banner.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        panic!("sluice dev exited before its banner");
    })
    .await
    .expect("sluice dev starts within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, banner)
}

/// The README's first command: `sluice dev` brings up both planes, and the event its banner
/// tells a newcomer to send is delivered, counted in the fleet and found in the archive; a
/// restart keeps all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_dev_runs_the_whole_product_and_its_printed_curl_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("sluice-data");
    let ports = [
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    ];
    let (mut child, banner) = start_dev(&data_dir, &ports).await;
    let field = |name: &str| {
        banner
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.split_whitespace().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("{name} in the banner: {banner:?}"))
    };
    let (write_key, service_key, api_key, tenant) = (
        field("write key"),
        field("service key"),
        field("api key"),
        field("demo tenant"),
    );
    assert!(write_key.starts_with("slk_"), "{banner:?}");
    let api = format!("http://127.0.0.1:{}", ports[0]);
    let node = format!("http://127.0.0.1:{}", ports[2]);
    let echo = format!("http://127.0.0.1:{}/echo", ports[4]);

    // The banner's curl.
    let http = reqwest::Client::new();
    let sent = http
        .post(format!("{node}/v1/track"))
        .basic_auth(&write_key, Some(""))
        .json(&json!({"type": "track", "event": "Signed Up", "userId": "u-1", "properties": {"plan": "pro"}}))
        .send()
        .await
        .expect("track");
    assert_eq!(sent.status(), StatusCode::OK);

    let mut delivered = Value::Null;
    for _ in 0..200 {
        delivered = reqwest::get(&echo)
            .await
            .expect("echo")
            .json()
            .await
            .expect("json");
        if delivered["deliveries"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        delivered["last"].to_string().contains("Signed Up"),
        "the echo destination got the event: {delivered}"
    );

    // The node's status report carries the event into the fleet's counters.
    let mut fleet = Value::Null;
    for _ in 0..100 {
        fleet = http
            .get(format!("{api}/api/v1/tenants/{tenant}/data-planes"))
            .bearer_auth(&api_key)
            .send()
            .await
            .expect("fleet")
            .json()
            .await
            .expect("json");
        if fleet["data"][0]["counters"]
            .to_string()
            .contains("\"delivered\":1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fleet["data"][0]["connected"], true, "{fleet}");
    assert!(
        fleet["data"][0]["counters"]
            .to_string()
            .contains("\"delivered\":1"),
        "the delivery is counted in the fleet: {fleet}"
    );

    let query = |sql: &'static str| {
        let http = http.clone();
        let (node, key) = (node.clone(), service_key.clone());
        async move {
            let response = http
                .post(format!("{node}/v1/query"))
                .bearer_auth(key)
                .json(&json!({"sql": sql}))
                .send()
                .await
                .expect("query");
            response.json::<Value>().await.expect("json")
        }
    };
    let sql = "SELECT event, count(*) AS n FROM events GROUP BY event";
    let mut answer = Value::Null;
    for _ in 0..150 {
        answer = query(sql).await;
        if answer["row_count"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer["rows"],
        json!([{"event": "Signed Up", "n": 1}]),
        "{answer}"
    );

    // Ctrl-C, then a restart: the same demo, the same archive.
    let pid = child.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .expect("exit status");
    assert!(status.success(), "{status}");
    let (_child, again) = start_dev(&data_dir, &ports).await;
    assert_eq!(again, banner, "a restart keeps the demo");
    assert_eq!(
        query(sql).await["rows"],
        json!([{"event": "Signed Up", "n": 1}])
    );
}

/// Starts `sluice control-plane` without admin variables; returns it and its setup token.
async fn start_awaiting_setup(data_dir: &Path) -> (Child, String, String) {
    let mut child = Command::new(SLUICE)
        .args([
            "control-plane",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--insecure-cookies",
        ])
        .env("SLUICE_DATA_DIR", data_dir)
        .env("SLUICE_LOG_FORMAT", "json")
        .env_remove("SLUICE_ADMIN_EMAIL")
        .env_remove("SLUICE_ADMIN_PASSWORD")
        .env_remove("DATABASE_URL")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut token, mut addr) = (None, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(t) = entry["fields"]["setup_token"].as_str() {
                token = Some(t.to_owned());
            }
            if let Some(a) = entry["fields"]["http_addr"].as_str() {
                addr = Some(a.to_owned());
                break;
            }
        }
    })
    .await
    .expect("listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (
        child,
        format!("http://{}", addr.expect("address")),
        token.expect("setup token in the log"),
    )
}

/// The web console in Debian's Chromium (tests/browser/console.mjs): setup, sign-in, a key
/// generated with the keyboard and shown once, a data plane started with it and seen
/// connected, a pipeline edit applied, a query answered straight to the browser, a read-only
/// viewer, the key revoked and the node disconnected, the audit log. Afterwards the REST API
/// must agree with what the browser showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_console_walks_through_key_provisioning_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_port = free_port();
    let query_url = format!("http://127.0.0.1:{node_port}");
    let cp = start(
        &dir.path().join("cp"),
        &[
            ("SLUICE_ADMIN_EMAIL", ADMIN),
            ("SLUICE_ADMIN_PASSWORD", PASSWORD),
            ("SLUICE_INSECURE_COOKIES", "true"),
            ("SLUICE_UI_QUERY_URL", &query_url),
        ],
    )
    .await;
    let (_fresh, fresh_base, setup_token) = start_awaiting_setup(&dir.path().join("fresh")).await;

    // The console's own responses carry the strict policy.
    let index = reqwest::get(format!("{}/", cp.base)).await.expect("index");
    assert_eq!(index.status(), StatusCode::OK);
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline")
            && csp.contains("frame-ancestors 'none'")
            && csp.contains(&query_url),
        "{csp}"
    );
    let missing = reqwest::get(format!("{}/ui/nope.js", cp.base))
        .await
        .expect("asset");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // A sign-in posted from another site is refused (login CSRF).
    let cross = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", cp.base))
        .header("origin", "https://evil.example")
        .json(&json!({"email": ADMIN, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);

    let (base, grpc, port) = (cp.base.clone(), cp.grpc.clone(), node_port.to_string());
    let seen = tokio::task::spawn_blocking(move || {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "browser tests need playwright-core: run `npm ci --prefix tests/browser` (bash .ci/run does) and install Debian's chromium"
        );
        let output = std::process::Command::new("node")
            .arg(dir.join("console.mjs"))
            .args([
                &base,
                &grpc,
                SLUICE,
                &port,
                ADMIN,
                PASSWORD,
                &fresh_base,
                &setup_token,
            ])
            .output()
            .expect("node runs (install Node.js)");
        assert!(
            output.status.success(),
            "console.mjs failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("the script prints JSON")
    })
    .await
    .expect("join");
    assert!(seen["screenshotCount"].as_u64() >= Some(28), "{seen}");

    // The API agrees with the browser: the key it generated is revoked, the node is gone.
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/v1/auth/login", cp.base))
        .json(&json!({"email": ADMIN, "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token");
    let tenant = seen["tenantId"].as_str().expect("tenant id");
    let get = |path: String| {
        let http = http.clone();
        async move {
            http.get(path)
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let keys = get(format!("{}/api/v1/tenants/{tenant}/keys", cp.base)).await;
    let service = keys["data"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["type"] == "service")
        .expect("the service key")
        .clone();
    assert_eq!(service["status"], "revoked", "{service}");
    assert_eq!(service["prefix"], seen["keyPrefix"], "{service}");
    assert!(
        !service["last_used_at"].is_null(),
        "the node used it: {service}"
    );
    let fleet = get(format!("{}/api/v1/tenants/{tenant}/data-planes", cp.base)).await;
    assert_eq!(fleet["data"][0]["connected"], false, "{fleet}");
    assert_eq!(
        fleet["data"][0]["applied_version"], seen["appliedVersion"],
        "{fleet}"
    );
    // The destination's health as the node last reported it: the dead letter and the two
    // retries the browser watched, then deliveries (the replay among them).
    let hooks = &fleet["data"][0]["destinations"][0];
    assert_eq!(hooks["destination"], "hooks", "{fleet}");
    assert_eq!(hooks["state"], "ok", "{fleet}");
    assert_eq!(hooks["last_24h"]["failed"], 1, "{fleet}");
    assert_eq!(hooks["last_24h"]["retried"], 2, "{fleet}");
    assert!(
        hooks["last_24h"]["delivered"].as_u64() >= Some(2),
        "{fleet}"
    );
    let members = get(format!("{}/api/v1/tenants/{tenant}/members", cp.base)).await;
    assert!(
        members["data"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["email"] == "viewer@example.com" && m["role"] == "viewer"),
        "{members}"
    );
}

/// `kill -9` of a node while it stitches identities: the identity store (redb) opens again,
/// and once the processor has worked through what the receiver acknowledged, every visitor
/// has a profile linked to their user with their click id. What the kill cut short is on
/// the bus still and processed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_stitching_keeps_every_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = [
        ("SLUICE_ADMIN_EMAIL", ADMIN),
        ("SLUICE_ADMIN_PASSWORD", PASSWORD),
    ];
    let cp = start(&dir.path().join("cp"), &admin).await;
    let owner = cp.login(ADMIN).await;
    let spec = json!({"sources": [{"name": "web"}], "governance": [{"step": "identity"}]});
    let Provisioned {
        tenant,
        pipeline,
        service_key: service,
    } = provision(&cp, &owner, spec).await;
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;
    let state = dir.path().join("node");
    let roles = "receiver,processor";

    let (mut node, url) = start_data_plane_with_env(&state, &cp.grpc, &service, roles, &[]).await;
    wait_ready(&url).await;
    let acked = load_then_kill(&mut node, &url, &write_key, 8, |v| {
        json!({"type": "identify", "userId": format!("u-{v}"),
               "anonymousId": format!("a-{v}"), "messageId": format!("m-{v}"),
               "context": {"page": {"url": format!("https://shop.example/?gclid=G-{v}")}}})
    })
    .await;
    assert!(
        acked.len() > 200,
        "only {} visitors acknowledged",
        acked.len()
    );
    let client = reqwest::Client::new();

    let (_node, url) = start_data_plane_with_env(&state, &cp.grpc, &service, roles, &[]).await;
    wait_ready(&url).await;
    let profile = async |visitor: &str| -> Option<Value> {
        let response = client
            .get(format!("{url}/v1/identities/a-{visitor}"))
            .bearer_auth(&service)
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json().await.ok()
    };
    // The processor catches up with the bus after the restart: look again at those not yet
    // seen whole, for up to 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut missing: Vec<(String, Option<Value>)> =
        acked.iter().map(|v| (v.clone(), None)).collect();
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (visitor, _) in missing {
            match profile(&visitor).await {
                Some(p)
                    if p["user_id"] == format!("u-{visitor}").as_str()
                        && p["ids"]["gclid"]["value"] == format!("G-{visitor}").as_str() => {}
                other => still.push((visitor, other)),
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} visitors without their profile, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(cp.terminate().await.success());
}

/// TikTok's answer to a request it took.
const TIKTOK_OK: &str = r#"{"code":0,"message":"OK","request_id":"e2e","data":{}}"#;
const TIKTOK_PATH: &str = "/open_api/v1.3/event/track/";

/// The order events of the TikTok requests `vendor` answered with 200 (test sends left
/// out) that arrived after `since`, as (event id, its payload) in arrival order.
fn tiktok_orders(
    vendor: &sluice_tests::Vendor,
    since: Option<std::time::Instant>,
) -> Vec<(String, Value)> {
    vendor
        .received(TIKTOK_PATH)
        .iter()
        .filter(|r| r.status == 200 && since.is_none_or(|t| r.at >= t))
        .flat_map(|r| r.json()["data"].as_array().cloned().unwrap_or_default())
        .filter_map(|event| {
            let id = event["event_id"].as_str()?.to_owned();
            id.starts_with("order-").then_some((id, event))
        })
        .collect()
}

/// Issue 30's check: TikTok and PostgreSQL added from the catalogue in the console (Chromium),
/// each sent a test event from the pipeline page; then orders from Segment's Python library
/// reach TikTok with exactly the payload its Events API documents and land in PostgreSQL
/// once each, through a `kill -9` of the delivering node with a TikTok batch in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_destinations_added_in_the_console_deliver_each_event_once() {
    use sha2::{Digest, Sha256};
    use sluice_tests::{Reply, Vendor};
    const ORDERS: usize = 1000;

    let vendor = Vendor::start().await;
    vendor.always(TIKTOK_PATH, Reply::Json(200, TIKTOK_OK, Duration::ZERO));
    let schema = format!("e2e_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let pg = sluice_tests::postgres_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("SLUICE_ADMIN_EMAIL", ADMIN),
        ("SLUICE_ADMIN_PASSWORD", PASSWORD),
        ("SLUICE_INSECURE_COOKIES", "true"),
    ];
    let cp = start(&dir.path().join("cp"), &env).await;
    let owner = cp.login(ADMIN).await;
    let Provisioned {
        tenant,
        pipeline,
        service_key,
    } = provision(&cp, &owner, json!({"sources": [{"name": "web"}]})).await;
    // The spec as a person writes it, comments and all: the console's form must keep them.
    let written =
        "# the shop's events\nsources:\n  - name: web # the storefront\ndestinations: []\n";
    let saved = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/tenants/{tenant}/pipelines/{pipeline}",
            cp.base
        ))
        .bearer_auth(&owner)
        .header("content-type", "application/yaml")
        .body(written)
        .send()
        .await
        .expect("put");
    assert_eq!(saved.status(), StatusCode::OK);
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;

    let state = dir.path().join("node");
    let roles = "receiver,processor,delivery";
    let secrets = [
        ("TIKTOK_ACCESS_TOKEN", "tt-secret-token"),
        ("POSTGRES_CONNECTION_URL", pg.as_str()),
    ];
    let (mut node, url) =
        start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &secrets).await;
    wait_ready(&url).await;

    let endpoint = format!("{}/open_api/v1.3", vendor.url);
    let args = [
        cp.base.as_str(),
        ADMIN,
        PASSWORD,
        tenant.as_str(),
        url.as_str(),
        endpoint.as_str(),
        schema.as_str(),
    ]
    .map(str::to_owned);
    let seen = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sluice_tests::run_browser_script("catalogue.mjs", &args)
    })
    .await
    .expect("join");
    assert_eq!(seen["tiktokTest"]["outcome"], "delivered", "{seen}");
    assert!(
        seen["tiktokTest"]["response"]
            .as_str()
            .is_some_and(|r| r.contains(r#""code":0"#)),
        "the vendor's answer is shown: {seen}"
    );
    let request = seen["tiktokTest"]["request"]
        .as_str()
        .expect("request shown");
    assert!(
        request.contains("{secrets.access_token}") && !request.contains("tt-secret-token"),
        "the request is shown with its secret named, not its value: {request}"
    );
    assert_eq!(seen["postgresTest"]["outcome"], "delivered", "{seen}");

    // What the console saved: the author's lines kept, the two destinations added.
    let (_, current) = cp
        .call(
            "GET",
            &format!("/api/v1/tenants/{tenant}/pipelines/{pipeline}"),
            Some(&owner),
            None,
        )
        .await;
    let source = current["source"].as_str().expect("source kept");
    assert!(
        source.starts_with("# the shop's events\nsources:\n  - name: web # the storefront\n"),
        "{source}"
    );
    assert_eq!(current["spec"]["destinations"][0]["type"], "tiktok");
    assert_eq!(
        current["spec"]["destinations"][0]["settings"]["access_token"],
        "TIKTOK_ACCESS_TOKEN"
    );
    assert_eq!(current["spec"]["destinations"][1]["type"], "postgres");
    let tests = vendor.received(TIKTOK_PATH);
    assert_eq!(tests.len(), 1, "one test send reached TikTok");
    assert!(
        tests[0].json()["data"][0]["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("sluice-test-")),
        "{}",
        tests[0].json()
    );

    // Orders from Segment's library while TikTok answers slowly; kill -9 with a batch in
    // flight.
    vendor.always(
        TIKTOK_PATH,
        Reply::Json(200, TIKTOK_OK, Duration::from_secs(4)),
    );
    let python = std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/segment_orders.py");
    let sent = Command::new(&python)
        .arg(&sdk)
        .args([url.as_str(), write_key.as_str(), &ORDERS.to_string()])
        .output()
        .await
        .expect("python runs (set SLUICE_TEST_PYTHON to a Python with segment-analytics-python; .ci/run does)");
    assert!(
        sent.status.success(),
        "segment_orders.py failed:\n{}{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    for _ in 0..600 {
        if vendor.arrivals(TIKTOK_PATH).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        vendor.arrivals(TIKTOK_PATH).len() >= 2,
        "a batch of orders reached TikTok"
    );
    node.kill().await.expect("kill -9");
    let _ = node.wait().await;
    // What TikTok had answered when the node died; what was still in flight is answered
    // to no one.
    let answered: std::collections::BTreeSet<String> = tiktok_orders(&vendor, None)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        answered.len() < ORDERS,
        "the kill came mid-way: {} delivered",
        answered.len()
    );

    vendor.always(TIKTOK_PATH, Reply::Json(200, TIKTOK_OK, Duration::ZERO));
    let arrived_before_restart = vendor.arrivals(TIKTOK_PATH).len();
    let restarted = std::time::Instant::now();
    let (_node, _) =
        start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &secrets).await;
    let db = sqlx::PgPool::connect(&pg).await.expect("postgres");
    let count = format!(
        "SELECT count(*) FILTER (WHERE id LIKE 'order-%'), count(DISTINCT id) FILTER (WHERE id LIKE 'order-%'), count(*) FILTER (WHERE id LIKE 'sluice-test-%') FROM {schema}.orders"
    );
    let (mut rows, mut distinct, mut test_rows) = (0i64, 0i64, 0i64);
    let mut after = Vec::new();
    let covered = |after: &[(String, Value)]| -> usize {
        let mut ids: std::collections::BTreeSet<&str> =
            answered.iter().map(String::as_str).collect();
        ids.extend(after.iter().map(|(id, _)| id.as_str()));
        ids.len()
    };
    for _ in 0..600 {
        after = tiktok_orders(&vendor, Some(restarted));
        if let Ok(counted) = sqlx::query_as::<_, (i64, i64, i64)>(&count)
            .fetch_one(&db)
            .await
        {
            (rows, distinct, test_rows) = counted;
        }
        if covered(&after) == ORDERS && rows as usize == ORDERS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        covered(&after),
        ORDERS,
        "every order TikTok had not answered before the kill reaches it after the restart"
    );
    assert_eq!(
        (rows, distinct, test_rows),
        (ORDERS as i64, ORDERS as i64, 1),
        "every order is one row in PostgreSQL, none twice (and the test send's row)"
    );
    // The batch the kill cut short went out again after the restart, under the same event
    // ids: TikTok deduplicates by event_id. No request carries an event twice.
    let cut: std::collections::BTreeSet<String> = vendor
        .arrived_bodies(TIKTOK_PATH)
        .iter()
        .take(arrived_before_restart)
        .flat_map(|body| body["data"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .filter(|id| id.starts_with("order-") && !answered.contains(id))
        .collect();
    let again = after.iter().filter(|(id, _)| cut.contains(id)).count();
    eprintln!(
        "{} orders answered before the kill, {} in flight, {again} of them sent again after the restart, {} requests answered in all",
        answered.len(),
        cut.len(),
        vendor.received(TIKTOK_PATH).len()
    );
    assert!(
        !cut.is_empty() && again == cut.len(),
        "the batch in flight at the kill is sent again whole"
    );
    let orders = [tiktok_orders(&vendor, None), after].concat();
    for request in vendor.received(TIKTOK_PATH) {
        let data = request.json()["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let unique: std::collections::BTreeSet<String> = data
            .iter()
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(unique.len(), data.len(), "an event twice in one request");
        assert_eq!(request.headers["access-token"], "tt-secret-token");
        assert_eq!(request.json()["event_source"], "web");
        assert_eq!(request.json()["event_source_id"], "PIXEL123");
    }

    // The exact payload of one order, as TikTok's Events API 2.0 documents it.
    let sha = |s: &str| format!("{:x}", Sha256::digest(s.as_bytes()));
    let order = &orders
        .iter()
        .find(|(id, _)| id == "order-7")
        .expect("order-7")
        .1;
    assert_eq!(
        order,
        &json!({
            "event": "CompletePayment",
            "event_id": "order-7",
            "event_time": 1_796_126_400,
            "page": {"url": "https://shop.example/thanks/7", "referrer": "https://shop.example/cart"},
            "properties": {
                "contents": [{"content_id": "sku-7", "content_type": "product", "content_name": "Mug", "price": 17, "quantity": 1}],
                "currency": "EUR",
                "order_id": "o-7",
                "value": 17,
            },
            "user": {
                "email": sha("buyer7@example.com"),
                "external_id": sha("user-7"),
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            },
        }),
    );
    // Scalar properties are typed columns; the products array stays in `properties`.
    let (event, revenue, currency, product): (String, f64, String, String) = sqlx::query_as(&format!(
        "SELECT event, revenue::float8, currency, properties->'products'->0->>'product_id' FROM {schema}.orders WHERE id = 'order-7'"
    ))
    .fetch_one(&db)
    .await
    .expect("order-7's row");
    assert_eq!(
        (event.as_str(), revenue, currency.as_str()),
        ("Order Completed", 17.0, "EUR")
    );
    assert_eq!(product, "sku-7");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&db)
        .await
        .expect("drop schema");
    assert!(cp.terminate().await.success());
}

/// Asks the node at `url` a query with the node's service key; the rows.
async fn node_query(url: &str, key: &str, sql: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/query"))
        .bearer_auth(key)
        .json(&json!({"sql": sql, "format": "json"}))
        .send()
        .await
        .expect("query");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{sql}: {body}");
    body["rows"].as_array().cloned().unwrap_or_default()
}

/// Every event id in the archive, through the query role at `url`.
async fn archived_ids(url: &str, key: &str) -> std::collections::HashSet<String> {
    node_query(url, key, "SELECT event_id FROM events")
        .await
        .iter()
        .filter_map(|row| row["event_id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits up to 60 s until every id of `acked` is archived; returns the archive's ids then.
async fn wait_until_archived(
    url: &str,
    key: &str,
    acked: &std::collections::HashSet<String>,
) -> std::collections::HashSet<String> {
    let mut ids = archived_ids(url, key).await;
    for _ in 0..240 {
        if acked.iter().all(|id| ids.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        ids = archived_ids(url, key).await;
    }
    ids
}

fn assert_none_lost(
    acked: &std::collections::HashSet<String>,
    ids: &std::collections::HashSet<String>,
) {
    let lost: Vec<&String> = acked.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not in the archive, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(3)]
    );
}

/// (rows, distinct event ids) in the node's archive.
async fn archive_counts(url: &str, key: &str) -> (u64, u64) {
    let rows = node_query(
        url,
        key,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events",
    )
    .await;
    (
        rows[0]["n"].as_u64().unwrap_or(0),
        rows[0]["ids"].as_u64().unwrap_or(0),
    )
}

fn first_round(id: &str) -> Value {
    json!({"type": "track", "event": "e", "userId": "u", "messageId": format!("a-{id}")})
}

fn second_round(id: &str) -> Value {
    json!({"type": "track", "event": "e", "userId": "u", "messageId": format!("b-{id}")})
}

/// A control plane in `dir/cp` with its admin signed in and a tenant provisioned with one
/// pipeline of `spec`: (control plane, the owner's token, what was provisioned).
async fn provisioned(dir: &Path, spec: Value) -> (Running, String, Provisioned) {
    let admin = [
        ("SLUICE_ADMIN_EMAIL", ADMIN),
        ("SLUICE_ADMIN_PASSWORD", PASSWORD),
    ];
    let cp = start(&dir.join("cp"), &admin).await;
    let owner = cp.login(ADMIN).await;
    let provisioned = provision(&cp, &owner, spec).await;
    (cp, owner, provisioned)
}

/// Runs a node that receives, processes and archives (a file a second) under load and kills
/// it with SIGKILL twice, restarts it, and checks the archive holds every acknowledged event
/// exactly once: `count(*) - count(DISTINCT event_id)` is 0. Returns (acknowledged, rows,
/// copies the last run dropped).
async fn archive_through_two_kills(dir: &Path, env: &[(&str, &str)]) -> (usize, u64, u64) {
    let (
        cp,
        owner,
        Provisioned {
            tenant,
            pipeline,
            service_key,
        },
    ) = provisioned(dir, json!({"sources": [{"name": "web"}]})).await;
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;
    let state = dir.join("node");
    let mut env = env.to_vec();
    env.extend([
        ("SLUICE_ARCHIVE_FLUSH_SECS", "1"),
        ("SLUICE_QUERY_MAX_ROWS", "1000000"),
    ]);
    let roles = "receiver,processor,archiver,query";
    let mut acked = std::collections::HashSet::new();
    for (round, prefix) in [(first_round as fn(&str) -> Value, "a"), (second_round, "b")] {
        let (mut node, url) =
            start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &env).await;
        wait_ready(&url).await;
        let ids = load_then_kill(&mut node, &url, &write_key, 8, round).await;
        assert!(
            ids.len() > 500,
            "only {} acknowledged in round {prefix}",
            ids.len()
        );
        acked.extend(ids.into_iter().map(|id| format!("{prefix}-{id}")));
    }
    let (_node, url) = start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &env).await;
    wait_ready(&url).await;
    // The receiver may have stored a batch whose answer the kill cut off: those are archived
    // too, so the archive holds at least the acknowledged events, each once. A count of ids
    // can reach the acknowledged count on such extras while a batch is still on its way, so
    // the wait is for the acknowledged ids themselves.
    let ids = wait_until_archived(&url, &service_key, &acked).await;
    let last = archive_counts(&url, &service_key).await;
    assert_none_lost(&acked, &ids);
    let (rows, distinct) = archive_counts(&url, &service_key).await;
    assert_eq!(
        rows - distinct,
        0,
        "{rows} rows for {distinct} events: copies in the archive (counts after the wait: {last:?})"
    );
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_archive_duplicates_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    assert!(cp.terminate().await.success());
    (acked.len(), rows, dropped)
}

/// `kill -9` twice under load on the embedded bus: every acknowledged event is archived
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_holds_each_event_once_through_two_kills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (acked, rows, dropped) = archive_through_two_kills(dir.path(), &[]).await;
    eprintln!(
        "embedded bus: {acked} acknowledged, {rows} rows, {dropped} copies dropped after the restart"
    );
}

/// The same on NATS JetStream, where acknowledging a flushed file's events takes longest and
/// a kill most often lands between the upload and the acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_holds_each_event_once_through_two_kills_on_nats() {
    use sluice_bus::nats::{NatsBus, NatsConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let url = sluice_tests::nats_url();
    let prefix = format!("x{}", uuid::Uuid::now_v7().simple());
    let env = [("NATS_URL", url.as_str()), ("SLUICE_NATS_PREFIX", &prefix)];
    let (acked, rows, dropped) = archive_through_two_kills(dir.path(), &env).await;
    eprintln!(
        "nats: {acked} acknowledged, {rows} rows, {dropped} copies dropped after the restart"
    );
    let bus = NatsBus::connect(NatsConfig {
        prefix: prefix.clone(),
        ..NatsConfig::new(url.clone())
    })
    .await
    .expect("NATS");
    bus.delete_stages(&["raw", "archive", "rejected"])
        .await
        .expect("clean up");
}

/// What DuckDB, listing the prefix itself, reads of a tenant's archive in `dir`:
/// (rows, distinct event ids, rows of user `u-7`).
fn duckdb_counts(dir: &Path, tenant: &str) -> (u64, u64, u64) {
    let python = std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let glob = format!(
        "{}/tenant={tenant}/dataset=*/dt=*/hour=*/*.parquet",
        dir.display()
    );
    let script = "import duckdb, json, sys\n\
        r = duckdb.connect().execute(\"SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE user_id = 'u-7') FROM read_parquet('\" + sys.argv[1] + \"', hive_partitioning = true)\").fetchall()[0]\n\
        print(json.dumps(list(r)))\n";
    let out = std::process::Command::new(python)
        .args(["-c", script, &glob])
        .output()
        .expect("python runs (set SLUICE_TEST_PYTHON to a Python with duckdb; .ci/run does)");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: Vec<u64> = serde_json::from_slice(&out.stdout).expect("counts");
    (counts[0], counts[1], counts[2])
}

/// Files below `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_ending(&path, suffix)
            } else {
                usize::from(path.to_string_lossy().ends_with(suffix))
            }
        })
        .sum()
}

/// Reads the node's archive in a loop until `notes` holds `at_least` replacement notes, then
/// kills the node with SIGKILL: (notes then, answers read, answers that were not one row per
/// event).
async fn kill_after_rewrites(
    node: &mut Child,
    url: &str,
    key: &str,
    notes: &Path,
    at_least: usize,
) -> (usize, u32, Vec<(u64, u64)>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = read_in_a_loop(url.to_owned(), key.to_owned(), stop.clone());
    let mut seen = 0;
    for _ in 0..2000 {
        seen = files_ending(notes, ".json");
        if seen >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answers, wrong) = readers.await.expect("readers");
    node.kill().await.expect("kill -9");
    (seen, answers, wrong)
}

/// Queries `(rows, distinct ids)` in a loop until `stop`, returning every answer that was not
/// one row per event (a reader that saw a partial rewrite).
fn read_in_a_loop(
    url: String,
    key: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<(u64, u64)>)> {
    tokio::spawn(async move {
        let (mut answers, mut wrong) = (0, Vec::new());
        // At least one answer, even when the rewrites outran this task's first turn.
        loop {
            let (rows, ids) = archive_counts(&url, &key).await;
            answers += 1;
            if rows != ids {
                wrong.push((rows, ids));
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
        }
        (answers, wrong)
    })
}

/// The archive over months, against the real binary: a month of small files is compacted
/// while queries run, with a `kill -9` in the middle; then one user's rows, spread over every
/// partition, are erased with a `kill -9` in the middle of that too. No query ever sees an
/// event twice or misses one, DuckDB reads the same files before and after, and nothing of
/// the user is left in any file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_erasure_survive_kill_9_and_readers_never_see_half() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (
        cp,
        _,
        Provisioned {
            tenant,
            service_key,
            ..
        },
    ) = provisioned(dir.path(), json!({"sources": [{"name": "web"}]})).await;
    let archive = dir.path().join("archive");
    let store = sluice_archive::store::StoreConfig::Local(archive.clone())
        .open()
        .expect("store");
    // 30 days of 4 hours, 3 small files an hour: 360 files, 120 partitions, 7,200 events;
    // user u-7 has 2 events in each file, so 720 in all, in every partition.
    let month_ago = sluice_pipeline::time::now_ms() - 40 * 86_400_000;
    let written =
        sluice_tests::write_small_archive(&store, &tenant, month_ago, (30, 4, 3, 20)).await;
    assert_eq!(written, 7_200);
    assert_eq!(duckdb_counts(&archive, &tenant), (7_200, 7_200, 720));

    let state = dir.path().join("node");
    let archive_dir = archive.to_string_lossy().into_owned();
    let env = [
        ("SLUICE_ARCHIVE_DIR", archive_dir.as_str()),
        ("SLUICE_ARCHIVE_MAINTAIN_SECS", "1"),
        ("SLUICE_ARCHIVE_COMPACT_AFTER_SECS", "0"),
        // Replaced files stay this long (and 5 s) for queries that listed them.
        ("SLUICE_QUERY_TIMEOUT_SECS", "3"),
    ];
    let roles = "archiver,query";
    let notes = archive.join(format!("tenant={tenant}/_sluice/replaced"));
    let (mut node, url) =
        start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &env).await;
    wait_ready(&url).await;
    assert_eq!(archive_counts(&url, &service_key).await, (7_200, 7_200));

    // Compaction, read in a loop, killed once a few hours are done.
    let (compacted, answers, wrong) =
        kill_after_rewrites(&mut node, &url, &service_key, &notes, 10).await;
    assert!(
        (10..120).contains(&compacted),
        "the kill came mid-way through compaction: {compacted} of 120 hours"
    );
    assert!(answers > 0);
    assert!(
        wrong.is_empty(),
        "readers saw copies during compaction: {wrong:?}"
    );
    // A plain reader may see a cut-off rewrite's rows twice, never none of them.
    let (rows, ids, _) = duckdb_counts(&archive, &tenant);
    assert_eq!(ids, 7_200, "DuckDB after the kill: {rows} rows, {ids} ids");

    let (mut node, url) =
        start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &env).await;
    wait_ready(&url).await;
    assert_eq!(archive_counts(&url, &service_key).await, (7_200, 7_200));
    let hours = archive.join(format!("tenant={tenant}/dataset=events"));
    for _ in 0..600 {
        if files_ending(&hours, ".parquet") == 120 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files_ending(&hours, ".parquet"), 120, "one file an hour");
    assert_eq!(duckdb_counts(&archive, &tenant), (7_200, 7_200, 720));

    // Erasure of u-7, killed after its first rewrites.
    let before = files_ending(&notes, ".json");
    let request = {
        let (url, key) = (url.clone(), service_key.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/erasure"))
                .bearer_auth(key)
                .json(&json!({"user_id": "u-7"}))
                .send()
                .await
        })
    };
    let (rewritten, _, wrong) =
        kill_after_rewrites(&mut node, &url, &service_key, &notes, before + 5).await;
    let rewritten = rewritten - before;
    assert!(
        request.await.expect("request").is_err(),
        "the kill cut the erasure short"
    );
    assert!(
        (5..120).contains(&rewritten),
        "{rewritten} files rewritten before the kill"
    );
    assert!(
        wrong.is_empty(),
        "readers saw copies during the erasure: {wrong:?}"
    );

    let (_node, url) = start_data_plane_with_env(&state, &cp.grpc, &service_key, roles, &env).await;
    wait_ready(&url).await;
    let (rows, ids) = archive_counts(&url, &service_key).await;
    assert_eq!(rows, ids, "no copies after the cut-off erasure");
    assert!(
        (6_480..7_200).contains(&rows),
        "the cut-off erasure removed some of u-7's rows and nothing else: {rows}"
    );
    // Sent again, it finishes: no row of u-7 anywhere.
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/erasure"))
        .bearer_auth(&service_key)
        .json(&json!({"user_id": "u-7"}))
        .send()
        .await
        .expect("erasure");
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    let removed = receipt["archive"]["rows_removed"]
        .as_u64()
        .expect("rows removed");
    assert_eq!(rows - removed, 6_480, "{receipt}");
    assert_eq!(receipt["subject"]["kind"], "user_id");
    assert_eq!(
        receipt["subject"]["sha256"].as_str().map(str::len),
        Some(64)
    );
    assert!(
        !receipt.to_string().contains("\"u-7\""),
        "the receipt names no one: {receipt}"
    );
    assert_eq!(archive_counts(&url, &service_key).await, (6_480, 6_480));
    let left = node_query(
        &url,
        &service_key,
        "SELECT count(*) AS n FROM events WHERE user_id = 'u-7'",
    )
    .await;
    assert_eq!(left[0]["n"], 0);
    // Every file, as DuckDB lists them (the cut-off rewrite's old files are gone too).
    for _ in 0..100 {
        if duckdb_counts(&archive, &tenant) == (6_480, 6_480, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(duckdb_counts(&archive, &tenant), (6_480, 6_480, 0));
    let receipts: Value = reqwest::Client::new()
        .get(format!("{url}/v1/erasures"))
        .bearer_auth(&service_key)
        .send()
        .await
        .expect("receipts")
        .json()
        .await
        .expect("json");
    assert_eq!(
        receipts["data"].as_array().map(Vec::len),
        Some(1),
        "{receipts}"
    );
    assert!(cp.terminate().await.success());
}

/// What a continuous load saw: each answered request's time since the start, status, whether
/// a 503 carried `Retry-After`, and its latency; and the ids of the events acknowledged.
#[derive(Default)]
struct LoadReport {
    answers: Vec<(Duration, StatusCode, bool, Duration)>,
    acked: Vec<String>,
}

impl LoadReport {
    /// The acknowledged events' ids as stored: `first_round` and `second_round` prefix the
    /// load's ids with `a` and `b`.
    fn acked_as(&self, round: &str) -> std::collections::HashSet<String> {
        self.acked
            .iter()
            .map(|id| format!("{round}-{id}"))
            .collect()
    }
}

/// Batches of five events from `workers` connections to the receiver at `url`, until stopped;
/// a failed connection is retried after 50 ms (the node stays up while its bus fails).
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    report: std::sync::Arc<std::sync::Mutex<LoadReport>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    started: std::time::Instant,
}

impl Load {
    fn start(url: &str, write_key: &str, workers: usize, event: fn(&str) -> Value) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let report = std::sync::Arc::new(std::sync::Mutex::new(LoadReport::default()));
        let started = std::time::Instant::now();
        let senders = (0..workers)
            .map(|worker| {
                let (client, url, key, stop, report) = (
                    client.clone(),
                    url.to_owned(),
                    write_key.to_owned(),
                    stop.clone(),
                    report.clone(),
                );
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        let ids: Vec<String> =
                            (0..5).map(|i| format!("w{worker}-{n}-{i}")).collect();
                        let batch: Vec<Value> = ids.iter().map(|id| event(id)).collect();
                        let sent = std::time::Instant::now();
                        let response = client
                            .post(format!("{url}/v1/batch"))
                            .bearer_auth(&key)
                            .json(&json!({"batch": batch}))
                            .send()
                            .await;
                        let Ok(response) = response else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let status = response.status();
                        let retry_after = response.headers().contains_key("retry-after");
                        let mut report = report.lock().expect("lock");
                        report.answers.push((
                            started.elapsed(),
                            status,
                            retry_after,
                            sent.elapsed(),
                        ));
                        if status == StatusCode::OK {
                            report.acked.extend(ids);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            report,
            senders,
            started,
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    async fn stop(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for sender in self.senders {
            let _ = sender.await;
        }
        std::mem::take(&mut *self.report.lock().expect("lock"))
    }
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Streams at R3 on a three-server NATS JetStream cluster, under load from 8 connections:
/// `kill -9` of a follower and its restart, then of the stream's leader and its restart, then
/// of two servers at once (no quorum) and their restart. No acknowledged event is lost and
/// none is archived twice; while a quorum is missing the receiver answers 503 with
/// `Retry-After`, never another 5xx; and it recovers without anyone touching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_loses_servers_and_its_leader_under_load_and_keeps_every_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        sluice_tests::nats_cluster::NatsCluster::start(&dir.path().join("nats")).await;
    let urls = cluster.urls();
    let prefix = format!("c{}", uuid::Uuid::now_v7().simple());
    let env = [
        ("NATS_URL", urls.as_str()),
        ("SLUICE_NATS_PREFIX", prefix.as_str()),
        ("SLUICE_NATS_REPLICAS", "3"),
        ("SLUICE_ARCHIVE_FLUSH_SECS", "1"),
        ("SLUICE_QUERY_MAX_ROWS", "1000000"),
    ];
    let (
        cp,
        owner,
        Provisioned {
            tenant,
            pipeline,
            service_key,
        },
    ) = provisioned(dir.path(), json!({"sources": [{"name": "web"}]})).await;
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;
    let (_node, url) = start_data_plane_with_env(
        &dir.path().join("node"),
        &cp.grpc,
        &service_key,
        "receiver,processor,archiver,query",
        &env,
    )
    .await;
    wait_ready(&url).await;
    let raw = format!("{}_RAW", prefix.to_uppercase());
    let load = Load::start(&url, &write_key, 8, first_round);
    let mut phases = vec![("three servers", Duration::ZERO)];
    tokio::time::sleep(Duration::from_secs(3)).await;

    let leader = cluster.leader_of(&raw).await.expect("raw has a leader");
    let follower = (leader + 1) % 3;
    phases.push(("a follower killed", load.elapsed()));
    cluster.kill(follower);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(follower).await;
    phases.push(("follower back", load.elapsed()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let leader = cluster.leader_of(&raw).await.expect("raw has a leader");
    phases.push(("the leader killed", load.elapsed()));
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart(leader).await;
    phases.push(("leader back", load.elapsed()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (a, b) = (leader, (leader + 1) % 3);
    let lost_quorum = load.elapsed();
    phases.push(("two killed (no quorum)", lost_quorum));
    cluster.kill(a);
    cluster.kill(b);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restoring = load.elapsed();
    cluster.restart(a).await;
    cluster.restart(b).await;
    let restored = load.elapsed();
    phases.push(("both back", restored));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let report = load.stop().await;
    // Per phase, by when the answer came: events acknowledged per second, 503s, p99.
    for (i, (name, from)) in phases.iter().enumerate() {
        let to = phases.get(i + 1).map_or(Duration::MAX, |p| p.1);
        let within: Vec<_> = report
            .answers
            .iter()
            .filter(|(at, ..)| at >= from && *at < to)
            .collect();
        let ok = within.iter().filter(|a| a.1 == StatusCode::OK).count();
        let span = to
            .min(report.answers.last().map_or(Duration::ZERO, |a| a.0))
            .saturating_sub(*from);
        eprintln!(
            "  {name:<24} {:>5.1} s  {:>7.0} events/s  {:>5} x 503  p99 {:?}",
            span.as_secs_f64(),
            (ok * 5) as f64 / span.as_secs_f64().max(0.001),
            within.len() - ok,
            p99(within.iter().map(|a| a.3).collect()),
        );
    }

    let errors: Vec<_> = report
        .answers
        .iter()
        .filter(|(_, s, _, _)| s.is_server_error() && *s != StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        errors.is_empty(),
        "5xx other than 503: {:?}",
        &errors[..errors.len().min(5)]
    );
    let unavailable: Vec<_> = report
        .answers
        .iter()
        .filter(|(_, s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        unavailable
            .iter()
            .all(|(_, _, retry_after, _)| *retry_after),
        "a 503 without Retry-After"
    );
    // A request sent while the quorum was missing is answered within the bus's 10 s bound on
    // a publish, which may fall after the servers are back.
    let refused_without_quorum = unavailable
        .iter()
        .filter(|(at, ..)| *at > lost_quorum && *at < restored + Duration::from_secs(12))
        .count();
    assert!(
        refused_without_quorum > 0,
        "no 503 while two of three servers were down"
    );
    let ok_without_quorum = report
        .answers
        .iter()
        .filter(|(at, s, ..)| {
            *s == StatusCode::OK && *at > lost_quorum + Duration::from_secs(2) && *at < restoring
        })
        .count();
    let ok_after = report
        .answers
        .iter()
        .filter(|(at, s, ..)| *s == StatusCode::OK && *at > restored + Duration::from_secs(3))
        .count();
    assert!(
        ok_after > 0,
        "the receiver did not recover after the servers came back"
    );
    let others: Vec<_> = report
        .answers
        .iter()
        .filter(|(_, s, ..)| !s.is_success() && !s.is_server_error())
        .collect();
    assert!(
        others.is_empty(),
        "unexpected answers: {:?}",
        &others[..others.len().min(5)]
    );

    // Every acknowledged event reaches the archive, once.
    let acked = report.acked_as("a");
    let ids = wait_until_archived(&url, &service_key, &acked).await;
    assert_none_lost(&acked, &ids);
    let (rows, distinct) = archive_counts(&url, &service_key).await;
    assert_eq!(rows - distinct, 0, "{rows} rows for {distinct} events");
    let seconds = report.answers.last().map_or(1.0, |a| a.0.as_secs_f64());
    eprintln!(
        "nats cluster R3: {} acknowledged in {seconds:.1} s ({:.0} events/s), p99 {:?} over {} \
         requests, {} answered 503, {rows} rows for {distinct} events",
        acked.len(),
        acked.len() as f64 / seconds,
        p99(report.answers.iter().map(|a| a.3).collect()),
        report.answers.len(),
        unavailable.len(),
    );
    eprintln!(
        "  {ok_without_quorum} accepted while two servers were down; replicas of raw after: {:?}",
        cluster.replicas_of(&raw).await
    );
    assert!(cp.terminate().await.success());
}

/// `sluice_events_total{stage="…"}` on a node's `/metrics`.
async fn events_at(url: &str, stage: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = format!("sluice_events_total{{stage=\"{stage}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Two processors, two delivery nodes and two archivers, each its own process beside one
/// receiver and one query node, on one NATS and one archive directory: they share each
/// stage's work and every event is delivered and archived once. Then one node of each of
/// the three roles is killed with `kill -9` under load, and the others finish its in-flight
/// work within NATS's ack wait (30 s): every acknowledged event reaches the vendor (again
/// under the same idempotency key when a killed node's request was cut off) and the archive
/// holds each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_per_role_share_the_work_and_take_over_from_a_killed_one() {
    use sluice_tests::{Reply, Vendor};

    let vendor = Vendor::start().await;
    vendor.always("/hook", Reply::Slow(Duration::from_millis(20)));
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = json!({"sources": [{"name": "web"}], "destinations": [
        {"name": "hook", "concurrency": 4, "webhook": {"url": format!("{}/hook", vendor.url)}}]});
    let (
        cp,
        owner,
        Provisioned {
            tenant,
            pipeline,
            service_key,
        },
    ) = provisioned(dir.path(), spec).await;
    let write_key = ingest_key(&cp, &owner, &tenant, &pipeline).await;
    let nats = sluice_tests::nats_url();
    let prefix = format!("m{}", uuid::Uuid::now_v7().simple());
    let archive = dir.path().join("archive");
    let archive_dir = archive.to_string_lossy().into_owned();
    let mut nodes = Vec::new();
    for (name, roles) in [
        ("receiver", "receiver"),
        ("processor-1", "processor"),
        ("processor-2", "processor"),
        ("delivery-1", "delivery"),
        ("delivery-2", "delivery"),
        ("archiver-1", "archiver"),
        ("archiver-2", "archiver"),
        ("query", "query"),
    ] {
        let env = [
            ("NATS_URL", nats.as_str()),
            ("SLUICE_NATS_PREFIX", prefix.as_str()),
            ("SLUICE_NODE_NAME", name),
            ("SLUICE_ARCHIVE_DIR", archive_dir.as_str()),
            ("SLUICE_ARCHIVE_FLUSH_SECS", "1"),
            ("SLUICE_QUERY_MAX_ROWS", "1000000"),
        ];
        let (child, url) =
            start_data_plane_with_env(&dir.path().join(name), &cp.grpc, &service_key, roles, &env)
                .await;
        wait_ready(&url).await;
        nodes.push((name, child, url));
    }
    let url_of = |name: &str| {
        nodes
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(.., url)| url.clone())
            .expect("node")
    };
    let (receiver, query) = (url_of("receiver"), url_of("query"));

    let archived_ids = || archived_ids(&query, &service_key);
    let wait_for = async |acked: &std::collections::HashSet<String>| {
        let started = std::time::Instant::now();
        for _ in 0..480 {
            let delivered = vendor.accepted_keys("/hook");
            if acked.iter().all(|id| delivered.contains(id)) {
                let ids = archived_ids().await;
                if acked.iter().all(|id| ids.contains(id)) {
                    return started.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let delivered = vendor.accepted_keys("/hook");
        let ids = archived_ids().await;
        panic!(
            "after 120 s: {} of {} acknowledged events not delivered, {} not archived",
            acked.iter().filter(|id| !delivered.contains(*id)).count(),
            acked.len(),
            acked.iter().filter(|id| !ids.contains(*id)).count()
        );
    };

    // Steady: the work is shared, each event once.
    let load = Load::start(&receiver, &write_key, 4, first_round);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = load.stop().await.acked_as("a");
    assert!(first.len() > 200, "{} acknowledged", first.len());
    wait_for(&first).await;
    let arrivals = vendor.arrivals("/hook");
    assert_eq!(
        arrivals.len(),
        first.len(),
        "each event delivered once while no node failed"
    );
    for (role, stage) in [
        ("processor", "processed"),
        ("delivery", "delivered"),
        ("archiver", "archived"),
    ] {
        let (one, two) = (
            events_at(&url_of(&format!("{role}-1")), stage).await,
            events_at(&url_of(&format!("{role}-2")), stage).await,
        );
        eprintln!("{role}s: {one} and {two} events {stage}");
        assert!(
            one > 0 && two > 0,
            "both {role}s took part: {one} and {two}"
        );
        assert_eq!(one + two, first.len() as u64, "{role}s: each event once");
    }

    // One node of each role killed under load.
    let load = Load::start(&receiver, &write_key, 4, second_round);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (name, child, _) in nodes.iter_mut() {
        if name.ends_with("-1") {
            child.kill().await.expect("kill -9");
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = load.stop().await.acked_as("b");
    assert!(second.len() > 200, "{} acknowledged", second.len());
    let handed_over = wait_for(&second).await;
    let (rows, distinct) = archive_counts(&query, &service_key).await;
    assert_eq!(rows - distinct, 0, "{rows} rows for {distinct} events");
    let arrivals = vendor.arrivals("/hook");
    let again = arrivals.len() - first.len() - second.len();
    eprintln!(
        "after the kills: {} acknowledged, all delivered and archived {:.1} s after the load stopped \
         ({again} deliveries sent again under their key), {rows} rows for {distinct} events",
        second.len(),
        handed_over.as_secs_f64()
    );
    assert!(
        handed_over < Duration::from_secs(45),
        "the survivors took {handed_over:?} (the ack wait is 30 s)"
    );
    for key in &arrivals {
        assert!(
            first.contains(key) || second.contains(key),
            "unknown key {key}"
        );
    }
    assert!(cp.terminate().await.success());
}
