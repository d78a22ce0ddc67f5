//! Observability: the per-application [`metrics::Metrics`] registry, logging set-up
//! ([`telemetry`]) and the in-process [`alerts`] that read the registry.

pub(crate) mod alerts;
pub mod metrics;
pub(crate) mod telemetry;

pub use metrics::Metrics;
