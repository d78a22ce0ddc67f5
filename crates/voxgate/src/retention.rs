//! The retention sweeper: deletes what has outlived its configured lifetime — stored voice
//! references past `retention.voice_days` (with the clones providers made of them), cached
//! speech past its TTL and stale window, abandoned upload spool files — once at start-up and
//! then every `sweep_interval_secs`.

use std::time::{Duration, SystemTime};

use crate::api::AppState;
use crate::store::now;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub voices: u64,
    pub cache_entries: u64,
    pub uploads: u64,
}

/// One sweep over every kind of stored content.
pub async fn sweep(state: &AppState) -> anyhow::Result<Swept> {
    let config = &state.config.retention;
    let mut swept = Swept::default();
    if config.voice_days > 0 {
        let cutoff = now() - i64::try_from(config.voice_days * 86_400).unwrap_or(i64::MAX);
        let store = state.admin.store();
        for voice in store.voices_created_before(cutoff).await? {
            for (_, engine) in state.catalog.engines() {
                if engine.supports_cloning() {
                    let _ = engine.forget_reference(&voice.account_id, &voice.id).await;
                }
            }
            if store.delete_voice(&voice.account_id, &voice.id).await? {
                swept.voices += 1;
            }
        }
    }
    swept.cache_entries = state.cache.sweep().await;
    swept.uploads = state
        .uploads
        .sweep_older_than(Duration::from_secs(config.upload_minutes * 60))
        .await;
    if swept != Swept::default() {
        tracing::info!(
            voices = swept.voices,
            cache_entries = swept.cache_entries,
            uploads = swept.uploads,
            "retention sweep"
        );
    }
    Ok(swept)
}

/// Sweeps now and then every `sweep_interval_secs`.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(state.config.retention.sweep_interval_secs.max(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&state).await {
                tracing::warn!(error = %format!("{e:#}"), "retention sweep failed");
            }
        }
    })
}

/// Whether a file last modified at `modified` is older than `age`.
pub fn older_than(modified: SystemTime, age: Duration) -> bool {
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|d| d > age)
}
