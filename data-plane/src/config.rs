//! Data-plane configuration, validated once into [`Config`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_proto::Role;

/// Raw settings as they come from flags, the environment or a test, in sections; each
/// default is one constant, used by both the flag and [`Default`].
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    #[command(flatten)]
    pub node: RawNode,
    #[command(flatten)]
    pub bus: RawBus,
    #[command(flatten)]
    pub proxy: RawProxy,
    #[command(flatten)]
    pub archive: RawArchive,
    #[command(flatten)]
    pub query: RawQuery,
    #[command(flatten)]
    pub inspect: RawInspect,
    #[command(flatten)]
    pub identity: RawIdentity,
    #[command(flatten)]
    pub policy: RawPolicy,
}

/// The node's own policy: what a configuration from the control plane may make this node do
/// (see [`crate::policy`]). Set on the node only; the control plane cannot change it.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawPolicy {
    /// Destination hosts allowed beyond public addresses, comma-separated: host names,
    /// `*.domain`, addresses or CIDR ranges, each optionally with `:port` (`[v6]:port`).
    /// Checked on the URL, on every address a name resolves to, and on every redirect; the
    /// node's own ports on this machine need their exact `address:port` entry. Default: none
    /// (public addresses only: no loopback, private, link-local such as 169.254.169.254, or
    /// other non-public range).
    #[arg(long, env = "SLUICE_POLICY_ALLOW_HOSTS", default_value = "")]
    pub policy_allow_hosts: String,
    /// Destination kinds allowed (catalogue ids such as `webhook,ga4`), comma-separated.
    /// Default: every kind.
    #[arg(long, env = "SLUICE_POLICY_DESTINATION_KINDS", default_value = "")]
    pub policy_destination_kinds: String,
    /// Secret names destinations may use, comma-separated names or `PREFIX_*`. The node's own
    /// settings (`SLUICE_*`, `S3_*`, `AWS_*`, `NATS_*`, `DATABASE_URL`, …) are never allowed.
    /// Default: any name but those.
    #[arg(long, env = "SLUICE_POLICY_SECRETS", default_value = "")]
    pub policy_secrets: String,
    /// Origins the node's browser APIs (query, inspector, dead letters, erasure) answer,
    /// comma-separated `scheme://host[:port]`. Default: any (they take bearer tokens, never
    /// cookies).
    #[arg(long, env = "SLUICE_POLICY_QUERY_ORIGINS", default_value = "")]
    pub policy_query_origins: String,
    /// The control plane's snapshot keys to trust, comma-separated `key_id=public-key`
    /// (base64url, as the control plane logs them at start). Default: none, and the keys of
    /// the first snapshot are pinned (trust on first use).
    #[arg(long, env = "SLUICE_CONFIG_KEYS", default_value = "")]
    pub config_keys: String,
}

/// The node: its roles, listener, state, the control plane it syncs with.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawNode {
    /// Comma-separated roles, or `all`. Default: `all`.
    #[arg(long, env = "SLUICE_ROLES", default_value = DEFAULT_ROLES)]
    pub roles: String,
    /// One HTTP listener for every role, health and metrics. Default: `127.0.0.1:8090`.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// Node id, last-known-good configuration. Default: `./sluice-data/node`.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// gRPC address of the control plane (`http://…` or `https://…`). Required.
    #[arg(long, env = "SLUICE_CONTROL_URL")]
    pub control_url: Option<String>,
    /// Service key of the data plane. Required.
    #[arg(long, env = "SLUICE_SERVICE_KEY", hide_env_values = true)]
    pub service_key: Option<String>,
    /// Name shown in the fleet. Default: the host name.
    #[arg(long, env = "SLUICE_NODE_NAME")]
    pub node_name: Option<String>,
    /// PEM CA certificate to trust for the control plane's TLS. Default: the system roots.
    #[arg(long, env = "SLUICE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Directory with one file per secret (file name = secret name), checked after the
    /// environment. Default: unset.
    #[arg(long, env = "SLUICE_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// How often the node reports status, in seconds. Default: 10.
    #[arg(long, env = "SLUICE_STATUS_INTERVAL_SECS", default_value_t = DEFAULT_STATUS_INTERVAL_SECS)]
    pub status_interval_secs: u64,
    /// How often the node sends a heartbeat, in seconds. Default: 15.
    #[arg(long, env = "SLUICE_HEARTBEAT_SECS", default_value_t = DEFAULT_HEARTBEAT_SECS)]
    pub heartbeat_secs: u64,
    /// Longest wait between reconnection attempts, in seconds. Default: 30.
    #[arg(long, env = "SLUICE_MAX_BACKOFF_SECS", default_value_t = DEFAULT_MAX_BACKOFF_SECS)]
    pub max_backoff_secs: u64,
    /// A MaxMind GeoIP2/GeoLite2 City database (`.mmdb`) for pipelines that enrich with
    /// `geoip`. Default: none (such pipelines are refused).
    #[arg(long, env = "SLUICE_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// The URL clients reach `http_addr` at (receiver, query), shown in the console's setup
    /// snippets and used by its archive page. Default: `http://<http_addr>` when that is a
    /// concrete address, else none.
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl Default for RawNode {
    fn default() -> Self {
        Self {
            roles: DEFAULT_ROLES.into(),
            http_addr: DEFAULT_HTTP_ADDR,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            control_url: None,
            service_key: None,
            node_name: None,
            ca_file: None,
            secrets_dir: None,
            status_interval_secs: DEFAULT_STATUS_INTERVAL_SECS,
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
            max_backoff_secs: DEFAULT_MAX_BACKOFF_SECS,
            geoip_db: None,
            public_url: None,
        }
    }
}

