//! Ephemeral client secrets (`ek_…`): what a server hands a browser so it can open
//! realtime transcription sessions without ever holding the long-lived key. A secret opens
//! sessions until it expires (10 s to 2 h; each session counts against its key's and
//! account's concurrency, so a reconnecting browser needs no new secret).
//!
//! A secret is minted by an authenticated key and stored only as its keyed digest, with
//! its minting key, its expiry and the session configuration it opens. Presented, it is
//! verified like a key (format and checksum first, the brute-force guard, one lookup, a
//! constant-time comparison), then its minting key is resolved through the authentication
//! cache: a revoked or expired key, or a deactivated account, refuses its secrets too. The
//! principal it yields is the minting key's (account, tier, origins) narrowed to the
//! `transcription` scope: never wider.

use std::collections::BTreeSet;
use std::net::IpAddr;

use secrecy::SecretString;
use subtle::ConstantTimeEq as _;

use super::key::{self, KeyFormatError};
use super::{AuthError, AuthFailure, Authenticator, Principal, guard_source};
use crate::config::Scope;
use crate::data::store::{ClientSecretRecord, StoreError};

/// A minted secret: the full text (shown once, to the caller that minted it) and what was
/// stored.
pub struct Minted {
    pub value: SecretString,
    pub record: ClientSecretRecord,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

/// A verified secret: who it acts for, and the session configuration it was minted with.
#[derive(Debug, Clone)]
pub struct Ephemeral {
    pub principal: Principal,
    pub secret_id: String,
    pub session: String,
}

impl Authenticator {
    /// Mints a secret for `principal` that expires at `expires_at` and opens `session` (the
    /// validated configuration, JSON).
    pub async fn mint_client_secret(
        &self,
        principal: &Principal,
        created_at: i64,
        expires_at: i64,
        session: String,
    ) -> Result<Minted, StoreError> {
        let new = key::generate_ephemeral(&self.pepper);
        let record = ClientSecretRecord {
            id: new.keyid,
            digest: new.digest,
            keyid: principal.keyid.clone(),
            session,
            created_at,
            expires_at,
        };
        self.store.insert_client_secret(&record).await?;
        Ok(Minted {
            value: new.full,
            record,
        })
    }

    /// Verifies a presented client secret from `source` at time `now` (see the module
    /// documentation). Failures count against the source like a bad key.
    pub async fn client_secret(
        &self,
        token: &str,
        source: IpAddr,
        now: i64,
    ) -> Result<Ephemeral, AuthFailure> {
        let ip = guard_source(source);
        self.not_blocked(&ip)?;
        let parsed = match key::parse_ephemeral(token) {
            Ok(parsed) => parsed,
            Err(KeyFormatError::BadChecksum) => {
                return Err(self.failed(&ip, None, AuthError::Invalid, "bad_checksum"));
            }
            Err(KeyFormatError::Malformed) => {
                return Err(self.failed(&ip, None, AuthError::Invalid, "malformed_client_secret"));
            }
        };
        let found = self
            .store
            .client_secret(&parsed.keyid)
            .await
            .map_err(|e| AuthFailure::new(AuthError::Store(e), None, "store_unavailable"))?;
        let presented = self.pepper.digest(parsed.secret());
        let expected = found
            .as_ref()
            .map_or(self.dummy_digest.as_slice(), |r| r.digest.as_slice());
        let matches: bool = presented.ct_eq(expected).into();
        let Some(record) = found.filter(|_| matches) else {
            return Err(self.failed(
                &ip,
                None,
                AuthError::Invalid,
                "unknown_or_wrong_client_secret",
            ));
        };
        if record.expires_at <= now {
            self.metrics.auth_failures.inc();
            return Err(AuthFailure::new(
                AuthError::Expired,
                Some(record.keyid),
                "client_secret_expired",
            ));
        }
        // The minting key as it is now: revoked, expired or deactivated refuses the secret.
        let mut principal = self.bound(&record.keyid, source, true).await?;
        principal.scopes = principal
            .scopes
            .intersection(&BTreeSet::from([Scope::Transcription]))
            .copied()
            .collect();
        Ok(Ephemeral {
            principal,
            secret_id: record.id,
            session: record.session,
        })
    }
}
