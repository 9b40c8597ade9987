//! The node's own policy: what a configuration from the control plane may make this node do.
//!
//! It is set on the node (flags or environment) and never by the control plane, so a stolen
//! tenant admin key, or a compromised control plane, cannot point the node at its own network
//! or make it send the node's own settings somewhere. By default destinations reach public
//! addresses only, any destination kind may be used, secret names may be anything but the
//! node's own settings (those never), and the browser APIs answer any origin (they take
//! bearer tokens, never cookies).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::RwLock;

use reqwest::Url;

/// Prefixes and names of the node's own settings: never a destination's secret, whatever the
/// policy lists.
const OWN_SETTINGS: &[&str] = &[
    "SLUICE_",
    "S3_",
    "AWS_",
    "AZURE_",
    "NATS_",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DATABASE_URL",
    "PATH",
    "HOME",
    "HOSTNAME",
    "USER",
    "PWD",
    "SHELL",
];

/// Why the policy refuses something; the message names the rule and how to allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by this node's policy: {0}")]
pub struct Refusal(pub String);

/// One entry of the allowed hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// An exact host name, lowercase.
    Name(String),
    /// `*.example.com`: any name below `example.com` (not `example.com` itself).
    Below(String),
    /// An address or a range of them.
    Net { addr: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: Host,
    /// `None`: any port.
    port: Option<u16>,
}

/// A secret name or `PREFIX_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SecretName {
    Exact(String),
    Prefix(String),
}

/// The validated policy.
#[derive(Debug, Default)]
pub struct Policy {
    allowed_hosts: Vec<Allowed>,
    /// `None`: every kind.
    kinds: Option<Vec<String>>,
    /// `None`: any name but the node's own settings.
    secrets: Option<Vec<SecretName>>,
    /// `None`: any origin.
    origins: Option<Vec<String>>,
    /// The ports this node listens on, known once it has bound them.
    own_ports: RwLock<Vec<u16>>,
}

