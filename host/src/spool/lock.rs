//! One spool, one relay: whoever changes the spool holds an exclusive lock on its `lock` file
//! — the relay for as long as it runs, `sluice queue` for one command when no relay runs. A
//! second holder is refused at once with the first one's process id and what it is. The lock
//! is the kernel's (`flock(2)` through `File::try_lock`): it goes with the process, so a relay
//! killed with `kill -9` leaves no stale lock behind, and the file's content (the holder's
//! pid and role) only serves the error message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the spool folder.
pub const LOCK_FILE: &str = "lock";

/// Who holds a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `sluice serve`.
    Relay,
    /// A `sluice queue` command changing the spool while no relay runs.
    QueueCommand,
}

impl Holder {
    fn as_str(self) -> &'static str {
        match self {
            Holder::Relay => "relay",
            Holder::QueueCommand => "queue command",
        }
    }
}

/// Why a spool could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "spool {dir} is in use by another process ({holder}; lock file {lock}): one spool serves one relay"
    )]
    Held {
        /// The spool folder.
        dir: PathBuf,
        /// What the lock file says of its holder (`pid 123, relay`), or that it says nothing.
        holder: String,
        /// The lock file.
        lock: PathBuf,
        /// The holder is a relay (not a passing queue command).
        by_relay: bool,
    },
    /// The lock file cannot be opened or locked.
    #[error("spool {dir}: cannot lock {lock}: {source}")]
    Io {
        /// The spool folder.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl LockError {
    /// The holder is a running relay.
    pub fn held_by_relay(&self) -> bool {
        matches!(self, LockError::Held { by_relay: true, .. })
    }
}

/// A held spool lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

impl SpoolLock {
    /// Lock the spool in `dir` (created if missing) for `holder`, or say who holds it.
    pub fn take(dir: &Path, holder: Holder) -> Result<Self, LockError> {
        let lock = dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io { dir: dir.to_path_buf(), lock: lock.clone(), source };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut said = String::new();
                let _ = file.read_to_string(&mut said);
                let said = said.trim();
                let holder = match said.split_once(' ') {
                    Some((pid, role)) if pid.parse::<u32>().is_ok() => format!("pid {pid}, {role}"),
                    _ => "a process that has not said who it is".to_string(),
                };
                let by_relay = said.ends_with(Holder::Relay.as_str());
                return Err(LockError::Held { dir: dir.to_path_buf(), holder, lock, by_relay });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        // Ours now: say who holds it, for the next one's error message.
        let said = format!("{} {}\n", std::process::id(), holder.as_str());
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        file.write_all(said.as_bytes()).map_err(io_error)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("sluice-lock-{}", crate::spool::new_id()));
        let first = SpoolLock::take(&dir, Holder::Relay).expect("first");
        let refused = SpoolLock::take(&dir, Holder::QueueCommand).expect_err("second");
        assert!(refused.held_by_relay());
        let text = refused.to_string();
        assert!(text.contains(&format!("pid {}, relay", std::process::id())), "{text}");
        assert!(text.contains("one spool serves one relay"), "{text}");
        drop(first);
        let again = SpoolLock::take(&dir, Holder::QueueCommand).expect("free again");
        let refused = SpoolLock::take(&dir, Holder::Relay).expect_err("held by the command");
        assert!(!refused.held_by_relay(), "{refused}");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
