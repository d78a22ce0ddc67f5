//! The metered life of a live session (a realtime transcription WebSocket): admitted once,
//! its audio reserved against quotas in increments as it arrives and charged on the way,
//! settled when it ends however it ends.
//!
//! A session holds one of its key's and account's concurrent-request slots and a place
//! under the instance's cap on sessions for its whole life. Every second of audio received
//! is reported to the hold as delivered (so a crash settles it at what arrived) and, before
//! it is accepted, reserved: when the next increment cannot be reserved the session is
//! refused with `quota_exceeded` and settled at what it received. Dropped unsettled (a
//! panic, a task aborted), it is settled the same way by its `Drop`. Audio the session
//! could not recognise (a turn that failed, or was dropped when the session ended) is
//! given back at the end, as a failed transcription is.
//!
//! At shutdown `stop_live` tells every session to end (an `error` event,
//! `server_shutting_down`) and waits for them to settle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::Services;
use crate::config::{MIN_SECRET_SECS, Metric};
use crate::data::audit::{Actor, AuditEvent};
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::identity::auth::ephemeral::Minted;
use crate::limits::InFlight;
use crate::limits::quota::{Amounts, QuotaHold};

/// An open live session's slots and reservation.
#[derive(Debug)]
pub struct LiveSession {
    _in_flight: InFlight,
    _session: OwnedSemaphorePermit,
    /// `None` once settled.
    hold: Option<QuotaHold>,
    /// Seconds of audio received.
    received: f64,
    /// Seconds reserved so far.
    reserved: i64,
    increment: i64,
    unrecognised: Unrecognised,
}

/// Audio of a session that was not recognised, in milliseconds: shared with the task that
/// recognises its turns, deducted from the charge at the end.
#[derive(Debug, Clone, Default)]
pub struct Unrecognised(Arc<AtomicU64>);

impl Unrecognised {
    /// Counts `secs` of audio that will not be recognised.
    pub fn add(&self, secs: f64) {
        self.0
            .fetch_add((secs * 1000.0).round() as u64, Ordering::Relaxed);
    }

    fn secs(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        let charge = self.charge();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(hold.settle(charge));
        }
    }
}

impl Services {
    /// Opens a live session for `principal`: the instance's session cap (503 `overloaded`),
    /// the caller's slots (429 `too_many_concurrent_requests`), one request and a second of
    /// audio (429 `quota_exceeded`), and the rest of the first increment where the budget
    /// allows.
    pub async fn open_live(&self, principal: &Principal) -> Result<LiveSession, Error> {
        let config = &self.config.transcription.realtime;
        if *self.live_stop.borrow() {
            return Err(Error::limited(Code::ShuttingDown, Duration::from_secs(5)));
        }
        let Ok(session) = Arc::clone(&self.live_sessions).try_acquire_owned() else {
            self.count_overload();
            return Err(Error::limited(Code::Overloaded, Duration::from_secs(5)));
        };
        let in_flight = self.admit(principal)?;
        let increment = i64::from(config.quota_increment_secs);
        // One second is needed to start; the rest of the first increment if the budget
        // has it.
        let mut hold = self
            .reserve(
                principal,
                Amounts {
                    requests: 1,
                    transcribed_seconds: 1,
                    ..Amounts::default()
                },
            )
            .await?;
        let mut reserved = 1;
        if increment > 1
            && hold
                .extend(Metric::TranscribedSeconds, increment - 1)
                .await
                .map_err(Error::internal)?
        {
            reserved = increment;
        }
        Ok(LiveSession {
            _in_flight: in_flight,
            _session: session,
            hold: Some(hold),
            received: 0.0,
            reserved,
            increment,
            unrecognised: Unrecognised::default(),
        })
    }