/// The bus between the roles: embedded (the default) or NATS JetStream.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawBus {
    /// NATS JetStream for the bus (`nats://…`; a cluster's servers comma-separated, so a node
    /// starts while any one of them is up); unset means the embedded bus in `state_dir/bus`.
    /// Default: unset.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Prefix of the NATS stream and subject names, so several data planes can share one
    /// server: lowercase letters, digits and `_`. Default: `sluice`.
    #[arg(long, env = "SLUICE_NATS_PREFIX", default_value = DEFAULT_NATS_PREFIX)]
    pub nats_prefix: String,
    /// Most bytes one fetch of the packed `raw` stage returns from NATS: smaller bounds the
    /// bursts a consumer takes in at once. At least 1,048,576 (the server's default
    /// `max_payload`). Default: 4,194,304 (4 MiB).
    #[arg(long, env = "SLUICE_NATS_FETCH_BYTES", default_value_t = DEFAULT_NATS_FETCH_BYTES)]
    pub nats_fetch_bytes: usize,
    /// Bytes each stage's NATS stream may hold before receivers answer 503; applied to
    /// streams an earlier start made too. At least 1,048,576. Default: 1,073,741,824 (1 GiB).
    #[arg(long, env = "SLUICE_NATS_MAX_BYTES", default_value_t = DEFAULT_NATS_MAX_BYTES)]
    pub nats_max_bytes: u64,
    /// Replicas of each NATS stream (3 on a three-node cluster, at most 5); applied to
    /// streams an earlier start made too. Default: 1.
    #[arg(long, env = "SLUICE_NATS_REPLICAS", default_value_t = DEFAULT_NATS_REPLICAS)]
    pub nats_replicas: usize,
    /// Packed publishes to the NATS `raw` stage that may await the server's acknowledgement
    /// at once; requests arriving meanwhile are stored together as one message, so under load
    /// the server stores one message per group of requests. 0 stores each request as its own
    /// message. At most 1,024. Default: 4.
    #[arg(long, env = "SLUICE_NATS_PACKS_IN_FLIGHT", default_value_t = DEFAULT_NATS_PACKS_IN_FLIGHT)]
    pub nats_packs_in_flight: usize,
    /// Unacknowledged bytes the embedded bus holds per stage before receivers answer 503.
    /// At least 1,048,576. Default: 268,435,456 (256 MiB).
    #[arg(long, env = "SLUICE_BUS_MAX_BYTES", default_value_t = DEFAULT_BUS_MAX_BYTES)]
    pub bus_max_bytes: u64,
}

impl Default for RawBus {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_prefix: DEFAULT_NATS_PREFIX.into(),
            nats_fetch_bytes: DEFAULT_NATS_FETCH_BYTES,
            nats_max_bytes: DEFAULT_NATS_MAX_BYTES,
            nats_replicas: DEFAULT_NATS_REPLICAS,
            nats_packs_in_flight: DEFAULT_NATS_PACKS_IN_FLIGHT,
            bus_max_bytes: DEFAULT_BUS_MAX_BYTES,
        }
    }
}

/// The proxy role: its public listener, receivers, cookie and spool.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawProxy {
    /// The proxy's public listener (browsers and SDKs); health and metrics stay on
    /// `http_addr`. Default: `127.0.0.1:8088`.
    #[arg(long, env = "SLUICE_PROXY_ADDR", default_value_t = DEFAULT_PROXY_ADDR)]
    pub proxy_addr: SocketAddr,
    /// Comma-separated base URLs of the receivers the proxy forwards to
    /// (`http://receiver-1:8090,http://receiver-2:8090`). Default: this node's own receiver
    /// when it runs that role.
    #[arg(long, env = "SLUICE_RECEIVER_URLS", default_value = DEFAULT_RECEIVER_URLS)]
    pub receiver_urls: String,
    /// Name of the first-party id cookie the proxy sets. Default: `sluice_id`.
    #[arg(long, env = "SLUICE_PROXY_COOKIE_NAME", default_value = DEFAULT_PROXY_COOKIE_NAME)]
    pub proxy_cookie_name: String,
    /// `Domain` of that cookie (e.g. `example.com`, to share it across subdomains).
    /// Default: unset (the proxy's own host).
    #[arg(long, env = "SLUICE_PROXY_COOKIE_DOMAIN")]
    pub proxy_cookie_domain: Option<String>,
    /// Take the client address from the left-most `X-Forwarded-For` entry (only behind a
    /// load balancer that sets it). Default: false.
    #[arg(long, env = "SLUICE_PROXY_TRUST_FORWARDED_FOR")]
    pub proxy_trust_forwarded_for: bool,
    /// Bytes the proxy's disk spool holds before it answers 503. Default: 268,435,456
    /// (256 MiB).
    #[arg(long, env = "SLUICE_SPOOL_MAX_BYTES", default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,
    /// The URL browsers reach the proxy at (`https://collect.example.com`), shown in the
    /// console's `sluice.js` snippet. Default: `http://<proxy_addr>` when that is a concrete
    /// address, else none.
    #[arg(long, env = "SLUICE_PROXY_PUBLIC_URL")]
    pub proxy_public_url: Option<String>,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            proxy_addr: DEFAULT_PROXY_ADDR,
            receiver_urls: DEFAULT_RECEIVER_URLS.into(),
            proxy_cookie_name: DEFAULT_PROXY_COOKIE_NAME.into(),
            proxy_cookie_domain: None,
            proxy_trust_forwarded_for: false,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            proxy_public_url: None,
        }
    }
}

