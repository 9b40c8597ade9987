//! A three-server NATS JetStream cluster on loopback, for the tests that lose servers under
//! load: each server its own process, store directory, client, route and monitoring port,
//! killed with SIGKILL and restarted on the same ports and store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, free_port};

/// `nats-server` (Debian's package installs it in /usr/sbin; `.ci/run` starts the single
/// server from there too).
fn nats_server() -> String {
    std::env::var("SLUICE_TEST_NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into())
}

struct Server {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    servers: Vec<Server>,
    routes: String,
}

impl NatsCluster {
    /// Starts three servers with their stores below `dir` and waits until JetStream has a
    /// meta leader (streams can be created).
    pub async fn start(dir: &Path) -> Self {
        let servers: Vec<Server> = (1..=3)
            .map(|i| Server {
                name: format!("n{i}"),
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                store: dir.join(format!("n{i}")),
                child: None,
            })
            .collect();
        let routes = servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self { servers, routes };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_for_meta_leader().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let routes = self.routes.clone();
        let s = &mut self.servers[i];
        std::fs::create_dir_all(&s.store).expect("store dir");
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &s.port.to_string()])
            .args(["-m", &s.monitor_port.to_string()])
            .args(["-js", "-sd"])
            .arg(&s.store)
            .args(["--server_name", &s.name, "--cluster_name", "sluice-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", s.cluster_port)])
            .args(["--routes", &routes])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (Debian's nats-server): {e}", nats_server()));
        s.child = Some(child);
    }

    /// Client URLs of all three servers, comma-separated as `NATS_URL` takes them.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.servers[i].name
    }

    /// `kill -9` of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it serves clients.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        let monitor = self.servers[i].monitor_port;
        eventually(
            Duration::from_secs(30),
            "a restarted nats server",
            || async move {
                let ok = reqwest::get(format!("http://127.0.0.1:{monitor}/healthz"))
                    .await
                    .ok()?;
                ok.status().is_success().then_some(())
            },
        )
        .await;
    }

    async fn jsz(&self, i: usize) -> Option<Value> {
        let url = format!(
            "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
            self.servers[i].monitor_port
        );
        reqwest::get(url).await.ok()?.json().await.ok()
    }

    async fn wait_for_meta_leader(&self) {
        eventually(
            Duration::from_secs(30),
            "a JetStream meta leader",
            || async {
                let jsz = self.jsz(0).await?;
                jsz["meta_cluster"]["leader"]
                    .as_str()
                    .filter(|l| !l.is_empty())
                    .map(|_| ())
            },
        )
        .await;
    }

    /// The index of the server leading `stream`, as the running servers report it.
    pub async fn leader_of(&self, stream: &str) -> Option<usize> {
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_none() {
                continue;
            }
            let Some(jsz) = self.jsz(i).await else {
                continue;
            };
            let leader = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                .find(|s| s["name"] == stream)
                .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned));
            if let Some(leader) = leader {
                return self.servers.iter().position(|s| s.name == leader);
            }
        }
        None
    }

    /// The replicas of `stream` each running server reports (name, messages, current): a
    /// restarted server has caught up when its count matches the leader's.
    pub async fn replicas_of(&self, stream: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_none() {
                continue;
            }
            if let Some(jsz) = self.jsz(i).await
                && let Some(s) = jsz["account_details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                    .find(|s| s["name"] == stream)
            {
                out.push((
                    self.servers[i].name.clone(),
                    s["state"]["messages"].as_u64().unwrap_or(0),
                ));
            }
        }
        out
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
