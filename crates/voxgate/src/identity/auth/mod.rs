//! Authentication and authorization: API keys, scopes, tiers, the verified-key cache and the
//! brute-force guard. `Authenticator::authenticate` turns an `Authorization` header into a
//! [`Principal`] or a refusal; the HTTP layer maps refusals to 401/403/429.

mod cache;
pub mod ephemeral;
mod failures;
mod guard;
pub mod key;
pub mod web;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq as _;

pub use crate::config::{Scope, join_scopes, parse_scopes};
use cache::{Cached, KeyCache};
pub use guard::FailureGuard;
pub use key::{KeyFormatError, Pepper};

use crate::config::{AuthConfig, IpTracking, TierConfig};
use crate::data::audit::{Actor, Audit, AuditEvent};
use crate::data::store::{Account, KeyRecord, Store, StoreError};
use crate::observe::Metrics;
use crate::util::now;

/// Who is calling, after a key was verified.
#[derive(Debug, Clone)]
pub struct Principal {
    pub keyid: String,
    pub account_id: String,
    /// The effective tier's name and policy.
    pub tier_name: String,
    pub tier: Arc<TierConfig>,
    /// The account's own tier (the effective one when the key does not narrow it): its
    /// per-account rate limits bind every key of the account.
    pub account_tier: Arc<TierConfig>,
    /// Tier scopes, narrowed by the key's own.
    pub scopes: BTreeSet<Scope>,
    /// When the key stops working (its expiry or rotation deadline), if ever.
    pub expires_at: Option<i64>,
    /// The client address the request came from.
    pub source: IpAddr,
    /// A browser key's web origins: requests must come from one of them.
    pub origins: Option<Vec<String>>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A failed authentication: why, and what to write down about it (the key id, if the
/// token named one, the reason, and the block it imposed on its source, if it did).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AuthFailure {
    #[source]
    pub error: AuthError,
    pub keyid: Option<String>,
    pub reason: &'static str,
    pub blocked: Option<Duration>,
}

impl AuthFailure {
    fn new(error: AuthError, keyid: Option<String>, reason: &'static str) -> Self {
        Self {
            error,
            keyid,
            reason,
            blocked: None,
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key was presented")]
    Missing,
    #[error("the API key is invalid")]
    Invalid,
    #[error("the API key has expired")]
    Expired,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the account is deactivated")]
    AccountInactive,
    #[error("too many failed authentications from this source")]
    Blocked { retry_after: Duration },
    #[error("store unavailable")]
    Store(#[from] StoreError),
}

/// Verifies keys.
#[derive(Debug)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    audit: Audit,
    pepper: Arc<Pepper>,
    tiers: BTreeMap<String, Arc<TierConfig>>,
    cache: KeyCache,
    /// How long a verified key keeps working while the store is unavailable.
    outage_grace: Duration,
    guard: FailureGuard,
    ip_tracking: IpTracking,
    /// Compared against when the key id is unknown, so both paths do the same work.
    dummy_digest: Vec<u8>,
    /// Usage not yet written, by key id.
    usage: Mutex<HashMap<String, Usage>>,
    metrics: Arc<Metrics>,
    /// Failures written down per source and minute, not per request.
    failures: failures::FailureLog,
}

/// Requests since the last write, and the last one's time and (tracked) address.
#[derive(Debug, Default)]
struct Usage {
    count: i64,
    at: i64,
    ip: Option<String>,
}

/// How often buffered usage is written to the store.
const USAGE_FLUSH: Duration = Duration::from_secs(1);

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        audit: Audit,
        pepper: Arc<Pepper>,
        config: &AuthConfig,
        tiers: &BTreeMap<String, TierConfig>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let dummy_digest = pepper.digest("voxgate-dummy-secret-for-unknown-key-ids");
        Self {
            audit,
            store,
            metrics,
            pepper,
            tiers: tiers
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect(),
            cache: KeyCache::new(Duration::from_millis(config.cache_ttl_ms)),
            outage_grace: Duration::ZERO,
            guard: FailureGuard::new(
                config.failure_threshold,
                Duration::from_secs(config.failure_window_secs),
                Duration::from_secs(config.block_secs),
                Duration::from_secs(config.max_block_secs),
            ),
            ip_tracking: config.client_ip,
            dummy_digest,
            usage: Mutex::new(HashMap::new()),
            failures: failures::FailureLog::default(),
        }
    }

