//! Browser sessions of the web console and the playground. A page never holds a key: the
//! key is presented once, at sign-in, and exchanged for a session id (32 random bytes) that
//! lives only in an HttpOnly cookie. The store keeps the id's keyed digest, the key it was
//! opened with, the surface it opens, its absolute end and when it was last used.
//!
//! Presented, a session id is checked for its form, looked up by digest (a digest is
//! compared by the database, never a secret), its absolute and idle lifetimes checked, and
//! then its key resolved through the authentication cache exactly like a bound key: a
//! revoked or expired key, or a deactivated account, ends its sessions within
//! `auth.cache_ttl_ms`. Unknown or malformed ids count against their source in the
//! brute-force guard like a wrong key.
//!
//! The CSRF token of a session is HMAC(pepper, "csrf" ‖ id): derived, never stored, known
//! only to a page that signed in (it is in the sign-in answer and `GET …/session`, which
//! needs the cookie).

use std::net::IpAddr;

use secrecy::SecretString;
use subtle::ConstantTimeEq as _;

use super::{AuthError, AuthFailure, Authenticator, Principal, guard_source};
use crate::config::Scope;
use crate::data::store::{StoreError, WebSessionRecord};
use crate::util::{hex, random_bytes};

/// Bytes of randomness in a session id (hex in the cookie).
const ID_BYTES: usize = 32;

/// How often a session's last use is written at most: a request a minute is enough for an
/// idle limit of minutes (fewer writes for a busy console); a shorter limit is written a
/// quarter of it apart.
const TOUCH_EVERY_SECS: i64 = 60;

/// What a session opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The operators' console on the admin listener.
    Console,
    /// The playground on the public listener.
    Playground,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Console => "console",
            Surface::Playground => "playground",
        }
    }

    /// The scopes a key needs to sign in (the playground lists models and voices to speak).
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            Surface::Console => &[Scope::Admin],
            Surface::Playground => &[Scope::Speech, Scope::ModelsRead],
        }
    }
}

/// A session just opened: its id (for the cookie only) and CSRF token.
pub struct Opened {
    pub id: SecretString,
    pub csrf: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A session that checked out.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub principal: Principal,
    pub expires_at: i64,
}

/// A session's lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub absolute_secs: i64,
    pub idle_secs: i64,
}

impl Authenticator {
    /// Opens a session of `surface` for `principal` (who has just signed in) at `now`.
    pub async fn open_web_session(
        &self,
        principal: &Principal,
        surface: Surface,
        now: i64,
        lifetimes: Lifetimes,
    ) -> Result<Opened, StoreError> {
        let id = hex(&random_bytes::<ID_BYTES>());
        // A session never outlives its key.
        let expires_at = principal
            .expires_at
            .map_or(now + lifetimes.absolute_secs, |k| {
                k.min(now + lifetimes.absolute_secs)
            });
        let record = WebSessionRecord {
            digest: self.pepper.digest(&id),
            keyid: principal.keyid.clone(),
            surface: surface.as_str().to_owned(),
            created_at: now,
            expires_at,
            seen_at: now,
        };
        self.store.insert_web_session(&record).await?;
        Ok(Opened {
            csrf: self.csrf_token(&id),
            id: SecretString::from(id),
            expires_at,
        })
    }

    /// Checks a presented session id of `surface` from `source` at `now`; see the module
    /// documentation. `active`: the request is the user's doing and counts as a use for the
    /// idle limit (a page's periodic refresh does not).
    pub async fn web_session(
        &self,
        id: &str,
        surface: Surface,
        source: IpAddr,
        now: i64,
        lifetimes: Lifetimes,
        active: bool,
    ) -> Result<WebSession, AuthFailure> {
        let ip = guard_source(source);
        self.not_blocked(&ip)?;
        if !is_session_id(id) {
            return Err(self.failed(&ip, None, AuthError::Invalid, "malformed_session"));
        }
        let digest = self.pepper.digest(id);
        let found = self
            .store
            .web_session(&digest)
            .await
            .map_err(|e| AuthFailure::new(AuthError::Store(e), None, "store_unavailable"))?;
        let Some(record) = found.filter(|r| r.surface == surface.as_str()) else {
            return Err(self.failed(&ip, None, AuthError::Invalid, "unknown_session"));
        };
        if record.expires_at <= now || record.seen_at + lifetimes.idle_secs <= now {
            // The holder knew a real id: not a guess, so not counted by the guard.
            self.metrics.auth_failures.inc();
            return Err(AuthFailure::new(
                AuthError::Expired,
                Some(record.keyid),
                "session_ended",
            ));
        }
        let principal = self.bound(&record.keyid, source, true).await?;
        let touch_every = TOUCH_EVERY_SECS.min(lifetimes.idle_secs / 4);
        if active
            && now - record.seen_at >= touch_every
            && let Err(err) = self.store.touch_web_session(&digest, now).await
        {
            // The request goes on: at worst the session ends a minute early.
            tracing::warn!(error = %err, "could not record a session's use");
        }
        Ok(WebSession {
            principal,
            expires_at: record.expires_at,
        })
    }

    /// Ends the session with this id, if there is one.
    pub async fn close_web_session(&self, id: &str) -> Result<bool, StoreError> {
        if !is_session_id(id) {
            return Ok(false);
        }
        self.store.delete_web_session(&self.pepper.digest(id)).await
    }

    /// The CSRF token of the session with this id.
    pub fn csrf_token(&self, id: &str) -> String {
        hex(&self.pepper.digest(&format!("csrf\0{id}")))
    }

    /// Whether `presented` is the CSRF token of the session `id` (constant time).
    pub fn csrf_matches(&self, id: &str, presented: &str) -> bool {
        let expected = self.csrf_token(id);
        expected.len() == presented.len()
            && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// A session id's form: 64 lowercase hex digits (never a key's: no prefix).
pub fn is_session_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_have_one_form_and_never_look_like_keys() {
        let id = hex(&random_bytes::<ID_BYTES>());
        assert!(is_session_id(&id));
        assert!(!super::super::key::looks_like_key(&id));
        assert!(!is_session_id(&id[1..]));
        assert!(!is_session_id(&id.to_uppercase()));
        assert!(!is_session_id(&format!("{}g", &id[1..])));
        assert!(!is_session_id(""));
    }
}
