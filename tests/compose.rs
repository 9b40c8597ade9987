//! `deploy/docker-compose.yml` proven without a Docker engine: every `sluice` service in the
//! file runs as a local process with the command and environment the file gives it, `.env`
//! made from `deploy/.env.example` as an operator fills it in. Service host names map to
//! loopback: `nats` to the machine's NATS JetStream, `minio` to the S3-compatible server the
//! tests use, each role's port 8090 to a port of its own. Events sent through the proxy must be
//! delivered by the delivery role and found by the query role in the archive the archiver wrote.
//!
//! Two settings are the test's, not the file's: a NATS stream prefix of its own (the machine's
//! NATS is shared with other tests) and a 2-second archive flush (instead of 60 s).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;
use sluice_proto::Role;
use sluice_tests::{Cp, CpOptions, Vendor, eventually, free_port, nats_url, s3_url};
use tokio::process::{Child, Command};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `KEY=value` lines of an env file, comments and blank lines skipped.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Compose's interpolation: `${VAR}`, `${VAR:-default}` and `$$`.
fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("closing brace in the compose file");
            let expr = &body[..end];
            let value = match expr.split_once(":-") {
                Some((name, default)) => vars
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| default.to_owned()),
                None => vars.get(expr).cloned().unwrap_or_default(),
            };
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// One Sluice service as the file describes it, made runnable here.
struct Service {
    name: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    port: u16,
}

fn services(
    compose: &Yaml,
    dotenv: &BTreeMap<String, String>,
    state: &Path,
) -> (Vec<Service>, u16) {
    let all = compose["services"].as_mapping().expect("services");
    let names: Vec<String> = all.keys().map(scalar).collect();
    let ports: BTreeMap<String, u16> = names.iter().map(|n| (n.clone(), free_port())).collect();
    let proxy_port = free_port();
    // Host names of the Compose network, as this machine reaches them.
    let mut hosts: Vec<(String, String)> = vec![
        ("nats://nats:4222".into(), nats_url()),
        ("http://minio:9000".into(), s3_url()),
        ("0.0.0.0:8088".into(), format!("127.0.0.1:{proxy_port}")),
    ];
    for (name, port) in &ports {
        hosts.push((
            format!("http://{name}:8090"),
            format!("http://127.0.0.1:{port}"),
        ));
    }
    let mut out = Vec::new();
    for (name, service) in all {
        let name = scalar(name);
        let command: Vec<String> = match service.get("command") {
            Some(Yaml::Sequence(items)) => items.iter().map(scalar).collect(),
            _ => continue,
        };
        if command.first().map(String::as_str) != Some("data-plane") {
            continue;
        }
        let mut env = BTreeMap::new();
        if service.get("env_file").is_some() {
            env.extend(dotenv.clone());
        }
        let environment = service["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name}: environment must be a map"));
        for (k, v) in environment {
            env.insert(scalar(k), interpolate(&scalar(v), dotenv));
        }
        let port = ports[&name];
        for value in env.values_mut() {
            if value == "0.0.0.0:8090" {
                *value = format!("127.0.0.1:{port}");
            }
            for (from, to) in &hosts {
                *value = value.replace(from.as_str(), to);
            }
            if let Some(rest) = value.strip_prefix("/var/lib/sluice") {
                *value = format!("{}{rest}", state.join(&name).display());
            }
        }
        out.push(Service {
            name,
            args: command.iter().map(|a| interpolate(a, dotenv)).collect(),
            env,
            port,
        });
    }
    (out, proxy_port)
}

/// Starts the service; its log goes to `<state>/<name>.log`.
fn spawn(service: &Service, prefix: &str, state: &Path) -> Child {
    let log = std::fs::File::create(state.join(format!("{}.log", service.name))).expect("log");
    let mut command = Command::new(SLUICE);
    command
        .args(&service.args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&service.env)
        .env("SLUICE_NATS_PREFIX", prefix)
        .env("SLUICE_ARCHIVE_FLUSH_SECS", "2")
        .env("SLUICE_LOG_FORMAT", "json")
        // The test's vendor listens on loopback, which the default policy refuses.
        .env("SLUICE_POLICY_ALLOW_HOSTS", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", service.name))
}

/// The spawned services; when the test fails, says which of them exited and prints the end of
/// every service's log, which would otherwise go with the temporary directory.
struct Running {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, child) in &mut self.children {
            let status = match child.try_wait() {
                Ok(Some(status)) => format!("exited: {status}"),
                Ok(None) => "running".to_owned(),
                Err(e) => format!("unknown: {e}"),
            };
            let log = std::fs::read_to_string(self.logs.join(format!("{name}.log")))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- service {name} ({status}), last lines of its log:\n{tail}");
        }
    }
}

async fn new_bucket() -> String {
    let bucket = format!("sluice-compose-{}", uuid::Uuid::now_v7().simple());
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
    assert!(created.status().is_success(), "{}", created.status());
    bucket
}