    /// Starts the task that writes buffered usage every second (one UPDATE per key used,
    /// not one per request) and the summaries of failure windows that closed. It ends when
    /// the authenticator is dropped.
    pub fn spawn_usage_writer(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH);
            loop {
                tick.tick().await;
                let Some(auth) = weak.upgrade() else { break };
                auth.flush_usage().await;
                auth.flush_failures().await;
            }
        });
    }

    /// Lets keys verified before a store outage keep working for `grace` while it lasts.
    pub fn with_outage_grace(mut self, grace: Duration) -> Self {
        self.outage_grace = grace;
        self
    }

    /// Writes one summary record per failure window that closed with repeats.
    pub async fn flush_failures(&self) {
        for summary in self.failures.close_expired() {
            self.audit
                .record(
                    Actor::Anonymous,
                    Some(summary.source),
                    AuditEvent::AuthFailuresRepeated {
                        reason: summary.reason,
                        repeats: summary.repeats,
                        window_secs: failures::WINDOW.as_secs(),
                    },
                )
                .await;
        }
    }

    /// Writes buffered usage now.
    pub async fn flush_usage(&self) {
        let pending: Vec<_> =
            std::mem::take(&mut *self.usage.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        for (keyid, Usage { count, at, ip }) in pending {
            match self
                .store
                .record_key_use(&keyid, count, at, ip.as_deref())
                .await
            {
                Ok(()) => {}
                // Kept for the next write: the counts add up, one entry per key.
                Err(e) if e.is_outage() => {
                    let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = usage.entry(keyid).or_default();
                    entry.count += count;
                    if entry.at < at {
                        entry.at = at;
                        entry.ip = ip;
                    }
                }
                Err(e) => tracing::warn!(error = %e, keyid, "key usage not recorded"),
            }
        }
    }

    /// Drops a key from this instance's cache (other instances see the change within the
    /// cache TTL). A read of the store under way now is not cached when it ends: it may
    /// have read the key before the change.
    pub fn invalidate(&self, keyid: &str) {
        self.cache.invalidate(keyid);
    }

    /// Verifies the bearer token from `authorization` (the header value, if any) for a
    /// request from `source`. A failure is counted against its source (and, with a key id,
    /// against that source and key id together) by the brute-force guard, a missing key
    /// included; it is not written down here: the caller applies its per-address limits
    /// first and then calls [`Authenticator::record_failure`], so a flood is throttled
    /// before it reaches the log.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        source: IpAddr,
    ) -> Result<Principal, AuthFailure> {
        let ip = guard_source(source);
        self.not_blocked(&ip)?;
        let Some(token) = authorization else {
            return Err(self.failed(&ip, None, AuthError::Missing, "missing_key"));
        };
        let Some(token) = token.strip_prefix("Bearer ").map(str::trim) else {
            return Err(self.failed(&ip, None, AuthError::Invalid, "malformed_header"));
        };
        let parsed = match key::parse(token) {
            Ok(parsed) => parsed,
            Err(KeyFormatError::BadChecksum) => {
                return Err(self.failed(&ip, None, AuthError::Invalid, "bad_checksum"));
            }
            Err(KeyFormatError::Malformed) => {
                return Err(self.failed(&ip, None, AuthError::Invalid, "malformed_key"));
            }
        };
        let ip_key = format!("{ip}|{}", parsed.keyid);
        if let Err(retry_after) = self.guard.check(&[&ip, &ip_key]) {
            return Err(AuthFailure::new(
                AuthError::Blocked { retry_after },
                Some(parsed.keyid.clone()),
                "blocked",
            ));
        }
        // The presented secret's digest is computed first; the cache answers only when it
        // matches a verified entry exactly. Everything else (unknown id, wrong secret, cold
        // cache) takes the same path: one indexed lookup that always yields one row (a dummy
        // one for an unknown id) and a constant-time comparison.
        let presented = self.pepper.digest(parsed.secret());
        let cached = match self.cached(&parsed.keyid, &presented) {
            Some(hit) => hit,
            None => {
                let read = self.cache.read_started();
                let found = match self.store.key_with_account(&parsed.keyid).await {
                    Ok(found) => found,
                    Err(e) => {
                        return self.during_outage(&parsed.keyid, Some(&presented), e, source);
                    }
                };
                let expected = found
                    .as_ref()
                    .map_or(self.dummy_digest.as_slice(), |(k, _)| k.digest.as_slice());
                let matches: bool = presented.ct_eq(expected).into();
                let Some((key, account)) = found.filter(|_| matches) else {
                    return Err(self.failed(
                        &ip_key,
                        Some(parsed.keyid.clone()),
                        AuthError::Invalid,
                        "unknown_key_or_wrong_secret",
                    ));
                };
                self.cache.remember(read, key, account)
            }
        };
        let (key, account) = (&cached.key, &cached.account);
        self.usable(key, account)?;
        let Some(principal) = self.principal(key, account, source) else {
            // The key names a tier that is no longer configured, or one above its account's.
            return Err(self.failed(
                &ip_key,
                Some(key.keyid.clone()),
                AuthError::Invalid,
                "tier_not_allowed",
            ));
        };
        self.track_use(&key.keyid, source);
        Ok(principal)
    }

    /// The principal of a key a listener is bound to by configuration (a Wyoming listener:
    /// its protocol carries no credentials, so there is no secret to compare). The key's
    /// state is read through the same cache as verified keys (at most `auth.cache_ttl_ms`
    /// old), so a revocation or expiry reaches bound connections within that bound.
    ///
    /// `track`: count this as a use of the key (a request); a liveness check is not one.
    pub async fn bound(
        &self,
        keyid: &str,
        source: IpAddr,
        track: bool,
    ) -> Result<Principal, AuthFailure> {
        let cached = match self.cache.fresh(keyid) {
            Some(hit) => hit,
            None => {
                let read = self.cache.read_started();
                let found = match self.store.key_with_account(keyid).await {
                    Ok(found) => found,
                    Err(e) => {
                        let principal = self.during_outage(keyid, None, e, source)?;
                        if track {
                            self.track_use(keyid, source);
                        }
                        return Ok(principal);
                    }
                };
                let Some((key, account)) = found else {
                    self.metrics.auth_failures.inc();
                    return Err(AuthFailure::new(
                        AuthError::Invalid,
                        Some(keyid.to_owned()),
                        "bound_key_unknown",
                    ));
                };
                self.cache.remember(read, key, account)
            }
        };
        let (key, account) = (&cached.key, &cached.account);
        self.usable(key, account)?;
        let principal = self.principal(key, account, source).ok_or_else(|| {
            AuthFailure::new(
                AuthError::Invalid,
                Some(key.keyid.clone()),
                "tier_not_allowed",
            )
        })?;
        if track {
            self.track_use(&key.keyid, source);
        }
        Ok(principal)
    }

    /// Counts a refusal that is not a key's (credentials in the query, a cookie or a body)
    /// against its source, like a failed authentication.
    pub fn refuse(&self, source: IpAddr, reason: &'static str) -> AuthFailure {
        let ip = guard_source(source);
        if let Err(blocked) = self.not_blocked(&ip) {
            return blocked;
        }
        self.failed(&ip, None, AuthError::Invalid, reason)
    }

    /// Refuses a source (`guard_source`) the brute-force guard has blocked, before anything
    /// it presented is looked at.
    fn not_blocked(&self, ip: &str) -> Result<(), AuthFailure> {
        self.guard.check(&[ip]).map_err(|retry_after| {
            AuthFailure::new(AuthError::Blocked { retry_after }, None, "blocked")
        })
    }

    /// Writes a failure down: the first of its source and reason each minute in full (and
    /// as a security event), the repeats as a count (see [`failures`]); a block it imposed,
    /// always.
    pub async fn record_failure(&self, source: IpAddr, failure: &AuthFailure) {
        if matches!(
            failure.error,
            AuthError::Blocked { .. } | AuthError::Store(_)
        ) {
            return;
        }
        if let Some(block) = failure.blocked {
            self.audit
                .record(
                    Actor::Anonymous,
                    Some(source),
                    AuditEvent::AuthBlocked {
                        block_secs: block.as_secs(),
                    },
                )
                .await;
        }
        match self
            .failures
            .note(&guard_source(source), source, failure.reason)
        {
            failures::Seen::First => {
                self.audit
                    .record(
                        Actor::Anonymous,
                        Some(source),
                        AuditEvent::AuthFailed {
                            keyid: failure.keyid.clone(),
                            reason: failure.reason,
                        },
                    )
                    .await;
            }
            failures::Seen::Repeat { count, sample } => {
                if sample {
                    tracing::warn!(target: "voxgate::security", event = "auth_failures_repeated", source = %guard_source(source), reason = failure.reason, repeats = count, "repeated authentication failures from one source (recorded as one summary per minute)");
                }
            }
        }
    }

    /// The effective tier and scopes: the key may narrow its account's, never widen them.
    fn principal(&self, key: &KeyRecord, account: &Account, source: IpAddr) -> Option<Principal> {
        let account_tier = self.tiers.get(&account.tier)?;
        let (tier_name, tier) = match &key.tier {
            Some(name) => {
                let tier = self.tiers.get(name)?;
                if tier.rank > account_tier.rank {
                    return None;
                }
                (name.clone(), Arc::clone(tier))
            }
            None => (account.tier.clone(), Arc::clone(account_tier)),
        };
        let mut scopes: BTreeSet<Scope> = tier.scopes.iter().copied().collect();
        scopes.retain(|s| account_tier.scopes.contains(s));
        if let Some(narrow) = key.scopes.as_deref() {
            let narrow: BTreeSet<Scope> = parse_scopes(narrow)?.into_iter().collect();
            scopes.retain(|s| narrow.contains(s));
        }
        let expires_at = match (key.expires_at, key.grace_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Principal {
            keyid: key.keyid.clone(),
            account_id: account.id.clone(),
            tier_name,
            tier,
            account_tier: Arc::clone(account_tier),
            scopes,
            expires_at,
            source,
            origins: key
                .origins
                .as_deref()
                .map(|o| o.split_whitespace().map(str::to_owned).collect()),
        })
    }

    /// A fresh cache entry for `keyid` whose stored digest equals `presented`.
    fn cached(&self, keyid: &str, presented: &[u8]) -> Option<Arc<Cached>> {
        self.cache
            .fresh(keyid)
            .filter(|hit| bool::from(hit.key.digest.ct_eq(presented)))
    }

    /// While the store cannot be reached, a key verified before (within
    /// `database.outage_grace_secs`, with the exact digest for a presented key) keeps
    /// working, expiry still checked. The price: with several instances, one cut off from
    /// the database may accept a key revoked through another for up to the grace (a single
    /// instance cannot revoke without its store). Any other key, a wrong secret included,
    /// and any other store failure is refused with the store's error (503); a wrong secret
    /// for a known key id counts as a failed authentication.
    fn during_outage(
        &self,
        keyid: &str,
        presented: Option<&[u8]>,
        err: StoreError,
        source: IpAddr,
    ) -> Result<Principal, AuthFailure> {
        let known = err.is_outage().then(|| {
            self.cache
                .younger_than(keyid, self.outage_grace)
                .filter(|c| presented.is_none_or(|p| bool::from(c.key.digest.ct_eq(p))))
        });
        let Some(cached) = known.flatten() else {
            if err.is_outage() && presented.is_some_and(|p| self.cache.mismatches(keyid, p)) {
                // The id is known but the secret does not match: a guess, counted by the
                // guard as any other.
                let ip = guard_source(source);
                let _ = self.failed(
                    &format!("{ip}|{keyid}"),
                    Some(keyid.to_owned()),
                    AuthError::Invalid,
                    "wrong_secret_during_outage",
                );
            }
            return Err(AuthFailure::new(AuthError::Store(err), None, "store"));
        };
        self.usable(&cached.key, &cached.account)?;
        let principal = self
            .principal(&cached.key, &cached.account, source)
            .ok_or_else(|| {
                AuthFailure::new(
                    AuthError::Invalid,
                    Some(keyid.to_owned()),
                    "tier_not_allowed",
                )
            })?;
        if presented.is_some() {
            self.track_use(keyid, source);
        }
        Ok(principal)
    }

    /// Refuses (and counts) a known key that may not be used now.
    fn usable(&self, key: &KeyRecord, account: &Account) -> Result<(), AuthFailure> {
        match refusal(key, account) {
            None => Ok(()),
            Some((error, reason)) => {
                self.metrics.auth_failures.inc();
                Err(AuthFailure::new(error, Some(key.keyid.clone()), reason))
            }
        }
    }

    /// Counts a failure with the guard (the source, and source + key id when `source_key`
    /// differs) and the metrics.
    fn failed(
        &self,
        source_key: &str,
        keyid: Option<String>,
        error: AuthError,
        reason: &'static str,
    ) -> AuthFailure {
        let ip = source_key.split('|').next().unwrap_or(source_key);
        let sources: Vec<&str> = if source_key == ip {
            vec![ip]
        } else {
            vec![ip, source_key]
        };
        let blocked = self.guard.fail(&sources);
        self.metrics.auth_failures.inc();
        if blocked.is_some() {
            self.metrics.auth_blocks.inc();
        }
        AuthFailure {
            error,
            keyid,
            reason,
            blocked,
        }
    }

    /// Usage tracking, off the request path: buffered, written by the usage writer.
    fn track_use(&self, keyid: &str, source: IpAddr) {
        let ip = match self.ip_tracking {
            IpTracking::Full => Some(source.to_string()),
            IpTracking::Truncated => Some(truncate_ip(source).to_string()),
            IpTracking::Off => None,
        };
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if !usage.contains_key(keyid) {
            usage.insert(keyid.to_owned(), Usage::default());
        }
        let Some(entry) = usage.get_mut(keyid) else {
            return;
        };
        entry.count += 1;
        entry.at = now();
        entry.ip = ip;
    }
}

