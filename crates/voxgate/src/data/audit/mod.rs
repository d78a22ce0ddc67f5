//! Typed audit events, recorded through one [`Audit`] type into the store and mirrored to
//! the security-event log target. Events carry ids, sources and reasons, never a secret or
//! user content. Each event is a leaf of the tamper-evident Merkle log ([`tlog`]: RFC 6962
//! hashing in [`merkle`], signed C2SP checkpoints in [`checkpoint`]).

pub mod checkpoint;
pub mod merkle;
pub mod tlog;

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::data::store::{AuditRecord, Store, now};

/// Every auditable thing that can happen.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    AccountCreated {
        account_id: String,
        tier: String,
    },
    AccountDeactivated {
        account_id: String,
    },
    KeyCreated {
        keyid: String,
        account_id: String,
        tier: Option<String>,
        scopes: Option<String>,
    },
    KeyRevoked {
        keyid: String,
    },
    /// An ephemeral client secret for realtime sessions (its public id; the secret is
    /// never written anywhere).
    ClientSecretCreated {
        secret_id: String,
        keyid: String,
        account_id: String,
        expires_at: i64,
    },
    KeyRotated {
        keyid: String,
        replaced_by: String,
        grace_until: i64,
    },
    AuthFailed {
        keyid: Option<String>,
        reason: &'static str,
    },
    AuthBlocked {
        block_secs: u64,
    },
    /// More failures of one source and reason within a minute, after the first (which has
    /// its own `auth_failed` record): counted, not recorded one by one.
    AuthFailuresRepeated {
        reason: &'static str,
        repeats: u64,
        window_secs: u64,
    },
    /// An administrative change refused (a key wider than its account or its creator).
    AdminRefused {
        action: &'static str,
        account_id: String,
        reason: &'static str,
    },
    /// An administrator read accounts, keys or the audit log.
    AdminRead {
        what: &'static str,
        account_id: Option<String>,
    },
    AccessDenied {
        keyid: String,
        route: String,
        reason: &'static str,
    },
    VoiceCreated {
        voice_id: String,
        account_id: String,
    },
    VoiceDeleted {
        voice_id: String,
        account_id: String,
    },
    AccountExported {
        account_id: String,
    },
    AccountErased {
        account_id: String,
        voices_deleted: u64,
        keys_revoked: u64,
    },
    /// A key signed in to the web console or the playground (a browser session opened).
    SessionOpened {
        keyid: String,
        account_id: String,
        surface: &'static str,
        expires_at: i64,
    },
    /// A browser session signed out.
    SessionClosed {
        keyid: String,
        account_id: String,
        surface: &'static str,
    },
}

