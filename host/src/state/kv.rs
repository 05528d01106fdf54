//! The key-value store policies use for counters, greylisting and caches. The host namespaces
//! every key by tenant and policy before it reaches a backend, so a policy can only name its
//! own keys. Backends implement [`KvStore`]; [`MemoryKv`] keeps everything in the process.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Largest key a policy may use, in bytes (before namespacing).
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys one batched call (`kv-get-many`, `kv-incr-many`) may name.
pub const MAX_BATCH_KEYS: usize = 4096;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A quota would be exceeded.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// Key or value too large.
    #[error("key or value too large")]
    TooLarge,
    /// The operation does not apply to the stored value (an increment of a value that is
    /// not a counter).
    #[error("{0}")]
    Invalid(String),
    /// Backend failure.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// How much of the store one tenant may hold. Every key a tenant's policies write counts
/// against it: a key, and its bytes (the namespaced key plus the value; a counter counts as
/// [`COUNTER_BYTES`]). Writes that would go over fail with [`KvError::QuotaExceeded`];
/// shrinking a value or deleting a key always works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Quota {
    /// Keys.
    pub max_keys: u64,
    /// Bytes of keys and values.
    pub max_bytes: u64,
}

impl Quota {
    /// No limit beyond the store's own.
    pub const UNLIMITED: Quota = Quota { max_keys: u64::MAX, max_bytes: u64::MAX };

    /// Whether `usage` may grow by `add_keys` keys and change by `add_bytes` bytes.
    pub fn admits(&self, usage: Usage, add_keys: u64, add_bytes: i64) -> bool {
        let keys_ok = add_keys == 0 || usage.keys.saturating_add(add_keys) <= self.max_keys;
        let bytes_ok =
            add_bytes <= 0 || usage.bytes.saturating_add(add_bytes.unsigned_abs()) <= self.max_bytes;
        keys_ok && bytes_ok
    }
}

impl Default for Quota {
    /// 100 000 keys and 64 MiB per tenant.
    fn default() -> Self {
        Quota { max_keys: 100_000, max_bytes: 64 << 20 }
    }
}

/// What a tenant holds in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Keys (expired keys count until the store deletes them).
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, keys: i64, bytes: i64) {
        self.keys = self.keys.saturating_add_signed(keys);
        self.bytes = self.bytes.saturating_add_signed(bytes);
    }
}

/// Bytes a counter counts as, whatever its value (the longest `i64` in decimal).
pub const COUNTER_BYTES: u64 = 20;

/// Bytes an entry counts as against its tenant's quota.
pub fn entry_bytes(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

/// A key-value backend. Keys arrive already namespaced ([`namespaced`]); the backend keeps
/// each tenant's [`Usage`] and enforces the [`Quota`] a write brings.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    /// Read a key.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Write a key with an optional time to live.
    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError>;
    /// Delete a key.
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Add to a counter atomically; `ttl` applies when the counter is created.
    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>, quota: Quota) -> Result<i64, KvError>;
    /// What `tenant` holds.
    async fn usage(&self, tenant: &str) -> Result<Usage, KvError>;
    /// Read several keys, answers in their order (a remote store: one round trip).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }
    /// Add to several counters, each atomically; `ttl`, when given, is set on every one of
    /// them, new or not. A counter the quota has no room to create is not created: its answer
    /// is `None`.
    async fn incr_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<Vec<Option<i64>>, KvError>;
}

/// The namespaced key for `key` of `policy` in `tenant`. Length prefixes make the mapping
/// injective: no choice of key can produce another tenant's or policy's prefix.
pub fn namespaced(tenant: &str, policy: &str, key: &str) -> String {
    format!("{}:{}{}:{}{}", tenant.len(), tenant, policy.len(), policy, key)
}

/// The tenant of a namespaced key (empty for a key not made by [`namespaced`]).
pub fn tenant_of(key: &str) -> &str {
    key.split_once(':').and_then(|(len, rest)| rest.get(..len.parse::<usize>().ok()?)).unwrap_or("")
}

/// Milliseconds since the Unix epoch: expiries are wall-clock times, so that a store kept on
/// disk means the same after a restart.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The expiry (Unix milliseconds, 0 for none) of an entry written now with `ttl`.
pub(crate) fn expiry(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| now_millis().saturating_add(t.as_millis().try_into().unwrap_or(u64::MAX)).max(1))
}

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub value: Vec<u8>,
    /// Unix milliseconds; 0: never.
    pub expires: u64,
    /// What it counts as against its tenant's quota.
    pub bytes: u64,
}

impl Entry {
    pub(crate) fn live(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }
}

#[derive(Default)]
struct Memory {
    entries: HashMap<String, Entry>,
    usage: HashMap<String, Usage>,
    /// No entry expires before this (Unix milliseconds; 0: none expires): a full store scans
    /// for expired keys only when there are some.
    soonest: u64,
    /// Keys changed since the last [`MemoryKv::take_changes`] (a store kept on disk).
    changed: Option<HashSet<String>>,
}

