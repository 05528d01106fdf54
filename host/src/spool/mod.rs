//! The durable queue: every accepted message lives here until it is delivered or bounced.
//!
//! A message is one file in `queue/` (or `quarantine/`), `ID.mail`: a header line with the
//! lengths and the CRC-32 of what follows, the envelope and delivery state (JSON), and the
//! message as it will be delivered. One file per message keeps the file system's work per
//! message to a create and an unlink — on a busy relay the directory operations, not the
//! bytes, are what the kernel spends its time on — and with [`recycle`] (the default) to two
//! renames: a delivered message's file is kept in `free/` and written over by a new message.
//! A new file is written in place: a file that a crash cut short (it never got a 250) fails
//! its length check, a reused one whose new bytes did not reach the disk names another
//! message in its envelope, and both are removed at start; a file whose CRC fails is never
//! delivered. Delivery progress rewrites the file under a temporary name and
//! renames it over the old one.
//!
//! Only once the file is on disk does the client get `250 queued as ID`. How it gets there is
//! [`SyncMode`]: `group` (the default) commits the writes of every session waiting at that
//! moment with one `syncfs(2)` of the spool's file system — one journal commit for many
//! messages, the way a database's group commit works — and `file` fsyncs each file and the
//! directory, for a spool that shares its file system with other heavy writers. In `group`
//! mode a session writes its file itself (into the page cache) and waits for the committer
//! thread's next `syncfs` without holding a thread, so the sessions of one moment share a
//! commit.
//!
//! Removals of delivered messages are done by a thread of their own and delivery-progress
//! updates are not waited for in `group` mode: after a crash they can only be undone, which
//! means one more delivery attempt (a duplicate), never a loss.

//!
//! Inside: [`envelope`] (the envelope and queue ids), [`format`] (the file format), [`commit`]
//! (group commit), [`reaper`] (removals), [`recycle`] (files used again), [`lock`] (one spool,
//! one relay).

mod commit;
pub mod envelope;
pub mod filter;
mod format;
pub mod lock;
mod reaper;
mod recycle;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::sync::lock;
use commit::GroupSync;
pub use envelope::{QueuedMessage, QueuedRecipient, RecipientStatus, Store, new_id, now_secs, valid_id};
pub use format::EXTENSION;
use format::{Header, decode, encode, head, write_parts};
use reaper::Reaper;
use recycle::Recycler;

/// How writes reach the disk before a 250.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// One `syncfs(2)` commits the writes of every session waiting at that moment.
    #[default]
    Group,
    /// `fsync(2)` of each file and of the directory, per message.
    File,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    queue: PathBuf,
    quarantine: PathBuf,
    mode: SyncMode,
    group: GroupSync,
    reaper: Reaper,
    recycler: Option<Arc<Recycler>>,
    /// Held by a relay's spool for as long as it is open.
    _lock: Option<lock::SpoolLock>,
}

/// How many delivered messages' files a relay keeps for new messages by default
/// (`[spool] recycle_files`).
pub const RECYCLE_FILES: usize = 256;

impl Spool {
    /// Open (creating) the spool under `dir`, removing delivered messages' files and leaving
    /// `free/` alone (the command line's queue tools).
    pub fn open(dir: &Path, mode: SyncMode) -> io::Result<Self> {
        Self::open_with(dir, mode, None)
    }

    /// Open (creating) the spool under `dir`, keeping up to `recycle` delivered messages'
    /// files in `free/` for new messages (0: unlink them, and empty `free/`).
    /// This is the relay's open: it locks the spool ([`lock`]) until the `Spool` is dropped,
    /// and fails with the [`lock::LockError`] inside when another process holds it.
    pub fn open_recycling(dir: &Path, mode: SyncMode, recycle: usize) -> io::Result<Self> {
        let lock = lock::SpoolLock::take(dir, lock::Holder::Relay).map_err(io::Error::other)?;
        let mut spool = Self::open_with(dir, mode, Some(recycle))?;
        spool._lock = Some(lock);
        Ok(spool)
    }

