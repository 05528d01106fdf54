//! The embedded, persistent store: one redb file, the relay's default.
//!
//! Each operation is one redb write transaction committed without waiting for the disk; a
//! flusher makes everything written so far durable once a second, so counters and greylist
//! entries survive a restart (a crash loses at most the last second of them, never the file's
//! consistency). Values carry their expiry; a sweeper deletes expired keys every ten seconds
//! through an index ordered by expiry, so the file does not grow with dead keys.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::kv::{COUNTER_BYTES, KvError, KvStore, Quota, Usage, entry_bytes, parse_counter, tenant_of};

/// Key → expiry (Unix milliseconds, big-endian, 0 for none), the bytes it counts as against
/// its tenant's quota (big-endian), then the value.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries-v2");
/// (expiry, key) for every key that has one.
const EXPIRIES: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiries");
/// Tenant → (keys, bytes) it holds.
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");

/// How often written data is made durable.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often expired keys are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A persistent store in one file, with expiry and a bound on the number of keys.
pub struct RedbKv {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    dirty: AtomicBool,
    keys: AtomicUsize,
    max_keys: usize,
    stop: AtomicBool,
}

impl Drop for RedbKv {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let _ = self.inner.flush();
    }
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn encode(expires: u64, charged: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(&charged.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// A stored entry.
struct Stored<'a> {
    expires: u64,
    charged: u64,
    value: &'a [u8],
}

/// A stored entry's parts; a malformed one reads as expired.
fn decode(stored: &[u8]) -> Stored<'_> {
    match stored.split_first_chunk::<8>().and_then(|(e, rest)| Some((e, rest.split_first_chunk::<8>()?))) {
        Some((expires, (charged, value))) => {
            Stored { expires: u64::from_be_bytes(*expires), charged: u64::from_be_bytes(*charged), value }
        }
        None => Stored { expires: 1, charged: 0, value: &[] },
    }
}

fn live(expires: u64, now: u64) -> bool {
    expires == 0 || expires > now
}

impl RedbKv {
    /// Open (or create) the store at `path`, holding at most `max_keys` keys, and start its
    /// flusher and sweeper thread.
    pub fn open(path: &Path, max_keys: usize) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let db = Database::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let keys = {
            let txn = db.begin_write().map_err(|e| format!("{}: {e}", path.display()))?;
            let keys = txn
                .open_table(ENTRIES)
                .map_err(|e| e.to_string())
                .and_then(|t| t.len().map_err(|e| e.to_string()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            txn.open_table(EXPIRIES).map_err(|e| format!("{}: {e}", path.display()))?;
            txn.open_table(USAGE).map_err(|e| format!("{}: {e}", path.display()))?;
            txn.commit().map_err(|e| format!("{}: {e}", path.display()))?;
            usize::try_from(keys).unwrap_or(usize::MAX)
        };
        let inner = Arc::new(Inner {
            db,
            dirty: AtomicBool::new(false),
            keys: AtomicUsize::new(keys),
            max_keys,
            stop: AtomicBool::new(false),
        });
        let background = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sluice-kv-flush".into())
            .spawn(move || {
                let mut since_sweep = Duration::ZERO;
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    let Some(inner) = background.upgrade() else { return };
                    if inner.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    since_sweep += FLUSH_EVERY;
                    if since_sweep >= SWEEP_EVERY {
                        since_sweep = Duration::ZERO;
                        if let Err(e) = inner.sweep() {
                            tracing::warn!(error = %e, "key-value store: cannot delete expired keys");
                        }
                    }
                    if let Err(e) = inner.flush() {
                        tracing::warn!(error = %e, "key-value store: cannot make writes durable");
                    }
                }
            })
            .map_err(|e| format!("cannot start the key-value flusher: {e}"))?;
        Ok(Self { inner })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<R, KvError> + Send + 'static,
    ) -> Result<R, KvError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(unavailable)?
    }
}

