//! Removals of delivered messages, on a thread of their own.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::recycle::Recycler;
use super::{lock, sync_dir};

/// How long the unlinking thread lets removals gather between rounds.
const REAP_PAUSE: Duration = Duration::from_millis(20);

/// Removals of delivered messages, done by a thread of their own: an unlink can wait for
/// the disk (a file system that discards freed blocks), and a delivery need not wait for it.
/// Until its file is gone, a message being removed is invisible to [`Spool::list`],
/// [`Spool::contains`] and the readers, so nothing delivers it again.
#[derive(Debug)]
pub(super) struct Reaper {
    queue: Option<std::sync::mpsc::Sender<PathBuf>>,
    pending: Arc<Mutex<HashSet<PathBuf>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    /// `sync_dirs`: sync each directory a round removed from (`file` mode); `recycler`: where
    /// files are kept for new messages instead of being unlinked.
    pub(super) fn new(sync_dirs: bool, recycler: Option<Arc<Recycler>>) -> io::Result<Self> {
        let (queue, work) = std::sync::mpsc::channel::<PathBuf>();
        let pending: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let thread = {
            let pending = pending.clone();
            std::thread::Builder::new().name("sluice-spool-unlink".into()).spawn(move || {
                while let Ok(first) = work.recv() {
                    let mut dirs = HashSet::new();
                    for path in std::iter::once(first).chain(work.try_iter()) {
                        let kept = recycler.as_ref().is_some_and(|r| {
                            r.keep(&path).unwrap_or_else(|e| {
                                tracing::debug!(file = %path.display(), error = %e, "cannot keep a spool file");
                                false
                            })
                        });
                        let removed = if kept { Ok(()) } else { fs::remove_file(&path) };
                        match removed {
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

    /// Hand `path` to the thread (hidden from readers at once); false when the thread is gone
    /// and the caller must remove the file itself.
    pub(super) fn remove(&self, path: PathBuf) -> bool {
        lock(&self.pending).insert(path.clone());
        let queued = self.queue.as_ref().is_some_and(|q| q.send(path.clone()).is_ok());
        if !queued {
            lock(&self.pending).remove(&path);
        }
        queued
    }

    pub(super) fn is_pending(&self, path: &Path) -> bool {
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
