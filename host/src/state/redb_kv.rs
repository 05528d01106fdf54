//! The embedded, persistent store: one redb file, the relay's default.
//!
//! The store works in memory ([`MemoryKv`]: an operation is a map lookup under a lock, a
//! microsecond on the calling thread) and keeps a copy on disk: a flusher thread writes the
//! keys changed in the last second to the file in one durable transaction, so counters and
//! greylist entries survive a restart — a crash loses at most the last second of them, never
//! the file's consistency. At start the file's live entries are read back and those that
//! expired meanwhile are deleted from it. Expired keys are deleted every ten seconds (and whenever a write finds the store or a tenant's quota full),
//! from memory and then from the file, so it does not grow with dead keys. Memory is bounded
//! by the store's bound on keys and each tenant's quota.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redb::{Database, Durability, ReadableTable, TableDefinition, TableHandle};

use super::kv::{Entry, KvError, KvStore, MemoryKv, Quota, Usage, now_millis};

/// Key → expiry (Unix milliseconds, big-endian, 0 for none), the bytes it counts as against
/// its tenant's quota (big-endian), then the value.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries-v2");
/// Tables of earlier versions (an expiry index and per-tenant usage, now kept in memory).
const OLD_TABLES: [&str; 2] = ["expiries", "usage"];

/// How often changes are written to disk.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often expired keys are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A persistent store in one file, with expiry and a bound on the number of keys.
pub struct RedbKv {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    memory: MemoryKv,
    stop: AtomicBool,
    /// One flush at a time (the flusher thread, or the last one at drop).
    flushing: std::sync::Mutex<()>,
}

impl Drop for RedbKv {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Err(e) = self.inner.flush() {
            tracing::warn!(error = %e, "key-value store: cannot write the last changes to disk");
        }
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entry.value.len());
    out.extend_from_slice(&entry.expires.to_be_bytes());
    out.extend_from_slice(&entry.bytes.to_be_bytes());
    out.extend_from_slice(&entry.value);
    out
}

/// A stored entry; None for a malformed one.
fn decode(stored: &[u8]) -> Option<Entry> {
    let (expires, rest) = stored.split_first_chunk::<8>()?;
    let (bytes, value) = rest.split_first_chunk::<8>()?;
    Some(Entry {
        value: value.to_vec(),
        expires: u64::from_be_bytes(*expires),
        bytes: u64::from_be_bytes(*bytes),
    })
}

impl RedbKv {
    /// Open (or create) the store at `path`, holding at most `max_keys` keys, read its live
    /// entries, and start its flusher thread.
    pub fn open(path: &Path, max_keys: usize) -> Result<Self, String> {
        let context = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| context(&e))?;
        }
        let db = Database::create(path).map_err(|e| context(&e))?;
        // One pass at start: the live entries come back into memory; expired (or malformed)
        // ones, which expired while the relay was down, leave the file.
        let mut live = Vec::new();
        {
            let txn = db.begin_write().map_err(|e| context(&e))?;
            for old in OLD_TABLES {
                let exists = txn.list_tables().map_err(|e| context(&e))?.any(|t| t.name() == old);
                if exists {
                    txn.delete_table(TableDefinition::<&str, &[u8]>::new(old)).map_err(|e| context(&e))?;
                }
            }
            {
                let mut entries = txn.open_table(ENTRIES).map_err(|e| context(&e))?;
                let now = now_millis();
                let mut dead = Vec::new();
                for row in entries.iter().map_err(|e| context(&e))? {
                    let (key, value) = row.map_err(|e| context(&e))?;
                    match decode(value.value()) {
                        Some(entry) if entry.live(now) => live.push((key.value().to_string(), entry)),
                        _ => dead.push(key.value().to_string()),
                    }
                }
                for key in &dead {
                    entries.remove(key.as_str()).map_err(|e| context(&e))?;
                }
            }
            txn.commit().map_err(|e| context(&e))?;
        }
        let memory = MemoryKv::recording(max_keys, live);
        let inner =
            Arc::new(Inner { db, memory, stop: AtomicBool::new(false), flushing: Default::default() });
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
                        inner.memory.sweep();
                    }
                    if let Err(e) = inner.flush() {
                        tracing::warn!(error = %e, "key-value store: cannot write changes to disk (kept for the next try)");
                    }
                }
            })
            .map_err(|e| format!("cannot start the key-value flusher: {e}"))?;
        Ok(Self { inner })
    }
}

