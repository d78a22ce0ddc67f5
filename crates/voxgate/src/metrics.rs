//! Process metrics as Prometheus text. Counters and gauges are plain atomics updated where
//! things happen; labels never carry user data (only fixed names).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// One named counter or gauge.
#[derive(Debug)]
pub struct Metric {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: AtomicU64,
}

impl Metric {
    const fn new(name: &'static str, help: &'static str, kind: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            value: AtomicU64::new(0),
        }
    }

    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

pub static AUTH_FAILURES: Metric = Metric::new(
    "voxgate_auth_failures_total",
    "Failed authentications.",
    "counter",
);
pub static AUTH_BLOCKS: Metric = Metric::new(
    "voxgate_auth_blocks_total",
    "Sources blocked after repeated failed authentications.",
    "counter",
);
pub static RATE_LIMITED: Metric = Metric::new(
    "voxgate_rate_limited_total",
    "Requests refused by a rate limit.",
    "counter",
);
pub static QUOTA_EXCEEDED: Metric = Metric::new(
    "voxgate_quota_exceeded_total",
    "Requests refused because a quota was spent.",
    "counter",
);
pub static CONCURRENCY_REFUSED: Metric = Metric::new(
    "voxgate_concurrency_refused_total",
    "Requests refused by an in-flight cap or a full engine queue.",
    "counter",
);
pub static LIMITER_DEGRADED: Metric = Metric::new(
    "voxgate_rate_limit_backend_degraded",
    "1 while the shared rate-limit backend is unreachable and the fallback decides.",
    "gauge",
);
pub static LIMITER_SWITCHES: Metric = Metric::new(
    "voxgate_rate_limit_backend_switches_total",
    "Switches between the shared rate-limit backend and its fallback.",
    "counter",
);

const ALL: [&Metric; 7] = [
    &AUTH_FAILURES,
    &AUTH_BLOCKS,
    &RATE_LIMITED,
    &QUOTA_EXCEEDED,
    &CONCURRENCY_REFUSED,
    &LIMITER_DEGRADED,
    &LIMITER_SWITCHES,
];

/// Everything, in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    for m in ALL {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}\n{} {}",
            m.name,
            m.help,
            m.name,
            m.kind,
            m.name,
            m.get()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        LIMITER_SWITCHES.inc();
        let text = render();
        assert!(text.contains("# TYPE voxgate_rate_limit_backend_switches_total counter"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("voxgate_rate_limit_backend_switches_total "))
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP")).count(),
            ALL.len()
        );
    }
}
