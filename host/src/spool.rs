//! The durable queue: every accepted message lives here until it is delivered or bounced.
//!
//! A message is two files in `queue/` (or `quarantine/`): `ID.msg`, the message as it will be
//! delivered, and `ID.json`, its envelope and delivery state. Each is written to a temporary
//! name, fsynced, renamed into place, and the directory is fsynced; the envelope goes last, so
//! a message exists exactly when its envelope does. Only then does the client get
//! `250 queued as ID`. Stores run on the blocking pool, one thread each, so concurrent sessions
//! fsync in parallel rather than one after another.
//!
//! On start, [`Spool::recover`] lists every envelope; a message file without an envelope (a
//! crash before the 250) and leftover temporary files are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not delivered yet.
    Pending,
    /// Delivered.
    Delivered,
    /// Failed for good (bounced).
    Failed,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// Address.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// The last reply or error from its next hop.
    pub last_reply: Option<String>,
}

/// A message's envelope and delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Queue id.
    pub id: String,
    /// Tenant that accepted it.
    pub tenant: String,
    /// MAIL FROM (empty: the null sender).
    pub mail_from: String,
    /// Recipients.
    pub recipients: Vec<QueuedRecipient>,
    /// When it was accepted, Unix seconds.
    pub received_at: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Next attempt, Unix seconds.
    pub next_attempt: u64,
    /// A named next hop chosen by a policy.
    pub route: Option<String>,
    /// Why it is in quarantine, if it is.
    pub quarantine_reason: Option<String>,
}

impl QueuedMessage {
    /// Recipients still to deliver.
    pub fn pending(&self) -> impl Iterator<Item = &QueuedRecipient> {
        self.recipients.iter().filter(|r| r.status == RecipientStatus::Pending)
    }
}

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Waiting for delivery.
    Queue,
    /// Held for review.
    Quarantine,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    queue: PathBuf,
    quarantine: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A new queue id: microseconds since the epoch and a per-process counter, in hex; sorts
/// by arrival and is unique across restarts of one spool.
pub fn new_id() -> String {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{micros:014X}{:04X}", n & 0xFFFF)
}

/// A queue id is hex only: nothing a caller passes can name a path outside the spool.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Spool {
    /// Open (creating) the spool under `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let queue = dir.join("queue");
        let quarantine = dir.join("quarantine");
        fs::create_dir_all(&queue)?;
        fs::create_dir_all(&quarantine)?;
        sync_dir(dir)?;
        Ok(Self { queue, quarantine })
    }

    fn dir(&self, store: Store) -> &Path {
        match store {
            Store::Queue => &self.queue,
            Store::Quarantine => &self.quarantine,
        }
    }

    /// Store a new message durably. Returns once both files and the directory are on disk.
    pub fn store(&self, store: Store, envelope: &QueuedMessage, message: &[u8]) -> io::Result<()> {
        let dir = self.dir(store);
        write_durably(dir, &format!("{}.msg", envelope.id), message)?;
        let json = serde_json::to_vec_pretty(envelope).map_err(io::Error::other)?;
        write_durably(dir, &format!("{}.json", envelope.id), &json)?;
        sync_dir(dir)
    }

    /// Rewrite an envelope (delivery progress) atomically.
    pub fn update(&self, store: Store, envelope: &QueuedMessage) -> io::Result<()> {
        let dir = self.dir(store);
        let json = serde_json::to_vec_pretty(envelope).map_err(io::Error::other)?;
        write_durably(dir, &format!("{}.json", envelope.id), &json)?;
        sync_dir(dir)
    }

    /// Remove a message: envelope first, so a crash in between leaves an orphan message file
    /// that recovery deletes, never an envelope without its message.
    pub fn remove(&self, store: Store, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        let dir = self.dir(store);
        fs::remove_file(dir.join(format!("{id}.json")))?;
        match fs::remove_file(dir.join(format!("{id}.msg"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(dir)
    }

    /// The message bytes.
    pub fn message(&self, store: Store, id: &str) -> io::Result<Vec<u8>> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        fs::read(self.dir(store).join(format!("{id}.msg")))
    }

    /// One envelope.
    pub fn envelope(&self, store: Store, id: &str) -> io::Result<QueuedMessage> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        let bytes = fs::read(self.dir(store).join(format!("{id}.json")))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Every envelope in `store`, oldest first, after removing the leftovers of writes a
    /// crash interrupted (temporary files, a message file without its envelope). Only for
    /// start-up, before anything writes to the spool: while the relay runs, those are
    /// writes in progress — use [`Spool::list`].
    pub fn recover(&self, store: Store) -> io::Result<Vec<QueuedMessage>> {
        let dir = self.dir(store);
        let names = self.names(store)?;
        for name in &names {
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(dir.join(name));
            } else if let Some(id) = name.strip_suffix(".msg")
                && !names.iter().any(|n| n.strip_suffix(".json") == Some(id))
            {
                tracing::warn!(id, "removing a message file without envelope (never acknowledged)");
                let _ = fs::remove_file(dir.join(name));
            }
        }
        self.list(store)
    }

    /// Every envelope in `store`, oldest first, touching nothing: safe while messages are
    /// being written and removed (one that vanishes meanwhile is skipped).
    pub fn list(&self, store: Store) -> io::Result<Vec<QueuedMessage>> {
        let mut envelopes = Vec::new();
        for name in self.names(store)? {
            if let Some(id) = name.strip_suffix(".json") {
                match self.envelope(store, id) {
                    Ok(envelope) => envelopes.push(envelope),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::error!(id, error = %e, "unreadable envelope in the spool"),
                }
            }
        }
        Ok(envelopes)
    }

    fn names(&self, store: Store) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.dir(store))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Move a message between stores (quarantine release).
    pub fn transfer(&self, from: Store, to: Store, envelope: &QueuedMessage) -> io::Result<()> {
        let message = self.message(from, &envelope.id)?;
        self.store(to, envelope, &message)?;
        self.remove(from, &envelope.id)
    }
}

fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(name))
}

/// fsync a directory, making renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> QueuedMessage {
        QueuedMessage {
            id: id.into(),
            tenant: "t".into(),
            mail_from: "a@example.org".into(),
            recipients: vec![QueuedRecipient {
                address: "b@example.com".into(),
                status: RecipientStatus::Pending,
                last_reply: None,
            }],
            received_at: 1,
            attempts: 0,
            next_attempt: 1,
            route: None,
            quarantine_reason: None,
        }
    }

    #[test]
    fn store_recover_remove() {
        let dir = std::env::temp_dir().join(format!("sluice-spool-{}", new_id()));
        let spool = Spool::open(&dir).unwrap();
        let id = new_id();
        spool.store(Store::Queue, &envelope(&id), b"Subject: x\r\n\r\nhi\r\n").unwrap();
        // Leftovers of a crash: a message without envelope, a temporary file.
        fs::write(dir.join("queue").join("ABCDEF.msg"), b"half").unwrap();
        fs::write(dir.join("queue").join(".ABCDEF.json.tmp"), b"{").unwrap();
        // While the relay runs they are writes in progress: listing leaves them alone.
        assert_eq!(spool.list(Store::Queue).unwrap(), vec![envelope(&id)]);
        assert!(dir.join("queue").join("ABCDEF.msg").exists());
        assert!(dir.join("queue").join(".ABCDEF.json.tmp").exists());
        let found = spool.recover(Store::Queue).unwrap();
        assert_eq!(found, vec![envelope(&id)]);
        assert!(!dir.join("queue").join("ABCDEF.msg").exists());
        assert!(!dir.join("queue").join(".ABCDEF.json.tmp").exists());
        assert_eq!(spool.message(Store::Queue, &id).unwrap(), b"Subject: x\r\n\r\nhi\r\n");
        spool.transfer(Store::Queue, Store::Quarantine, &envelope(&id)).unwrap();
        assert!(spool.recover(Store::Queue).unwrap().is_empty());
        spool.remove(Store::Quarantine, &id).unwrap();
        assert!(spool.recover(Store::Quarantine).unwrap().is_empty());
        assert!(spool.message(Store::Queue, "../etc/passwd").is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(valid_id(&a));
        assert!(!valid_id("x/../y"));
    }
}
