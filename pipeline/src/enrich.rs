//! Enrichment: what can be derived from an event. The parsers and the session table belong to
//! the node (they outlive configuration changes); the pipeline only says which to use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Distinct user agents remembered; the table is cleared when full (user agents repeat a
/// lot, so a simple bound beats an LRU's bookkeeping).
const UA_CACHE: usize = 10_000;
/// Visitors whose session is remembered; the oldest half is forgotten when full.
const SESSIONS: usize = 100_000;

/// A MaxMind (GeoIP2/GeoLite2) database, loaded in memory.
pub struct GeoIp(maxminddb::Reader<Vec<u8>>);

impl GeoIp {
    pub fn open(path: &Path) -> Result<Self, String> {
        maxminddb::Reader::open_readfile(path)
            .map(Self)
            .map_err(|e| format!("cannot read the GeoIP database {}: {e}", path.display()))
    }

    /// Country, region and city of an address, as far as the database knows.
    fn locate(&self, ip: IpAddr) -> Option<Value> {
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow, default)]
            iso_code: Option<&'a str>,
            #[serde(borrow, default)]
            names: Option<HashMap<&'a str, &'a str>>,
        }
        #[derive(Deserialize)]
        struct City<'a> {
            #[serde(borrow, default)]
            country: Option<Named<'a>>,
            #[serde(borrow, default)]
            subdivisions: Option<Vec<Named<'a>>>,
            #[serde(borrow, default)]
            city: Option<Named<'a>>,
        }
        let found = self.0.lookup(ip).ok()?;
        let city: City<'_> = found.decode().ok()??;
        let mut geo = Map::new();
        if let Some(code) = city.country.as_ref().and_then(|c| c.iso_code) {
            geo.insert("country".into(), json!(code));
        }
        if let Some(code) = city
            .subdivisions
            .as_ref()
            .and_then(|s| s.first())
            .and_then(|s| s.iso_code)
        {
            geo.insert("region".into(), json!(code));
        }
        if let Some(name) = city
            .city
            .as_ref()
            .and_then(|c| c.names.as_ref())
            .and_then(|n| n.get("en"))
        {
            geo.insert("city".into(), json!(name));
        }
        (!geo.is_empty()).then_some(Value::Object(geo))
    }
}

/// The node's enrichment resources.
pub struct Enricher {
    ua: woothee::parser::Parser,
    // foldhash, not SipHash: hashing a user agent per event showed in the profile; its seed
    // is random per process, so a client cannot aim collisions at the table.
    ua_cache: Mutex<HashMap<String, Value, foldhash::fast::RandomState>>,
    sessions: Mutex<HashMap<String, (String, i64), foldhash::fast::RandomState>>,
    pub geoip: Option<Arc<GeoIp>>,
    /// The node's identity store, for pipelines with an `identity` step.
    pub identities: Option<Arc<sluice_identity::Identities>>,
}

impl Enricher {
    pub fn new(geoip: Option<Arc<GeoIp>>) -> Self {
        Self {
            ua: woothee::parser::Parser::new(),
            ua_cache: Mutex::default(),
            sessions: Mutex::default(),
            geoip,
            identities: None,
        }
    }

    /// With the node's identity store.
    pub fn with_identities(mut self, identities: Arc<sluice_identity::Identities>) -> Self {
        self.identities = Some(identities);
        self
    }

    fn user_agent(&self, text: &str) -> Option<Value> {
        if let Some(found) = self
            .ua_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
        {
            return Some(found.clone());
        }
        let parsed = self.ua.parse(text)?;
        let known = |s: &str| (s != "UNKNOWN" && !s.is_empty()).then(|| s.to_owned());
        let value = json!({
            "browser": known(parsed.name),
            "version": known(parsed.version),
            "os": known(parsed.os),
            "os_version": known(&parsed.os_version),
            "category": known(parsed.category),
            "vendor": known(parsed.vendor),
        });
        let mut cache = self.ua_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= UA_CACHE {
            cache.clear();
        }
        cache.insert(text.to_owned(), value.clone());
        Some(value)
    }