impl Memory {
    fn touch(&mut self, key: &str) {
        if let Some(changed) = &mut self.changed
            && !changed.contains(key)
        {
            changed.insert(key.to_string());
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.charge(key, -1, -(e.bytes as i64));
            self.touch(key);
        }
    }

    fn charge(&mut self, key: &str, keys: i64, bytes: i64) {
        let tenant = tenant_of(key);
        let usage = match self.usage.get_mut(tenant) {
            Some(usage) => usage,
            None => self.usage.entry(tenant.to_string()).or_default(),
        };
        usage.add(keys, bytes);
        if usage.keys == 0 {
            self.usage.remove(tenant);
        }
    }

    /// Delete every expired key, if any has expired.
    fn sweep(&mut self) {
        let now = now_millis();
        if self.soonest == 0 || self.soonest > now {
            return;
        }
        let dead: Vec<String> =
            self.entries.iter().filter(|(_, e)| !e.live(now)).map(|(k, _)| k.clone()).collect();
        for key in dead {
            self.remove(&key);
        }
        self.soonest = self.entries.values().map(|e| e.expires).filter(|at| *at != 0).min().unwrap_or(0);
    }

    /// Room for `key` to hold an entry of `bytes`: an expired entry under it goes first; when
    /// the tenant's quota or the store's bound would be passed, expired keys are deleted and
    /// the check made again.
    fn make_room(&mut self, max_keys: usize, quota: Quota, key: &str, bytes: u64) -> Result<(), KvError> {
        let now = now_millis();
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key);
        }
        let fits = |m: &Memory| {
            let old = m.entries.get(key).map(|e| e.bytes);
            let usage = m.usage.get(tenant_of(key)).copied().unwrap_or_default();
            let new_key = u64::from(old.is_none());
            (new_key == 0 || m.entries.len() < max_keys)
                && quota.admits(usage, new_key, bytes as i64 - old.unwrap_or(0) as i64)
        };
        if fits(self) {
            return Ok(());
        }
        self.sweep();
        if fits(self) { Ok(()) } else { Err(KvError::QuotaExceeded) }
    }

    /// Add `delta` to the counter `key`. A new counter needs room and expires at
    /// `new_expiry`; an existing one keeps its expiry, or gets `new_expiry` too when
    /// `refresh`. `None`: no room for a new counter.
    fn add_to_counter(
        &mut self,
        max_keys: usize,
        quota: Quota,
        key: &str,
        delta: i64,
        new_expiry: u64,
        refresh: bool,
    ) -> Result<Option<i64>, KvError> {
        let now = now_millis();
        let current = match self.entries.get(key) {
            Some(e) if e.live(now) => Some((parse_counter(&e.value)?, e.expires)),
            _ => None,
        };
        let bytes = key.len() as u64 + COUNTER_BYTES;
        let (value, expires) = match current {
            Some((n, expires)) => (n.saturating_add(delta), if refresh { new_expiry } else { expires }),
            None => match self.make_room(max_keys, quota, key, bytes) {
                Ok(()) => (delta, new_expiry),
                Err(KvError::QuotaExceeded) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        self.insert(key, value.to_string().into_bytes(), expires, bytes);
        Ok(Some(value))
    }

    fn insert(&mut self, key: &str, value: Vec<u8>, expires: u64, bytes: u64) {
        if expires != 0 && (self.soonest == 0 || expires < self.soonest) {
            self.soonest = expires;
        }
        let entry = Entry { value, expires, bytes };
        let old = match self.entries.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => self.entries.insert(key.to_string(), entry),
        };
        match old {
            Some(old) => self.charge(key, 0, bytes as i64 - old.bytes as i64),
            None => self.charge(key, 1, bytes as i64),
        }
        self.touch(key);
    }
}

/// An in-process store with expiry, per-tenant quotas and a bound on the number of keys.
/// Used by `sluice policy test`, as the relay's store with `backend = "memory"`, and as the
/// working copy of the embedded store (which keeps its changes on disk).
pub struct MemoryKv {
    memory: Mutex<Memory>,
    max_keys: usize,
}

