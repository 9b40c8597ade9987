//! Identity on the data plane. Identity data is event data: it lives on the customer's
//! nodes only and never reaches the control plane.
//!
//! * [`vendors`]: the table of vendor click and browser ids (URL parameters and first-party
//!   cookies), each with its consent category and formation rule.
//! * [`capture`]: reads them from a page URL and a `Cookie` header, bounded and checked.
//! * [`consent`]: which categories an event's consent grants.
//! * [`graph`]: profiles by anonymous and user id, stitching and erasure, over a [`kv::Kv`]:
//!   [`embedded`] (redb in the node's state directory, the default) or [`nats`] (JetStream
//!   key-value, shared by several nodes).
//! * [`handoff`]: signed single-use tokens that carry a visitor to the tenant's other domains.

pub mod capture;
pub mod consent;
pub mod embedded;
pub mod graph;
pub mod handoff;
pub mod kv;
#[cfg(feature = "nats")]
pub mod nats;
pub mod vendors;

pub use capture::Ids;
pub use graph::{Identities, Observation, Policy, Profile, Resolved, Session};
pub use kv::{Kv, StoreError};
