//! The roles a data-plane node can run: named in a node's `--roles`, in its hello on the
//! config-sync stream and in the fleet view, so both planes and the tests share one list.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One role of a data-plane node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The first-party edge: CORS, the visitor-id cookie, the collector script, a disk spool.
    Proxy,
    /// The Segment-compatible HTTP API that puts events on the bus.
    Receiver,
    /// Governance and per-destination shaping.
    Processor,
    /// Sending to vendor APIs, with retries and a dead-letter queue.
    Delivery,
    /// Parquet files in the object store.
    Archiver,
    /// SQL over the archive.
    Query,
}

impl Role {
    /// Every role, in the order the data flows.
    pub const ALL: [Role; 6] = [
        Role::Proxy,
        Role::Receiver,
        Role::Processor,
        Role::Delivery,
        Role::Archiver,
        Role::Query,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Receiver => "receiver",
            Role::Processor => "processor",
            Role::Delivery => "delivery",
            Role::Archiver => "archiver",
            Role::Query => "query",
        }
    }

    /// `proxy, receiver, …`: for error messages that list what is known.
    pub fn known() -> String {
        Role::ALL.map(Role::as_str).join(", ")
    }

    /// Parses `all` or a comma-separated list (blanks and repeats ignored, order kept).
    pub fn parse_list(text: &str) -> Result<Vec<Role>, UnknownRole> {
        if text.trim() == "all" {
            return Ok(Role::ALL.to_vec());
        }
        let mut roles = Vec::new();
        for name in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let role = name.parse()?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        Ok(roles)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; known: {known}", known = Role::known())]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).expect("json"),
                serde_json::Value::from(role.as_str())
            );
        }
        assert_eq!(
            "Proxy".parse::<Role>(),
            Err(UnknownRole("Proxy".into())),
            "names are lowercase"
        );
    }

    #[test]
    fn lists_parse_all_or_names() {
        assert_eq!(Role::parse_list("all").expect("all"), Role::ALL);
        assert_eq!(
            Role::parse_list(" query, receiver,query ,").expect("list"),
            [Role::Query, Role::Receiver]
        );
        let err = Role::parse_list("receiver,router").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown role \"router\"; known: proxy, receiver, processor, delivery, archiver, query"
        );
    }
}
