//! The key-value store policies use for counters, greylisting and caches. The host namespaces
//! every key by tenant and policy before it reaches a backend, so a policy can only name its
//! own keys. Backends implement [`KvStore`]; [`MemoryKv`] keeps everything in the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest key a policy may use, in bytes (before namespacing).
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A quota would be exceeded.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// Key or value too large.
    #[error("key or value too large")]
    TooLarge,
    /// Backend failure.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A key-value backend. Keys arrive already namespaced.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    /// Read a key.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Write a key with an optional time to live.
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError>;
    /// Delete a key.
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Add to a counter atomically; `ttl` applies when the counter is created.
    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError>;
}

/// The namespaced key for `key` of `policy` in `tenant`. Length prefixes make the mapping
/// injective: no choice of key can produce another tenant's or policy's prefix.
pub fn namespaced(tenant: &str, policy: &str, key: &str) -> String {
    format!("{}:{}{}:{}{}", tenant.len(), tenant, policy.len(), policy, key)
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// An in-process store with expiry and a bound on the number of keys. Used by
/// `sluice policy test` and as the relay's store when no other is configured.
pub struct MemoryKv {
    entries: Mutex<HashMap<String, Entry>>,
    max_keys: usize,
}

impl MemoryKv {
    /// A store holding at most `max_keys` live keys.
    pub fn new(max_keys: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), max_keys }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> Result<R, KvError> {
        let mut map = self.entries.lock().map_err(|_| KvError::Unavailable("store lock poisoned".into()))?;
        Ok(f(&mut map))
    }

    fn make_room(map: &mut HashMap<String, Entry>, max_keys: usize, key: &str) -> Result<(), KvError> {
        if map.contains_key(key) || map.len() < max_keys {
            return Ok(());
        }
        let now = Instant::now();
        map.retain(|_, e| e.live(now));
        if map.len() < max_keys { Ok(()) } else { Err(KvError::QuotaExceeded) }
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let now = Instant::now();
        self.with(|map| map.get(key).filter(|e| e.live(now)).map(|e| e.value.clone()))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let max = self.max_keys;
        self.with(|map| {
            Self::make_room(map, max, key)?;
            map.insert(key.to_string(), Entry { value, expires: ttl.map(|t| Instant::now() + t) });
            Ok(())
        })?
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.with(|map| {
            map.remove(key);
        })
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let max = self.max_keys;
        self.with(|map| {
            let now = Instant::now();
            let current = match map.get(key) {
                Some(e) if e.live(now) => Some((parse_counter(&e.value)?, e.expires)),
                _ => None,
            };
            let (value, expires) = match current {
                Some((n, expires)) => (n.saturating_add(delta), expires),
                None => {
                    Self::make_room(map, max, key)?;
                    (delta, ttl.map(|t| now + t))
                }
            };
            map.insert(key.to_string(), Entry { value: value.to_string().into_bytes(), expires });
            Ok(value)
        })?
    }
}

pub(crate) fn parse_counter(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| KvError::Unavailable("value is not an integer counter".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn incr_creates_counts_and_expires() {
        let kv = MemoryKv::new(10);
        assert_eq!(kv.incr("k", 1, Some(Duration::from_millis(50))).await, Ok(1));
        assert_eq!(kv.incr("k", 2, Some(Duration::from_secs(100))).await, Ok(3));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(kv.incr("k", 1, None).await, Ok(1));
        assert_eq!(kv.get("k").await, Ok(Some(b"1".to_vec())));
    }

    #[tokio::test]
    async fn key_quota_is_enforced() {
        let kv = MemoryKv::new(2);
        kv.set("a", vec![1], None).await.unwrap();
        kv.set("b", vec![1], None).await.unwrap();
        assert_eq!(kv.set("c", vec![1], None).await, Err(KvError::QuotaExceeded));
        kv.set("a", vec![2], None).await.unwrap();
        kv.delete("a").await.unwrap();
        kv.set("c", vec![1], None).await.unwrap();
    }

    #[test]
    fn namespaces_cannot_collide() {
        assert_ne!(namespaced("a", "b:c", "d"), namespaced("a", "b", ":cd"));
        assert_ne!(namespaced("t1", "p", "k"), namespaced("t", "1p", "k"));
    }
}