    /// The visitor's session id at `at_ms`: the same while they are active, a new one after
    /// `timeout_ms` of quiet.
    fn session(&self, visitor: &str, at_ms: i64, timeout_ms: i64) -> String {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, last)) = sessions.get_mut(visitor)
            && at_ms - *last < timeout_ms
        {
            *last = (*last).max(at_ms);
            return id.clone();
        }
        if sessions.len() >= SESSIONS {
            let mut seen: Vec<i64> = sessions.values().map(|(_, last)| *last).collect();
            let (_, median, _) = seen.select_nth_unstable(SESSIONS / 2);
            let median = *median;
            sessions.retain(|_, (_, last)| *last > median);
        }
        let id = uuid::Uuid::now_v7().to_string();
        sessions.insert(visitor.to_owned(), (id.clone(), at_ms));
        id
    }

    /// Runs one `enrich` step.
    pub fn apply(
        &self,
        event: &mut Map<String, Value>,
        user_agent: bool,
        truncate_ip: bool,
        geoip: bool,
        session_timeout_minutes: Option<u32>,
    ) {
        let session = session_timeout_minutes.and_then(|minutes| {
            let visitor = ["user_id", "anonymous_id"]
                .into_iter()
                .find_map(|f| event.get(f).and_then(Value::as_str))?;
            let at_ms = event
                .get("received_at")
                .and_then(Value::as_str)
                .and_then(crate::time::parse_rfc3339_ms)?;
            Some(self.session(visitor, at_ms, i64::from(minutes) * 60_000))
        });
        // Looked up before inserting: `entry` would allocate the key on every event.
        if !event.contains_key("context") {
            event.insert("context".into(), Value::Object(Map::new()));
        }
        let Some(Value::Object(context)) = event.get_mut("context") else {
            return;
        };
        if user_agent
            && let Some(parsed) = context
                .get("userAgent")
                .and_then(Value::as_str)
                .and_then(|ua| self.user_agent(ua))
        {
            context.insert("user_agent".into(), parsed);
        }
        let ip = context
            .get("ip")
            .and_then(Value::as_str)
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        if geoip
            && let (Some(ip), Some(db)) = (ip, &self.geoip)
            && let Some(geo) = db.locate(ip)
        {
            context.insert("geo".into(), geo);
        }
        if truncate_ip && let Some(ip) = ip {
            context.insert("ip".into(), Value::String(truncate(ip).to_string()));
        }
        if let Some(id) = session {
            context.insert("session_id".into(), Value::String(id));
        }
    }
}