/// The archive: where the archiver writes and the query role reads, and when files are written.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawArchive {
    /// The archive in a local directory. Default: `state_dir/archive` (when no S3 bucket or
    /// archive URL is set).
    #[arg(long, env = "SLUICE_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
    /// The archive at a `gs://…`, `az://…` or `s3://…` URL, credentials from the environment.
    /// Default: unset.
    #[arg(long, env = "SLUICE_ARCHIVE_URL")]
    pub archive_url: Option<String>,
    /// S3 bucket of the archive (`S3_BUCKET`). Default: unset (local directory).
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint, `http(s)://host:port` (`S3_ENDPOINT`); path-style addressing.
    /// Default: unset (AWS).
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// `S3_ACCESS_KEY`. Default: unset (the AWS credential chain).
    #[arg(long, env = "S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    /// `S3_SECRET_KEY`. Default: unset.
    #[arg(long, env = "S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// `S3_REGION`. Default: `us-east-1`.
    #[arg(long, env = "S3_REGION", default_value = DEFAULT_S3_REGION)]
    pub s3_region: String,
    /// Held event bytes that make the archiver write its files. Default: 134,217,728
    /// (128 MiB).
    #[arg(long, env = "SLUICE_ARCHIVE_FLUSH_BYTES", default_value_t = DEFAULT_ARCHIVE_FLUSH_BYTES)]
    pub archive_flush_bytes: u64,
    /// Age of the oldest held event that makes the archiver write, in seconds. Default: 60.
    #[arg(long, env = "SLUICE_ARCHIVE_FLUSH_SECS", default_value_t = DEFAULT_ARCHIVE_FLUSH_SECS)]
    pub archive_flush_secs: u64,
    /// Size compaction merges an hour's small files into, in bytes; files under half of it
    /// are small. Default: 134,217,728 (128 MiB).
    #[arg(long, env = "SLUICE_ARCHIVE_COMPACT_BYTES", default_value_t = DEFAULT_ARCHIVE_COMPACT_BYTES)]
    pub archive_compact_bytes: u64,
    /// How long after its hour ends a partition is compacted, in seconds (late and
    /// redelivered events of the hour arrive meanwhile). Default: 600.
    #[arg(long, env = "SLUICE_ARCHIVE_COMPACT_AFTER_SECS", default_value_t = DEFAULT_ARCHIVE_COMPACT_AFTER_SECS)]
    pub archive_compact_after_secs: u64,
    /// How often the archiver compacts, applies retention and finishes rewrites a crash cut
    /// short, in seconds. Default: 300.
    #[arg(long, env = "SLUICE_ARCHIVE_MAINTAIN_SECS", default_value_t = DEFAULT_ARCHIVE_MAINTAIN_SECS)]
    pub archive_maintain_secs: u64,
}

impl Default for RawArchive {
    fn default() -> Self {
        Self {
            archive_dir: None,
            archive_url: None,
            s3_bucket: None,
            s3_endpoint: None,
            s3_access_key: None,
            s3_secret_key: None,
            s3_region: DEFAULT_S3_REGION.into(),
            archive_flush_bytes: DEFAULT_ARCHIVE_FLUSH_BYTES,
            archive_flush_secs: DEFAULT_ARCHIVE_FLUSH_SECS,
            archive_compact_bytes: DEFAULT_ARCHIVE_COMPACT_BYTES,
            archive_compact_after_secs: DEFAULT_ARCHIVE_COMPACT_AFTER_SECS,
            archive_maintain_secs: DEFAULT_ARCHIVE_MAINTAIN_SECS,
        }
    }
}

/// The query role's limits.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawQuery {
    /// Longest a query may run, in seconds. Default: 30.
    #[arg(long, env = "SLUICE_QUERY_TIMEOUT_SECS", default_value_t = DEFAULT_QUERY_TIMEOUT_SECS)]
    pub query_timeout_secs: u64,
    /// Most rows a query may return. Default: 100,000.
    #[arg(long, env = "SLUICE_QUERY_MAX_ROWS", default_value_t = DEFAULT_QUERY_MAX_ROWS)]
    pub query_max_rows: usize,
    /// Memory a query may use for joins, sorts and aggregations, in bytes. Default:
    /// 268,435,456 (256 MiB).
    #[arg(long, env = "SLUICE_QUERY_MEMORY_BYTES", default_value_t = DEFAULT_QUERY_MEMORY_BYTES)]
    pub query_memory_bytes: usize,
    /// Parts a query's scan is split into and read at once. Default: 0, which picks the
    /// machine's cores for an archive on local disk and 32 (or the cores, if more) for an
    /// object store, whose reads wait on the network and the server, not on a core. At most 256.
    #[arg(long, env = "SLUICE_QUERY_PARTITIONS", default_value_t = DEFAULT_QUERY_PARTITIONS)]
    pub query_partitions: usize,
}

impl Default for RawQuery {
    fn default() -> Self {
        Self {
            query_timeout_secs: DEFAULT_QUERY_TIMEOUT_SECS,
            query_max_rows: DEFAULT_QUERY_MAX_ROWS,
            query_memory_bytes: DEFAULT_QUERY_MEMORY_BYTES,
            query_partitions: DEFAULT_QUERY_PARTITIONS,
        }
    }
}

/// The live inspector: how much of what passed through the node's stages it keeps.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawInspect {
    /// Stage records the inspector's ring keeps (an event leaves one per stage it passes:
    /// received, governed, and per destination its payload, each attempt and its outcome,
    /// then archived); the oldest go first. 0 turns the inspector off. Default: 20,000.
    #[arg(long, env = "SLUICE_INSPECT_RING_RECORDS", default_value_t = DEFAULT_INSPECT_RING_RECORDS)]
    pub inspect_ring_records: usize,
    /// Memory the ring's payloads and answers may hold, in bytes; the oldest records go first
    /// when it is reached. Default: 67,108,864 (64 MiB).
    #[arg(long, env = "SLUICE_INSPECT_RING_BYTES", default_value_t = DEFAULT_INSPECT_RING_BYTES)]
    pub inspect_ring_bytes: usize,
}

impl Default for RawInspect {
    fn default() -> Self {
        Self {
            inspect_ring_records: DEFAULT_INSPECT_RING_RECORDS,
            inspect_ring_bytes: DEFAULT_INSPECT_RING_BYTES,
        }
    }
}

