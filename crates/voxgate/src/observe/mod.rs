//! Observability: the per-application [`metrics::Metrics`] registry, logging set-up
//! ([`telemetry`], in the JSON line format of [`json_lines`]) and the in-process [`alerts`]
//! that read the registry.

pub(crate) mod alerts;
pub(crate) mod json_lines;
pub mod metrics;
pub(crate) mod telemetry;

pub use metrics::Metrics;
