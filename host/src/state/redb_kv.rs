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

use super::kv::{KvError, KvStore, parse_counter};

/// Key → expiry (Unix milliseconds, big-endian, 0 for none) followed by the value.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// (expiry, key) for every key that has one.
const EXPIRIES: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiries");

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

fn encode(expires: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// (expiry, value) of a stored entry; a malformed one reads as expired.
fn decode(stored: &[u8]) -> (u64, &[u8]) {
    match stored.split_first_chunk::<8>() {
        Some((expiry, value)) => (u64::from_be_bytes(*expiry), value),
        None => (1, &[]),
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
        let now = now_millis();
        self.write(|txn| {
            let mut expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
            let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
            let due: Vec<(u64, String)> = expiries
                .range((0u64, "")..(now, ""))
                .map_err(unavailable)?
                .filter_map(Result::ok)
                .map(|(k, _)| {
                    let (at, key) = k.value();
                    (at, key.to_string())
                })
                .collect();
            for (at, key) in &due {
                expiries.remove((*at, key.as_str())).map_err(unavailable)?;
                let still_due = entries
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .is_some_and(|v| decode(v.value()).0 == *at);
                if still_due {
                    entries.remove(key.as_str()).map_err(unavailable)?;
                    self.keys.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    }

    /// Store `value` under `key`, whose stored entry (live or expired) had expiry
    /// `previous` (`None`: no entry), replacing its expiry index entry.
    fn put(
        &self,
        txn: &redb::WriteTransaction,
        key: &str,
        value: &[u8],
        expires: u64,
        previous: Option<u64>,
    ) -> Result<(), KvError> {
        let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
        let mut expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
        match previous {
            Some(old) if old != 0 && old != expires => {
                expiries.remove((old, key)).map_err(unavailable)?;
            }
            Some(_) => {}
            None => {
                if self.keys.load(Ordering::Relaxed) >= self.max_keys {
                    return Err(KvError::QuotaExceeded);
                }
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
        }
        entries.insert(key, encode(expires, value).as_slice()).map_err(unavailable)?;
        if expires != 0 {
            expiries.insert((expires, key), ()).map_err(unavailable)?;
        }
        Ok(())
    }

    /// The stored (expiry, value) of `key`, live or expired.
    fn stored(&self, txn: &redb::WriteTransaction, key: &str) -> Result<Option<(u64, Vec<u8>)>, KvError> {
        let entries = txn.open_table(ENTRIES).map_err(unavailable)?;
        let found = entries.get(key).map_err(unavailable)?;
        Ok(found.map(|v| {
            let (expires, value) = decode(v.value());
            (expires, value.to_vec())
        }))
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
                let (expires, value) = decode(v.value());
                live(expires, now_millis()).then(|| value.to_vec())
            }))
        })
        .await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let previous = inner.stored(txn, &key)?.map(|(expires, _)| expires);
                inner.put(txn, &key, &value, expiry(ttl), previous)
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
                let removed = entries.remove(key.as_str()).map_err(unavailable)?.map(|v| decode(v.value()).0);
                if let Some(expires) = removed {
                    inner.keys.fetch_sub(1, Ordering::Relaxed);
                    if expires != 0 {
                        let mut expiries = txn.open_table(EXPIRIES).map_err(unavailable)?;
                        expiries.remove((expires, key.as_str())).map_err(unavailable)?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let stored = inner.stored(txn, &key)?;
                let previous = stored.as_ref().map(|(expires, _)| *expires);
                let (value, expires) = match stored.filter(|(expires, _)| live(*expires, now_millis())) {
                    Some((expires, value)) => (parse_counter(&value)?.saturating_add(delta), expires),
                    None => (delta, expiry(ttl)),
                };
                inner.put(txn, &key, value.to_string().as_bytes(), expires, previous)?;
                Ok(value)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str, max_keys: usize) -> (RedbKv, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sluice-redb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("kv.redb");
        (RedbKv::open(&path, max_keys).expect("open"), path)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_expires_and_persists_across_reopening() {
        let (kv, path) = store("persist", 100);
        assert_eq!(kv.incr("k", 1, Some(Duration::from_millis(300))).await, Ok(1));
        assert_eq!(kv.incr("k", 2, Some(Duration::from_secs(100))).await, Ok(3));
        kv.set("kept", b"value".to_vec(), None).await.unwrap();
        kv.set("gone", b"x".to_vec(), None).await.unwrap();
        kv.delete("gone").await.unwrap();
        assert_eq!(kv.get("gone").await, Ok(None));
        drop(kv);
        let kv = RedbKv::open(&path, 100).expect("reopen");
        assert_eq!(kv.get("kept").await, Ok(Some(b"value".to_vec())));
        assert_eq!(kv.get("k").await, Ok(Some(b"3".to_vec())));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(kv.get("k").await, Ok(None));
        assert_eq!(kv.incr("k", 1, None).await, Ok(1));
        kv.inner.sweep().unwrap();
        assert_eq!(kv.inner.keys.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_quota_and_sweeping() {
        let (kv, _) = store("quota", 2);
        kv.set("a", vec![1], Some(Duration::from_millis(50))).await.unwrap();
        kv.set("b", vec![1], None).await.unwrap();
        assert_eq!(kv.set("c", vec![1], None).await, Err(KvError::QuotaExceeded));
        kv.set("b", vec![2], None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        kv.inner.sweep().unwrap();
        kv.set("c", vec![1], None).await.unwrap();
        assert_eq!(kv.get("a").await, Ok(None));
        assert_eq!(kv.get("c").await, Ok(Some(vec![1])));
    }
}
