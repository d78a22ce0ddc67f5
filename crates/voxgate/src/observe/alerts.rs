//! Alert rules evaluated in-process every `alerts.interval_secs`: rates from the process
//! counters (authentication failures, 429s, provider failures, per minute) and headroom
//! (free disk under the data directory, resident memory). A rule that starts or stops firing
//! is a security event, and `voxgate_alert_firing{alert=…}` says which fire now.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Metrics;
use crate::config::AlertsConfig;

/// The inputs of one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub auth_failures: u64,
    pub rate_limited: u64,
    pub provider_failures: u64,
    /// Free bytes under the data directory, if known.
    pub disk_free: Option<u64>,
    /// Resident memory of this process, if known.
    pub rss: Option<u64>,
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub alert: &'static str,
    pub firing: bool,
    pub value: f64,
    pub threshold: f64,
}

/// Judges `now` against the previous reading `elapsed` ago. A threshold of 0 turns a rule off.
pub fn evaluate(
    config: &AlertsConfig,
    before: &Reading,
    now: &Reading,
    elapsed: Duration,
) -> Vec<Verdict> {
    let minutes = (elapsed.as_secs_f64() / 60.0).max(1e-9);
    let per_minute = |a: u64, b: u64| a.saturating_sub(b) as f64 / minutes;
    let mut verdicts = Vec::new();
    let mut rate = |alert, value: f64, threshold: u64| {
        if threshold > 0 {
            verdicts.push(Verdict {
                alert,
                firing: value > threshold as f64,
                value,
                threshold: threshold as f64,
            });
        }
    };
    rate(
        "auth_failure_rate",
        per_minute(now.auth_failures, before.auth_failures),
        config.auth_failures_per_min,
    );
    rate(
        "rate_limited_rate",
        per_minute(now.rate_limited, before.rate_limited),
        config.rate_limited_per_min,
    );
    rate(
        "provider_failure_rate",
        per_minute(now.provider_failures, before.provider_failures),
        config.provider_failures_per_min,
    );
    if config.min_disk_free_mb > 0
        && let Some(free) = now.disk_free
    {
        let mb = free as f64 / 1_048_576.0;
        verdicts.push(Verdict {
            alert: "disk_headroom",
            firing: mb < config.min_disk_free_mb as f64,
            value: mb,
            threshold: config.min_disk_free_mb as f64,
        });
    }
    if config.max_rss_mb > 0
        && let Some(rss) = now.rss
    {
        let mb = rss as f64 / 1_048_576.0;
        verdicts.push(Verdict {
            alert: "memory_headroom",
            firing: mb > config.max_rss_mb as f64,
            value: mb,
            threshold: config.max_rss_mb as f64,
        });
    }
    verdicts
}

/// Reads the counters and headroom now.
pub fn read(metrics: &Metrics, data_dir: &Path) -> Reading {
    Reading {
        auth_failures: metrics.auth_failures.get(),
        rate_limited: metrics.rate_limited.get(),
        provider_failures: metrics.provider_calls.total("failure"),
        disk_free: disk_free(data_dir),
        rss: rss(),
    }
}

fn disk_free(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` points to writable memory of
    // the right type; statvfs fills it only when it returns 0.
    let done = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if done != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Evaluates the rules every `interval_secs` until the task is aborted.
pub fn spawn(
    config: AlertsConfig,
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(config.interval_secs.max(1));
        let mut before = read(&metrics, &data_dir);
        let mut at = tokio::time::Instant::now();
        let mut firing: std::collections::BTreeSet<&'static str> = Default::default();
        loop {
            tokio::time::sleep(every).await;
            let now = read(&metrics, &data_dir);
            for verdict in evaluate(&config, &before, &now, at.elapsed()) {
                let was = firing.contains(verdict.alert);
                if verdict.firing && !was {
                    firing.insert(verdict.alert);
                    tracing::warn!(target: "voxgate::security", event = "alert_firing", alert = verdict.alert, value = verdict.value, threshold = verdict.threshold, "alert firing");
                } else if !verdict.firing && was {
                    firing.remove(verdict.alert);
                    tracing::info!(target: "voxgate::security", event = "alert_resolved", alert = verdict.alert, value = verdict.value, threshold = verdict.threshold, "alert resolved");
                }
                metrics
                    .alerts
                    .set(verdict.alert, "warning", u64::from(verdict.firing));
            }
            before = now;
            at = tokio::time::Instant::now();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertsConfig {
        AlertsConfig {
            enabled: true,
            interval_secs: 30,
            auth_failures_per_min: 60,
            rate_limited_per_min: 0,
            provider_failures_per_min: 10,
            min_disk_free_mb: 1024,
            max_rss_mb: 512,
        }
    }

    #[test]
    fn rates_are_per_minute_and_zero_thresholds_turn_rules_off() {
        let before = Reading::default();
        let now = Reading {
            auth_failures: 40,
            rate_limited: 1_000_000,
            provider_failures: 6,
            disk_free: Some(100 << 20),
            rss: Some(100 << 20),
        };
        // 40 failures in 30 s is 80 a minute: above 60.
        let v = evaluate(&config(), &before, &now, Duration::from_secs(30));
        let get = |name| v.iter().find(|x| x.alert == name).cloned();
        let auth = get("auth_failure_rate").expect("auth");
        assert!(auth.firing && (auth.value - 80.0).abs() < 1e-6, "{auth:?}");
        assert!(get("rate_limited_rate").is_none(), "threshold 0 is off");
        let provider = get("provider_failure_rate").expect("provider");
        assert!(provider.firing, "12 a minute > 10");
        assert!(get("disk_headroom").expect("disk").firing, "100 MB < 1 GB");
        assert!(
            !get("memory_headroom").expect("memory").firing,
            "100 MB < 512 MB"
        );
        // The same counts over two minutes are below the threshold.
        let v = evaluate(&config(), &before, &now, Duration::from_secs(120));
        assert!(
            !v.iter()
                .find(|x| x.alert == "auth_failure_rate")
                .expect("auth")
                .firing
        );
    }

    #[test]
    fn headroom_is_read_from_the_system() {
        assert!(disk_free(Path::new("/")).is_some_and(|b| b > 0));
        assert!(rss().is_some_and(|b| b > 1 << 20));
    }
}
