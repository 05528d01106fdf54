//! The durable queue: every accepted message lives here until it is delivered or bounced.
//!
//! A message is one file in `queue/` (or `quarantine/`), `ID.mail`: a header line with the
//! lengths and the CRC-32 of what follows, the envelope and delivery state (JSON), and the
//! message as it will be delivered. One file per message keeps the file system's work per
//! message to a create and an unlink — on a busy relay the directory operations, not the
//! bytes, are what the kernel spends its time on. The file is written in place: a file that
//! a crash cut short (it never got a 250) fails its length check and is removed at start; a
//! file whose CRC fails is never delivered. Delivery progress rewrites the file under a temporary name and
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

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

/// Group commit: a committer thread runs `syncfs` for every write finished before it starts.
/// A writer takes a ticket once its write is done and waits (a thread or a task) until a
/// commit covers it; while one commit runs, the tickets of the next pile up behind it.
#[derive(Debug)]
struct GroupSync {
    shared: Arc<GroupShared>,
    committer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct GroupShared {
    /// Any file of the spool's filesystem (the spool directory).
    handle: File,
    state: Mutex<SyncState>,
    /// The committer waits here for tickets.
    work: Condvar,
    /// Threads waiting for their commit.
    done: Condvar,
    /// Tasks waiting for their commit: the highest ticket committed.
    committed: tokio::sync::watch::Sender<u64>,
}

/// How many failed commits are remembered (a writer learns its commit failed from here).
const FAILURES_KEPT: usize = 1024;

#[derive(Debug, Default)]
struct SyncState {
    /// Tickets handed out.
    issued: u64,
    /// Every ticket up to this one has had its commit.
    covered: u64,
    /// Tickets (first, last) whose commit failed, with the error: their data may be lost.
    failed: VecDeque<(u64, u64, io::ErrorKind, String)>,
    /// The committer is waiting for work.
    idle: bool,
    stop: bool,
}

impl SyncState {
    fn outcome(&self, ticket: u64) -> io::Result<()> {
        match self.failed.iter().find(|(first, last, _, _)| (*first..=*last).contains(&ticket)) {
            Some((_, _, kind, text)) => Err(io::Error::new(*kind, text.clone())),
            None => Ok(()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupSync {
    fn new(dir: &Path) -> io::Result<Self> {
        let shared = Arc::new(GroupShared {
            handle: File::open(dir)?,
            state: Mutex::new(SyncState::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            committed: tokio::sync::watch::Sender::new(0),
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new().name("sluice-spool-sync".into()).spawn(move || shared.run())?
        };
        Ok(Self { shared, committer: Some(committer) })
    }

    /// A ticket for writes finished before the call.
    fn ticket(&self) -> u64 {
        let mut state = lock(&self.shared.state);
        state.issued += 1;
        if state.idle {
            state.idle = false;
            self.shared.work.notify_one();
        }
        state.issued
    }

    /// Returns once everything written before the call is on disk (blocking the thread).
    fn sync(&self) -> io::Result<()> {
        let ticket = self.ticket();
        let mut state = lock(&self.shared.state);
        while state.covered < ticket {
            state = self.shared.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.outcome(ticket)
    }

    /// Returns once everything written before the call is on disk (without blocking).
    async fn sync_async(&self) -> io::Result<()> {
        let ticket = self.ticket();
        let mut committed = self.shared.committed.subscribe();
        committed
            .wait_for(|covered| *covered >= ticket)
            .await
            .map_err(|_| io::Error::other("the spool's committer stopped"))?;
        lock(&self.shared.state).outcome(ticket)
    }
}

impl GroupShared {
    /// The committer: one `syncfs` for all tickets issued when it starts, until stopped.
    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.issued == state.covered {
                if state.stop {
                    return;
                }
                state.idle = true;
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let upto = state.issued;
            drop(state);
            let result = rustix::fs::syncfs(&self.handle);
            state = lock(&self.state);
            if let Err(e) = result {
                let e = io::Error::from(e);
                let first = state.covered + 1;
                state.failed.push_back((first, upto, e.kind(), format!("syncfs: {e}")));
                if state.failed.len() > FAILURES_KEPT {
                    state.failed.pop_front();
                }
            }
            state.covered = upto;
            self.done.notify_all();
            self.committed.send_replace(upto);
        }
    }
}

impl Drop for GroupSync {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.shared.state);
            state.stop = true;
            self.shared.work.notify_one();
        }
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// How long the unlinking thread lets removals gather between rounds.
const REAP_PAUSE: Duration = Duration::from_millis(20);

/// Removals of delivered messages, done by a thread of their own: an unlink can wait for
/// the disk (a file system that discards freed blocks), and a delivery need not wait for it.
/// Until its file is gone, a message being removed is invisible to [`Spool::list`],
/// [`Spool::contains`] and the readers, so nothing delivers it again.
#[derive(Debug)]
struct Reaper {
    queue: Option<std::sync::mpsc::Sender<PathBuf>>,
    pending: Arc<Mutex<HashSet<PathBuf>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    /// `sync_dirs`: sync each directory a round removed from (`file` mode).
    fn new(sync_dirs: bool) -> io::Result<Self> {
        let (queue, work) = std::sync::mpsc::channel::<PathBuf>();
        let pending: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let thread = {
            let pending = pending.clone();
            std::thread::Builder::new().name("sluice-spool-unlink".into()).spawn(move || {
                while let Ok(first) = work.recv() {
                    let mut dirs = HashSet::new();
                    for path in std::iter::once(first).chain(work.try_iter()) {
                        match fs::remove_file(&path) {
                            Ok(()) if sync_dirs => dirs.extend(path.parent().map(Path::to_path_buf)),
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => {
                                tracing::error!(file = %path.display(), error = %e, "cannot remove a delivered message")
                            }
                        }
                        lock(&pending).remove(&path);
                    }
                    for dir in dirs {
                        if let Err(e) = sync_dir(&dir) {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the spool directory");
                        }
                    }
                    // Let removals gather: one wake-up of this thread for many of them.
                    std::thread::sleep(REAP_PAUSE);
                }
            })?
        };
        Ok(Self { queue: Some(queue), pending, thread: Some(thread) })
    }

    fn is_pending(&self, path: &Path) -> bool {
        lock(&self.pending).contains(path)
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued, then stop.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    /// Open (creating) the spool under `dir`, committing writes the default way.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, SyncMode::default())
    }

    /// Open (creating) the spool under `dir`.
    pub fn open_with(dir: &Path, mode: SyncMode) -> io::Result<Self> {
        let queue = dir.join("queue");
        let quarantine = dir.join("quarantine");
        fs::create_dir_all(&queue)?;
        fs::create_dir_all(&quarantine)?;
        sync_dir(dir)?;
        Ok(Self {
            queue,
            quarantine,
            mode,
            group: GroupSync::new(dir)?,
            reaper: Reaper::new(mode == SyncMode::File)?,
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
        let bytes = encode(envelope, message)?;
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        if let Err(e) = file.write_all(&bytes) {
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
        lock(&self.reaper.pending).insert(path.clone());
        let queued = self.reaper.queue.as_ref().is_some_and(|q| q.send(path.clone()).is_ok());
        if !queued {
            lock(&self.reaper.pending).remove(&path);
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
                    serde_json::from_slice::<QueuedMessage>(envelope)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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

    /// Move a message between stores (quarantine release, a damaged file set aside). The
    /// message moves as it is, even if it fails its check.
    pub fn transfer(&self, from: Store, to: Store, envelope: &QueuedMessage) -> io::Result<()> {
        let bytes = fs::read(self.path(from, &envelope.id)?)?;
        let (_, _, message) = decode(&bytes)?;
        self.store(to, envelope, message)?;
        self.remove(from, &envelope.id)
    }
}

/// The extension of spool files.
pub const EXTENSION: &str = "mail";

/// First line of a spool file: `sluice-spool 1 ENVELOPE_LEN MESSAGE_LEN CRC32\n`, then the
/// envelope (JSON), a newline, and the message. The CRC-32 covers envelope and message.
const MAGIC: &str = "sluice-spool 1";

struct Header {
    /// Where the envelope starts (after the header line).
    start: usize,
    envelope_len: usize,
    message_len: usize,
    crc: u32,
}

impl Header {
    fn parse(bytes: &[u8]) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spool file: {what}"));
        let end = bytes.iter().take(128).position(|b| *b == b'\n').ok_or_else(|| bad("no header line"))?;
        let line = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("header is not text"))?;
        let fields = line.strip_prefix(MAGIC).ok_or_else(|| bad("unknown format"))?;
        let mut parts = fields.split_ascii_whitespace();
        let mut number = |what: &str| -> io::Result<u64> {
            parts
                .next()
                .and_then(|p| u64::from_str_radix(p, if what == "crc" { 16 } else { 10 }).ok())
                .ok_or_else(|| bad(what))
        };
        let envelope_len = usize::try_from(number("envelope length")?).map_err(|_| bad("envelope length"))?;
        let message_len = usize::try_from(number("message length")?).map_err(|_| bad("message length"))?;
        let crc = u32::try_from(number("crc")?).map_err(|_| bad("crc"))?;
        Ok(Self { start: end + 1, envelope_len, message_len, crc })
    }

    fn envelope_end(&self) -> usize {
        self.start.saturating_add(self.envelope_len)
    }

    fn total(&self) -> usize {
        self.envelope_end().saturating_add(1).saturating_add(self.message_len)
    }

    /// Whether `envelope` and `message` are what the header's CRC-32 was made of.
    fn matches(&self, envelope: &[u8], message: &[u8]) -> bool {
        crc_of(envelope, message) == self.crc
    }
}

/// The CRC-32 of a spool file: over the envelope, then the message.
fn crc_of(envelope: &[u8], message: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(envelope);
    crc.update(message);
    crc.finalize()
}

fn encode(envelope: &QueuedMessage, message: &[u8]) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(envelope).map_err(io::Error::other)?;
    let header = format!("{MAGIC} {} {} {:08x}\n", json.len(), message.len(), crc_of(&json, message));
    let mut out = Vec::with_capacity(header.len() + json.len() + 1 + message.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
    out.extend_from_slice(message);
    Ok(out)
}

/// Header, envelope bytes and message bytes (the CRC is not checked: [`Header::matches`]).
/// `InvalidData` if the file is not as long as its header says.
fn decode(bytes: &[u8]) -> io::Result<(Header, &[u8], &[u8])> {
    let header = Header::parse(bytes)?;
    if bytes.len() != header.total() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("spool file is {} bytes, its header says {}", bytes.len(), header.total()),
        ));
    }
    let envelope = &bytes[header.start..header.envelope_end()];
    let message = &bytes[header.envelope_end() + 1..];
    Ok((header, envelope, message))
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

    /// A new spool in a folder of its own.
    fn temp_spool(mode: SyncMode) -> (PathBuf, Spool) {
        let dir = std::env::temp_dir().join(format!("sluice-spool-{}", new_id()));
        let spool = Spool::open_with(&dir, mode).unwrap();
        (dir, spool)
    }

    fn queue_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join("queue"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn store_recover_remove() {
        for mode in [SyncMode::Group, SyncMode::File] {
            let (dir, spool) = temp_spool(mode);
            let id = new_id();
            let body = b"Subject: x\r\n\r\nhi\r\n";
            spool.store(Store::Queue, &envelope(&id), body).unwrap();
            assert!(spool.store(Store::Queue, &envelope(&id), body).is_err(), "ids are never reused");
            assert_eq!(queue_files(&dir), vec![format!("{id}.mail")]);
            // Leftovers of a crash: a temporary file, a spool file cut short, one empty.
            let whole = encode(&envelope("ABCDEF"), body).unwrap();
            fs::write(dir.join("queue").join(".ABCDEF.1.tmp"), b"x").unwrap();
            fs::write(dir.join("queue").join("ABCDEF.mail"), &whole[..whole.len() - 3]).unwrap();
            fs::write(dir.join("queue").join("ABCDE0.mail"), b"").unwrap();
            // While the relay runs they are writes in progress: listing leaves them alone.
            assert_eq!(spool.list(Store::Queue).unwrap(), vec![envelope(&id)]);
            assert_eq!(queue_files(&dir).len(), 4);
            let found = spool.recover(Store::Queue).unwrap();
            assert_eq!(found, vec![envelope(&id)]);
            assert_eq!(queue_files(&dir), vec![format!("{id}.mail")]);
            assert_eq!(spool.message(Store::Queue, &id).unwrap(), body);
            // Delivery progress keeps the message.
            let mut progressed = envelope(&id);
            progressed.attempts = 3;
            spool.update(Store::Queue, &progressed).unwrap();
            assert_eq!(spool.envelope(Store::Queue, &id).unwrap(), progressed);
            assert_eq!(spool.message(Store::Queue, &id).unwrap(), body);
            spool.transfer(Store::Queue, Store::Quarantine, &progressed).unwrap();
            assert!(spool.recover(Store::Queue).unwrap().is_empty());
            assert_eq!(spool.recover(Store::Quarantine).unwrap(), vec![progressed]);
            spool.remove(Store::Quarantine, &id).unwrap();
            assert!(spool.recover(Store::Quarantine).unwrap().is_empty());
            assert!(spool.message(Store::Queue, "../etc/passwd").is_err());
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// A spool file damaged after it was written fails its CRC check: never delivered as it
    /// is, but still movable (to the quarantine) for an operator to look at.
    #[test]
    fn damaged_message_is_detected() {
        let (dir, spool) = temp_spool(SyncMode::Group);
        let id = new_id();
        spool.store(Store::Queue, &envelope(&id), b"Subject: x\r\n\r\nwhole body\r\n").unwrap();
        let path = dir.join("queue").join(format!("{id}.mail"));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        let err = spool.message(Store::Queue, &id).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        spool.transfer(Store::Queue, Store::Quarantine, &envelope(&id)).unwrap();
        assert!(spool.message(Store::Quarantine, &id).is_ok(), "stored again with its own CRC");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Spool folders of earlier versions (an envelope file and a message file) are converted
    /// at start.
    #[test]
    fn earlier_layout_is_converted() {
        let (dir, spool) = temp_spool(SyncMode::Group);
        let id = new_id();
        let queue = dir.join("queue");
        fs::write(queue.join(format!("{id}.json")), serde_json::to_vec(&envelope(&id)).unwrap()).unwrap();
        fs::write(queue.join(format!("{id}.msg")), b"Subject: old\r\n\r\nbody\r\n").unwrap();
        fs::write(queue.join("ABCDEF.msg"), b"no envelope").unwrap();
        assert_eq!(spool.recover(Store::Queue).unwrap(), vec![envelope(&id)]);
        assert_eq!(spool.message(Store::Queue, &id).unwrap(), b"Subject: old\r\n\r\nbody\r\n");
        assert_eq!(queue_files(&dir), vec![format!("{id}.mail")]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Many threads storing at once: each returns only after a commit that began after its
    /// writes, and everything is there.
    #[test]
    fn group_commit_under_concurrency() {
        let (dir, spool) = temp_spool(SyncMode::Group);
        let spool = std::sync::Arc::new(spool);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        spool.store(Store::Queue, &envelope(&new_id()), b"x\r\n").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(spool.recover(Store::Queue).unwrap().len(), 200);
        let state = spool.group.shared.state.lock().unwrap();
        assert_eq!((state.issued, state.covered), (200, 200));
        assert!(state.failed.is_empty());
        drop(state);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Tasks store without holding threads and share commits; a removal done later hides
    /// the message at once and its file goes soon after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_from_tasks_and_removals_later() {
        for mode in [SyncMode::Group, SyncMode::File] {
            let (dir, spool) = temp_spool(mode);
            let spool = Arc::new(spool);
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let spool = spool.clone();
                    tokio::spawn(async move {
                        let envelope = envelope(&new_id());
                        let body = Arc::new(b"Subject: t\r\n\r\nbody\r\n".to_vec());
                        spool.store_async(Store::Queue, &envelope, &body).await.unwrap();
                        envelope.id
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await.unwrap());
            }
            assert_eq!(spool.list(Store::Queue).unwrap().len(), 50);
            for id in &ids[..20] {
                spool.remove_later(Store::Queue, id).unwrap();
                assert!(!spool.contains(Store::Queue, id));
                assert_eq!(spool.envelope(Store::Queue, id).unwrap_err().kind(), io::ErrorKind::NotFound);
            }
            assert_eq!(spool.list(Store::Queue).unwrap().len(), 30);
            drop(spool);
            // Dropping the spool finishes the removals it had queued.
            assert_eq!(queue_files(&dir).len(), 30, "{mode:?}");
            let _ = fs::remove_dir_all(&dir);
        }
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
