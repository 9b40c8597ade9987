//! Data-plane configuration, validated once into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_proto::Role;

/// Raw settings as they come from flags and the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Comma-separated roles, or `all`. Default: `all`.
    pub roles: String,
    /// One HTTP listener for every role, health and metrics. Default: `127.0.0.1:8090`.
    pub http_addr: SocketAddr,
    /// Node id, last-known-good configuration. Default: `./sluice-data/node`.
    pub state_dir: PathBuf,
    /// gRPC address of the control plane (`http://…` or `https://…`). Required.
    pub control_url: Option<String>,
    /// Service key of the data plane. Required.
    pub service_key: Option<String>,
    /// Name shown in the fleet. Default: the host name.
    pub node_name: Option<String>,
    /// PEM CA certificate to trust for the control plane's TLS. Default: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Directory with one file per secret (file name = secret name), checked after the
    /// environment. Default: unset.
    pub secrets_dir: Option<PathBuf>,
    /// How often the node reports status, in seconds. Default: 10.
    pub status_interval_secs: u64,
    /// How often the node sends a heartbeat, in seconds. Default: 15.
    pub heartbeat_secs: u64,
    /// Longest wait between reconnection attempts, in seconds. Default: 30.
    pub max_backoff_secs: u64,
    /// NATS JetStream for the bus (`nats://…`); unset means the embedded bus in
    /// `state_dir/bus`. Default: unset.
    pub nats_url: Option<String>,
    /// Prefix of the NATS stream and subject names, so several data planes can share one
    /// server: lowercase letters, digits and `_`. Default: `sluice`.
    pub nats_prefix: String,
    /// Most bytes one fetch of the packed `raw` stage returns from NATS: smaller bounds the
    /// bursts a consumer takes in at once. At least 1,048,576 (the server's default
    /// `max_payload`). Default: 4,194,304 (4 MiB).
    pub nats_fetch_bytes: usize,
    /// Bytes each stage's NATS stream may hold before receivers answer 503; applied to
    /// streams an earlier start made too. At least 1,048,576. Default: 1,073,741,824 (1 GiB).
    pub nats_max_bytes: u64,
    /// Replicas of each NATS stream (3 on a three-node cluster, at most 5); applied to
    /// streams an earlier start made too. Default: 1.
    pub nats_replicas: usize,
    /// Packed publishes to the NATS `raw` stage that may await the server's acknowledgement
    /// at once; requests arriving meanwhile are stored together as one message, so under load
    /// the server stores one message per group of requests. 0 stores each request as its own
    /// message. At most 1,024. Default: 4.
    pub nats_packs_in_flight: usize,
    /// Unacknowledged bytes the embedded bus holds per stage before receivers answer 503.
    /// At least 1,048,576. Default: 268,435,456 (256 MiB).
    pub bus_max_bytes: u64,
    /// The proxy's public listener (browsers and SDKs); health and metrics stay on
    /// `http_addr`. Default: `127.0.0.1:8088`.
    pub proxy_addr: SocketAddr,
    /// Comma-separated base URLs of the receivers the proxy forwards to
    /// (`http://receiver-1:8090,http://receiver-2:8090`). Default: this node's own receiver
    /// when it runs that role.
    pub receiver_urls: String,
    /// Name of the first-party id cookie the proxy sets. Default: `sluice_id`.
    pub proxy_cookie_name: String,
    /// `Domain` of that cookie (e.g. `example.com`, to share it across subdomains).
    /// Default: unset (the proxy's own host).
    pub proxy_cookie_domain: Option<String>,
    /// Take the client address from the left-most `X-Forwarded-For` entry (only behind a
    /// load balancer that sets it). Default: false.
    pub proxy_trust_forwarded_for: bool,
    /// Bytes the proxy's disk spool holds before it answers 503. Default: 268,435,456
    /// (256 MiB).
    pub spool_max_bytes: u64,
    /// A MaxMind GeoIP2/GeoLite2 City database (`.mmdb`) for pipelines that enrich with
    /// `geoip`. Default: none (such pipelines are refused).
    pub geoip_db: Option<PathBuf>,
    /// The archive in a local directory. Default: `state_dir/archive` (when no S3 bucket or
    /// archive URL is set).
    pub archive_dir: Option<PathBuf>,
    /// The archive at a `gs://…`, `az://…` or `s3://…` URL, credentials from the environment.
    /// Default: unset.
    pub archive_url: Option<String>,
    /// S3 bucket of the archive (`S3_BUCKET`). Default: unset (local directory).
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint, `http(s)://host:port` (`S3_ENDPOINT`); path-style addressing.
    /// Default: unset (AWS).
    pub s3_endpoint: Option<String>,
    /// `S3_ACCESS_KEY`. Default: unset (the AWS credential chain).
    pub s3_access_key: Option<String>,
    /// `S3_SECRET_KEY`. Default: unset.
    pub s3_secret_key: Option<String>,
    /// `S3_REGION`. Default: `us-east-1`.
    pub s3_region: String,
    /// Held event bytes that make the archiver write its files. Default: 134,217,728
    /// (128 MiB).
    pub archive_flush_bytes: u64,
    /// Age of the oldest held event that makes the archiver write, in seconds. Default: 60.
    pub archive_flush_secs: u64,
    /// Longest a query may run, in seconds. Default: 30.
    pub query_timeout_secs: u64,
    /// Most rows a query may return. Default: 100,000.
    pub query_max_rows: usize,
    /// Memory a query may use for joins, sorts and aggregations, in bytes. Default:
    /// 268,435,456 (256 MiB).
    pub query_memory_bytes: usize,
    /// Parts a query's scan is split into and read at once. Default: 0, which picks the
    /// machine's cores for an archive on local disk and 32 (or the cores, if more) for an
    /// object store, whose reads wait on the network and the server, not on a core. At most 256.
    pub query_partitions: usize,
}

