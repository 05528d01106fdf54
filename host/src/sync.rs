//! Locking shared by the relay's parts.

use std::sync::{Mutex, MutexGuard};

/// Lock `mutex`, going on with its data when a thread panicked while holding it: every
/// structure guarded this way stays valid between statements, so a panic elsewhere must not
/// take the relay down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