/// A comma-separated list, without blanks.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl Policy {
    /// The policy from its settings (each a comma-separated list; empty means the default).
    pub fn parse(hosts: &str, kinds: &str, secrets: &str, origins: &str) -> Result<Self, String> {
        let allowed_hosts = items(hosts)
            .map(parse_host)
            .collect::<Result<Vec<_>, _>>()?;
        let kinds: Vec<String> = items(kinds).map(str::to_owned).collect();
        for kind in &kinds {
            if !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(format!(
                    "{kind:?} is not a destination kind (a catalogue id)"
                ));
            }
        }
        let secrets = items(secrets)
            .map(|s| {
                let name = s.strip_suffix('*').unwrap_or(s);
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(format!("{s:?} is not a secret name or PREFIX_*"));
                }
                Ok(if s.ends_with('*') {
                    SecretName::Prefix(name.to_owned())
                } else {
                    SecretName::Exact(name.to_owned())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let origins: Vec<String> = items(origins)
            .map(|o| {
                let url = Url::parse(o).map_err(|e| format!("origin {o:?}: {e}"))?;
                let origin = url.origin().ascii_serialization();
                if origin == "null" || origin != o.trim_end_matches('/') {
                    return Err(format!(
                        "origin {o:?} is not scheme://host[:port] (for example https://console.example.com)"
                    ));
                }
                Ok(origin)
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            allowed_hosts,
            kinds: (!kinds.is_empty()).then_some(kinds),
            secrets: (!secrets.is_empty()).then_some(secrets),
            origins: (!origins.is_empty()).then_some(origins),
            own_ports: RwLock::new(Vec::new()),
        })
    }

    /// Records a port this node listens on: a destination on this machine at that port is
    /// refused unless that exact host and port are allowed.
    pub fn listening_on(&self, addr: SocketAddr) {
        let mut ports = self.own_ports.write().unwrap_or_else(|p| p.into_inner());
        if !ports.contains(&addr.port()) {
            ports.push(addr.port());
        }
    }

    fn own_port(&self, port: u16) -> bool {
        self.own_ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&port)
    }

    /// Whether a destination of `kind` (a catalogue id) may be used.
    pub fn check_kind(&self, kind: &str) -> Result<(), Refusal> {
        match &self.kinds {
            Some(kinds) if !kinds.iter().any(|k| k == kind) => Err(Refusal(format!(
                "destination kind {kind} is not one of SLUICE_POLICY_DESTINATION_KINDS ({})",
                kinds.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Whether a destination may name the secret `name`.
    pub fn check_secret(&self, name: &str) -> Result<(), Refusal> {
        if is_own_setting(name) {
            return Err(Refusal(format!(
                "secret {name} is one of the node's own settings, which no destination may use"
            )));
        }
        match &self.secrets {
            Some(names)
                if !names.iter().any(|n| match n {
                    SecretName::Exact(exact) => exact == name,
                    SecretName::Prefix(prefix) => name.starts_with(prefix.as_str()),
                }) =>
            {
                Err(Refusal(format!(
                    "secret {name} is not one of SLUICE_POLICY_SECRETS"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether the browser APIs answer `origin`.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins
            .as_ref()
            .is_none_or(|origins| origins.iter().any(|o| o == origin))
    }

    /// Whether any origin is allowed (the default).
    pub fn any_origin(&self) -> bool {
        self.origins.is_none()
    }

    /// Whether a request may go to `url`, judged on what the URL itself says: its scheme, a
    /// host that is an address or `localhost`, and the port. A host name is judged again, by
    /// the addresses it resolves to, when the connection is made ([`Policy::check_resolved`]).
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal(format!(
                "scheme {} is not http or https",
                url.scheme()
            )));
        }
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            None => Err(Refusal("a URL without a host".to_owned())),
            Some(url::Host::Ipv4(ip)) => self.check_addr(None, IpAddr::V4(ip), Some(port)),
            Some(url::Host::Ipv6(ip)) => self.check_addr(None, IpAddr::V6(ip), Some(port)),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    self.check_addr(Some(&name), IpAddr::V4(Ipv4Addr::LOCALHOST), Some(port))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The addresses `name` resolved to that a connection may use; refused when none is.
    pub fn check_resolved(
        &self,
        name: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for addr in addrs {
            match self.check_addr(Some(&name), addr, None) {
                Ok(()) => allowed.push(addr),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(refusal)) => Err(refusal),
            (true, None) => Err(Refusal(format!("{name} resolves to no address"))),
        }
    }

    /// Whether `addr` (reached as `name`, at `port` when known) is allowed: a public address,
    /// or one an entry of SLUICE_POLICY_ALLOW_HOSTS names.
    fn check_addr(
        &self,
        name: Option<&str>,
        addr: IpAddr,
        port: Option<u16>,
    ) -> Result<(), Refusal> {
        let addr = canonical(addr);
        let listed = |exact_port: bool| {
            self.allowed_hosts.iter().any(|entry| {
                let port_ok = match (entry.port, port) {
                    (Some(want), Some(got)) => want == got,
                    (Some(_), None) => !exact_port,
                    (None, _) => !exact_port,
                };
                port_ok
                    && match &entry.host {
                        Host::Name(n) => name == Some(n.as_str()),
                        Host::Below(suffix) => name.is_some_and(|n| {
                            n.len() > suffix.len() + 1
                                && n.ends_with(suffix.as_str())
                                && n.as_bytes()[n.len() - suffix.len() - 1] == b'.'
                        }),
                        Host::Net { addr: net, prefix } => contains(*net, *prefix, addr),
                    }
            })
        };
        let local = addr.is_loopback() || addr.is_unspecified();
        if local && port.is_some_and(|p| self.own_port(p)) {
            if listed(true) {
                return Ok(());
            }
            return Err(Refusal(format!(
                "{} is this node's own port {}; list {}:{} in SLUICE_POLICY_ALLOW_HOSTS to allow it",
                name.map_or_else(|| addr.to_string(), str::to_owned),
                port.unwrap_or_default(),
                addr,
                port.unwrap_or_default()
            )));
        }
        if let Some(range) = not_public(addr) {
            if listed(false) {
                return Ok(());
            }
            let shown = match name {
                Some(name) => format!("{name} ({addr})"),
                None => addr.to_string(),
            };
            return Err(Refusal(format!(
                "{shown} is a {range} address; list it in SLUICE_POLICY_ALLOW_HOSTS to allow it"
            )));
        }
        Ok(())
    }
}

/// Whether `name` is, or starts like, one of the node's own settings.
pub fn is_own_setting(name: &str) -> bool {
    OWN_SETTINGS.iter().any(|own| {
        if own.ends_with('_') {
            name.starts_with(own)
        } else {
            name == *own
        }
    })
}

fn parse_host(entry: &str) -> Result<Allowed, String> {
    let bad = |why: &str| format!("{entry:?} in SLUICE_POLICY_ALLOW_HOSTS: {why}");
    // `[v6]:port`, `[v6]`, `v4:port`, `name:port`, a CIDR, an address or a name.
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad("not a port"))?),
            None if after.is_empty() => None,
            None => return Err(bad("expected :port after ]")),
        };
        (inside, port)
    } else if entry.matches(':').count() == 1 {
        let (host, port) = entry.split_once(':').unwrap_or((entry, ""));
        (
            host,
            Some(port.parse::<u16>().map_err(|_| bad("not a port"))?),
        )
    } else {
        (entry, None)
    };
    let host = if let Some((addr, prefix)) = host.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an address range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad("not a prefix length"))?;
        Host::Net {
            addr: canonical(addr),
            prefix,
        }
    } else if let Ok(addr) = host.parse::<IpAddr>() {
        let addr = canonical(addr);
        Host::Net {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    } else {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let (below, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, name),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(bad("not a host name, *.domain, address or range"));
        }
        if below {
            Host::Below(name)
        } else {
            Host::Name(name)
        }
    };
    Ok(Allowed { host, port })
}

/// An IPv4 address written as IPv6 (mapped, or NAT64's well-known prefix) as the IPv4 address
/// it reaches.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn contains(net: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The kind of range `addr` is in when it is not a public unicast address.
fn not_public(addr: IpAddr) -> Option<&'static str> {
    match canonical(addr) {
        IpAddr::V4(v4) => not_public_v4(v4),
        IpAddr::V6(v6) => not_public_v6(v6),
    }
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() || a == 0 {
        "\"this network\""
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local (cloud metadata)"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 198 && (b == 18 || b == 19) {
        "benchmarking"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || a >= 240 {
        "reserved"
    } else {
        return None;
    };
    Some(range)
}

fn not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let range = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique local (private)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "site-local (private)"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else if s[0] == 0x2002 {
        // 6to4 carries an IPv4 address a relay would reach.
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        not_public_v4(Ipv4Addr::new(a, b, c, d))?;
        "6to4 (to a non-public IPv4)"
    } else if s[0] == 0x2001 && s[1] == 0 {
        "Teredo"
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated) addresses.
        "IPv4-compatible"
    } else {
        return None;
    };
    Some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect(s)
    }

    fn default() -> Policy {
        Policy::parse("", "", "", "").expect("default")
    }

    #[test]
    fn by_default_only_public_addresses_are_reached() {
        let policy = default();
        for refused in [
            "http://127.0.0.1:8080/hook",
            "http://127.1/x",
            "http://localhost:3000/",
            "http://api.localhost/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0:8090/",
            "http://[::1]:8090/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[2002:7f00:1::]/",
            "http://0x7f000001/",
            "http://2130706433/",
            "file:///etc/passwd",
            "gopher://127.0.0.1:25/",
        ] {
            assert!(policy.check_url(&url(refused)).is_err(), "{refused}");
        }
        for allowed in [
            "https://www.google-analytics.com/mp/collect",
            "https://graph.facebook.com/v19.0/1/events",
            "http://93.184.216.34/",
            "https://[2606:4700::1111]/",
            // Judged again by what it resolves to.
            "https://hooks.example.com/x",
        ] {
            assert!(policy.check_url(&url(allowed)).is_ok(), "{allowed}");
        }
        let refused = policy
            .check_url(&url("http://169.254.169.254/latest/meta-data/"))
            .expect_err("metadata");
        assert!(refused.to_string().contains("link-local"), "{refused}");
    }

    #[test]
    fn resolved_addresses_are_judged_and_the_refused_ones_dropped() {
        let policy = default();
        let public: IpAddr = "93.184.216.34".parse().expect("ip");
        let private: IpAddr = "10.0.0.7".parse().expect("ip");
        assert_eq!(
            policy.check_resolved("hooks.example.com", [private, public]),
            Ok(vec![public])
        );
        let refused = policy
            .check_resolved("rebind.example.com", [private])
            .expect_err("private only");
        assert!(
            refused
                .to_string()
                .contains("rebind.example.com (10.0.0.7)"),
            "{refused}"
        );
    }

    #[test]
    fn listed_hosts_ranges_and_ports_are_allowed() {
        let policy = Policy::parse(
            "127.0.0.1, 10.0.0.0/8, hooks.internal, *.corp.example, [::1]:9000, 192.168.1.5:8443",
            "",
            "",
            "",
        )
        .expect("policy");
        for allowed in [
            "http://127.0.0.1:4000/",
            "http://10.200.0.1/",
            "http://[::1]:9000/",
            "https://192.168.1.5:8443/",
        ] {
            assert!(policy.check_url(&url(allowed)).is_ok(), "{allowed}");
        }
        for refused in [
            "http://[::1]:9001/",
            "https://192.168.1.5/",
            "http://169.254.169.254/",
        ] {
            assert!(policy.check_url(&url(refused)).is_err(), "{refused}");
        }
        let internal: IpAddr = "10.9.9.9".parse().expect("ip");
        let metadata: IpAddr = "169.254.169.254".parse().expect("ip");
        let db: IpAddr = "172.20.0.3".parse().expect("ip");
        assert!(policy.check_resolved("hooks.internal", [db]).is_ok());
        assert!(policy.check_resolved("a.corp.example", [db]).is_ok());
        assert!(policy.check_resolved("corp.example", [db]).is_err());
        assert!(policy.check_resolved("xcorp.example", [db]).is_err());
        assert!(policy.check_resolved("other", [internal]).is_ok());
        assert!(policy.check_resolved("other", [metadata]).is_err());
    }

    #[test]
    fn the_nodes_own_ports_need_their_exact_entry() {
        let policy = Policy::parse("127.0.0.1", "", "", "").expect("policy");
        policy.listening_on("0.0.0.0:8090".parse().expect("addr"));
        let refused = policy
            .check_url(&url("http://127.0.0.1:8090/v1/batch"))
            .expect_err("own port");
        assert!(refused.to_string().contains("own port 8090"), "{refused}");
        assert!(policy.check_url(&url("http://localhost:8090/")).is_err());
        assert!(policy.check_url(&url("http://127.0.0.1:8091/")).is_ok());
        let listed = Policy::parse("127.0.0.1:8090", "", "", "").expect("policy");
        listed.listening_on("127.0.0.1:8090".parse().expect("addr"));
        assert!(listed.check_url(&url("http://127.0.0.1:8090/")).is_ok());
    }

    #[test]
    fn the_nodes_own_settings_are_never_secrets() {
        let policy = default();
        for own in [
            "SLUICE_SERVICE_KEY",
            "S3_SECRET_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "DATABASE_URL",
            "NATS_URL",
        ] {
            assert!(policy.check_secret(own).is_err(), "{own}");
        }
        assert!(policy.check_secret("META_ACCESS_TOKEN").is_ok());
        let listed = Policy::parse("", "", "META_*, GA4_API_SECRET, SLUICE_*", "").expect("policy");
        assert!(listed.check_secret("META_ACCESS_TOKEN").is_ok());
        assert!(listed.check_secret("GA4_API_SECRET").is_ok());
        assert!(listed.check_secret("TIKTOK_TOKEN").is_err());
        // Listing them changes nothing.
        assert!(listed.check_secret("SLUICE_SERVICE_KEY").is_err());
    }

    #[test]
    fn kinds_and_origins_are_lists() {
        let policy =
            Policy::parse("", "webhook, ga4", "", "https://console.example.com").expect("p");
        assert!(policy.check_kind("ga4").is_ok());
        assert!(policy.check_kind("meta").is_err());
        assert!(policy.allows_origin("https://console.example.com"));
        assert!(!policy.allows_origin("https://evil.example"));
        assert!(default().allows_origin("https://anything.example"));
    }

    #[test]
    fn bad_settings_are_refused() {
        for (hosts, kinds, secrets, origins) in [
            ("10.0.0.0/33", "", "", ""),
            ("host:port", "", "", ""),
            ("[::1", "", "", ""),
            ("a..b", "", "", ""),
            ("", "Web Hook", "", ""),
            ("", "", "lower_case", ""),
            ("", "", "", "console.example.com"),
            ("", "", "", "https://console.example.com/path"),
        ] {
            assert!(
                Policy::parse(hosts, kinds, secrets, origins).is_err(),
                "{hosts:?} {kinds:?} {secrets:?} {origins:?}"
            );
        }
    }
}