/// The identity store: visitor profiles with their vendor ids, for pipelines with an
/// `identity` step. Identity data is event data: it stays on the data plane.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RawIdentity {
    /// `embedded` (a redb file in the state directory, for one node) or `nats` (JetStream
    /// key-value, shared by every node of the tenant). Default: `embedded`.
    #[arg(long, env = "SLUICE_IDENTITY_STORE", default_value = DEFAULT_IDENTITY_STORE)]
    pub identity_store: String,
    /// NATS for the `nats` identity store. Default: the bus's `nats_url`.
    #[arg(long, env = "SLUICE_IDENTITY_NATS_URL")]
    pub identity_nats_url: Option<String>,
    /// How long a profile, or a link to it, lives after it was last seen, in days (1 to 3650).
    /// Default: 400.
    #[arg(long, env = "SLUICE_IDENTITY_TTL_DAYS", default_value_t = DEFAULT_IDENTITY_TTL_DAYS)]
    pub identity_ttl_days: u32,
    /// Most entries (profiles and the links of anonymous and user ids to them) the tenant's
    /// store holds; past it, new visitors are not stored (their events still get the ids they
    /// carry). Default: 10,000,000.
    #[arg(long, env = "SLUICE_IDENTITY_MAX_ENTRIES", default_value_t = DEFAULT_IDENTITY_MAX_ENTRIES)]
    pub identity_max_entries: u64,
    /// Most anonymous ids one profile keeps (the oldest go). Default: 100.
    #[arg(long, env = "SLUICE_IDENTITY_MAX_ANONYMOUS_IDS", default_value_t = DEFAULT_IDENTITY_MAX_ANONYMOUS_IDS)]
    pub identity_max_anonymous_ids: usize,
    /// The secret that signs cross-domain handoff tokens, at least 32 bytes; every proxy of
    /// the tenant needs the same one. Default: a random one kept in the state directory
    /// (`handoff-key`), which suits one node.
    #[arg(long, env = "SLUICE_HANDOFF_SECRET", hide_env_values = true)]
    pub handoff_secret: Option<String>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            identity_store: DEFAULT_IDENTITY_STORE.into(),
            identity_nats_url: None,
            identity_ttl_days: DEFAULT_IDENTITY_TTL_DAYS,
            identity_max_entries: DEFAULT_IDENTITY_MAX_ENTRIES,
            identity_max_anonymous_ids: DEFAULT_IDENTITY_MAX_ANONYMOUS_IDS,
            handoff_secret: None,
        }
    }
}

/// Where visitor profiles are kept, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityStoreConfig {
    /// `state_dir/identity.redb`.
    Embedded,
    Nats {
        url: String,
        prefix: String,
        /// Replicas of its buckets (the bus's `nats_replicas`).
        replicas: usize,
    },
}

/// The identity store's settings, validated.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub store: IdentityStoreConfig,
    pub ttl: Duration,
    pub max_entries: u64,
    pub max_anonymous_ids: usize,
    /// `None`: the key kept in the state directory.
    pub handoff_secret: Option<Vec<u8>>,
}

/// The inspector's ring, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectConfig {
    /// 0 when the inspector is off.
    pub ring_records: usize,
    pub ring_bytes: usize,
}

pub const DEFAULT_ROLES: &str = "all";
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8090);
pub const DEFAULT_STATE_DIR: &str = "./sluice-data/node";
pub const DEFAULT_STATUS_INTERVAL_SECS: u64 = 10;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;
pub const DEFAULT_MAX_BACKOFF_SECS: u64 = 30;
pub const DEFAULT_NATS_PREFIX: &str = "sluice";
pub const DEFAULT_NATS_FETCH_BYTES: usize = sluice_bus::nats::DEFAULT_FETCH_BYTES;
pub const DEFAULT_NATS_MAX_BYTES: u64 = sluice_bus::nats::DEFAULT_MAX_BYTES;
pub const DEFAULT_NATS_REPLICAS: usize = 1;
pub const DEFAULT_NATS_PACKS_IN_FLIGHT: usize = sluice_bus::nats::DEFAULT_PACKS_IN_FLIGHT;
pub const DEFAULT_BUS_MAX_BYTES: u64 = sluice_bus::embedded::DEFAULT_MAX_BYTES;
pub const DEFAULT_PROXY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8088);
pub const DEFAULT_RECEIVER_URLS: &str = "";
pub const DEFAULT_PROXY_COOKIE_NAME: &str = "sluice_id";
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_S3_REGION: &str = "us-east-1";
pub const DEFAULT_ARCHIVE_FLUSH_BYTES: u64 = 128 * 1024 * 1024;
pub const DEFAULT_ARCHIVE_FLUSH_SECS: u64 = 60;
pub const DEFAULT_ARCHIVE_COMPACT_BYTES: u64 = 128 * 1024 * 1024;
pub const DEFAULT_ARCHIVE_COMPACT_AFTER_SECS: u64 = 600;
pub const DEFAULT_ARCHIVE_MAINTAIN_SECS: u64 = 300;
pub const DEFAULT_QUERY_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_QUERY_MAX_ROWS: usize = 100_000;
pub const DEFAULT_QUERY_MEMORY_BYTES: usize = 256 * 1024 * 1024;
pub const DEFAULT_QUERY_PARTITIONS: usize = 0;
pub const DEFAULT_INSPECT_RING_RECORDS: usize = 20_000;
pub const DEFAULT_INSPECT_RING_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_IDENTITY_STORE: &str = "embedded";
pub const DEFAULT_IDENTITY_TTL_DAYS: u32 = 400;
pub const DEFAULT_IDENTITY_MAX_ENTRIES: u64 = 10_000_000;
pub const DEFAULT_IDENTITY_MAX_ANONYMOUS_IDS: usize = 100;
/// The inspector's ring may not hold less than one full-size event per record it keeps.
const MIN_INSPECT_RING_BYTES: usize = 1024 * 1024;

/// Most scan partitions a query may be given: each holds buffers and a reader of its own.
const MAX_QUERY_PARTITIONS: usize = 256;

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