    fn open_with(dir: &Path, mode: SyncMode, recycle: Option<usize>) -> io::Result<Self> {
        let queue = dir.join("queue");
        let quarantine = dir.join("quarantine");
        fs::create_dir_all(&queue)?;
        fs::create_dir_all(&quarantine)?;
        let recycler = Recycler::open(dir, recycle)?.map(Arc::new);
        sync_dir(dir)?;
        Ok(Self {
            queue,
            quarantine,
            mode,
            group: GroupSync::new(dir)?,
            reaper: Reaper::new(mode == SyncMode::File, recycler.clone())?,
            recycler,
            _lock: None,
        })
    }

    fn dir(&self, store: Store) -> &Path {
        match store {
            Store::Queue => &self.queue,
            Store::Quarantine => &self.quarantine,
        }
    }

    fn path(&self, store: Store, id: &str) -> io::Result<PathBuf> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        Ok(self.dir(store).join(format!("{id}.{EXTENSION}")))
    }

    /// Write a new message's file in place (not yet durable): until its commit the client has
    /// no 250, and a file a crash cut short fails its length or CRC check and is never
    /// delivered.
    fn write_new(&self, store: Store, envelope: &QueuedMessage, message: &[u8]) -> io::Result<File> {
        let path = self.path(store, &envelope.id)?;
        let head = head(envelope, message)?;
        let parts = [&head[..], message];
        if let Some(recycler) = &self.recycler
            && let Some(file) = recycler.write(&path, &parts)?
        {
            return Ok(file);
        }
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        if let Err(e) = write_parts(&mut file, &parts) {
            // A full disk: leave no partial file behind.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(file)
    }

    /// Store a new message durably: returns once it is on disk (blocking the thread).
    pub fn store(&self, store: Store, envelope: &QueuedMessage, message: &[u8]) -> io::Result<()> {
        let file = self.write_new(store, envelope, message)?;
        let committed = match self.mode {
            SyncMode::File => file.sync_all().and_then(|()| sync_dir(self.dir(store))),
            SyncMode::Group => {
                drop(file);
                self.group.sync()
            }
        };
        self.unless_committed(store, &envelope.id, committed)
    }

    /// A file whose commit failed never got its 250: it must not be delivered later (after a
    /// restart, say), so it goes.
    fn unless_committed(&self, store: Store, id: &str, committed: io::Result<()>) -> io::Result<()> {
        if committed.is_err() {
            let _ = fs::remove_file(self.path(store, id)?);
        }
        committed
    }

    /// Bytes free for unprivileged writers on the spool's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.queue).map_err(io::Error::from)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Store a new message durably from a task: in `group` mode the file is written here (a
    /// write to the page cache) and the task waits for the commit without holding a thread;
    /// in `file` mode the whole store runs on the blocking pool.
    pub async fn store_async(
        self: &Arc<Self>,
        store: Store,
        envelope: &QueuedMessage,
        message: &Arc<Vec<u8>>,
    ) -> io::Result<()> {
        match self.mode {
            SyncMode::Group => {
                drop(self.write_new(store, envelope, message)?);
                let committed = self.group.sync_async().await;
                self.unless_committed(store, &envelope.id, committed)
            }
            SyncMode::File => {
                let (spool, envelope, message) = (self.clone(), envelope.clone(), message.clone());
                tokio::task::spawn_blocking(move || spool.store(store, &envelope, &message))
                    .await
                    .map_err(io::Error::other)?
            }
        }
    }

    /// Rewrite a message's envelope (delivery progress) atomically: a new file renamed over
    /// the old. In `group` mode it is not waited for: lost in a crash, it costs one more
    /// attempt.
    pub fn update(&self, store: Store, envelope: &QueuedMessage) -> io::Result<()> {
        let path = self.live_path(store, &envelope.id)?;
        let old = fs::read(&path)?;
        let (_, _, message) = decode(&old)?;
        let bytes = encode(envelope, message)?;
        let tmp = self.dir(store).join(format!(".{}.{}.tmp", envelope.id, new_id()));
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(&bytes)?;
        let durable = self.mode == SyncMode::File;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if durable { sync_dir(self.dir(store)) } else { Ok(()) }
    }

    /// The path of a message that is not being removed; NotFound if it is.
    fn live_path(&self, store: Store, id: &str) -> io::Result<PathBuf> {
        let path = self.path(store, id)?;
        if self.reaper.is_pending(&path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{id} is being removed")));
        }
        Ok(path)
    }

    /// Whether `id` is in `store` (one `stat`).
    pub fn contains(&self, store: Store, id: &str) -> bool {
        self.live_path(store, id).is_ok_and(|path| path.exists())
    }

    /// Remove `id` from the queue, else from the quarantine; where it was. `NotFound` (saying
    /// so) when it is in neither.
    pub fn remove_anywhere(&self, id: &str) -> io::Result<Store> {
        for store in [Store::Queue, Store::Quarantine] {
            match self.remove(store, id) {
                Ok(()) => return Ok(store),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{id}: no such message in the queue or the quarantine"),
        ))
    }

    /// Make every queued message due now, on disk (a restart keeps it), except those `skip`
    /// names (an attempt is working on them, or an operator's filter leaves them); their ids.
    pub fn flush(&self, skip: impl Fn(&QueuedMessage) -> bool) -> io::Result<Vec<String>> {
        let mut flushed = Vec::new();
        for mut message in self.list(Store::Queue)? {
            if skip(&message) {
                continue;
            }
            if message.next_attempt != 0 {
                message.next_attempt = 0;
                self.update(Store::Queue, &message)?;
            }
            flushed.push(message.id);
        }
        Ok(flushed)
    }

    /// Remove a message.
    pub fn remove(&self, store: Store, id: &str) -> io::Result<()> {
        fs::remove_file(self.path(store, id)?)?;
        if self.mode == SyncMode::File { sync_dir(self.dir(store)) } else { Ok(()) }
    }

    /// Remove a delivered message without waiting: from now on it is no longer listed or
    /// read, and a thread of the spool's unlinks its file (and, in `file` mode, syncs the
    /// directory). Lost in a crash, the removal costs one more delivery, never a message.
    pub fn remove_later(&self, store: Store, id: &str) -> io::Result<()> {
        let path = self.path(store, id)?;
        if !self.reaper.remove(path) {
            return self.remove(store, id);
        }
        Ok(())
    }

    /// The message bytes, checked against the length and CRC-32 recorded with them:
    /// `InvalidData` if they differ (a write a crash cut short, or damage on disk since).
    pub fn message(&self, store: Store, id: &str) -> io::Result<Vec<u8>> {
        let bytes = fs::read(self.live_path(store, id)?)?;
        let (header, envelope, message) = decode(&bytes)?;
        if !header.matches(envelope, message) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("spool file of {id} fails its CRC check"),
            ));
        }
        Ok(message.to_vec())
    }

    /// One envelope (the message is not read). `InvalidData` for a file whose length is not
    /// what its header says (being written, or cut short).
    pub fn envelope(&self, store: Store, id: &str) -> io::Result<QueuedMessage> {
        let mut file = File::open(self.live_path(store, id)?)?;
        let mut head = vec![0u8; 4096];
        let mut filled = 0;
        loop {
            let n = file.read(&mut head[filled..])?;
            filled += n;
            if n == 0 || filled == head.len() {
                break;
            }
        }
        head.truncate(filled);
        let header = Header::parse(&head)?;
        // Still being written (or cut short by a crash): not a message yet.
        let length = file.metadata()?.len();
        if usize::try_from(length).ok() != Some(header.total()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("spool file of {id} is {length} bytes, its header says {}", header.total()),
            ));
        }
        if head.len() < header.envelope_end() {
            // A large envelope (many recipients): read the rest of it.
            head.resize(header.envelope_end(), 0);
            file.read_exact(&mut head[filled..])?;
        }
        serde_json::from_slice(&head[header.start..header.envelope_end()])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Every envelope in `store`, oldest first, after removing what a crash left of writes
    /// that were never acknowledged: temporary files, spool files shorter or longer than
    /// their header says or without a readable envelope. Also converts the spool files of
    /// earlier versions (`ID.json` + `ID.msg`). Only for start-up, before anything writes to
    /// the spool: while the relay runs, those are writes in progress — use [`Spool::list`].
    pub fn recover(&self, store: Store) -> io::Result<Vec<QueuedMessage>> {
        let dir = self.dir(store);
        let names = self.names(store)?;
        let mut envelopes = Vec::new();
        for name in &names {
            let path = dir.join(name);
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
            } else if let Some(id) = name.strip_suffix(".json") {
                envelopes.extend(self.convert_legacy(store, id)?);
            } else if let Some(id) = name.strip_suffix(".msg")
                && !names.iter().any(|n| n.strip_suffix(".json") == Some(id))
            {
                tracing::warn!(id, "removing a message file without envelope (never acknowledged)");
                let _ = fs::remove_file(&path);
            } else if let Some(id) = name.strip_suffix(&format!(".{EXTENSION}")) {
                // Read whole once: its length checked against the header (the CRC is checked
                // when it is delivered), its envelope kept.
                let read = fs::read(&path).and_then(|bytes| {
                    let (_, envelope, _) = decode(&bytes)?;
                    let envelope = serde_json::from_slice::<QueuedMessage>(envelope)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // A reused file renamed in before its new bytes reached the disk.
                    if envelope.id != id {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("its envelope is of message {}", envelope.id),
                        ));
                    }
                    Ok(envelope)
                });
                match read {
                    Ok(envelope) => envelopes.push(envelope),
                    Err(e) => {
                        tracing::warn!(id, error = %e, "removing an incomplete spool file (never acknowledged)");
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        Ok(envelopes)
    }

    /// A message in the two-file layout of earlier versions, rewritten as one spool file; its
    /// envelope, or None if it was unreadable (and removed).
    fn convert_legacy(&self, store: Store, id: &str) -> io::Result<Option<QueuedMessage>> {
        let dir = self.dir(store);
        let (json, msg) = (dir.join(format!("{id}.json")), dir.join(format!("{id}.msg")));
        let envelope: QueuedMessage = match fs::read(&json).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(envelope)) => envelope,
            _ => {
                tracing::warn!(id, "removing an unreadable envelope of the earlier spool layout");
                let _ = fs::remove_file(&json);
                let _ = fs::remove_file(&msg);
                return Ok(None);
            }
        };
        let message = fs::read(&msg)?;
        let _ = fs::remove_file(self.path(store, id)?);
        let mut file = OpenOptions::new().write(true).create_new(true).open(self.path(store, id)?)?;
        file.write_all(&encode(&envelope, &message)?)?;
        file.sync_all()?;
        sync_dir(dir)?;
        fs::remove_file(&json)?;
        fs::remove_file(&msg)?;
        sync_dir(dir)?;
        Ok(Some(envelope))
    }

    /// Every envelope in `store`, oldest first, touching nothing: safe while messages are
    /// being written and removed (one that vanishes or is still being written is skipped).
    pub fn list(&self, store: Store) -> io::Result<Vec<QueuedMessage>> {
        let mut envelopes = Vec::new();
        for name in self.names(store)? {
            if let Some(id) = name.strip_suffix(&format!(".{EXTENSION}")) {
                match self.envelope(store, id) {
                    Ok(envelope) => envelopes.push(envelope),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::InvalidData
                            || e.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        tracing::debug!(id, error = %e, "spool file not complete (being written?)");
                    }
                    Err(e) => tracing::error!(id, error = %e, "unreadable spool file"),
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

    /// Release a message from quarantine: into the queue, its quarantine reason cleared, due
    /// now.
    pub fn release(&self, id: &str) -> io::Result<()> {
        let mut envelope = self.envelope(Store::Quarantine, id)?;
        envelope.quarantine_reason = None;
        envelope.next_attempt = 0;
        self.transfer(Store::Quarantine, Store::Queue, &envelope)
    }

    /// Hold a queued message: into the quarantine, with `reason`, until an operator
    /// releases it (`sluice queue release`) or deletes it.
    pub fn hold(&self, id: &str, reason: &str) -> io::Result<()> {
        let mut envelope = self.envelope(Store::Queue, id)?;
        envelope.quarantine_reason = Some(reason.to_string());
        self.transfer(Store::Queue, Store::Quarantine, &envelope)
    }

    /// Move a message between stores (quarantine release, a damaged file set aside). The
    /// message moves as it is, even if it fails its check.
    pub fn transfer(&self, from: Store, to: Store, envelope: &QueuedMessage) -> io::Result<()> {
        let bytes = fs::read(self.path(from, &envelope.id)?)?;
        let (_, _, message) = decode(&bytes)?;
        self.store(to, envelope, message)?;
        self.remove(from, &envelope.id)
    }
}

/// Whether an error means the file system (or the writer's quota) is full.
pub fn is_storage_full(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// fsync a directory, making renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
