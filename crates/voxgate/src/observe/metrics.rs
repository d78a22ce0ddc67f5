//! Metrics as Prometheus text. Each application owns one [`Metrics`] registry, created with
//! it and handed to whatever makes a decision worth counting (the authenticator, the rate
//! gate, admission, quotas, breakers, the speech service, the HTTP edge), so two
//! applications in one process never share a figure. Counters and gauges are plain atomics
//! updated where things happen; labels never carry user data (only route templates and
//! configured names).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// A metric with one label whose values are configuration names (engine ids), never user
/// data, plus a fixed second label.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: (&'static str, &'static str),
    values: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Family {
    const fn new(
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: (&'static str, &'static str),
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn with(&self, first: &str, second: &'static str, f: impl FnOnce(&mut u64)) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        f(values.entry((first.to_owned(), second)).or_insert(0));
    }

    pub fn inc(&self, first: &str, second: &'static str) {
        self.with(first, second, |v| *v += 1);
    }

    pub fn set(&self, first: &str, second: &'static str, value: u64) {
        self.with(first, second, |v| *v = value);
    }

    /// The sum over every first label for `second`.
    pub fn total(&self, second: &str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .iter()
            .filter(|((_, s), _)| *s == second)
            .map(|(_, v)| v)
            .sum()
    }

    pub fn get(&self, first: &str, second: &'static str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .get(&(first.to_owned(), second))
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            self.name, self.help, self.name, self.kind
        );
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for ((first, second), value) in values.iter() {
            let _ = writeln!(
                out,
                "{}{{{}=\"{first}\",{}=\"{second}\"}} {value}",
                self.name, self.labels.0, self.labels.1
            );
        }
    }
}

/// Histogram bucket bounds, in seconds (response heads and real-time factors share them).
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// HTTP requests by route template and status, and response-head latency by route.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<String, RouteFigures>>,
}

/// One route template's figures: requests by status, and response-head latency.
#[derive(Debug, Default)]
struct RouteFigures {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, status: u16, elapsed: std::time::Duration) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        // The route's name is copied once, when it is first seen, not per request.
        if !routes.contains_key(route) {
            routes.insert(route.to_owned(), RouteFigures::default());
        }
        if let Some(figures) = routes.get_mut(route) {
            *figures.requests.entry(status).or_insert(0) += 1;
            figures.latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Requests answered so far with `status` on `route`.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .and_then(|figures| figures.requests.get(&status))
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP voxgate_http_requests_total Requests by route template and status.\n# TYPE voxgate_http_requests_total counter"
        );
        for (route, figures) in routes.iter() {
            for (status, n) in &figures.requests {
                let _ = writeln!(
                    out,
                    "voxgate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP voxgate_http_response_seconds Time to the response head, by route template.\n# TYPE voxgate_http_response_seconds histogram"
        );
        for (route, figures) in routes.iter() {
            figures.latency.render(
                out,
                "voxgate_http_response_seconds",
                &format!("route=\"{route}\""),
            );
        }
    }
}

/// Every figure of one application.
#[derive(Debug)]
pub struct Metrics {
    pub auth_failures: Metric,
    pub auth_blocks: Metric,
    pub rate_limited: Metric,
    pub quota_exceeded: Metric,
    pub concurrency_refused: Metric,
    pub limiter_degraded: Metric,
    pub limiter_switches: Metric,
    pub cache_hits: Metric,
    pub cache_misses: Metric,
    pub fallbacks: Metric,
    pub streams_active: Metric,
    pub provider_calls: Family,
    pub breaker_state: Family,
    pub alerts: Family,
    /// Wyoming connections by listener and outcome (`accepted`, `peer_refused`, `full`).
    pub wyoming_connections: Family,
    /// Wyoming events received, by listener and event type.
    pub wyoming_events: Family,
    /// Wyoming `error` events sent, by listener and code.
    pub wyoming_errors: Family,
    pub http: HttpMetrics,
    /// Engine real-time factor (synthesis time / audio time) of completed speech responses.
    rtf: Mutex<BTreeMap<String, Histogram>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            auth_failures: Metric::new(
                "voxgate_auth_failures_total",
                "Failed authentications.",
                "counter",
            ),
            auth_blocks: Metric::new(
                "voxgate_auth_blocks_total",
                "Sources blocked after repeated failed authentications.",
                "counter",
            ),
            rate_limited: Metric::new(
                "voxgate_rate_limited_total",
                "Requests refused by a rate limit.",
                "counter",
            ),
            quota_exceeded: Metric::new(
                "voxgate_quota_exceeded_total",
                "Requests refused because a quota was spent.",
                "counter",
            ),
            concurrency_refused: Metric::new(
                "voxgate_concurrency_refused_total",
                "Requests refused by an in-flight cap or a full engine queue.",
                "counter",
            ),
            limiter_degraded: Metric::new(
                "voxgate_rate_limit_backend_degraded",
                "1 while the shared rate-limit backend is unreachable and the fallback decides.",
                "gauge",
            ),
            limiter_switches: Metric::new(
                "voxgate_rate_limit_backend_switches_total",
                "Switches between the shared rate-limit backend and its fallback.",
                "counter",
            ),
            cache_hits: Metric::new(
                "voxgate_speech_cache_hits_total",
                "Speech responses served from the cache (fresh, or stale while every engine failed).",
                "counter",
            ),
            cache_misses: Metric::new(
                "voxgate_speech_cache_misses_total",
                "Cacheable speech requests not found in the cache.",
                "counter",
            ),
            fallbacks: Metric::new(
                "voxgate_engine_fallbacks_total",
                "Times an engine failed before any audio and the next one in the chain was tried.",
                "counter",
            ),
            streams_active: Metric::new(
                "voxgate_speech_streams_active",
                "Speech responses streaming now.",
                "gauge",
            ),
            provider_calls: Family::new(
                "voxgate_provider_calls_total",
                "Calls to engines behind a circuit breaker, by outcome (success, failure, rejected).",
                "counter",
                ("engine", "outcome"),
            ),
            breaker_state: Family::new(
                "voxgate_breaker_state",
                "1 for each engine's current breaker state (closed, open, half_open).",
                "gauge",
                ("engine", "state"),
            ),
            alerts: Family::new(
                "voxgate_alert_firing",
                "1 while an in-process alert rule fires.",
                "gauge",
                ("alert", "severity"),
            ),
            wyoming_connections: Family::new(
                "voxgate_wyoming_connections_total",
                "Connections to Wyoming listeners, by listener and outcome.",
                "counter",
                ("listener", "outcome"),
            ),
            wyoming_events: Family::new(
                "voxgate_wyoming_events_total",
                "Events received on Wyoming listeners, by listener and type.",
                "counter",
                ("listener", "event"),
            ),
            wyoming_errors: Family::new(
                "voxgate_wyoming_errors_total",
                "Error events sent on Wyoming listeners, by listener and code.",
                "counter",
                ("listener", "code"),
            ),
            http: HttpMetrics::default(),
            rtf: Mutex::new(BTreeMap::new()),
        }
    }

    fn scalars(&self) -> [&Metric; 11] {
        [
            &self.auth_failures,
            &self.auth_blocks,
            &self.rate_limited,
            &self.quota_exceeded,
            &self.concurrency_refused,
            &self.limiter_degraded,
            &self.limiter_switches,
            &self.cache_hits,
            &self.cache_misses,
            &self.fallbacks,
            &self.streams_active,
        ]
    }

    /// Records one completed response's real-time factor for `engine`.
    pub fn observe_rtf(&self, engine: &str, rtf: f64) {
        self.rtf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(engine.to_owned())
            .or_default()
            .observe(rtf);
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in self.scalars() {
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
        for family in [
            &self.provider_calls,
            &self.breaker_state,
            &self.alerts,
            &self.wyoming_connections,
            &self.wyoming_events,
            &self.wyoming_errors,
        ] {
            family.render(&mut out);
        }
        self.http.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP voxgate_engine_rtf Synthesis time over audio time of completed speech responses, by engine.\n# TYPE voxgate_engine_rtf histogram"
        );
        for (engine, histogram) in self.rtf.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            histogram.render(
                &mut out,
                "voxgate_engine_rtf",
                &format!("engine=\"{engine}\""),
            );
        }
        out
    }
}