impl AuditEvent {
    fn kind(&self) -> &'static str {
        match self {
            AuditEvent::AccountCreated { .. } => "account_created",
            AuditEvent::AccountDeactivated { .. } => "account_deactivated",
            AuditEvent::KeyCreated { .. } => "key_created",
            AuditEvent::KeyRevoked { .. } => "key_revoked",
            AuditEvent::ClientSecretCreated { .. } => "client_secret_created",
            AuditEvent::KeyRotated { .. } => "key_rotated",
            AuditEvent::AuthFailed { .. } => "auth_failed",
            AuditEvent::AuthBlocked { .. } => "auth_blocked",
            AuditEvent::AuthFailuresRepeated { .. } => "auth_failures_repeated",
            AuditEvent::AdminRefused { .. } => "admin_refused",
            AuditEvent::AdminRead { .. } => "admin_read",
            AuditEvent::AccessDenied { .. } => "access_denied",
            AuditEvent::VoiceCreated { .. } => "voice_created",
            AuditEvent::VoiceDeleted { .. } => "voice_deleted",
            AuditEvent::AccountExported { .. } => "account_exported",
            AuditEvent::AccountErased { .. } => "account_erased",
            AuditEvent::SessionOpened { .. } => "session_opened",
            AuditEvent::SessionClosed { .. } => "session_closed",
        }
    }

    fn account_and_subject(&self) -> (Option<&str>, Option<&str>) {
        match self {
            AuditEvent::AccountCreated { account_id, .. }
            | AuditEvent::AccountDeactivated { account_id }
            | AuditEvent::AccountExported { account_id }
            | AuditEvent::AccountErased { account_id, .. } => (Some(account_id), Some(account_id)),
            AuditEvent::KeyCreated {
                keyid, account_id, ..
            } => (Some(account_id), Some(keyid)),
            AuditEvent::ClientSecretCreated {
                keyid, account_id, ..
            }
            | AuditEvent::SessionOpened {
                keyid, account_id, ..
            }
            | AuditEvent::SessionClosed {
                keyid, account_id, ..
            } => (Some(account_id), Some(keyid)),
            AuditEvent::KeyRevoked { keyid } | AuditEvent::KeyRotated { keyid, .. } => {
                (None, Some(keyid))
            }
            AuditEvent::AccessDenied { keyid, .. } => (None, Some(keyid)),
            AuditEvent::AuthFailed { keyid, .. } => (None, keyid.as_deref()),
            AuditEvent::AuthBlocked { .. } | AuditEvent::AuthFailuresRepeated { .. } => {
                (None, None)
            }
            AuditEvent::AdminRefused { account_id, .. } => (Some(account_id), Some(account_id)),
            AuditEvent::AdminRead { account_id, .. } => {
                (account_id.as_deref(), account_id.as_deref())
            }
            AuditEvent::VoiceCreated {
                voice_id,
                account_id,
            }
            | AuditEvent::VoiceDeleted {
                voice_id,
                account_id,
            } => (Some(account_id), Some(voice_id)),
        }
    }

    /// Security events (failures, blocks, denials) go to the security log target too.
    fn is_security_event(&self) -> bool {
        matches!(
            self,
            AuditEvent::AuthFailed { .. }
                | AuditEvent::AuthBlocked { .. }
                | AuditEvent::AuthFailuresRepeated { .. }
                | AuditEvent::AccessDenied { .. }
                | AuditEvent::AdminRefused { .. }
        )
    }
}

/// Who did it: a key id, the local command line, voxgate itself (a named background job such
/// as `retention`), or nobody known.
#[derive(Debug, Clone)]
pub enum Actor {
    Key(String),
    Cli,
    System(&'static str),
    Anonymous,
}

impl Actor {
    fn label(&self) -> Option<String> {
        match self {
            Actor::Key(keyid) => Some(keyid.clone()),
            Actor::Cli => Some("cli".into()),
            Actor::System(job) => Some(format!("system:{job}")),
            Actor::Anonymous => None,
        }
    }
}

/// The one way audit events are written.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Records `event`. A failure to write is logged, never hidden and never fatal to the
    /// request that caused it.
    pub async fn record(&self, actor: Actor, source: Option<IpAddr>, event: AuditEvent) {
        let detail = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
        let (account_id, subject) = event.account_and_subject();
        if event.is_security_event() {
            // `detail` is the event's own JSON: ids and reasons only, by construction.
            tracing::warn!(target: "voxgate::security", kind = event.kind(), actor = actor.label().as_deref(), source = source.map(|s| s.to_string()).as_deref(), subject, detail = %detail, "security event");
        }
        let record = AuditRecord {
            seq: 0,
            at: now(),
            kind: event.kind().to_owned(),
            actor: actor.label(),
            account_id: account_id.map(str::to_owned),
            subject: subject.map(str::to_owned),
            source: source.map(|s| s.to_string()),
            detail,
            idx: None,
            leaf_hash: None,
        };
        if let Err(e) = self.store.append_audit(&record, tlog::leaf_hex).await {
            tracing::error!(target: "voxgate::security", error = %e, kind = event.kind(), "audit event could not be stored");
        }
    }
}
