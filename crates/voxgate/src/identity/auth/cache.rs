//! The authenticator's cache of verified keys, by key id, and the rule that keeps a
//! revocation's bound: an entry's age counts from when its store read began, a read that
//! overlapped an invalidation here is not kept, and an older read never replaces a newer one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq as _;
use tokio::time::Instant;

use crate::data::store::{Account, KeyRecord};

/// Most verified keys cached at once.
const CAPACITY: usize = 10_000;

/// A verified key and its account as read from the store, and when that read began.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) key: KeyRecord,
    pub(super) account: Account,
    pub(super) fetched: Instant,
}

/// When a store read began, and the cache's invalidations then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Read {
    started: Instant,
    invalidations: u64,
}

/// Verified keys by id, each fresh for `ttl`.
#[derive(Debug)]
pub(super) struct KeyCache {
    entries: Mutex<Entries>,
    ttl: Duration,
}

/// The keys, and how many invalidations there have been: a key read from the store while
/// one happened may be the state from before it (a revocation not yet seen), so it is used
/// for the request that read it but not kept.
#[derive(Debug, Default)]
struct Entries {
    keys: HashMap<String, Arc<Cached>>,
    invalidations: u64,
}

impl KeyCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
        }
    }

    #[cfg(test)]
    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops `keyid`; a read of the store under way now is not kept when it ends: it may
    /// have read the key before the change.
    pub(super) fn invalidate(&self, keyid: &str) {
        let mut entries = self.lock();
        entries.invalidations += 1;
        entries.keys.remove(keyid);
    }

    /// The entry for `keyid`, if younger than the cache's lifetime.
    pub(super) fn fresh(&self, keyid: &str) -> Option<Arc<Cached>> {
        self.younger_than(keyid, self.ttl)
    }

    /// The entry for `keyid`, if younger than `age` (whatever the cache's lifetime).
    pub(super) fn younger_than(&self, keyid: &str, age: Duration) -> Option<Arc<Cached>> {
        self.lock()
            .keys
            .get(keyid)
            .filter(|c| c.fetched.elapsed() < age)
            .cloned()
    }

    /// Whether the cache holds `keyid` (of any age) with a digest other than `presented`.
    pub(super) fn mismatches(&self, keyid: &str, presented: &[u8]) -> bool {
        self.lock()
            .keys
            .get(keyid)
            .is_some_and(|c| !bool::from(c.key.digest.ct_eq(presented)))
    }

    /// Notes when a read of a key from the store begins, for [`KeyCache::remember`].
    pub(super) fn read_started(&self) -> Read {
        Read {
            started: Instant::now(),
            invalidations: self.lock().invalidations,
        }
    }

    /// Caches a verified key, or one a listener is bound to by configuration (a hit for a
    /// presented key still needs its exact digest), as of when its read began: its age is
    /// counted from then, so another instance's revocation is seen within the cache's
    /// lifetime of the change however slow the read (the price: a read slower than the
    /// lifetime is cached already stale, and the next request reads the store again). Not
    /// cached when a key was invalidated while it was read (it may be the state from
    /// before), nor over the answer of a read begun after it.
    pub(super) fn remember(&self, read: Read, key: KeyRecord, account: Account) -> Arc<Cached> {
        let verified = Arc::new(Cached {
            key,
            account,
            fetched: read.started,
        });
        let mut entries = self.lock();
        if entries.invalidations != read.invalidations {
            return verified;
        }
        // A read begun later has already answered: it may have seen a change this one did
        // not, so it is kept.
        if entries
            .keys
            .get(&verified.key.keyid)
            .is_some_and(|newer| newer.fetched > read.started)
        {
            return verified;
        }
        if entries.keys.len() >= CAPACITY {
            entries.keys.retain(|_, c| c.fetched.elapsed() < self.ttl);
            if entries.keys.len() >= CAPACITY {
                entries.keys.clear();
            }
        }
        entries
            .keys
            .insert(verified.key.keyid.clone(), Arc::clone(&verified));
        verified
    }
}
