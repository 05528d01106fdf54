//! Counters every session of the relay shares: each tenant's transactions this minute
//! (`max_messages_per_minute`) and each client address's failed AUTH attempts (the lockout).
//! Per relay: several relays behind one MX each count their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::sync::lock;

/// Addresses remembered for AUTH failures before the expired ones are swept.
const AUTH_FAILURES_KEPT: usize = 100_000;

/// The shared counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Tenant → (minute since the epoch, transactions accepted in it).
    rates: Mutex<HashMap<String, (u64, u32)>>,
    /// Client IP → (failed AUTH attempts, when the first of them was).
    auth_failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Counters {
    /// Whether `tenant` may start one more transaction this minute under `per_minute`;
    /// `take`: count it.
    pub fn message_rate(&self, tenant: &str, per_minute: u32, take: bool) -> bool {
        let minute = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60);
        let mut rates = lock(&self.rates);
        let (at, count) = rates.entry(tenant.to_string()).or_insert((minute, 0));
        if *at != minute {
            *at = minute;
            *count = 0;
        }
        if *count >= per_minute {
            return false;
        }
        if take {
            *count += 1;
        }
        true
    }

    /// Whether `ip` has failed AUTH `limit` times within `window` (and so may not try now).
    pub fn auth_locked(&self, ip: IpAddr, limit: u32, window: Duration) -> bool {
        let mut failures = lock(&self.auth_failures);
        match failures.get(&ip) {
            Some((_, first)) if first.elapsed() >= window => {
                failures.remove(&ip);
                false
            }
            Some((count, _)) => *count >= limit,
            None => false,
        }
    }

    /// Count a failed AUTH from `ip`.
    pub fn auth_failed(&self, ip: IpAddr, window: Duration) {
        let mut failures = lock(&self.auth_failures);
        if failures.len() >= AUTH_FAILURES_KEPT {
            failures.retain(|_, (_, first)| first.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_lockouts() {
        let counters = Counters::default();
        assert!(counters.message_rate("a", 2, true));
        assert!(counters.message_rate("a", 2, false), "a look does not count");
        assert!(counters.message_rate("a", 2, true));
        assert!(!counters.message_rate("a", 2, true));
        assert!(counters.message_rate("b", 2, true), "another tenant has its own count");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let window = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(!counters.auth_locked(ip, 3, window));
            counters.auth_failed(ip, window);
        }
        assert!(counters.auth_locked(ip, 3, window));
        assert!(!counters.auth_locked("192.0.2.2".parse().unwrap(), 3, window));
        assert!(!counters.auth_locked(ip, 3, Duration::ZERO), "the window has passed");
    }
}