/// The bus between the roles, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusConfig {
    /// The embedded durable queue in `state_dir/bus`.
    Embedded {
        /// Unacknowledged bytes per stage before receivers answer 503.
        max_bytes: u64,
    },
    /// NATS JetStream.
    Nats {
        url: String,
        prefix: String,
        fetch_bytes: usize,
        max_bytes: u64,
        replicas: usize,
        packs_in_flight: usize,
    },
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
    pub bus: BusConfig,
    pub proxy: ProxyConfig,
    pub geoip_db: Option<PathBuf>,
    pub archiver: ArchiverConfig,
    pub query: sluice_query::Limits,
    pub inspect: InspectConfig,
    pub identity: IdentityConfig,
    pub policy: std::sync::Arc<crate::policy::Policy>,
    pub config_keys: Vec<crate::trust::TrustedKey>,
    /// Where clients reach this node, by role (reported to the control plane).
    pub urls: BTreeMap<Role, String>,
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
        let prefix_ok = !self.bus.nats_prefix.is_empty()
            && self.bus.nats_prefix.len() <= 64
            && self
                .bus
                .nats_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !prefix_ok {
            return Err(invalid(
                "nats_prefix",
                "1 to 64 lowercase letters, digits and _",
            ));
        }
        if self.bus.nats_fetch_bytes < sluice_bus::nats::MIN_FETCH_BYTES {
            return Err(invalid(
                "nats_fetch_bytes",
                format!(
                    "at least {} bytes, so any one message fits",
                    sluice_bus::nats::MIN_FETCH_BYTES
                ),
            ));
        }
        if self.bus.nats_max_bytes < sluice_bus::nats::MIN_FETCH_BYTES as u64
            || self.bus.nats_max_bytes > i64::MAX as u64
        {
            return Err(invalid(
                "nats_max_bytes",
                format!(
                    "at least {} bytes, so any one message fits",
                    sluice_bus::nats::MIN_FETCH_BYTES
                ),
            ));
        }
        if !(1..=sluice_bus::nats::MAX_REPLICAS).contains(&self.bus.nats_replicas) {
            return Err(invalid(
                "nats_replicas",
                format!("1 to {}", sluice_bus::nats::MAX_REPLICAS),
            ));
        }
        if self.bus.nats_packs_in_flight > sluice_bus::nats::MAX_PACKS_IN_FLIGHT {
            return Err(invalid(
                "nats_packs_in_flight",
                format!("0 to {}", sluice_bus::nats::MAX_PACKS_IN_FLIGHT),
            ));
        }
        if self.bus.bus_max_bytes < sluice_bus::embedded::MIN_MAX_BYTES {
            return Err(invalid(
                "bus_max_bytes",
                format!(
                    "at least {} bytes, so a full batch request fits",
                    sluice_bus::embedded::MIN_MAX_BYTES
                ),
            ));
        }
        if self.query.query_partitions > MAX_QUERY_PARTITIONS {
            return Err(invalid(
                "query_partitions",
                format!("at most {MAX_QUERY_PARTITIONS} (0 picks a default)"),
            ));
        }
        for (field, value) in [
            ("query_timeout_secs", self.query.query_timeout_secs as usize),
            ("query_max_rows", self.query.query_max_rows),
            ("query_memory_bytes", self.query.query_memory_bytes),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        let query = sluice_query::Limits {
            timeout: Duration::from_secs(self.query.query_timeout_secs),
            max_rows: self.query.query_max_rows,
            memory_bytes: self.query.query_memory_bytes,
            partitions: match self.query.query_partitions {
                0 if archiver.store.is_local() => sluice_query::cores(),
                0 => sluice_query::remote_partitions(),
                n => n,
            },
            pushdown_filters: true,
        };
        if self.inspect.inspect_ring_records > 0
            && self.inspect.inspect_ring_bytes < MIN_INSPECT_RING_BYTES
        {
            return Err(invalid(
                "inspect_ring_bytes",
                format!(
                    "at least {MIN_INSPECT_RING_BYTES} bytes (or turn the inspector off with inspect_ring_records = 0)"
                ),
            ));
        }
        let inspect = InspectConfig {
            ring_records: self.inspect.inspect_ring_records,
            ring_bytes: self.inspect.inspect_ring_bytes,
        };
        let proxy = self.proxy_config(&roles)?;
        let urls = self.advertised_urls(&roles)?;
        let identity = self.identity_config()?;
        let policy = crate::policy::Policy::parse(
            &self.policy.policy_allow_hosts,
            &self.policy.policy_destination_kinds,
            &self.policy.policy_secrets,
            &self.policy.policy_query_origins,
        )
        .map_err(|e| invalid("policy", e))?;
        let config_keys = crate::trust::parse_keys(&self.policy.config_keys)
            .map_err(|e| invalid("config_keys", e))?;
        let control_url = self
            .node
            .control_url
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
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
        let service_key = self
            .node
            .service_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
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
            .node
            .node_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(host_name);
        if node_name.len() > 200 || node_name.chars().any(char::is_control) {
            return Err(invalid("node_name", "at most 200 printable characters"));
        }
        for (field, value) in [
            ("status_interval_secs", self.node.status_interval_secs),
            ("heartbeat_secs", self.node.heartbeat_secs),
            ("max_backoff_secs", self.node.max_backoff_secs),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        Ok(Config {
            archiver,
            query,
            inspect,
            identity,
            policy: std::sync::Arc::new(policy),
            config_keys,
            proxy,
            urls,
            geoip_db: self.node.geoip_db,
            roles,
            http_addr: self.node.http_addr,
            state_dir: self.node.state_dir,
            control_url,
            service_key,
            node_name,
            ca_file: self.node.ca_file,
            secrets_dir: self.node.secrets_dir,
            status_interval: Duration::from_secs(self.node.status_interval_secs),
            heartbeat: Duration::from_secs(self.node.heartbeat_secs),
            max_backoff: Duration::from_secs(self.node.max_backoff_secs),
            bus: match self.bus.nats_url.filter(|u| !u.trim().is_empty()) {
                Some(url) => BusConfig::Nats {
                    url,
                    prefix: self.bus.nats_prefix,
                    fetch_bytes: self.bus.nats_fetch_bytes,
                    max_bytes: self.bus.nats_max_bytes,
                    replicas: self.bus.nats_replicas,
                    packs_in_flight: self.bus.nats_packs_in_flight,
                },
                None => BusConfig::Embedded {
                    max_bytes: self.bus.bus_max_bytes,
                },
            },
        })
    }
}

/// `http://<addr>` for a listener clients could reach as written: not 0.0.0.0 or `::`, and
/// not port 0 (picked by the system when it binds).
fn listener_url(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_unspecified() && addr.port() != 0).then(|| format!("http://{addr}"))
}

