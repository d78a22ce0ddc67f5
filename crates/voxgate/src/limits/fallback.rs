//! Redis with a fallback: when Redis cannot decide, a conservative per-instance limiter
//! (a fraction of each limit), or deny everything, or (explicitly) allow everything.
//! Switching either way is a security event; Redis is retried on every decision, so
//! recovery is automatic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::{Decision, LimiterError, MemoryLimiter, Policy, RateLimiter};
pub use crate::config::OnBackendError;
use crate::observe::Metrics;

/// A shared limiter with a local fallback.
#[derive(Debug)]
pub struct FallbackLimiter {
    primary: Arc<dyn RateLimiter>,
    local: MemoryLimiter,
    mode: OnBackendError,
    /// The fraction of each limit the local fallback grants per instance.
    fraction: f64,
    degraded: AtomicBool,
    metrics: Arc<Metrics>,
}

impl FallbackLimiter {
    pub fn new(
        primary: Arc<dyn RateLimiter>,
        mode: OnBackendError,
        fraction: f64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics,
            primary,
            local: MemoryLimiter::default(),
            mode,
            fraction: fraction.clamp(0.01, 1.0),
            degraded: AtomicBool::new(false),
        }
    }

    /// Whether decisions are currently made without the shared backend.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    async fn acquire(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
    ) -> Result<Decision, LimiterError> {
        match self.primary.acquire(key, policy, cost).await {
            Ok(decision) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    self.metrics.limiter_degraded.set(0);
                    self.metrics.limiter_switches.inc();
                    tracing::warn!(target: "voxgate::security", event = "rate_limit_backend_recovered", "rate-limit backend is back; shared limits apply again");
                }
                Ok(decision)
            }
            Err(err) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    self.metrics.limiter_degraded.set(1);
                    self.metrics.limiter_switches.inc();
                    tracing::warn!(target: "voxgate::security", event = "rate_limit_backend_failed", error = %err, mode = ?self.mode, "rate-limit backend unavailable; falling back");
                }
                match self.mode {
                    OnBackendError::Local => {
                        Ok(self
                            .local
                            .acquire_now(key, &policy.scaled(self.fraction), cost))
                    }
                    OnBackendError::Deny => Ok(Decision {
                        allowed: false,
                        limit: policy.burst,
                        remaining: 0,
                        reset_after: policy.period,
                        retry_after: std::time::Duration::from_secs(1),
                    }),
                    OnBackendError::Allow => Ok(Decision {
                        allowed: true,
                        limit: policy.burst,
                        remaining: policy.burst,
                        reset_after: std::time::Duration::ZERO,
                        retry_after: std::time::Duration::ZERO,
                    }),
                }
            }
        }
    }
}
