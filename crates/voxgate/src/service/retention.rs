//! The retention sweeper: deletes what has outlived its configured lifetime — stored voice
//! references past `retention.voice_days` (with the clones providers made of them, and any
//! clone whose earlier deletion failed), cached
//! speech past its TTL and stale window, abandoned upload spool files, expired realtime client
//! secrets — once at start-up and then every `sweep_interval_secs`.

use std::sync::Arc;
use std::time::Duration;

use super::Services;
use crate::data::audit::{Actor, AuditEvent};
use crate::util::now;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub voices: u64,
    /// Provider-side clones of deleted voices, deleted now.
    pub voice_clones: u64,
    pub cache_entries: u64,
    pub uploads: u64,
    /// Realtime client secrets past their expiry (they are refused from then on anyway).
    pub client_secrets: u64,
    /// Browser sessions past their absolute or idle lifetime.
    pub web_sessions: u64,
}

/// One sweep over every kind of stored content.
pub async fn sweep(services: &Services) -> anyhow::Result<Swept> {
    let config = &services.config.retention;
    let mut swept = Swept::default();
    if config.voice_days > 0 {
        let cutoff = now() - i64::try_from(config.voice_days * 86_400).unwrap_or(i64::MAX);
        let store = &services.store;
        for voice in store.voices_created_before(cutoff).await? {
            // The voice first: a clone still being made then finds it gone.
            if store.delete_voice(&voice.account_id, &voice.id).await? {
                services.forget_clones(&voice.id).await;
                swept.voices += 1;
                services
                    .audit
                    .record(
                        Actor::System("retention"),
                        None,
                        AuditEvent::VoiceDeleted {
                            voice_id: voice.id.clone(),
                            account_id: voice.account_id.clone(),
                        },
                    )
                    .await;
            }
        }
    }
    // Clones whose voices are gone but whose provider could not delete them before.
    match services.clones.forget_orphans(&services.catalog).await {
        Ok(done) => swept.voice_clones = done.deleted,
        Err(err) => tracing::warn!(error = %err, "could not read orphaned clone records"),
    }
    swept.cache_entries = services.cache.sweep().await;
    swept.uploads = services
        .uploads
        .sweep_older_than(Duration::from_secs(config.upload_minutes * 60))
        .await;
    match services.store.purge_client_secrets(now()).await {
        Ok(purged) => swept.client_secrets = purged,
        Err(err) => tracing::warn!(error = %err, "could not purge expired client secrets"),
    }
    let idle = i64::try_from(services.config.console.idle_secs).unwrap_or(i64::MAX);
    match services
        .store
        .purge_web_sessions(now(), now().saturating_sub(idle))
        .await
    {
        Ok(purged) => swept.web_sessions = purged,
        Err(err) => tracing::warn!(error = %err, "could not purge ended browser sessions"),
    }
    if swept != Swept::default() {
        tracing::info!(
            voices = swept.voices,
            voice_clones = swept.voice_clones,
            cache_entries = swept.cache_entries,
            uploads = swept.uploads,
            client_secrets = swept.client_secrets,
            web_sessions = swept.web_sessions,
            "retention sweep"
        );
    }
    Ok(swept)
}

/// Sweeps now and then every `sweep_interval_secs`.
pub fn spawn(services: Arc<Services>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(services.config.retention.sweep_interval_secs.max(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&services).await {
                tracing::warn!(error = %format!("{e:#}"), "retention sweep failed");
            }
        }
    })
}