impl RedbKv {
    /// The live entries of the store at `path`, copied into memory: what `sluice policy test
    /// --state` runs on. Writes go to the copy only; the file is not changed.
    pub fn read_copy(path: &Path, max_keys: usize) -> Result<MemoryKv, String> {
        use redb::ReadableDatabase;
        let context = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        if !path.is_file() {
            return Err(format!("{}: no such key-value store file", path.display()));
        }
        let db = Database::open(path).map_err(|e| context(&e))?;
        let txn = db.begin_read().map_err(|e| context(&e))?;
        let now = now_millis();
        let mut live = Vec::new();
        match txn.open_table(ENTRIES) {
            Ok(entries) => {
                for row in entries.iter().map_err(|e| context(&e))? {
                    let (key, value) = row.map_err(|e| context(&e))?;
                    if let Some(entry) = decode(value.value()).filter(|e| e.live(now)) {
                        live.push((key.value().to_string(), entry));
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(context(&e)),
        }
        Ok(MemoryKv::with_entries(max_keys, live))
    }
}

impl Inner {
    /// Write the keys changed since the last flush in one durable transaction; on failure
    /// they stay marked as changed.
    fn flush(&self) -> Result<(), String> {
        let _one = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let changes = self.memory.take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let written = (|| -> Result<(), String> {
            let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
            txn.set_durability(Durability::Immediate).map_err(|e| e.to_string())?;
            {
                let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
                for (key, entry) in &changes {
                    match entry {
                        Some(entry) => entries.insert(key.as_str(), encode(entry).as_slice()).map(|_| ()),
                        None => entries.remove(key.as_str()).map(|_| ()),
                    }
                    .map_err(|e| e.to_string())?;
                }
            }
            txn.commit().map_err(|e| e.to_string())
        })();
        if written.is_err() {
            self.memory.unwritten(changes.into_iter().map(|(key, _)| key));
        }
        written
    }
}

#[async_trait::async_trait]
impl KvStore for RedbKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.memory.get(key).await
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError> {
        self.inner.memory.set(key, value, ttl, quota).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.memory.delete(key).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>, quota: Quota) -> Result<i64, KvError> {
        self.inner.memory.incr(key, delta, ttl, quota).await
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, KvError> {
        self.inner.memory.usage(tenant).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.inner.memory.get_many(keys).await
    }

    async fn incr_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<Vec<Option<i64>>, KvError> {
        self.inner.memory.incr_many(deltas, ttl, quota).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

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
        kv.set("gone", b"x".to_vec(), None, Q).await.unwrap();
        // The flusher writes it to disk within a second; its deletion must reach the disk too.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(kv.incr("k", 1, Some(Duration::from_millis(300)), Q).await, Ok(1));
        assert_eq!(kv.incr("k", 2, Some(Duration::from_secs(100)), Q).await, Ok(3));
        kv.set("kept", b"value".to_vec(), None, Q).await.unwrap();
        kv.delete("gone").await.unwrap();
        assert_eq!(kv.get("gone").await, Ok(None));
        drop(kv);
        let kv = RedbKv::open(&path, 100).expect("reopen");
        assert_eq!(kv.get("kept").await, Ok(Some(b"value".to_vec())));
        assert_eq!(kv.get("k").await, Ok(Some(b"3".to_vec())));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(kv.get("k").await, Ok(None));
        assert_eq!(kv.incr("k", 1, None, Q).await, Ok(1));
        kv.inner.memory.sweep();
        assert_eq!(kv.inner.memory.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenant_quotas() {
        let (kv, _) = store("tenants", 1000);
        crate::state::conformance::tenant_quotas(&kv).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches() {
        let (kv, _) = store("batches", 1000);
        crate::state::conformance::batches(&kv).await;
    }

    /// A file of the earlier layout (entries with an expiry index and usage table) opens;
    /// its live entries are kept, entries that expired while it was closed leave the file,
    /// and the tables the store no longer uses are dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_up_drops_earlier_tables_and_expired_entries() {
        let dir = std::env::temp_dir().join(format!("sluice-redb-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kv.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let mut entries = txn.open_table(ENTRIES).unwrap();
            entries
                .insert("k", encode(&Entry { value: b"v".to_vec(), expires: 0, bytes: 2 }).as_slice())
                .unwrap();
            entries
                .insert("old", encode(&Entry { value: b"v".to_vec(), expires: 1, bytes: 4 }).as_slice())
                .unwrap();
            drop(entries);
            txn.open_table(TableDefinition::<&str, (u64, u64)>::new("usage"))
                .unwrap()
                .insert("t", (1, 2))
                .unwrap();
            txn.commit().unwrap();
        }
        let kv = RedbKv::open(&path, 100).unwrap();
        assert_eq!(kv.get("k").await, Ok(Some(b"v".to_vec())));
        drop(kv);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_string()).collect();
        assert_eq!(names, vec!["entries-v2".to_string()]);
        let entries = txn.open_table(ENTRIES).unwrap();
        assert!(entries.get("k").unwrap().is_some());
        assert!(entries.get("old").unwrap().is_none(), "an entry expired on disk is removed at open");
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
