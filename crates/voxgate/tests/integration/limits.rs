//! Rate limiters against the real Redis (127.0.0.1:6379; a missing Redis is a failure) and in
//! memory: the same story for both, exactness under concurrency across two limiters sharing
//! Redis, and the fallback when Redis goes away and comes back.

use std::sync::Arc;
use std::time::Duration;

use voxgate::limits::{
    FallbackLimiter, MemoryLimiter, OnBackendError, Policy, RateLimiter, RedisLimiter,
};

#[allow(
    clippy::disallowed_methods,
    reason = "test harness configuration, not server config"
)]
fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis(prefix: &str) -> RedisLimiter {
    RedisLimiter::connect(&redis_url(), prefix, Duration::from_millis(500))
        .await
        .expect("Redis must be running on 127.0.0.1:6379 (scripts/services starts it)")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

async fn story(limiter: &dyn RateLimiter) {
    let key = unique("story");
    let policy = Policy::new(5, Duration::from_secs(60));
    let mut allowed = 0;
    for _ in 0..6 {
        allowed += u64::from(
            limiter
                .acquire(&key, &policy, 1)
                .await
                .expect("decide")
                .allowed,
        );
    }
    assert_eq!(allowed, 5, "a burst of limit + 1 admits exactly limit");
    let denied = limiter.acquire(&key, &policy, 1).await.expect("decide");
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    let retry = denied.retry_after.as_secs_f64();
    assert!(
        (11.0..=12.1).contains(&retry),
        "one unit frees every 12 s: {retry}"
    );
    let other = limiter
        .acquire(&unique("other"), &policy, 5)
        .await
        .expect("decide");
    assert!(
        other.allowed && other.remaining == 0,
        "costs take several units"
    );
    assert!(
        !limiter
            .acquire(&unique("big"), &policy, 6)
            .await
            .expect("decide")
            .allowed,
        "cost above the burst"
    );
}

#[tokio::test]
async fn memory_limiter_keeps_the_contract() {
    story(&MemoryLimiter::default()).await;
}

#[tokio::test]
async fn redis_limiter_keeps_the_contract() {
    story(&redis("vg:test").await).await;
}

/// Two limiters (two gateway instances) share one Redis and are hammered at once: the total
/// admitted per bucket never exceeds the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_over_admit() {
    let a = Arc::new(redis("vg:test").await);
    let b = Arc::new(redis("vg:test").await);
    let policy = Policy::new(10, Duration::from_secs(600));
    let mut over = 0;
    let trials = 200;
    for _ in 0..trials {
        let key = unique("race");
        let calls = (0..30).map(|i| {
            let limiter = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let key = key.clone();
            tokio::spawn(async move {
                limiter
                    .acquire(&key, &policy, 1)
                    .await
                    .expect("decide")
                    .allowed
            })
        });
        let admitted = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().expect("join"))
            .count();
        assert!(admitted >= 10, "the limit itself is reachable: {admitted}");
        over += admitted.saturating_sub(10);
    }
    assert_eq!(
        over, 0,
        "over-admissions in {trials} trials of 30 concurrent requests"
    );
}

/// A private Redis on a free port, for killing and restarting.
pub struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    pub fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        Self { port, child }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub async fn wait_for_redis(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_takes_over_and_recovery_is_automatic() {
    let port = free_port();
    let mut server = OwnRedis::start(port);
    wait_for_redis(server.port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let primary = RedisLimiter::connect(&url, "vg:test", Duration::from_millis(200))
        .await
        .expect("connect");
    let limiter = FallbackLimiter::new(
        Arc::new(primary),
        OnBackendError::Local,
        0.5,
        Arc::new(voxgate::observe::Metrics::new()),
    );
    let policy = Policy::new(10, Duration::from_secs(1));
    let key = unique("fallback");
    assert!(
        limiter
            .acquire(&key, &policy, 1)
            .await
            .expect("decide")
            .allowed
    );
    assert!(!limiter.is_degraded());

    server.stop();
    // No errors while Redis is gone: the local limiter decides. Its buckets start empty at
    // the switch (no fresh burst), then refill at half the limit's rate: one per 200 ms.
    let switched = std::time::Instant::now();
    let first = limiter
        .acquire(&key, &policy, 1)
        .await
        .expect("the fallback decides");
    assert!(!first.allowed, "no fresh burst at the switch");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut allowed = 0;
    for _ in 0..20 {
        let decision = limiter
            .acquire(&key, &policy, 1)
            .await
            .expect("the fallback decides");
        allowed += u64::from(decision.allowed);
    }
    assert!(limiter.is_degraded());
    let refilled = (switched.elapsed().as_secs_f64() / 0.2).floor() as u64;
    assert!(
        allowed >= 1 && allowed <= refilled,
        "the local fallback grants at most half of the limit's rate: {allowed} in {:?}",
        switched.elapsed()
    );

    let restarted = OwnRedis::start(port);
    wait_for_redis(restarted.port).await;
    let mut recovered = false;
    for _ in 0..100 {
        let _ = limiter
            .acquire(&unique("probe"), &policy, 1)
            .await
            .expect("decide");
        if !limiter.is_degraded() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "shared limits apply again once Redis is back");

    // Deny mode refuses while the backend is away.
    let primary = RedisLimiter::connect(&url, "vg:test", Duration::from_millis(200))
        .await
        .expect("connect");
    let deny = FallbackLimiter::new(
        Arc::new(primary),
        OnBackendError::Deny,
        0.5,
        Arc::new(voxgate::observe::Metrics::new()),
    );
    assert!(
        deny.acquire(&unique("deny"), &policy, 1)
            .await
            .expect("decide")
            .allowed
    );
    drop(restarted);
    let refused = deny
        .acquire(&unique("deny"), &policy, 1)
        .await
        .expect("decide");
    assert!(
        !refused.allowed && deny.is_degraded(),
        "deny mode refuses without its backend"
    );
}
