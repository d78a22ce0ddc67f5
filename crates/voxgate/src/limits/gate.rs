//! The rate-limit gate in front of every non-public route: per client address (stricter
//! without a valid key), per account and per key by tier, with repeat violators blocked
//! for a growing time. Builds the `x-ratelimit-*` headers OpenAI clients read.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Decision, Policy, RateLimiter};
use crate::config::{LimitsConfig, RateRule, RateSubject};
use crate::identity::auth::{FailureGuard, Principal, guard_source};
use crate::observe::Metrics;

/// The outcome of all the limits that apply to one request.
#[derive(Debug, Clone, Copy)]
pub enum Verdict {
    /// Allowed; the tightest decision, for the headers.
    Allowed(Option<Decision>),
    /// Over a limit.
    Limited {
        retry_after: Duration,
        tightest: Decision,
    },
    /// A repeat violator, blocked.
    Blocked { retry_after: Duration },
}

/// Applies the configured limits through one limiter.
#[derive(Debug)]
pub struct Gate {
    limiter: Arc<dyn RateLimiter>,
    config: LimitsConfig,
    violators: FailureGuard,
    metrics: Arc<Metrics>,
}

impl Gate {
    pub fn new(
        limiter: Arc<dyn RateLimiter>,
        config: &LimitsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            limiter,
            metrics,
            violators: FailureGuard::new(
                config.violations_before_block,
                Duration::from_secs(60),
                Duration::from_secs(config.block_secs),
                Duration::from_secs(config.max_block_secs),
            ),
            config: config.clone(),
        }
    }

    /// Limits for a request that carries no valid key.
    pub async fn unauthenticated(&self, source: IpAddr, route: &str) -> Verdict {
        let ip = guard_source(source);
        let rules = self
            .config
            .per_ip
            .iter()
            .chain(&self.config.per_ip_unauthenticated);
        let buckets: Vec<(String, &RateRule)> = rules
            .enumerate()
            .filter(|(_, r)| applies(r, route))
            .map(|(i, r)| (format!("ip:{ip}:{i}:{}", r.label()), r))
            .collect();
        self.decide(&ip, &buckets).await
    }

    /// Limits for an authenticated request: the client address, and the tier's rules per
    /// account and per key.
    pub async fn authenticated(&self, principal: &Principal, route: &str) -> Verdict {
        let ip = guard_source(principal.source);
        let mut buckets: Vec<(String, &RateRule)> = self
            .config
            .per_ip
            .iter()
            .enumerate()
            .filter(|(_, r)| applies(r, route))
            .map(|(i, r)| (format!("ip:{ip}:{i}:{}", r.label()), r))
            .collect();
        // The key's tier's rules, and the account tier's per-account rules: a key narrowed
        // to a lower tier never escapes its account's limits. Buckets are named by the
        // subject and the rule itself (never the tier), so keys of different tiers on one
        // account share the account's buckets; a rule both tiers have is applied once.
        let account_rules = principal
            .account_tier
            .rate_limits
            .iter()
            .filter(|r| r.per == RateSubject::Account);
        for rule in principal
            .tier
            .rate_limits
            .iter()
            .chain(account_rules)
            .filter(|r| applies(r, route))
        {
            let subject = match rule.per {
                RateSubject::Account => format!("acct:{}", principal.account_id),
                RateSubject::Key => format!("key:{}", principal.keyid),
            };
            let bucket = format!("{subject}:{}", rule.label());
            if !buckets.iter().any(|(b, _)| *b == bucket) {
                buckets.push((bucket, rule));
            }
        }
        self.decide(&format!("key:{}", principal.keyid), &buckets)
            .await
    }

    async fn decide(&self, violator: &str, buckets: &[(String, &RateRule)]) -> Verdict {
        if let Err(retry_after) = self.violators.check(&[violator]) {
            self.metrics.rate_limited.inc();
            return Verdict::Blocked { retry_after };
        }
        let mut tightest: Option<Decision> = None;
        let mut denied: Option<Decision> = None;
        for (key, rule) in buckets {
            // Each bucket is one atomic decision; a later denial leaves earlier buckets
            // charged (under-admission, never over-admission).
            let decision = match self.limiter.acquire(key, &policy(rule), 1).await {
                Ok(decision) => decision,
                Err(e) => {
                    tracing::error!(target: "voxgate::security", error = %e, "rate-limit decision failed; refusing");
                    Decision {
                        allowed: false,
                        limit: 0,
                        remaining: 0,
                        reset_after: Duration::ZERO,
                        retry_after: Duration::from_secs(1),
                    }
                }
            };
            if tightest.is_none_or(|t| decision.remaining < t.remaining) {
                tightest = Some(decision);
            }
            if !decision.allowed {
                denied = Some(match denied {
                    Some(d) if d.retry_after >= decision.retry_after => d,
                    _ => decision,
                });
                break;
            }
        }
        match denied {
            Some(d) => {
                if let Some(block) = self.violators.fail(&[violator]) {
                    tracing::warn!(target: "voxgate::security", event = "rate_limit_block", violator, block_secs = block.as_secs(), "repeat rate-limit violator blocked");
                }
                self.metrics.rate_limited.inc();
                tracing::info!(target: "voxgate::security", event = "rate_limited", violator, "request over a rate limit");
                Verdict::Limited {
                    retry_after: d.retry_after,
                    tightest: d,
                }
            }
            None => Verdict::Allowed(tightest),
        }
    }
}

fn applies(rule: &RateRule, route: &str) -> bool {
    rule.route.as_deref().is_none_or(|r| r == route)
}

/// The limiter's policy for a configured rule.
pub fn policy(rule: &RateRule) -> Policy {
    Policy {
        limit: rule.limit,
        period: rule.period.duration(),
        burst: rule.burst.unwrap_or(rule.limit),
    }
}