/// Most scan partitions a query may be given: each holds buffers and a reader of its own.
const MAX_QUERY_PARTITIONS: usize = 256;

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            roles: "all".into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            state_dir: PathBuf::from("./sluice-data/node"),
            control_url: None,
            service_key: None,
            node_name: None,
            ca_file: None,
            secrets_dir: None,
            status_interval_secs: 10,
            heartbeat_secs: 15,
            max_backoff_secs: 30,
            nats_url: None,
            nats_prefix: "sluice".into(),
            nats_fetch_bytes: sluice_bus::nats::DEFAULT_FETCH_BYTES,
            nats_max_bytes: sluice_bus::nats::DEFAULT_MAX_BYTES,
            nats_replicas: 1,
            nats_packs_in_flight: sluice_bus::nats::DEFAULT_PACKS_IN_FLIGHT,
            bus_max_bytes: sluice_bus::embedded::DEFAULT_MAX_BYTES,
            proxy_addr: SocketAddr::from(([127, 0, 0, 1], 8088)),
            receiver_urls: String::new(),
            proxy_cookie_name: "sluice_id".into(),
            proxy_cookie_domain: None,
            proxy_trust_forwarded_for: false,
            spool_max_bytes: 256 * 1024 * 1024,
            geoip_db: None,
            archive_dir: None,
            archive_url: None,
            s3_bucket: None,
            s3_endpoint: None,
            s3_access_key: None,
            s3_secret_key: None,
            s3_region: "us-east-1".into(),
            archive_flush_bytes: 128 * 1024 * 1024,
            archive_flush_secs: 60,
            query_timeout_secs: 30,
            query_max_rows: 100_000,
            query_memory_bytes: 256 * 1024 * 1024,
            query_partitions: 0,
        }
    }
}