/// Why a known key may not be used now, if it may not.
fn refusal(key: &KeyRecord, account: &Account) -> Option<(AuthError, &'static str)> {
    let t = now();
    if key.revoked_at.is_some() {
        Some((AuthError::Revoked, "revoked"))
    } else if key.grace_until.is_some_and(|g| g <= t) {
        Some((AuthError::Revoked, "rotated_past_grace"))
    } else if key.expires_at.is_some_and(|e| e <= t) {
        Some((AuthError::Expired, "expired"))
    } else if !account.active {
        Some((AuthError::AccountInactive, "account_inactive"))
    } else {
        None
    }
}

/// The brute-force guard's view of a source: an IPv4 address, or an IPv6 /64 (one subscriber
/// usually holds a whole /64, so counting single IPv6 addresses would be trivially evaded).
pub fn guard_source(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// IPv4 /24, IPv6 /48: enough to tell networks apart, not people.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// Loads the pepper: the configured secret, else the pepper file (created with a fresh
/// random pepper, mode 0600, if it does not exist).
pub fn load_pepper(config: &AuthConfig, data_dir: &std::path::Path) -> anyhow::Result<Pepper> {
    use anyhow::Context as _;
    let secret = crate::data::secrets::load_or_create(
        config.pepper.as_ref(),
        &config.pepper_file,
        data_dir,
        "pepper",
    )?;
    Pepper::new(secret).context("the pepper must be at least 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    use secrecy::ExposeSecret as _;

    use crate::data::audit::Actor;
    use crate::identity::accounts::{Accounts, CreatedKey, KeyRequest};

    /// An authenticator on a SQLite store in `dir`, a store handle and an admin API on the
    /// same store, and a key of the basic tier.
    async fn keyed(dir: &std::path::Path) -> (Authenticator, Arc<dyn Store>, Accounts, CreatedKey) {
        let mut config = crate::config::Config::defaults().expect("defaults");
        config.auth.pepper = Some(secrecy::SecretString::from("p".repeat(32)));
        let store = crate::data::store::open("", dir).await.expect("store");
        let pepper = Arc::new(load_pepper(&config.auth, dir).expect("pepper"));
        let audit = Audit::new(Arc::clone(&store));
        let accounts = Accounts::new(
            Arc::clone(&store),
            audit.clone(),
            Arc::clone(&pepper),
            config.tiers.clone(),
            60,
        );
        let account = accounts
            .create_account(Actor::Cli, "cache", None, "basic")
            .await
            .expect("account");
        let key = accounts
            .create_key(Actor::Cli, &account.id, KeyRequest::default(), None)
            .await
            .expect("key");
        let auth = Authenticator::new(
            Arc::clone(&store),
            audit,
            pepper,
            &config.auth,
            &config.tiers,
            Arc::new(Metrics::new()),
        );
        (auth, store, accounts, key)
    }

    /// `keyid` and its account as a request reads them from the store.
    async fn read_key(store: &Arc<dyn Store>, keyid: &str) -> (KeyRecord, Account) {
        store
            .key_with_account(keyid)
            .await
            .expect("read")
            .expect("the key")
    }

    /// A key read from the store while it was revoked here is the state from before the
    /// revocation: used by the request that read it, never cached for the next.
    #[tokio::test]
    async fn a_read_that_overlaps_a_revocation_is_not_cached() {
        let dir = tempfile::tempdir().expect("dir");
        let (auth, store, accounts, key) = keyed(dir.path()).await;
        let keyid = key.record.keyid.clone();
        let header = format!("Bearer {}", key.secret.expose_secret());
        let source = IpAddr::from([127, 0, 0, 1]);

        // A request's read, begun before the revocation and ending after it.
        let read = auth.cache.read_started();
        let (before, account) = read_key(&store, &keyid).await;
        assert!(before.revoked_at.is_none(), "read before the revocation");
        accounts
            .revoke_key(Actor::Cli, &keyid)
            .await
            .expect("revoke");
        auth.invalidate(&keyid);
        auth.cache.remember(read, before, account);

        assert!(
            auth.cache.fresh(&keyid).is_none(),
            "the stale read is not kept"
        );
        let refused = auth
            .authenticate(Some(&header), source)
            .await
            .expect_err("the next request reads the revocation");
        assert!(matches!(refused.error, AuthError::Revoked), "{refused:?}");
    }

    /// Two reads of one key that end out of order: the one begun later (which saw the
    /// revocation) stays cached, not the older state that arrived after it.
    #[tokio::test]
    async fn an_older_read_does_not_replace_a_newer_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (auth, store, _accounts, key) = keyed(dir.path()).await;
        let keyid = key.record.keyid.clone();
        let (active, account) = read_key(&store, &keyid).await;
        let mut revoked = active.clone();
        revoked.revoked_at = Some(crate::util::now());
        tokio::time::pause();
        let first = auth.cache.read_started();
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = auth.cache.read_started();
        auth.cache.remember(second, revoked, account.clone());
        auth.cache.remember(first, active, account);
        let cached = auth.cache.fresh(&keyid).expect("cached");
        assert!(cached.key.revoked_at.is_some(), "the newer read is kept");
    }

    /// A cached key's age counts from when its read began, so a slow read does not stretch
    /// the time another instance's revocation takes to be seen.
    #[tokio::test]
    async fn a_cached_key_ages_from_when_its_read_began() {
        let dir = tempfile::tempdir().expect("dir");
        let (auth, store, _accounts, key) = keyed(dir.path()).await;
        let keyid = key.record.keyid.clone();
        let (record, account) = read_key(&store, &keyid).await;
        tokio::time::pause();
        let read = auth.cache.read_started();
        tokio::time::advance(auth.cache.ttl() / 2).await;
        auth.cache.remember(read, record, account);
        assert!(
            auth.cache.fresh(&keyid).is_some(),
            "younger than the lifetime"
        );
        tokio::time::advance(auth.cache.ttl() / 2).await;
        assert!(
            auth.cache.fresh(&keyid).is_none(),
            "a lifetime after the read began, not after it ended"
        );
    }

    #[test]
    fn ipv6_sources_are_counted_by_slash_64() {
        let a = guard_source("2001:db8:1:2::1".parse().expect("ip"));
        let b = guard_source("2001:db8:1:2:ffff::9".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, guard_source("2001:db8:1:3::1".parse().expect("ip")));
        assert_eq!(
            guard_source("::ffff:192.0.2.7".parse().expect("ip")),
            "192.0.2.7"
        );
    }

    #[test]
    fn truncation_keeps_only_the_network() {
        assert_eq!(
            truncate_ip("203.0.113.77".parse().expect("ip")).to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            truncate_ip("2001:db8:1:2:3:4:5:6".parse().expect("ip")).to_string(),
            "2001:db8:1::"
        );
    }
}
