//! A bounded pool for CPU-bound synthesis, so engines never run on the async workers.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::EngineError;

/// Runs blocking closures on Tokio's blocking threads, at most `permits` at a time.
///
/// Callers beyond the bound wait for a permit (the admission queue in front of the engines
/// decides how long a request may wait at all).
#[derive(Debug, Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    /// A pool running at most `permits` closures at once (at least one).
    pub fn new(permits: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// How many closures may run at once.
    pub fn capacity(&self) -> usize {
        self.permits.available_permits()
    }

    /// Runs `work` on a blocking thread once a permit is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, EngineError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Internal("blocking pool closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| EngineError::Internal(format!("synthesis task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_than_its_permits() {
        let pool = BlockingPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("run");
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(pool.capacity(), 2);
    }
}