/// The proxy's settings, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub addr: SocketAddr,
    /// Receiver base URLs without a trailing slash; empty means this node's own receiver.
    pub receiver_urls: Vec<String>,
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub trust_forwarded_for: bool,
    pub spool_max_bytes: u64,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub roles: Vec<Role>,
    pub http_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub control_url: String,
    pub service_key: String,
    pub node_name: String,
    pub ca_file: Option<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
    pub status_interval: Duration,
    pub heartbeat: Duration,
    pub max_backoff: Duration,
    pub nats_url: Option<String>,
    pub nats_prefix: String,
    pub nats_fetch_bytes: usize,
    pub nats_max_bytes: u64,
    pub nats_replicas: usize,
    pub nats_packs_in_flight: usize,
    pub bus_max_bytes: u64,
    pub proxy: ProxyConfig,
    pub geoip_db: Option<PathBuf>,
    pub archiver: ArchiverConfig,
    pub query: sluice_query::Limits,
}

impl Config {
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let roles = self.roles()?;
        let archiver = self.archiver_config()?;
        let prefix_ok = !self.nats_prefix.is_empty()
            && self.nats_prefix.len() <= 64
            && self
                .nats_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !prefix_ok {
            return Err(invalid(
                "nats_prefix",
                "1 to 64 lowercase letters, digits and _",
            ));
        }
        if self.nats_fetch_bytes < sluice_bus::nats::MIN_FETCH_BYTES {
            return Err(invalid(
                "nats_fetch_bytes",
                format!(
                    "at least {} bytes, so any one message fits",
                    sluice_bus::nats::MIN_FETCH_BYTES
                ),
            ));
        }
        if self.nats_max_bytes < sluice_bus::nats::MIN_FETCH_BYTES as u64
            || self.nats_max_bytes > i64::MAX as u64
        {
            return Err(invalid(
                "nats_max_bytes",
                format!(
                    "at least {} bytes, so any one message fits",
                    sluice_bus::nats::MIN_FETCH_BYTES
                ),
            ));
        }
        if !(1..=sluice_bus::nats::MAX_REPLICAS).contains(&self.nats_replicas) {
            return Err(invalid(
                "nats_replicas",
                format!("1 to {}", sluice_bus::nats::MAX_REPLICAS),
            ));
        }
        if self.nats_packs_in_flight > sluice_bus::nats::MAX_PACKS_IN_FLIGHT {
            return Err(invalid(
                "nats_packs_in_flight",
                format!("0 to {}", sluice_bus::nats::MAX_PACKS_IN_FLIGHT),
            ));
        }
        if self.bus_max_bytes < sluice_bus::embedded::MIN_MAX_BYTES {
            return Err(invalid(
                "bus_max_bytes",
                format!(
                    "at least {} bytes, so a full batch request fits",
                    sluice_bus::embedded::MIN_MAX_BYTES
                ),
            ));
        }
        if self.query_partitions > MAX_QUERY_PARTITIONS {
            return Err(invalid(
                "query_partitions",
                format!("at most {MAX_QUERY_PARTITIONS} (0 picks a default)"),
            ));
        }
        for (field, value) in [
            ("query_timeout_secs", self.query_timeout_secs as usize),
            ("query_max_rows", self.query_max_rows),
            ("query_memory_bytes", self.query_memory_bytes),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        let query = sluice_query::Limits {
            timeout: Duration::from_secs(self.query_timeout_secs),
            max_rows: self.query_max_rows,
            memory_bytes: self.query_memory_bytes,
            partitions: match self.query_partitions {
                0 if archiver.store.is_local() => sluice_query::cores(),
                0 => sluice_query::remote_partitions(),
                n => n,
            },
            pushdown_filters: true,
        };
        let proxy = self.proxy_config(&roles)?;
        let control_url = self.control_url.filter(|u| !u.is_empty()).ok_or_else(|| {
            invalid(
                "control_url",
                "set SLUICE_CONTROL_URL to the control plane's gRPC address",
            )
        })?;
        if !(control_url.starts_with("http://") || control_url.starts_with("https://")) {
            return Err(invalid(
                "control_url",
                "must start with http:// or https://",
            ));
        }
        let service_key = self.service_key.filter(|k| !k.is_empty()).ok_or_else(|| {
            invalid(
                "service_key",
                "set SLUICE_SERVICE_KEY to a service key from the control plane",
            )
        })?;
        match service_key.parse::<sluice_keys::ParsedKey>() {
            Ok(key) if key.key_type() == sluice_keys::KeyType::Service => {}
            Ok(_) => {
                return Err(invalid(
                    "service_key",
                    "this is not a service key (slk_svc_…)",
                ));
            }
            Err(_) => {
                return Err(invalid(
                    "service_key",
                    "not a Sluice key: check for a copy-paste mistake",
                ));
            }
        }
        let node_name = self
            .node_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(host_name);
        if node_name.len() > 200 || node_name.chars().any(char::is_control) {
            return Err(invalid("node_name", "at most 200 printable characters"));
        }
        for (field, value) in [
            ("status_interval_secs", self.status_interval_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("max_backoff_secs", self.max_backoff_secs),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        Ok(Config {
            archiver,
            query,
            proxy,
            geoip_db: self.geoip_db,
            roles,
            http_addr: self.http_addr,
            state_dir: self.state_dir,
            control_url,
            service_key,
            node_name,
            ca_file: self.ca_file,
            secrets_dir: self.secrets_dir,
            status_interval: Duration::from_secs(self.status_interval_secs),
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
            nats_url: self.nats_url.filter(|u| !u.is_empty()),
            nats_prefix: self.nats_prefix,
            nats_fetch_bytes: self.nats_fetch_bytes,
            nats_max_bytes: self.nats_max_bytes,
            nats_replicas: self.nats_replicas,
            nats_packs_in_flight: self.nats_packs_in_flight,
            bus_max_bytes: self.bus_max_bytes,
        })
    }
}

impl RawConfig {
    fn archiver_config(&self) -> Result<ArchiverConfig, ConfigError> {
        use sluice_archive::store::StoreConfig;
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let store = match (set(&self.s3_bucket), set(&self.archive_url)) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "s3_bucket",
                    "set either S3_BUCKET or SLUICE_ARCHIVE_URL, not both",
                ));
            }
            (Some(bucket), None) => {
                let endpoint = set(&self.s3_endpoint);
                if let Some(e) = &endpoint
                    && !(e.starts_with("http://") || e.starts_with("https://"))
                {
                    return Err(invalid(
                        "s3_endpoint",
                        "must start with http:// or https://",
                    ));
                }
                let (key, secret) = (set(&self.s3_access_key), set(&self.s3_secret_key));
                if key.is_some() != secret.is_some() {
                    return Err(invalid(
                        "s3_access_key",
                        "set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither",
                    ));
                }
                StoreConfig::S3 {
                    bucket,
                    endpoint,
                    access_key: key,
                    secret_key: secret,
                    region: self.s3_region.clone(),
                }
            }
            (None, Some(url)) => {
                if !["s3://", "gs://", "az://", "abfs://", "file://"]
                    .iter()
                    .any(|p| url.starts_with(p))
                {
                    return Err(invalid(
                        "archive_url",
                        "use s3://, gs://, az:// or file:// (or the S3_* settings)",
                    ));
                }
                StoreConfig::Url(url)
            }
            (None, None) => {
                if set(&self.s3_endpoint).is_some() {
                    return Err(invalid(
                        "s3_bucket",
                        "S3_ENDPOINT is set: set S3_BUCKET too",
                    ));
                }
                StoreConfig::Local(
                    self.archive_dir
                        .clone()
                        .unwrap_or_else(|| self.state_dir.join("archive")),
                )
            }
        };
        for (field, value) in [
            ("archive_flush_bytes", self.archive_flush_bytes),
            ("archive_flush_secs", self.archive_flush_secs),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        Ok(ArchiverConfig {
            store,
            flush_bytes: self.archive_flush_bytes,
            flush_age: Duration::from_secs(self.archive_flush_secs),
        })
    }

    fn roles(&self) -> Result<Vec<Role>, ConfigError> {
        let roles =
            Role::parse_list(&self.roles).map_err(|e| invalid("roles", format!("{e}, or all")))?;
        if roles.is_empty() {
            return Err(invalid("roles", "name at least one role, or all"));
        }
        Ok(roles)
    }

    fn proxy_config(&self, roles: &[Role]) -> Result<ProxyConfig, ConfigError> {
        let mut receiver_urls = Vec::new();
        for url in self
            .receiver_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty() || host.contains(char::is_whitespace)) {
                return Err(invalid(
                    "receiver_urls",
                    format!("{url:?} is not an http:// or https:// base URL"),
                ));
            }
            receiver_urls.push(url.trim_end_matches('/').to_owned());
        }
        let runs_proxy = roles.contains(&Role::Proxy);
        let local_receiver = roles.contains(&Role::Receiver);
        if runs_proxy && receiver_urls.is_empty() && !local_receiver {
            return Err(invalid(
                "receiver_urls",
                "the proxy needs receivers: set SLUICE_RECEIVER_URLS (or run the receiver role here too)",
            ));
        }
        let cookie_name = self.proxy_cookie_name.trim();
        let token = !cookie_name.is_empty()
            && cookie_name.len() <= 64
            && cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token {
            return Err(invalid(
                "proxy_cookie_name",
                "1 to 64 of A-Z, a-z, 0-9, _ and -",
            ));
        }
        let cookie_domain = self
            .proxy_cookie_domain
            .as_deref()
            .map(|d| d.trim().trim_start_matches('.'))
            .filter(|d| !d.is_empty());
        if let Some(domain) = cookie_domain
            && !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "proxy_cookie_domain",
                "a host name such as example.com",
            ));
        }
        if self.spool_max_bytes < sluice_bus::embedded::MIN_MAX_BYTES {
            return Err(invalid(
                "spool_max_bytes",
                format!(
                    "at least {} bytes, so a full batch request fits",
                    sluice_bus::embedded::MIN_MAX_BYTES
                ),
            ));
        }
        if runs_proxy && self.proxy_addr == self.http_addr && self.http_addr.port() != 0 {
            return Err(invalid(
                "proxy_addr",
                "the proxy's public listener needs its own address (not http_addr)",
            ));
        }
        Ok(ProxyConfig {
            addr: self.proxy_addr,
            receiver_urls,
            cookie_name: cookie_name.to_owned(),
            cookie_domain: cookie_domain.map(str::to_owned),
            trust_forwarded_for: self.proxy_trust_forwarded_for,
            spool_max_bytes: self.spool_max_bytes,
        })
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "data-plane".to_owned())
}