/// Counts one speech stream in `streams_active` for as long as it lives.
#[derive(Debug)]
pub struct ActiveStream(Arc<Metrics>);

impl ActiveStream {
    pub fn start(metrics: &Arc<Metrics>) -> Self {
        metrics.streams_active.value.fetch_add(1, Ordering::Relaxed);
        ActiveStream(Arc::clone(metrics))
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.streams_active.value.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled_by_template() {
        let http = HttpMetrics::default();
        http.observe("/v1/models", 200, std::time::Duration::from_millis(3));
        http.observe("/v1/models", 200, std::time::Duration::from_millis(300));
        http.observe("unmatched", 404, std::time::Duration::from_millis(1));
        let mut out = String::new();
        http.render(&mut out);
        assert!(
            out.contains("voxgate_http_requests_total{route=\"/v1/models\",status=\"200\"} 2"),
            "{out}"
        );
        assert!(
            out.contains(
                "voxgate_http_response_seconds_bucket{route=\"/v1/models\",le=\"0.005\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("voxgate_http_response_seconds_bucket{route=\"/v1/models\",le=\"0.5\"} 2"),
            "{out}"
        );
        assert!(
            out.contains(
                "voxgate_http_response_seconds_bucket{route=\"/v1/models\",le=\"+Inf\"} 2"
            ),
            "{out}"
        );
        assert!(
            out.contains("voxgate_http_response_seconds_count{route=\"/v1/models\"} 2"),
            "{out}"
        );
        assert_eq!(http.requests("unmatched", 404), 1);
    }

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        metrics.limiter_switches.inc();
        let text = metrics.render();
        assert!(text.contains("# TYPE voxgate_rate_limit_backend_switches_total counter"));
        assert!(text.contains("\nvoxgate_rate_limit_backend_switches_total 1\n"));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP")).count(),
            // The scalars; providers, breakers and alerts; the three Wyoming families; HTTP.
            metrics.scalars().len() + 3 + 3 + 3
        );
        metrics.wyoming_errors.inc("home", "quota_exceeded");
        assert!(
            metrics.render().contains(
                "voxgate_wyoming_errors_total{listener=\"home\",code=\"quota_exceeded\"} 1"
            ),
            "{}",
            metrics.render()
        );
        metrics.provider_calls.inc("eleven", "failure");
        assert!(
            metrics
                .render()
                .contains("voxgate_provider_calls_total{engine=\"eleven\",outcome=\"failure\"} 1")
        );
    }

    /// Two applications in one process keep their own figures.
    #[test]
    fn registries_do_not_share_figures() {
        let (a, b) = (Arc::new(Metrics::new()), Arc::new(Metrics::new()));
        a.auth_failures.inc();
        let _stream = ActiveStream::start(&a);
        a.http
            .observe("/v1/models", 200, std::time::Duration::from_millis(1));
        assert_eq!(b.auth_failures.get(), 0);
        assert_eq!(b.streams_active.get(), 0);
        assert_eq!(b.http.requests("/v1/models", 200), 0);
        assert_eq!(a.streams_active.get(), 1);
    }
}
