//! What the security stack costs, measured in-process: authentication with the key cached
//! and not, the time a refusal takes (unknown id against wrong secret), the rate limiter's
//! throughput, a request's durable quota accounting, and the public router with and without
//! authentication and limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::data::audit::Audit;
use crate::identity::accounts::Accounts;
use crate::identity::auth::Authenticator;
use crate::limits::quota::Amounts;
use crate::observe::Metrics;
use crate::service::{self as services, Services};

use super::never_refusing;

/// Times `Authenticator::authenticate` with the key cached, and with the cache emptied before
/// every call (one indexed lookup plus the HMAC).
pub(super) async fn auth_cost(
    config: &Config,
    n: u32,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let dir = std::env::temp_dir().join(format!("voxgate-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = config.clone();
    config.data_dir = dir.clone();
    config.database.url = secrecy::SecretString::from(String::new());
    config.auth.pepper = Some(secrecy::SecretString::from("b".repeat(32)));
    let (store, pepper) = services::open_store(&config).await?;
    let audit = Audit::new(Arc::clone(&store));
    let admin = Accounts::new(
        Arc::clone(&store),
        audit.clone(),
        Arc::clone(&pepper),
        config.tiers.clone(),
        60,
    );
    let key = super::bench_key(&admin, "basic").await?;
    let header = format!("Bearer {}", key.secret.expose_secret());
    let auth = Authenticator::new(
        store,
        audit,
        pepper,
        &config.auth,
        &config.tiers,
        Arc::new(Metrics::new()),
    );
    let source = std::net::IpAddr::from([127, 0, 0, 1]);
    auth.authenticate(Some(&header), source).await?;
    let start = Instant::now();
    for _ in 0..n {
        auth.authenticate(Some(&header), source).await?;
    }
    let cached = start.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    let uncached_n = n / 10;
    let start = Instant::now();
    for _ in 0..uncached_n {
        auth.invalidate(&key.record.keyid);
        auth.authenticate(Some(&header), source).await?;
    }
    let uncached = start.elapsed().as_secs_f64() / f64::from(uncached_n) * 1e6;
    writeln!(
        out,
        "cached {cached:.1} µs per request, uncached (lookup + HMAC) {uncached:.1} µs"
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The time a refusal takes for a well-formed key whose id is unknown and for a known id
/// with a wrong secret, interleaved, through the whole authentication path (limits and the
/// audit included): the two medians must not tell the cases apart.
pub(super) async fn key_timing(
    config: &Config,
    n: u32,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("voxgate-bench-timing-{}", std::process::id()));
    let mut config = config.clone();
    config.data_dir = dir.clone();
    config.database.url = secrecy::SecretString::from(String::new());
    config.auth.pepper = Some(secrecy::SecretString::from("d".repeat(32)));
    config.auth.failure_threshold = u32::MAX;
    let generous = crate::config::RateRule {
        per: crate::config::RateSubject::Account,
        period: crate::config::Period::Second,
        limit: 1_000_000_000,
        burst: None,
        route: None,
    };
    config.limits.per_ip = vec![generous.clone()];
    config.limits.per_ip_unauthenticated = vec![generous];
    let state = Services::build(config).await?;
    let key = super::bench_key(&state.accounts, "basic").await?;
    let secret = "a".repeat(52);
    let wrong = format!(
        "Bearer {}",
        crate::identity::auth::key::compose(&key.record.keyid, &secret)
    );
    let unknown = format!(
        "Bearer {}",
        crate::identity::auth::key::compose(&"b".repeat(24), &secret)
    );
    let source = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..n * 2 {
        let (slot, header) = if i % 2 == 0 {
            (0, &unknown)
        } else {
            (1, &wrong)
        };
        let start = Instant::now();
        let refused = state.authenticate(Some(header), source, "/v1/models").await;
        times[slot].push(start.elapsed());
        anyhow::ensure!(refused.is_err(), "a wrong key was accepted");
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let (unknown_us, wrong_us) = (median(&mut times[0]), median(&mut times[1]));
    writeln!(
        out,
        "unknown id {unknown_us:.1} µs, known id with a wrong secret {wrong_us:.1} µs (median of {n} each): ratio {:.3}",
        wrong_us / unknown_us
    )?;
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub(super) async fn limiter_throughput(
    n: u32,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use crate::limits::{MemoryLimiter, Policy, RateLimiter, RedisLimiter};
    let policy = Policy::new(1_000_000, Duration::from_secs(60));
    let memory = MemoryLimiter::default();
    let start = Instant::now();
    for i in 0..n {
        memory
            .acquire(&format!("k{}", i % 1000), &policy, 1)
            .await?;
    }
    writeln!(
        out,
        "memory  {:.0} decisions/s",
        f64::from(n) / start.elapsed().as_secs_f64()
    )?;
    match RedisLimiter::connect(
        "redis://127.0.0.1:6379",
        "vg:bench",
        Duration::from_millis(500),
    )
    .await
    {
        Ok(redis) => {
            let redis = Arc::new(redis);
            let total = n / 4;
            let start = Instant::now();
            // 64 decisions in flight at once, as many concurrent requests would have.
            for batch in 0..total / 64 {
                let calls = (0..64).map(|i| {
                    let redis = Arc::clone(&redis);
                    async move {
                        redis
                            .acquire(&format!("k{}", (batch * 64 + i) % 1000), &policy, 1)
                            .await
                    }
                });
                for result in futures::future::join_all(calls).await {
                    result?;
                }
            }
            let done = (total / 64) * 64;
            writeln!(
                out,
                "redis   {:.0} decisions/s (one instance, 64 in flight)",
                f64::from(done) / start.elapsed().as_secs_f64()
            )?;
        }
        Err(e) => writeln!(out, "redis   not measured: {e}")?,
    }
    Ok(())
}

/// Requests per second through the whole public router (auth, limits, handler) against a
/// bare router with the same handler body, both called in-process.
pub(super) async fn stack_cost(
    config: &Config,
    n: u32,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let dir = std::env::temp_dir().join(format!("voxgate-bench-stack-{}", std::process::id()));
    let mut config = config.clone();
    config.data_dir = dir.clone();
    config.database.url = secrecy::SecretString::from(String::new());
    config.auth.pepper = Some(secrecy::SecretString::from("c".repeat(32)));
    // Real decisions on every request (per address and per account), never refusing.
    never_refusing(&mut config);
    let state = Services::build(config).await?;
    let key = super::bench_key(&state.accounts, "admin").await?;
    let header = format!("Bearer {}", key.secret.expose_secret());
    let (bare_rps, full_rps) = crate::http::measure::stack_throughput(&state, &header, n).await?;
    writeln!(
        out,
        "without auth + limits {bare_rps:.0} req/s, with them {full_rps:.0} req/s ({:.0}% of the throughput kept)",
        full_rps / bare_rps * 100.0
    )?;
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What a request's durable quota accounting costs: its reservation and its settlement
/// (on SQLite one statement and one commit each, shared with the requests that wait for the
/// writer at the same time), one request at a time and 16 at once. Printed per run: requests
/// per second and this process's CPU time per request (user and system, every thread:
/// SQLite's included). Every tier gets three quotas (characters, audio seconds, requests),
/// whatever the configuration says; a last reservation checks that every settlement was
/// charged.
pub(super) async fn quota_cost(
    config: &Config,
    n: u32,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use crate::config::{Metric, Period, QuotaRule, RateSubject};
    use secrecy::ExposeSecret as _;
    const LIMIT: u64 = 1_000_000_000_000;
    let (mut config, dir) = super::scratch_server(config, "quota")?;
    for tier in config.tiers.values_mut() {
        tier.quotas = [Metric::Characters, Metric::AudioSeconds, Metric::Requests]
            .map(|metric| QuotaRule {
                per: RateSubject::Account,
                metric,
                period: Period::Day,
                limit: LIMIT,
            })
            .to_vec();
    }
    let state = Services::build(config).await?;
    let key = super::bench_key(&state.accounts, "basic").await?;
    let header = format!("Bearer {}", key.secret.expose_secret());
    let principal = Arc::new(
        state
            .auth
            .authenticate(Some(&header), std::net::IpAddr::from([127, 0, 0, 1]))
            .await?,
    );
    // What a speech request of the hop benchmark reserves and uses: 44 characters, 4 s.
    let amounts = Amounts {
        characters: 44,
        audio_seconds: 4,
        requests: 1,
        transcribed_seconds: 0,
    };
    // A first request prepares the statements and makes the counters' rows.
    state
        .reserve(&principal, amounts)
        .await?
        .settle(amounts)
        .await;
    let mut settled = 1;
    for at_once in [1u32, 16] {
        let each = n / at_once;
        let (cpu, start) = (process_cpu(), Instant::now());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..at_once {
            let (state, principal) = (Arc::clone(&state), Arc::clone(&principal));
            tasks.spawn(async move {
                for _ in 0..each {
                    let hold = state.reserve(&principal, amounts).await?;
                    hold.settle(amounts).await;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let (wall, requests) = (start.elapsed(), each * at_once);
        settled += i64::from(requests);
        let cpu = process_cpu().saturating_sub(cpu).as_secs_f64() / f64::from(requests);
        writeln!(
            out,
            "{at_once:>2} at once: {:.0} requests/s, {:.0} µs CPU per request (reservation + settlement)",
            f64::from(requests) / wall.as_secs_f64(),
            cpu * 1e6
        )?;
    }
    // Every settlement charged its characters: what is left is the limit less them and the
    // reservation now held (unless the day's window turned during the run).
    let hold = state.reserve(&principal, amounts).await?;
    let remaining = hold.character_budget().map(|b| b.remaining);
    let expected = i64::try_from(LIMIT)? - amounts.characters * (settled + 1);
    anyhow::ensure!(
        remaining == Some(expected),
        "{} characters left where {expected} were expected: a settlement was not charged (or the day turned meanwhile)",
        remaining.unwrap_or(-1)
    );
    hold.refund().await;
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// This process's CPU time so far, user and system, every thread.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the struct it is given; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above (and zeroed before it).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