impl MemoryKv {
    /// A store holding at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self { memory: Mutex::new(Memory::default()), max_keys }
    }

    /// A store holding `entries` (read back from disk) that records which keys change from
    /// now on, for a backend that keeps them on disk ([`MemoryKv::take_changes`]).
    pub(crate) fn recording(max_keys: usize, entries: impl IntoIterator<Item = (String, Entry)>) -> Self {
        let store = Self::with_entries(max_keys, entries);
        let _ = store.with(|m| m.changed = Some(HashSet::new()));
        store
    }

    fn with<R>(&self, f: impl FnOnce(&mut Memory) -> R) -> Result<R, KvError> {
        let mut memory =
            self.memory.lock().map_err(|_| KvError::Unavailable("store lock poisoned".into()))?;
        Ok(f(&mut memory))
    }

    /// The keys changed since the last call, each with its entry now (None: deleted).
    pub(crate) fn take_changes(&self) -> Vec<(String, Option<Entry>)> {
        self.with(|m| {
            let changed = m.changed.as_mut().map(std::mem::take).unwrap_or_default();
            changed
                .into_iter()
                .map(|key| {
                    let entry = m.entries.get(&key).cloned();
                    (key, entry)
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// A store holding `entries` (a copy of another store's).
    pub(crate) fn with_entries(max_keys: usize, entries: impl IntoIterator<Item = (String, Entry)>) -> Self {
        let mut memory = Memory::default();
        for (key, entry) in entries {
            memory.insert(&key, entry.value, entry.expires, entry.bytes);
        }
        Self { memory: Mutex::new(memory), max_keys }
    }

    /// Record `keys` as changed again (their write to disk failed).
    pub(crate) fn unwritten(&self, keys: impl IntoIterator<Item = String>) {
        let _ = self.with(|m| {
            if let Some(changed) = &mut m.changed {
                changed.extend(keys);
            }
        });
    }

    /// Delete every expired key.
    pub(crate) fn sweep(&self) {
        let _ = self.with(Memory::sweep);
    }

    /// Keys held, live or expired.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.with(|m| m.entries.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let now = now_millis();
        self.with(|m| m.entries.get(key).filter(|e| e.live(now)).map(|e| e.value.clone()))
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError> {
        let bytes = entry_bytes(key, value.len());
        self.with(|m| {
            m.make_room(self.max_keys, quota, key, bytes)?;
            m.insert(key, value, expiry(ttl), bytes);
            Ok(())
        })?
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.with(|m| m.remove(key))
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>, quota: Quota) -> Result<i64, KvError> {
        self.with(|m| {
            m.add_to_counter(self.max_keys, quota, key, delta, expiry(ttl), false)?
                .ok_or(KvError::QuotaExceeded)
        })?
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, KvError> {
        self.with(|m| {
            m.sweep();
            m.usage.get(tenant).copied().unwrap_or_default()
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let now = now_millis();
        self.with(|m| {
            keys.iter()
                .map(|key| m.entries.get(key).filter(|e| e.live(now)).map(|e| e.value.clone()))
                .collect()
        })
    }

    async fn incr_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<Vec<Option<i64>>, KvError> {
        let new_expiry = expiry(ttl);
        self.with(|m| {
            deltas
                .iter()
                .map(|(key, delta)| {
                    m.add_to_counter(self.max_keys, quota, key, *delta, new_expiry, ttl.is_some())
                })
                .collect()
        })?
    }
}

pub(crate) fn parse_counter(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| KvError::Invalid("value is not an integer counter".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn incr_creates_counts_and_expires() {
        let kv = MemoryKv::new(10);
        let q = Quota::UNLIMITED;
        assert_eq!(kv.incr("k", 1, Some(Duration::from_millis(50)), q).await, Ok(1));
        assert_eq!(kv.incr("k", 2, Some(Duration::from_secs(100)), q).await, Ok(3));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(kv.incr("k", 1, None, q).await, Ok(1));
        assert_eq!(kv.get("k").await, Ok(Some(b"1".to_vec())));
    }

    #[tokio::test]
    async fn store_bound_is_enforced() {
        let kv = MemoryKv::new(2);
        let q = Quota::UNLIMITED;
        kv.set("a", vec![1], None, q).await.unwrap();
        kv.set("b", vec![1], None, q).await.unwrap();
        assert_eq!(kv.set("c", vec![1], None, q).await, Err(KvError::QuotaExceeded));
        kv.set("a", vec![2], None, q).await.unwrap();
        kv.delete("a").await.unwrap();
        kv.set("c", vec![1], None, q).await.unwrap();
    }

    #[tokio::test]
    async fn tenant_quotas() {
        crate::state::conformance::tenant_quotas(&MemoryKv::new(1000)).await;
    }

    #[tokio::test]
    async fn batches() {
        crate::state::conformance::batches(&MemoryKv::new(1000)).await;
    }

    #[test]
    fn namespaces_cannot_collide() {
        assert_ne!(namespaced("a", "b:c", "d"), namespaced("a", "b", ":cd"));
        assert_ne!(namespaced("t1", "p", "k"), namespaced("t", "1p", "k"));
        assert_eq!(tenant_of(&namespaced("t:1", "p", "k")), "t:1");
        assert_eq!(tenant_of("junk"), "");
        assert_eq!(tenant_of("99:short"), "");
    }
}