/// An advertised URL as given: `http(s)://host[:port]`, with no trailing slash.
fn advertised(field: &'static str, url: &Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(url) = url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(field, "must start with http:// or https://"))?;
    if rest.is_empty()
        || url.len() > 300
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(field, "a URL such as https://collect.example.com"));
    }
    Ok(Some(url.trim_end_matches('/').to_owned()))
}

impl RawConfig {
    fn identity_config(&self) -> Result<IdentityConfig, ConfigError> {
        let raw = &self.identity;
        let store = match raw.identity_store.as_str() {
            "embedded" => IdentityStoreConfig::Embedded,
            "nats" => {
                let url = raw
                    .identity_nats_url
                    .clone()
                    .or_else(|| self.bus.nats_url.clone())
                    .filter(|u| !u.trim().is_empty())
                    .ok_or_else(|| {
                        invalid(
                            "identity_nats_url",
                            "the nats identity store needs SLUICE_IDENTITY_NATS_URL or the bus's SLUICE_NATS_URL",
                        )
                    })?;
                IdentityStoreConfig::Nats {
                    url,
                    prefix: self.bus.nats_prefix.clone(),
                    replicas: self.bus.nats_replicas,
                }
            }
            _ => return Err(invalid("identity_store", "embedded or nats")),
        };
        if !(1..=3650).contains(&raw.identity_ttl_days) {
            return Err(invalid("identity_ttl_days", "between 1 and 3650"));
        }
        if raw.identity_max_entries == 0 {
            return Err(invalid("identity_max_entries", "must be positive"));
        }
        if !(1..=10_000).contains(&raw.identity_max_anonymous_ids) {
            return Err(invalid("identity_max_anonymous_ids", "between 1 and 10000"));
        }
        let handoff_secret = match raw.handoff_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(secret) if secret.len() < 32 => {
                return Err(invalid(
                    "handoff_secret",
                    "at least 32 bytes (e.g. openssl rand -hex 32)",
                ));
            }
            Some(secret) => Some(secret.as_bytes().to_vec()),
            None => None,
        };
        Ok(IdentityConfig {
            store,
            ttl: Duration::from_secs(u64::from(raw.identity_ttl_days) * 24 * 3600),
            max_entries: raw.identity_max_entries,
            max_anonymous_ids: raw.identity_max_anonymous_ids,
            handoff_secret,
        })
    }

    fn advertised_urls(&self, roles: &[Role]) -> Result<BTreeMap<Role, String>, ConfigError> {
        let http = advertised("public_url", &self.node.public_url)?
            .or_else(|| listener_url(self.node.http_addr));
        let proxy = advertised("proxy_public_url", &self.proxy.proxy_public_url)?
            .or_else(|| listener_url(self.proxy.proxy_addr));
        let mut urls = BTreeMap::new();
        for role in roles {
            let url = match role {
                Role::Receiver | Role::Query => http.clone(),
                Role::Proxy => proxy.clone(),
                _ => None,
            };
            if let Some(url) = url {
                urls.insert(*role, url);
            }
        }
        Ok(urls)
    }

    fn archiver_config(&self) -> Result<ArchiverConfig, ConfigError> {
        use sluice_archive::store::StoreConfig;
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let store = match (set(&self.archive.s3_bucket), set(&self.archive.archive_url)) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "s3_bucket",
                    "set either S3_BUCKET or SLUICE_ARCHIVE_URL, not both",
                ));
            }
            (Some(bucket), None) => {
                let endpoint = set(&self.archive.s3_endpoint);
                if let Some(e) = &endpoint
                    && !(e.starts_with("http://") || e.starts_with("https://"))
                {
                    return Err(invalid(
                        "s3_endpoint",
                        "must start with http:// or https://",
                    ));
                }
                let (key, secret) = (
                    set(&self.archive.s3_access_key),
                    set(&self.archive.s3_secret_key),
                );
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
                    region: self.archive.s3_region.clone(),
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
                if set(&self.archive.s3_endpoint).is_some() {
                    return Err(invalid(
                        "s3_bucket",
                        "S3_ENDPOINT is set: set S3_BUCKET too",
                    ));
                }
                StoreConfig::Local(
                    self.archive
                        .archive_dir
                        .clone()
                        .unwrap_or_else(|| self.node.state_dir.join("archive")),
                )
            }
        };
        for (field, value) in [
            ("archive_flush_bytes", self.archive.archive_flush_bytes),
            ("archive_flush_secs", self.archive.archive_flush_secs),
            ("archive_compact_bytes", self.archive.archive_compact_bytes),
            ("archive_maintain_secs", self.archive.archive_maintain_secs),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        Ok(ArchiverConfig {
            store,
            flush_bytes: self.archive.archive_flush_bytes,
            flush_age: Duration::from_secs(self.archive.archive_flush_secs),
            compact_bytes: self.archive.archive_compact_bytes,
            compact_after: Duration::from_secs(self.archive.archive_compact_after_secs),
            maintain_every: Duration::from_secs(self.archive.archive_maintain_secs),
        })
    }

    fn roles(&self) -> Result<Vec<Role>, ConfigError> {
        let roles = Role::parse_list(&self.node.roles)
            .map_err(|e| invalid("roles", format!("{e}, or all")))?;
        if roles.is_empty() {
            return Err(invalid("roles", "name at least one role, or all"));
        }
        Ok(roles)
    }

    fn proxy_config(&self, roles: &[Role]) -> Result<ProxyConfig, ConfigError> {
        let mut receiver_urls = Vec::new();
        for url in self
            .proxy
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
        let cookie_name = self.proxy.proxy_cookie_name.trim();
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
            .proxy
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
        if self.proxy.spool_max_bytes < sluice_bus::embedded::MIN_MAX_BYTES {
            return Err(invalid(
                "spool_max_bytes",
                format!(
                    "at least {} bytes, so a full batch request fits",
                    sluice_bus::embedded::MIN_MAX_BYTES
                ),
            ));
        }
        if runs_proxy
            && self.proxy.proxy_addr == self.node.http_addr
            && self.node.http_addr.port() != 0
        {
            return Err(invalid(
                "proxy_addr",
                "the proxy's public listener needs its own address (not http_addr)",
            ));
        }
        Ok(ProxyConfig {
            addr: self.proxy.proxy_addr,
            receiver_urls,
            cookie_name: cookie_name.to_owned(),
            cookie_domain: cookie_domain.map(str::to_owned),
            trust_forwarded_for: self.proxy.proxy_trust_forwarded_for,
            spool_max_bytes: self.proxy.spool_max_bytes,
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
    /// Target size of compacted files.
    pub compact_bytes: u64,
    /// How long after its hour a partition is compacted.
    pub compact_after: std::time::Duration,
    /// How often compaction, retention and clean-up run.
    pub maintain_every: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_urls_follow_roles_settings_and_listeners() {
        let mut r = raw();
        r.node.roles = "receiver,proxy,query,processor".into();
        r.node.http_addr = "127.0.0.1:9000".parse().expect("test value");
        r.proxy.proxy_addr = "0.0.0.0:8088".parse().expect("test value");
        let urls = r.clone().validate().expect("valid").urls;
        assert_eq!(
            urls.get(&Role::Receiver).map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(urls.get(&Role::Query), urls.get(&Role::Receiver));
        assert_eq!(
            urls.get(&Role::Proxy),
            None,
            "0.0.0.0 is not an address to give out"
        );
        assert_eq!(urls.get(&Role::Processor), None);
        r.node.public_url = Some("https://in.example.com/".into());
        r.proxy.proxy_public_url = Some("https://collect.example.com".into());
        let urls = r.clone().validate().expect("valid").urls;
        assert_eq!(urls[&Role::Receiver], "https://in.example.com");
        assert_eq!(urls[&Role::Proxy], "https://collect.example.com");
        r.node.public_url = Some("ftp://x".into());
        assert_eq!(r.validate().expect_err("refused").field, "public_url");
    }

    #[test]
    fn each_refusal_names_its_own_field_and_nothing_is_clamped() {
        let cases: Vec<(RawConfig, &str)> = vec![
            (
                {
                    let mut raw = raw();
                    raw.query.query_max_rows = 0;
                    raw
                },
                "query_max_rows",
            ),
            (
                {
                    let mut raw = raw();
                    raw.query.query_memory_bytes = 0;
                    raw
                },
                "query_memory_bytes",
            ),
            (
                {
                    let mut raw = raw();
                    raw.query.query_timeout_secs = 0;
                    raw
                },
                "query_timeout_secs",
            ),
            (
                {
                    let mut raw = raw();
                    raw.archive.archive_flush_secs = 0;
                    raw
                },
                "archive_flush_secs",
            ),
            (
                {
                    let mut raw = raw();
                    raw.archive.archive_flush_bytes = 0;
                    raw
                },
                "archive_flush_bytes",
            ),
            (
                {
                    let mut raw = raw();
                    raw.node.heartbeat_secs = 0;
                    raw
                },
                "heartbeat_secs",
            ),
            (
                {
                    let mut raw = raw();
                    raw.node.max_backoff_secs = 0;
                    raw
                },
                "max_backoff_secs",
            ),
            (
                {
                    let mut raw = raw();
                    raw.node.status_interval_secs = 0;
                    raw
                },
                "status_interval_secs",
            ),
            (
                {
                    let mut raw = raw();
                    raw.proxy.spool_max_bytes = 1000;
                    raw
                },
                "spool_max_bytes",
            ),
            (
                {
                    let mut raw = raw();
                    raw.bus.bus_max_bytes = 1000;
                    raw
                },
                "bus_max_bytes",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        let config = {
            let mut raw = raw();
            raw.proxy.spool_max_bytes = 2 * 1024 * 1024;
            raw.bus.bus_max_bytes = 3 * 1024 * 1024;
            raw
        }
        .validate()
        .expect("valid");
        assert_eq!(config.proxy.spool_max_bytes, 2 * 1024 * 1024);
        assert_eq!(
            config.bus,
            BusConfig::Embedded {
                max_bytes: 3 * 1024 * 1024
            }
        );
    }

    /// The NATS settings a configuration runs with.
    fn nats(config: &Config) -> (usize, u64, usize, usize) {
        match &config.bus {
            BusConfig::Nats {
                fetch_bytes,
                max_bytes,
                replicas,
                packs_in_flight,
                ..
            } => (*fetch_bytes, *max_bytes, *replicas, *packs_in_flight),
            BusConfig::Embedded { .. } => panic!("embedded bus: {:?}", config.bus),
        }
    }

    fn nats_raw() -> RawConfig {
        let mut raw = raw();
        raw.bus.nats_url = Some("nats://127.0.0.1:4222".into());
        raw
    }

    fn raw() -> RawConfig {
        let key = sluice_keys::generate_key(sluice_keys::KeyType::Service).expect("key");
        {
            let mut raw = RawConfig::default();
            raw.node.roles = "receiver,processor".into();
            raw.node.control_url = Some("http://127.0.0.1:8081".into());
            raw.node.service_key = Some(key.expose().to_owned());
            raw
        }
    }

    #[test]
    fn a_proxy_needs_receivers_and_a_valid_cookie() {
        let alone = {
            let mut raw = raw();
            raw.node.roles = "proxy".into();
            raw
        };
        let err = alone.clone().validate().expect_err("no receivers");
        assert!(err.to_string().contains("SLUICE_RECEIVER_URLS"), "{err}");
        let config = {
            let mut raw = alone.clone();
            raw.proxy.receiver_urls = " http://r1:8090/, https://r2 ".into();
            raw
        }
        .validate()
        .expect("valid");
        assert_eq!(config.proxy.receiver_urls, ["http://r1:8090", "https://r2"]);
        assert!(
            {
                let mut raw = alone.clone();
                raw.proxy.receiver_urls = "r1:8090".into();
                raw
            }
            .validate()
            .is_err()
        );
        assert!(
            {
                let mut raw = alone;
                raw.proxy.proxy_cookie_name = "bad name".into();
                raw.node.roles = "all".into();
                raw
            }
            .validate()
            .is_err()
        );
        let with_receiver = {
            let mut raw = raw();
            raw.node.roles = "proxy,receiver".into();
            raw
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
        let s3 = {
            let mut raw = raw();
            raw.archive.s3_bucket = Some("events".into());
            raw.archive.s3_endpoint = Some("http://127.0.0.1:9000".into());
            raw
        };
        let remote = s3.clone().validate().expect("valid");
        assert_eq!(remote.query.partitions, sluice_query::remote_partitions());
        assert!(remote.query.partitions > local.query.partitions);
        let file_url = {
            let mut raw = raw();
            raw.archive.archive_url = Some("file:///var/lib/sluice/archive".into());
            raw
        };
        assert_eq!(
            file_url.validate().expect("valid").query.partitions,
            sluice_query::cores()
        );
        let set = {
            let mut raw = s3;
            raw.query.query_partitions = 3;
            raw
        };
        assert_eq!(set.clone().validate().expect("valid").query.partitions, 3);
        let too_many = {
            let mut raw = set;
            raw.query.query_partitions = 257;
            raw
        };
        assert!(too_many.validate().is_err());
    }

    #[test]
    fn a_nats_fetch_must_fit_one_message() {
        let config = nats_raw().validate().expect("valid");
        assert_eq!(nats(&config).0, 4 * 1024 * 1024);
        let small = {
            let mut raw = nats_raw();
            raw.bus.nats_fetch_bytes = 1024 * 1024 - 1;
            raw
        };
        let error = small
            .validate()
            .expect_err("below the server's max_payload");
        assert_eq!(error.field, "nats_fetch_bytes");
        let least = {
            let mut raw = nats_raw();
            raw.bus.nats_fetch_bytes = 1024 * 1024;
            raw
        };
        assert_eq!(nats(&least.validate().expect("valid")).0, 1024 * 1024);
    }

    #[test]
    fn nats_stream_limits_are_checked() {
        let config = nats_raw().validate().expect("valid");
        assert_eq!(nats(&config).1, 1 << 30);
        assert_eq!(nats(&config).2, 1);
        assert_eq!(nats(&config).3, 4);
        for (bad, field) in [
            (
                {
                    let mut raw = nats_raw();
                    raw.bus.nats_max_bytes = 1024 * 1024 - 1;
                    raw
                },
                "nats_max_bytes",
            ),
            (
                {
                    let mut raw = nats_raw();
                    raw.bus.nats_max_bytes = u64::MAX;
                    raw
                },
                "nats_max_bytes",
            ),
            (
                {
                    let mut raw = nats_raw();
                    raw.bus.nats_replicas = 0;
                    raw
                },
                "nats_replicas",
            ),
            (
                {
                    let mut raw = nats_raw();
                    raw.bus.nats_replicas = 6;
                    raw
                },
                "nats_replicas",
            ),
            (
                {
                    let mut raw = nats_raw();
                    raw.bus.nats_packs_in_flight = 1025;
                    raw
                },
                "nats_packs_in_flight",
            ),
        ] {
            assert_eq!(bad.validate().expect_err("out of range").field, field);
        }
        let set = {
            let mut raw = nats_raw();
            raw.bus.nats_max_bytes = 1024 * 1024;
            raw.bus.nats_replicas = 3;
            raw.bus.nats_packs_in_flight = 0;
            raw
        }
        .validate()
        .expect("valid");
        assert_eq!((nats(&set).1, nats(&set).2), (1024 * 1024, 3));
        assert_eq!(nats(&set).3, 0, "0 turns packing across calls off");
    }

    #[test]
    fn the_embedded_bus_must_hold_a_full_batch() {
        assert_eq!(
            raw().validate().expect("valid").bus,
            BusConfig::Embedded {
                max_bytes: 256 * 1024 * 1024
            }
        );
        let small = {
            let mut raw = raw();
            raw.bus.bus_max_bytes = 1024 * 1024 - 1;
            raw
        };
        assert_eq!(
            small.validate().expect_err("too small").field,
            "bus_max_bytes"
        );
        let least = {
            let mut raw = raw();
            raw.bus.bus_max_bytes = 1024 * 1024;
            raw
        };
        assert!(least.validate().is_ok());
    }

    #[test]
    fn all_means_every_role_and_lists_are_checked() {
        let all = {
            let mut raw = raw();
            raw.node.roles = "all".into();
            raw
        };
        assert_eq!(all.validate().expect("valid").roles.len(), Role::ALL.len());
        let config = {
            let mut raw = raw();
            raw.node.roles = "receiver, processor,receiver".into();
            raw
        }
        .validate()
        .expect("valid");
        assert_eq!(config.roles, vec![Role::Receiver, Role::Processor]);
        assert!(
            {
                let mut raw = raw();
                raw.node.roles = "receiver,router".into();
                raw
            }
            .validate()
            .is_err()
        );
        assert!(
            {
                let mut raw = raw();
                raw.node.roles = " , ".into();
                raw
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_control_plane_and_a_service_key_are_required() {
        assert!(
            {
                let mut raw = raw();
                raw.node.control_url = None;
                raw
            }
            .validate()
            .is_err()
        );
        assert!(
            {
                let mut raw = raw();
                raw.node.control_url = Some("127.0.0.1:8081".into());
                raw
            }
            .validate()
            .is_err()
        );
        assert!(
            {
                let mut raw = raw();
                raw.node.service_key = None;
                raw
            }
            .validate()
            .is_err()
        );
        assert!(
            {
                let mut raw = raw();
                raw.node.service_key = Some("slk_svc_nope".into());
                raw
            }
            .validate()
            .is_err()
        );
        let api = sluice_keys::generate_key(sluice_keys::KeyType::Api).expect("key");
        let err = {
            let mut raw = raw();
            raw.node.service_key = Some(api.expose().to_owned());
            raw
        }
        .validate()
        .expect_err("api key");
        assert!(err.to_string().contains("not a service key"));
    }
}