    /// Accepts `secs` more audio into `session`: reserved first (the next increment when the
    /// reservation is used up, or just what is needed when less than an increment is left),
    /// then reported as delivered. `quota_exceeded` when a budget cannot hold it; the audio
    /// is then not accepted. `store_unavailable` when the store was away long enough for
    /// the reservation to lapse: what arrives now might not be charged, the session ends.
    pub async fn live_audio(&self, session: &mut LiveSession, secs: f64) -> Result<(), Error> {
        let Some(hold) = session.hold.as_mut() else {
            return Err(Error::internal(std::io::Error::other("session settled")));
        };
        if hold.lapsed() {
            return Err(Error::limited(
                Code::StoreUnavailable,
                Duration::from_secs(5),
            ));
        }
        let received = session.received + secs;
        let needed = received.ceil() as i64;
        if needed > session.reserved {
            let least = needed - session.reserved;
            let mut extended = None;
            for extra in [least.max(session.increment), least] {
                let granted = hold
                    .extend(Metric::TranscribedSeconds, extra)
                    .await
                    .map_err(Error::internal)?;
                if granted {
                    extended = Some(extra);
                    break;
                }
            }
            let Some(extra) = extended else {
                return Err(self.quota_refused(Duration::from_secs(60)));
            };
            session.reserved += extra;
        }
        session.received = received;
        let charge = session.charge();
        if let Some(hold) = session.hold.as_mut() {
            hold.report(charge);
        }
        Ok(())
    }

    /// Ends a session: charged one request and the audio it received and had recognised
    /// (whole seconds, rounded up); the rest of the reservation goes back. Returns the
    /// seconds received.
    pub async fn close_live(&self, mut session: LiveSession) -> f64 {
        let charge = session.charge();
        if let Some(hold) = session.hold.take() {
            hold.settle(charge).await;
        }
        session.received
    }

    /// Tells every live session to end and waits (up to `grace`) until they have settled.
    pub async fn stop_live(&self, grace: Duration) {
        let _ = self.live_stop.send(true);
        let all =
            u32::try_from(self.config.transcription.realtime.max_sessions).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.live_sessions.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("realtime sessions still open after the grace period");
        }
    }

    /// Resolves once the process is stopping (`stop_live`).
    pub async fn live_stopping(&self) {
        let mut stop = self.live_stop.subscribe();
        let _ = stop.wait_for(|stopping| *stopping).await;
    }
}

impl LiveSession {
    /// Seconds of audio received so far.
    pub fn received(&self) -> f64 {
        self.received
    }

    /// The counter of audio that will not be recognised (for the task recognising turns).
    pub fn unrecognised(&self) -> Unrecognised {
        self.unrecognised.clone()
    }

    fn charge(&self) -> Amounts {
        let charged = (self.received - self.unrecognised.secs()).max(0.0);
        Amounts {
            requests: 1,
            transcribed_seconds: (charged - 1e-6).ceil().max(0.0) as i64,
            ..Amounts::default()
        }
    }
}

impl Services {
    /// Mints an ephemeral client secret for `principal`, valid `lifetime_secs` (or
    /// `transcription.realtime.secret_default_secs`; `invalid_value` outside
    /// `MIN_SECRET_SECS..=secret_max_secs`), opening `session` (validated JSON); audited
    /// with its public id.
    pub async fn mint_client_secret(
        &self,
        principal: &Principal,
        lifetime_secs: Option<u64>,
        session: String,
    ) -> Result<Minted, Error> {
        let limits = &self.config.transcription.realtime;
        let lifetime_secs = lifetime_secs.unwrap_or(limits.secret_default_secs);
        if !(MIN_SECRET_SECS..=limits.secret_max_secs).contains(&lifetime_secs) {
            return Err(Error::invalid(
                "expires_after.seconds",
                Code::InvalidValue,
                format!(
                    "The lifetime must be between {MIN_SECRET_SECS} and {} seconds.",
                    limits.secret_max_secs
                ),
            ));
        }
        let created_at = crate::util::now();
        let expires_at = created_at + i64::try_from(lifetime_secs).unwrap_or(i64::MAX / 2);
        let minted = self
            .auth
            .mint_client_secret(principal, created_at, expires_at, session)
            .await
            .map_err(Error::internal)?;
        self.audit
            .record(
                Actor::Key(principal.keyid.clone()),
                Some(principal.source),
                AuditEvent::ClientSecretCreated {
                    secret_id: minted.record.id.clone(),
                    keyid: principal.keyid.clone(),
                    account_id: principal.account_id.clone(),
                    expires_at,
                },
            )
            .await;
        Ok(minted)
    }
}