impl Inner {
    /// One write transaction, committed without waiting for the disk.
    fn write<R>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<R, KvError>) -> Result<R, KvError> {
        let mut txn = self.db.begin_write().map_err(unavailable)?;
        txn.set_durability(Durability::None).map_err(unavailable)?;
        let result = f(&txn)?;
        txn.commit().map_err(unavailable)?;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(result)
    }

    fn flush(&self) -> Result<(), String> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(Durability::Immediate).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    }

    fn sweep(&self) -> Result<(), KvError> {
        self.write(|txn| self.sweep_in(txn))
    }

    /// Delete every expired key, through the expiry index.
    fn sweep_in(&self, txn: &redb::WriteTransaction) -> Result<(), KvError> {
        let now = now_millis();
        let due: Vec<(u64, String)> = {
            let expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
            expiries
                .range((0u64, "")..(now, ""))
                .map_err(unavailable)?
                .filter_map(Result::ok)
                .map(|(k, _)| {
                    let (at, key) = k.value();
                    (at, key.to_string())
                })
                .collect()
        };
        for (at, key) in &due {
            let still_due = self.stored(txn, key)?.is_some_and(|(expires, _)| expires == *at);
            if still_due {
                self.remove(txn, key)?;
            } else {
                let mut expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
                expiries.remove((*at, key.as_str())).map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// (expiry, bytes charged) of `key`'s stored entry, live or expired.
    fn stored(&self, txn: &redb::WriteTransaction, key: &str) -> Result<Option<(u64, u64)>, KvError> {
        let entries = txn.open_table(ENTRIES).map_err(unavailable)?;
        let found = entries.get(key).map_err(unavailable)?;
        Ok(found.map(|v| {
            let stored = decode(v.value());
            (stored.expires, stored.charged)
        }))
    }

    fn usage(&self, txn: &redb::WriteTransaction, tenant: &str) -> Result<Usage, KvError> {
        let usage = txn.open_table(USAGE).map_err(unavailable)?;
        let found = usage.get(tenant).map_err(unavailable)?;
        Ok(found.map(|v| v.value()).map(|(keys, bytes)| Usage { keys, bytes }).unwrap_or_default())
    }

    fn charge(&self, txn: &redb::WriteTransaction, key: &str, keys: i64, bytes: i64) -> Result<(), KvError> {
        let tenant = tenant_of(key);
        let mut usage = self.usage(txn, tenant)?;
        usage.add(keys, bytes);
        let mut table = txn.open_table(USAGE).map_err(unavailable)?;
        if usage.keys == 0 {
            table.remove(tenant).map_err(unavailable)?;
        } else {
            table.insert(tenant, (usage.keys, usage.bytes)).map_err(unavailable)?;
        }
        Ok(())
    }

    /// Delete `key` with its expiry index entry and its charge. Whether it was there.
    fn remove(&self, txn: &redb::WriteTransaction, key: &str) -> Result<bool, KvError> {
        let removed = {
            let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
            let removed = entries.remove(key).map_err(unavailable)?;
            removed.map(|v| {
                let stored = decode(v.value());
                (stored.expires, stored.charged)
            })
        };
        let Some((expires, charged)) = removed else { return Ok(false) };
        if expires != 0 {
            let mut expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
            expiries.remove((expires, key)).map_err(unavailable)?;
        }
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.charge(txn, key, -1, -(charged as i64))?;
        Ok(true)
    }

    /// Whether `key` may hold an entry charged `charged` bytes: within the store's bound and
    /// its tenant's quota.
    fn fits(
        &self,
        txn: &redb::WriteTransaction,
        key: &str,
        charged: u64,
        quota: Quota,
        previous: Option<(u64, u64)>,
    ) -> Result<bool, KvError> {
        let new_key = u64::from(previous.is_none());
        if new_key == 1 && self.keys.load(Ordering::Relaxed) >= self.max_keys {
            return Ok(false);
        }
        let usage = self.usage(txn, tenant_of(key))?;
        Ok(quota.admits(usage, new_key, charged as i64 - previous.map_or(0, |(_, c)| c as i64)))
    }

    /// Store `value` under `key`, charged `charged` bytes, where `previous` is the (expiry,
    /// charge) of the entry stored under it, live or expired (the caller has read it). An
    /// expired entry is deleted first; when the bound or the quota would be passed, expired
    /// keys are swept and the check made again.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        txn: &redb::WriteTransaction,
        key: &str,
        value: &[u8],
        expires: u64,
        charged: u64,
        quota: Quota,
        mut previous: Option<(u64, u64)>,
    ) -> Result<(), KvError> {
        if previous.is_some_and(|(at, _)| !live(at, now_millis())) {
            self.remove(txn, key)?;
            previous = None;
        }
        if !self.fits(txn, key, charged, quota, previous)? {
            self.sweep_in(txn)?;
            if !self.fits(txn, key, charged, quota, previous)? {
                return Err(KvError::QuotaExceeded);
            }
        }
        {
            let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
            let mut expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
            if let Some((old, _)) = previous
                && old != 0
                && old != expires
            {
                expiries.remove((old, key)).map_err(unavailable)?;
            }
            entries.insert(key, encode(expires, charged, value).as_slice()).map_err(unavailable)?;
            if expires != 0 {
                expiries.insert((expires, key), ()).map_err(unavailable)?;
            }
        }
        match previous {
            Some((_, old)) => self.charge(txn, key, 0, charged as i64 - old as i64),
            None => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.charge(txn, key, 1, charged as i64)
            }
        }
    }
}

