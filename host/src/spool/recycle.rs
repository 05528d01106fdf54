//! Spool files used again (`[spool] recycle_files`): a delivered message's file is renamed
//! into `free/` and emptied instead of being unlinked, and a new message is written into one
//! of those files and renamed into the queue. Measured on this project's machine, creating an
//! inode and freeing it again was the largest single cost of a message in the relay (ext4
//! searching its inode bitmap past recently freed inodes); a kept file keeps its inode and
//! gives back its blocks (the disk space and the delivered message's bytes), so a full spool
//! drains as before.
//!
//! Safe across a crash: a file is written completely under its `free/` name before it is
//! renamed into the queue, and only a commit after the rename earns the 250. A crash between
//! the two leaves either a free file or a queue file whose envelope names another message (the
//! old bytes under the new name): recovery removes those ([`super::Spool::recover`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::format::write_parts;
use super::{lock, new_id};

/// The folder of files waiting to be used again, under the spool's directory.
pub(super) const FREE_DIR: &str = "free";

/// Files of delivered messages kept for new ones, at most `cap`.
#[derive(Debug)]
pub(super) struct Recycler {
    dir: PathBuf,
    files: Mutex<Vec<PathBuf>>,
    cap: usize,
}

impl Recycler {
    /// The recycler of the spool under `spool_dir`, holding the free files a previous run left
    /// (up to `cap`; the rest are removed). `cap` 0: none (any free files are removed).
    /// `None` for `cap` as well: the free folder is left alone (the command line's queue tools,
    /// which may run beside a relay using it).
    pub(super) fn open(spool_dir: &Path, cap: Option<usize>) -> io::Result<Option<Self>> {
        let dir = spool_dir.join(FREE_DIR);
        let Some(cap) = cap else { return Ok(None) };
        if cap == 0 && !dir.exists() {
            return Ok(None);
        }
        fs::create_dir_all(&dir)?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            // A file with a second name (a crash between a rename and its sync, repaired by a
            // file-system check) may also be a queued message: never write into it.
            let single = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.nlink() == 1);
            if single && files.len() < cap && empty(&path).is_ok() {
                files.push(path);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        Ok((cap > 0).then(|| Self { dir, files: Mutex::new(files), cap }))
    }

    /// Keep `path` (a delivered message's file) for a new message: renamed into `free/` and
    /// emptied. False when enough are kept already (the caller unlinks it).
    pub(super) fn keep(&self, path: &Path) -> io::Result<bool> {
        if lock(&self.files).len() >= self.cap {
            return Ok(false);
        }
        let free = self.dir.join(format!("{}.free", new_id()));
        fs::rename(path, &free)?;
        if let Err(e) = empty(&free) {
            let _ = fs::remove_file(&free);
            return Err(e);
        }
        let mut files = lock(&self.files);
        if files.len() < self.cap {
            files.push(free);
            return Ok(true);
        }
        drop(files);
        fs::remove_file(&free)?;
        Ok(true)
    }

    /// Write `parts` (one after the other) into a kept file and rename it to `path` (never over an existing file):
    /// the file, or None when no file is kept or using one failed (the caller creates one; a
    /// full disk is an error).
    pub(super) fn write(&self, path: &Path, parts: &[&[u8]]) -> io::Result<Option<File>> {
        let Some(free) = lock(&self.files).pop() else { return Ok(None) };
        let written = OpenOptions::new().write(true).open(&free).and_then(|mut file| {
            write_parts(&mut file, parts)?;
            file.set_len(parts.iter().map(|p| p.len() as u64).sum())?;
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &free,
                rustix::fs::CWD,
                path,
                rustix::fs::RenameFlags::NOREPLACE,
            )?;
            Ok(file)
        });
        match written {
            Ok(file) => Ok(Some(file)),
            Err(e) => {
                let _ = fs::remove_file(&free);
                if e.kind() == io::ErrorKind::AlreadyExists || super::is_storage_full(&e) {
                    return Err(e);
                }
                tracing::debug!(file = %free.display(), error = %e, "cannot reuse a spool file; creating one");
                Ok(None)
            }
        }
    }

    /// How many files are kept (for tests).
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        lock(&self.files).len()
    }
}

/// Truncate `path` to nothing: its blocks (and the bytes of the message it held) go back to
/// the file system; its inode stays.
fn empty(path: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).truncate(true).open(path).map(drop)
}