/// What the file promises besides wiring: each role once, hardened, checked and restarted.
#[test]
fn the_compose_file_runs_every_role_hardened() {
    let text = std::fs::read_to_string(repo().join("deploy/docker-compose.yml")).expect("read");
    let compose: Yaml = serde_yaml_ng::from_str(&text).expect("valid YAML");
    for role in Role::ALL.map(Role::as_str) {
        let service = &compose["services"][role];
        assert_eq!(
            service["command"],
            serde_yaml_ng::from_str::<Yaml>(&format!("[data-plane, --roles, {role}]"))
                .expect("yaml"),
            "{role}"
        );
        assert_eq!(service["read_only"], Yaml::Bool(true), "{role}");
        assert_eq!(scalar(&service["user"]), "10001:10001", "{role}");
        assert_eq!(
            service["cap_drop"],
            serde_yaml_ng::from_str::<Yaml>("[ALL]").expect("yaml"),
            "{role}"
        );
        assert!(service["healthcheck"]["test"].is_sequence(), "{role}");
        assert_eq!(scalar(&service["restart"]), "unless-stopped", "{role}");
    }
    let control = std::fs::read_to_string(repo().join("deploy/docker-compose.control-plane.yml"))
        .expect("read");
    let control: Yaml = serde_yaml_ng::from_str(&control).expect("valid YAML");
    let replicas = control["services"]
        .as_mapping()
        .expect("services")
        .values()
        .filter(|s| s["command"][0] == Yaml::String("control-plane".into()))
        .count();
    assert_eq!(replicas, 2, "two control-plane replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_file_moves_events_from_proxy_to_delivery_and_archive() {
    let vendor = Vendor::start().await;
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("onprem").await;
    let spec = json!({
        "sources": [{"name": "web"}],
        "destinations": [{"name": "crm", "webhook": {"url": format!("{}/hook", vendor.url)}}],
        "archive": {"dataset": "events"},
    });
    let pipeline = cp.pipeline(&tenant, "web", spec).await;
    let (_, service_key) = cp.service_key(&tenant).await;
    let (_, write_key) = cp.ingest_key(&tenant, &pipeline, "web").await;

    // .env as the README tells an operator to make it from .env.example.
    let example = std::fs::read_to_string(repo().join("deploy/.env.example")).expect("read");
    let mut dotenv = parse_env_file(&example);
    for required in [
        "SLUICE_CONTROL_URL",
        "SLUICE_SERVICE_KEY",
        "S3_BUCKET",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
    ] {
        assert!(
            dotenv.contains_key(required),
            ".env.example names {required}"
        );
    }
    dotenv.insert("SLUICE_CONTROL_URL".into(), cp.grpc_url.clone());
    dotenv.insert("SLUICE_SERVICE_KEY".into(), service_key.clone());
    dotenv.insert("S3_BUCKET".into(), new_bucket().await);
    dotenv.insert("S3_ACCESS_KEY".into(), "test-access-key".into());
    dotenv.insert("S3_SECRET_KEY".into(), "test-secret-key".into());

    let text = std::fs::read_to_string(repo().join("deploy/docker-compose.yml")).expect("read");
    let compose: Yaml = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let state = tempfile::tempdir().expect("tempdir");
    let (services, proxy_port) = services(&compose, &dotenv, state.path());
    let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    let mut roles = Role::ALL.map(Role::as_str).to_vec();
    roles.sort_unstable();
    assert_eq!(names, roles, "one service per role");

    let prefix = format!("compose_{}", uuid::Uuid::now_v7().simple());
    let mut running = Running {
        children: services
            .iter()
            .map(|s| (s.name.clone(), spawn(s, &prefix, state.path())))
            .collect(),
        logs: state.path().to_owned(),
    };
    let http = reqwest::Client::new();
    for service in &services {
        let url = format!("http://127.0.0.1:{}/health/ready", service.port);
        let (ready, _) = eventually(
            Duration::from_secs(60),
            &format!("{} ready", service.name),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let response = http.get(&url).send().await.ok()?;
                    if !response.status().is_success() {
                        return None;
                    }
                    response.json::<Value>().await.ok()
                }
            },
        )
        .await;
        assert_eq!(
            ready["roles"],
            json!([service.name]),
            "the node on {}'s port runs its role",
            service.name
        );
    }

    // Each answered for itself: a service that could not start would leave no one on its port.
    for (name, child) in &mut running.children {
        let status = child.try_wait().expect("child status");
        assert!(status.is_none(), "{name} exited: {status:?}");
    }

    // Events through the proxy, as a website's SDK sends them.
    let batch: Vec<Value> = (0..20)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "userId": format!("u-{i}"),
            "messageId": format!("compose-{i}"), "properties": {"n": i}})
        })
        .collect();
    let sent = eventually(Duration::from_secs(30), "the proxy forwards", || {
        let http = http.clone();
        let (batch, write_key) = (batch.clone(), write_key.clone());
        async move {
            let response = http
                .post(format!("http://127.0.0.1:{proxy_port}/v1/batch"))
                .basic_auth(&write_key, Some(""))
                .json(&json!({"batch": batch}))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(response.status())
        }
    })
    .await;
    assert!(sent.0.is_success());

    eventually(Duration::from_secs(60), "all 20 delivered", || async {
        (vendor.accepted_keys("/hook").len() == 20).then_some(())
    })
    .await;

    let query = services
        .iter()
        .find(|s| s.name == "query")
        .expect("query service");
    let answer = eventually(Duration::from_secs(60), "all 20 archived", || {
        let http = http.clone();
        let (url, key) = (
            format!("http://127.0.0.1:{}/v1/query", query.port),
            service_key.clone(),
        );
        async move {
            let answer: Value = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"sql": "SELECT count(DISTINCT event_id) AS n FROM events WHERE event = 'Order Completed'"}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (answer["rows"][0]["n"] == 20).then_some(answer)
        }
    })
    .await;
    assert_eq!(answer.0["rows"], json!([{"n": 20}]));

    // Every role reported to the control plane as its own node.
    let nodes = cp.data_planes(&tenant).await;
    assert_eq!(nodes.len(), 6, "{nodes:?}");
}