/// Settings of the archiver role.
#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    pub store: sluice_archive::store::StoreConfig,
    /// Held event bytes that trigger a flush.
    pub flush_bytes: u64,
    /// Age of the oldest held event that triggers a flush.
    pub flush_age: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_own_field_and_nothing_is_clamped() {
        let cases: Vec<(RawConfig, &str)> = vec![
            (
                RawConfig {
                    query_max_rows: 0,
                    ..raw()
                },
                "query_max_rows",
            ),
            (
                RawConfig {
                    query_memory_bytes: 0,
                    ..raw()
                },
                "query_memory_bytes",
            ),
            (
                RawConfig {
                    query_timeout_secs: 0,
                    ..raw()
                },
                "query_timeout_secs",
            ),
            (
                RawConfig {
                    archive_flush_secs: 0,
                    ..raw()
                },
                "archive_flush_secs",
            ),
            (
                RawConfig {
                    archive_flush_bytes: 0,
                    ..raw()
                },
                "archive_flush_bytes",
            ),
            (
                RawConfig {
                    heartbeat_secs: 0,
                    ..raw()
                },
                "heartbeat_secs",
            ),
            (
                RawConfig {
                    max_backoff_secs: 0,
                    ..raw()
                },
                "max_backoff_secs",
            ),
            (
                RawConfig {
                    status_interval_secs: 0,
                    ..raw()
                },
                "status_interval_secs",
            ),
            (
                RawConfig {
                    spool_max_bytes: 1000,
                    ..raw()
                },
                "spool_max_bytes",
            ),
            (
                RawConfig {
                    bus_max_bytes: 1000,
                    ..raw()
                },
                "bus_max_bytes",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        let config = RawConfig {
            spool_max_bytes: 2 * 1024 * 1024,
            bus_max_bytes: 3 * 1024 * 1024,
            ..raw()
        }
        .validate()
        .expect("valid");
        assert_eq!(config.proxy.spool_max_bytes, 2 * 1024 * 1024);
        assert_eq!(config.bus_max_bytes, 3 * 1024 * 1024);
    }

    fn raw() -> RawConfig {
        let key = sluice_keys::generate_key(sluice_keys::KeyType::Service).expect("key");
        RawConfig {
            roles: "receiver,processor".into(),
            control_url: Some("http://127.0.0.1:8081".into()),
            service_key: Some(key.expose().to_owned()),
            ..RawConfig::default()
        }
    }

    #[test]
    fn a_proxy_needs_receivers_and_a_valid_cookie() {
        let alone = RawConfig {
            roles: "proxy".into(),
            ..raw()
        };
        let err = alone.clone().validate().expect_err("no receivers");
        assert!(err.to_string().contains("SLUICE_RECEIVER_URLS"), "{err}");
        let config = RawConfig {
            receiver_urls: " http://r1:8090/, https://r2 ".into(),
            ..alone.clone()
        }
        .validate()
        .expect("valid");
        assert_eq!(config.proxy.receiver_urls, ["http://r1:8090", "https://r2"]);
        assert!(
            RawConfig {
                receiver_urls: "r1:8090".into(),
                ..alone.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawConfig {
                proxy_cookie_name: "bad name".into(),
                roles: "all".into(),
                ..alone
            }
            .validate()
            .is_err()
        );
        let with_receiver = RawConfig {
            roles: "proxy,receiver".into(),
            ..raw()
        };
        assert!(
            with_receiver
                .validate()
                .expect("valid")
                .proxy
                .receiver_urls
                .is_empty()
        );
    }

    #[test]
    fn query_partitions_follow_where_the_archive_is_unless_set() {
        let local = raw().validate().expect("valid");
        assert_eq!(local.query.partitions, sluice_query::cores());
        let s3 = RawConfig {
            s3_bucket: Some("events".into()),
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            ..raw()
        };
        let remote = s3.clone().validate().expect("valid");
        assert_eq!(remote.query.partitions, sluice_query::remote_partitions());
        assert!(remote.query.partitions > local.query.partitions);
        let file_url = RawConfig {
            archive_url: Some("file:///var/lib/sluice/archive".into()),
            ..raw()
        };
        assert_eq!(
            file_url.validate().expect("valid").query.partitions,
            sluice_query::cores()
        );
        let set = RawConfig {
            query_partitions: 3,
            ..s3
        };
        assert_eq!(set.clone().validate().expect("valid").query.partitions, 3);
        let too_many = RawConfig {
            query_partitions: 257,
            ..set
        };
        assert!(too_many.validate().is_err());
    }

    #[test]
    fn a_nats_fetch_must_fit_one_message() {
        let config = raw().validate().expect("valid");
        assert_eq!(config.nats_fetch_bytes, 4 * 1024 * 1024);
        let small = RawConfig {
            nats_fetch_bytes: 1024 * 1024 - 1,
            ..raw()
        };
        let error = small
            .validate()
            .expect_err("below the server's max_payload");
        assert_eq!(error.field, "nats_fetch_bytes");
        let least = RawConfig {
            nats_fetch_bytes: 1024 * 1024,
            ..raw()
        };
        assert_eq!(
            least.validate().expect("valid").nats_fetch_bytes,
            1024 * 1024
        );
    }

    #[test]
    fn nats_stream_limits_are_checked() {
        let config = raw().validate().expect("valid");
        assert_eq!(config.nats_max_bytes, 1 << 30);
        assert_eq!(config.nats_replicas, 1);
        assert_eq!(config.nats_packs_in_flight, 4);
        for (bad, field) in [
            (
                RawConfig {
                    nats_max_bytes: 1024 * 1024 - 1,
                    ..raw()
                },
                "nats_max_bytes",
            ),
            (
                RawConfig {
                    nats_max_bytes: u64::MAX,
                    ..raw()
                },
                "nats_max_bytes",
            ),
            (
                RawConfig {
                    nats_replicas: 0,
                    ..raw()
                },
                "nats_replicas",
            ),
            (
                RawConfig {
                    nats_replicas: 6,
                    ..raw()
                },
                "nats_replicas",
            ),
            (
                RawConfig {
                    nats_packs_in_flight: 1025,
                    ..raw()
                },
                "nats_packs_in_flight",
            ),
        ] {
            assert_eq!(bad.validate().expect_err("out of range").field, field);
        }
        let set = RawConfig {
            nats_max_bytes: 1024 * 1024,
            nats_replicas: 3,
            nats_packs_in_flight: 0,
            ..raw()
        }
        .validate()
        .expect("valid");
        assert_eq!((set.nats_max_bytes, set.nats_replicas), (1024 * 1024, 3));
        assert_eq!(
            set.nats_packs_in_flight, 0,
            "0 turns packing across calls off"
        );
    }

    #[test]
    fn the_embedded_bus_must_hold_a_full_batch() {
        assert_eq!(
            raw().validate().expect("valid").bus_max_bytes,
            256 * 1024 * 1024
        );
        let small = RawConfig {
            bus_max_bytes: 1024 * 1024 - 1,
            ..raw()
        };
        assert_eq!(
            small.validate().expect_err("too small").field,
            "bus_max_bytes"
        );
        let least = RawConfig {
            bus_max_bytes: 1024 * 1024,
            ..raw()
        };
        assert!(least.validate().is_ok());
    }

    #[test]
    fn all_means_every_role_and_lists_are_checked() {
        let all = RawConfig {
            roles: "all".into(),
            ..raw()
        };
        assert_eq!(all.validate().expect("valid").roles.len(), Role::ALL.len());
        let config = RawConfig {
            roles: "receiver, processor,receiver".into(),
            ..raw()
        }
        .validate()
        .expect("valid");
        assert_eq!(config.roles, vec![Role::Receiver, Role::Processor]);
        assert!(
            RawConfig {
                roles: "receiver,router".into(),
                ..raw()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawConfig {
                roles: " , ".into(),
                ..raw()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_control_plane_and_a_service_key_are_required() {
        assert!(
            RawConfig {
                control_url: None,
                ..raw()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawConfig {
                control_url: Some("127.0.0.1:8081".into()),
                ..raw()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawConfig {
                service_key: None,
                ..raw()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawConfig {
                service_key: Some("slk_svc_nope".into()),
                ..raw()
            }
            .validate()
            .is_err()
        );
        let api = sluice_keys::generate_key(sluice_keys::KeyType::Api).expect("key");
        let err = RawConfig {
            service_key: Some(api.expose().to_owned()),
            ..raw()
        }
        .validate()
        .expect_err("api key");
        assert!(err.to_string().contains("not a service key"));
    }
}
