//! In-flight limits: per key and per account (429 `too_many_concurrent_requests`), a global
//! cap, and a bounded admission queue per engine (503 with `Retry-After` when full or when
//! the wait runs out). Permits are held for the whole response, streams included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key or account already has its maximum of requests in flight.
    TooManyConcurrent,
    /// The engine's queue is full, or the wait ran out: retry later.
    Overloaded { retry_after: Duration },
}

/// Counted slots per subject (a key id or an account id), created on demand and dropped
/// when idle, so memory stays flat.
#[derive(Debug, Default)]
pub struct PerSubject {
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PerSubject {
    /// Takes one of `max` slots for `subject`, or refuses at once.
    pub fn try_acquire(&self, subject: &str, max: usize) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.len() > 10_000 {
                // Idle subjects (no permit out) hold nothing worth keeping.
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(
                slots
                    .entry(subject.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(max.max(1)))),
            )
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// A bounded admission queue in front of one engine.
#[derive(Debug)]
pub struct AdmissionQueue {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

impl AdmissionQueue {
    pub fn new(in_flight: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    /// Requests waiting right now (for metrics).
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits for a slot, at most `max_wait`, behind at most `max_waiting` others.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let retry_after = self.max_wait.max(Duration::from_secs(1));
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Overloaded { retry_after });
        }
        let waited =
            tokio::time::timeout(self.max_wait, Arc::clone(&self.slots).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refusal::Overloaded { retry_after }),
        }
    }
}

/// All in-flight limits of one instance.
#[derive(Debug)]
pub struct Concurrency {
    keys: PerSubject,
    accounts: PerSubject,
    global: Arc<Semaphore>,
    queues: HashMap<String, AdmissionQueue>,
}

impl Concurrency {
    /// `engines` names every engine that gets a queue.
    pub fn new<'a>(
        global: usize,
        engines: impl IntoIterator<Item = &'a str>,
        in_flight: usize,
        queue_depth: usize,
        queue_wait: Duration,
    ) -> Self {
        Self {
            keys: PerSubject::default(),
            accounts: PerSubject::default(),
            global: Arc::new(Semaphore::new(global.max(1))),
            queues: engines
                .into_iter()
                .map(|e| {
                    (
                        e.to_owned(),
                        AdmissionQueue::new(in_flight, queue_depth, queue_wait),
                    )
                })
                .collect(),
        }
    }

    /// The queue in front of `engine`, if it has one.
    pub fn queue(&self, engine: &str) -> Option<&AdmissionQueue> {
        self.queues.get(engine)
    }

    /// Admits one request of `keyid`/`account` to this instance: per-key and per-account
    /// caps refuse at once (429), the global cap answers "overloaded" (503). Held for the
    /// whole request, stream included; engine slots are taken separately, per engine tried.
    pub fn admit_caller(
        &self,
        keyid: &str,
        per_key: usize,
        account: &str,
        per_account: usize,
    ) -> Result<InFlight, Refusal> {
        let key = self
            .keys
            .try_acquire(keyid, per_key)
            .ok_or(Refusal::TooManyConcurrent)?;
        let account = self
            .accounts
            .try_acquire(account, per_account)
            .ok_or(Refusal::TooManyConcurrent)?;
        let global =
            Arc::clone(&self.global)
                .try_acquire_owned()
                .map_err(|_| Refusal::Overloaded {
                    retry_after: Duration::from_secs(1),
                })?;
        Ok(InFlight::new(vec![key, account, global]))
    }

    /// A slot on `engine` (waiting in its queue, bounded): held while that engine works for
    /// the request; an engine without a queue needs none.
    pub async fn admit_engine(&self, engine: &str) -> Result<EngineSlot, Refusal> {
        match self.queues.get(engine) {
            Some(queue) => Ok(EngineSlot {
                _permit: Some(queue.admit().await?),
            }),
            None => Ok(EngineSlot { _permit: None }),
        }
    }
}

/// A place on one engine; dropping it frees the place.
#[derive(Debug)]
pub struct EngineSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// The caller's slots (key, account, instance) while a request runs; dropping frees them.
#[derive(Debug)]
pub struct InFlight {
    _permits: Vec<OwnedSemaphorePermit>,
}

impl InFlight {
    pub fn new(permits: Vec<OwnedSemaphorePermit>) -> Self {
        Self { _permits: permits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_subject_slots_are_independent_and_released() {
        let slots = PerSubject::default();
        let first = slots.try_acquire("k1", 1).expect("first");
        assert!(slots.try_acquire("k1", 1).is_none(), "k1 is at its cap");
        assert!(slots.try_acquire("k2", 1).is_some(), "k2 is independent");
        drop(first);
        assert!(slots.try_acquire("k1", 1).is_some(), "released");
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_refuses_when_full_and_when_the_wait_runs_out() {
        let queue = Arc::new(AdmissionQueue::new(1, 1, Duration::from_secs(2)));
        let running = queue.admit().await.expect("a free slot");
        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.admit().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(queue.depth(), 1);
        // Queue full: refused at once.
        assert!(matches!(
            queue.admit().await,
            Err(Refusal::Overloaded { .. })
        ));
        // The waiter times out after max_wait.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(
            waiter.await.expect("join"),
            Err(Refusal::Overloaded { .. })
        ));
        drop(running);
        assert!(queue.admit().await.is_ok());
        assert_eq!(queue.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_slot_when_it_frees() {
        let queue = Arc::new(AdmissionQueue::new(1, 4, Duration::from_secs(10)));
        let running = queue.admit().await.expect("slot");
        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.admit().await.is_ok() })
        };
        tokio::task::yield_now().await;
        drop(running);
        assert!(waiter.await.expect("join"));
    }
}
