//! The Sluice pipeline engine, pure and synchronous: no runtime, no HTTP, no bus. The
//! processor role and the benchmarks call it; so does the dead-letter API when it shapes an
//! event again for a replay.
//!
//! * [`engine`]: a pipeline spec compiled once per revision (JSON Schemas, CEL programs), then
//!   run on every event: [`governance`] once, then each destination's shaping.
//! * [`destinations`]: the destination kinds, each as `shape` (an event to its payload),
//!   `request` (a batch of payloads to one HTTP request) and `classify` (the vendor's answer
//!   to delivered, retry or dead-letter).
//! * [`batch`]: a batch of envelopes from `raw` to the messages for every stage.
//! * [`stages`]: the bus stages between the roles and the records they carry;
//!   [`RejectReason`] says why an event was refused.

pub mod batch;
pub mod destinations;
pub mod engine;
pub mod enrich;
pub mod envelope;
pub mod governance;
pub mod identity;
pub mod json_out;
pub mod path;
pub mod pii;
pub mod reject;
pub mod stages;
pub mod time;

pub use engine::{
    AppliedPipeline, Bindings, CelRoot, CompiledDestination, CompiledPipeline, Needs, Shaped,
    SkipReason,
};
pub use reject::RejectReason;

pub use destinations::AGENT_VERSION;