fn expiry(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| now_millis().saturating_add(t.as_millis().try_into().unwrap_or(u64::MAX)).max(1))
}

#[async_trait::async_trait]
impl KvStore for RedbKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(unavailable)?;
            let entries = txn.open_table(ENTRIES).map_err(unavailable)?;
            let found = entries.get(key.as_str()).map_err(unavailable)?;
            Ok(found.and_then(|v| {
                let stored = decode(v.value());
                live(stored.expires, now_millis()).then(|| stored.value.to_vec())
            }))
        })
        .await
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let previous = inner.stored(txn, &key)?;
                inner.put(txn, &key, &value, expiry(ttl), entry_bytes(&key, value.len()), quota, previous)
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = key.to_string();
        self.blocking(move |inner| inner.write(|txn| inner.remove(txn, &key).map(|_| ()))).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>, quota: Quota) -> Result<i64, KvError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.write(|txn| {
                // One read of the entry: its counter when live, its expiry and charge for `put`.
                let (previous, counter) = {
                    let entries = txn.open_table(ENTRIES).map_err(unavailable)?;
                    match entries.get(key.as_str()).map_err(unavailable)? {
                        Some(v) => {
                            let stored = decode(v.value());
                            let counter = if live(stored.expires, now_millis()) {
                                Some(parse_counter(stored.value)?)
                            } else {
                                None
                            };
                            (Some((stored.expires, stored.charged)), counter)
                        }
                        None => (None, None),
                    }
                };
                let (value, expires) = match (counter, previous) {
                    (Some(n), Some((expires, _))) => (n.saturating_add(delta), expires),
                    _ => (delta, expiry(ttl)),
                };
                let charged = key.len() as u64 + COUNTER_BYTES;
                inner.put(txn, &key, value.to_string().as_bytes(), expires, charged, quota, previous)?;
                Ok(value)
            })
        })
        .await
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, KvError> {
        let tenant = tenant.to_string();
        self.blocking(move |inner| {
            inner.write(|txn| {
                inner.sweep_in(txn)?;
                inner.usage(txn, &tenant)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota::UNLIMITED;

    fn store(name: &str, max_keys: usize) -> (RedbKv, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sluice-redb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("kv.redb");
        (RedbKv::open(&path, max_keys).expect("open"), path)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_expires_and_persists_across_reopening() {
        let (kv, path) = store("persist", 100);
        assert_eq!(kv.incr("k", 1, Some(Duration::from_millis(300)), Q).await, Ok(1));
        assert_eq!(kv.incr("k", 2, Some(Duration::from_secs(100)), Q).await, Ok(3));
        kv.set("kept", b"value".to_vec(), None, Q).await.unwrap();
        kv.set("gone", b"x".to_vec(), None, Q).await.unwrap();
        kv.delete("gone").await.unwrap();
        assert_eq!(kv.get("gone").await, Ok(None));
        drop(kv);
        let kv = RedbKv::open(&path, 100).expect("reopen");
        assert_eq!(kv.get("kept").await, Ok(Some(b"value".to_vec())));
        assert_eq!(kv.get("k").await, Ok(Some(b"3".to_vec())));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(kv.get("k").await, Ok(None));
        assert_eq!(kv.incr("k", 1, None, Q).await, Ok(1));
        kv.inner.sweep().unwrap();
        assert_eq!(kv.inner.keys.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenant_quotas() {
        let (kv, _) = store("tenants", 1000);
        crate::state::conformance::tenant_quotas(&kv).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_quota_and_sweeping() {
        let (kv, _) = store("quota", 2);
        kv.set("a", vec![1], Some(Duration::from_millis(50)), Q).await.unwrap();
        kv.set("b", vec![1], None, Q).await.unwrap();
        assert_eq!(kv.set("c", vec![1], None, Q).await, Err(KvError::QuotaExceeded));
        kv.set("b", vec![2], None, Q).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        // A write that finds the store full deletes expired keys itself.
        kv.set("c", vec![1], None, Q).await.unwrap();
        assert_eq!(kv.get("a").await, Ok(None));
        assert_eq!(kv.get("c").await, Ok(Some(vec![1])));
    }
}
