//! Failed authentications, written down without letting a flood write the log: per source
//! (an IPv4 address or an IPv6 /64) and reason, the first failure of each minute is one
//! audit record (and a security event); the repeats that follow are counted, a security
//! event is sampled at 10, 100, 1,000… repeats, and one summary record with the count is
//! written when the minute is over. A flood of N failures from one source thus writes at
//! most two records per reason per minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long one aggregation window lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most (source, reason) windows tracked; beyond it new sources share one window.
const MAX_WINDOWS: usize = 10_000;
/// The shared window's source when the table is full.
const OVERFLOW: &str = "*";

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// The first address seen (for the record; the key is the guard's source).
    first: IpAddr,
    repeats: u64,
}

/// Whether a failure is the first of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Record it in full.
    First,
    /// Count it; `sample` when it is the 10th, 100th… repeat.
    Repeat { count: u64, sample: bool },
}

/// A window that closed with repeats to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub source: IpAddr,
    pub reason: &'static str,
    pub repeats: u64,
}

/// The windows, by (source, reason).
#[derive(Debug, Default)]
pub struct FailureLog {
    windows: Mutex<HashMap<(String, &'static str), Window>>,
}

impl FailureLog {
    /// Notes one failure from `source` (its guard key `key`) for `reason`.
    pub fn note(&self, key: &str, source: IpAddr, reason: &'static str) -> Seen {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let key =
            if windows.len() >= MAX_WINDOWS && !windows.contains_key(&(key.to_owned(), reason)) {
                OVERFLOW
            } else {
                key
            };
        match windows.get_mut(&(key.to_owned(), reason)) {
            Some(window) if now.duration_since(window.opened) < WINDOW => {
                window.repeats += 1;
                let count = window.repeats;
                let sample = count >= 10 && is_power_of_ten(count);
                Seen::Repeat { count, sample }
            }
            _ => {
                windows.insert(
                    (key.to_owned(), reason),
                    Window {
                        opened: now,
                        first: source,
                        repeats: 0,
                    },
                );
                Seen::First
            }
        }
    }

    /// Closes the windows that are over: the ones with repeats are returned for their
    /// summary record.
    pub fn close_expired(&self) -> Vec<Summary> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = Vec::new();
        windows.retain(|(_, reason), window| {
            if now.duration_since(window.opened) < WINDOW {
                return true;
            }
            if window.repeats > 0 {
                closed.push(Summary {
                    source: window.first,
                    reason,
                    repeats: window.repeats,
                });
            }
            false
        });
        closed
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_one_record_a_sample_per_decade_and_one_summary() {
        let log = FailureLog::default();
        let ip = IpAddr::from([198, 51, 100, 7]);
        assert_eq!(log.note("198.51.100.7", ip, "missing_key"), Seen::First);
        let mut samples = 0;
        for _ in 0..149 {
            match log.note("198.51.100.7", ip, "missing_key") {
                Seen::Repeat { sample: true, .. } => samples += 1,
                Seen::Repeat { .. } => {}
                Seen::First => panic!("one first per window"),
            }
        }
        assert_eq!(samples, 2, "at 10 and 100 repeats");
        // Another reason, or another source, has its own window.
        assert_eq!(log.note("198.51.100.7", ip, "invalid_key"), Seen::First);
        assert_eq!(
            log.note("203.0.113.1", IpAddr::from([203, 0, 113, 1]), "missing_key"),
            Seen::First
        );
        assert!(log.close_expired().is_empty(), "the minute is not over");
        tokio::time::advance(WINDOW).await;
        assert_eq!(
            log.close_expired(),
            vec![Summary {
                source: ip,
                reason: "missing_key",
                repeats: 149,
            }]
        );
        assert_eq!(log.note("198.51.100.7", ip, "missing_key"), Seen::First);
    }

    #[test]
    fn powers_of_ten() {
        let powers: Vec<u64> = (1..=10_000).filter(|n| is_power_of_ten(*n)).collect();
        assert_eq!(powers, [1, 10, 100, 1000, 10_000]);
    }
}