/// The /24 of an IPv4 address, the /48 of an IPv6 one.
fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[3..].fill(0);
            IpAddr::from(segments)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn event(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    #[test]
    fn user_agents_are_parsed_and_ips_truncated() {
        let enricher = Enricher::new(None);
        let mut e = event(
            json!({"anonymous_id": "a", "received_at": "2026-11-22T12:00:00.000Z",
            "context": {"ip": "203.0.113.77", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"}}),
        );
        enricher.apply(&mut e, true, true, false, None);
        assert_eq!(e["context"]["ip"], "203.0.113.0");
        assert_eq!(e["context"]["user_agent"]["browser"], "Chrome");
        assert_eq!(e["context"]["user_agent"]["os"], "Linux");
        assert_eq!(
            truncate("2001:db8:1234:5678::1".parse().expect("ip")).to_string(),
            "2001:db8:1234::"
        );
    }

    #[test]
    fn sessions_last_while_the_visitor_is_active() {
        let enricher = Enricher::new(None);
        let at = |visitor: &str, time: &str| {
            let mut e = event(json!({"anonymous_id": visitor, "received_at": time}));
            enricher.apply(&mut e, false, false, false, Some(30));
            e["context"]["session_id"]
                .as_str()
                .expect("session")
                .to_owned()
        };
        let first = at("a", "2026-11-22T12:00:00Z");
        assert_eq!(at("a", "2026-11-22T12:20:00Z"), first);
        assert_eq!(
            at("a", "2026-11-22T12:45:00Z"),
            first,
            "20 minutes after the last"
        );
        assert_ne!(at("b", "2026-11-22T12:45:00Z"), first, "per visitor");
        assert_ne!(
            at("a", "2026-11-22T13:30:00Z"),
            first,
            "45 minutes of quiet"
        );
    }

    /// Writes a MaxMind DB (IPv4, 24-bit records) that maps one /24 to a record with a
    /// country, a subdivision and a city, as GeoIP2 City databases do.
    pub(crate) fn write_test_mmdb(path: &Path, network: [u8; 3]) {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.push((2 << 5) | u8::try_from(s.len()).expect("short"));
            out.extend_from_slice(s.as_bytes());
        }
        fn map(out: &mut Vec<u8>, pairs: usize) {
            out.push((7 << 5) | u8::try_from(pairs).expect("few"));
        }
        fn uint(out: &mut Vec<u8>, kind: u8, value: u64, bytes: usize) {
            let be = value.to_be_bytes();
            let size = u8::try_from(bytes).expect("small");
            if kind <= 7 {
                out.push((kind << 5) | size);
            } else {
                out.push(size);
                out.push(kind - 7);
            }
            out.extend_from_slice(&be[8 - bytes..]);
        }
        let mut data = Vec::new();
        map(&mut data, 3);
        string(&mut data, "country");
        map(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, "NO");
        string(&mut data, "subdivisions");
        data.push(1); // an array (extended type 11) of one
        data.push(11 - 7);
        map(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, "03");
        string(&mut data, "city");
        map(&mut data, 1);
        string(&mut data, "names");
        map(&mut data, 1);
        string(&mut data, "en");
        string(&mut data, "Oslo");

        let depth = 24u32;
        let node_count = depth;
        let mut tree = Vec::new();
        let bits: Vec<u8> = network
            .iter()
            .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1))
            .collect();
        for (level, bit) in bits.iter().enumerate() {
            let level = u32::try_from(level).expect("small");
            let next = if level + 1 == depth {
                node_count + 16 // the data section's first record
            } else {
                level + 1
            };
            let (left, right) = if *bit == 0 {
                (next, node_count)
            } else {
                (node_count, next)
            };
            tree.extend_from_slice(&left.to_be_bytes()[1..]);
            tree.extend_from_slice(&right.to_be_bytes()[1..]);
        }
        let mut file = tree;
        file.extend_from_slice(&[0; 16]);
        file.extend_from_slice(&data);
        file.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let mut meta = Vec::new();
        map(&mut meta, 9);
        string(&mut meta, "description");
        map(&mut meta, 1);
        string(&mut meta, "en");
        string(&mut meta, "Sluice test database");
        string(&mut meta, "node_count");
        uint(&mut meta, 6, u64::from(node_count), 4);
        string(&mut meta, "record_size");
        uint(&mut meta, 5, 24, 2);
        string(&mut meta, "ip_version");
        uint(&mut meta, 5, 4, 2);
        string(&mut meta, "database_type");
        string(&mut meta, "Sluice-Test-City");
        string(&mut meta, "languages");
        meta.push(1);
        meta.push(11 - 7);
        string(&mut meta, "en");
        string(&mut meta, "binary_format_major_version");
        uint(&mut meta, 5, 2, 2);
        string(&mut meta, "binary_format_minor_version");
        uint(&mut meta, 5, 0, 2);
        string(&mut meta, "build_epoch");
        uint(&mut meta, 9, 1_795_000_000, 8);
        file.extend_from_slice(&meta);
        std::fs::write(path, file).expect("write mmdb");
    }

    #[test]
    fn geoip_locates_addresses_the_database_knows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("city.mmdb");
        write_test_mmdb(&path, [203, 0, 113]);
        let enricher = Enricher::new(Some(Arc::new(GeoIp::open(&path).expect("opens"))));
        let mut known = event(json!({"context": {"ip": "203.0.113.9"}}));
        enricher.apply(&mut known, false, true, true, None);
        assert_eq!(
            known["context"]["geo"],
            json!({"country": "NO", "region": "03", "city": "Oslo"})
        );
        assert_eq!(
            known["context"]["ip"], "203.0.113.0",
            "looked up before truncation"
        );
        let mut unknown = event(json!({"context": {"ip": "198.51.100.1"}}));
        enricher.apply(&mut unknown, false, false, true, None);
        assert!(unknown["context"].get("geo").is_none());
        assert!(GeoIp::open(&dir.path().join("missing.mmdb")).is_err());
    }
}
