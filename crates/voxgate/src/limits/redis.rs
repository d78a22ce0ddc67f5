//! The shared limiter: GCRA in one Lua script on Redis, with Redis `TIME` as the clock every
//! instance shares. One `EVALSHA` round trip per decision.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{Decision, LimiterError, Policy, RateLimiter};

/// KEYS[1]: the bucket. ARGV: emission interval (µs), tolerance (µs), cost.
/// Returns {allowed, remaining, reset_after_us, retry_after_us}.
const SCRIPT: &str = r#"
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * emission
local allow_at = new_tat - tolerance
if allow_at > now then
  local used = tat - now
  return {0, math.floor(math.max(tolerance - used, 0) / emission), used, allow_at - now}
end
local used = new_tat - now
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(used / 1000) + 1)
return {1, math.floor(math.max(tolerance - used, 0) / emission), used, 0}
"#;

/// GCRA on Redis. Connections are made lazily (at most one attempt per second), so a
/// gateway starts even while Redis is away; a decision that fails drops the connection and
/// the next one connects afresh, so recovery after an outage takes at most about a second
/// (the connection manager's own reconnection backs off for many seconds).
pub struct RedisLimiter {
    client: redis::Client,
    connection: std::sync::Mutex<Option<ConnectionManager>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    last_failure: std::sync::Mutex<Option<tokio::time::Instant>>,
    script: redis::Script,
    timeout: Duration,
    prefix: String,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter for `url` (`redis://host:port/db`) that connects on first use. Decisions
    /// taking longer than `timeout` count as backend errors.
    pub fn lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, LimiterError> {
        let client = redis::Client::open(url).map_err(|e| LimiterError(e.to_string()))?;
        Ok(Self {
            client,
            connection: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            timeout,
            prefix: prefix.to_owned(),
        })
    }

    /// Like [`lazy`](Self::lazy), but connects now and fails if Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, LimiterError> {
        let limiter = Self::lazy(url, prefix, timeout)?;
        limiter.connection().await?;
        Ok(limiter)
    }

    /// Tries to connect now; `false` if Redis is not reachable (use continues lazily).
    pub async fn try_connect(&self) -> bool {
        self.connection().await.is_ok()
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops the connection after a failed decision: the next decision connects afresh.
    fn forget(&self) {
        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn connection(&self) -> Result<ConnectionManager, LimiterError> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        // Concurrent callers wait for the one attempt in progress; after a failed attempt,
        // callers fail fast for a second instead of queueing behind new connect timeouts.
        let _one = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        if self.failed_recently() {
            return Err(LimiterError("not connected".into()));
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connected = tokio::time::timeout(
            self.timeout * 4,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| LimiterError("connect timed out".into()))
        .and_then(|c| c.map_err(|e| LimiterError(e.to_string())));
        match &connected {
            Ok(connection) => {
                *self.connection.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(connection.clone());
            }
            Err(_) => {
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(tokio::time::Instant::now());
            }
        }
        connected
    }

    fn failed_recently(&self) -> bool {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
    ) -> Result<Decision, LimiterError> {
        let emission = u64::try_from(policy.emission().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let tolerance = u64::try_from(policy.tolerance().as_micros()).unwrap_or(u64::MAX);
        // The hash tag keeps each bucket on one slot in a cluster.
        let bucket = format!("{}:{{{key}}}", self.prefix);
        let mut connection = self.connection().await?;
        let mut invocation = self.script.key(bucket);
        invocation.arg(emission).arg(tolerance).arg(cost);
        let reply: Result<(i64, i64, i64, i64), LimiterError> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| LimiterError("timed out".into()))
                .and_then(|r| r.map_err(|e| LimiterError(e.to_string())));
        let reply = reply.inspect_err(|_| self.forget())?;
        let (allowed, remaining, reset_us, retry_us) = reply;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: policy.burst,
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset_after: micros(reset_us),
            retry_after: micros(retry_us),
        })
    }
}
