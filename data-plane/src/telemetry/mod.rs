//! What the node counts and exports: counters reported to the control plane, the Prometheus
//! metrics, and the bus stages its roles consume.

pub mod consumers;
pub mod counters;
pub mod metrics;
