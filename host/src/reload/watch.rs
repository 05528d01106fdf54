//! The file watcher: the configuration file, every policy file, the TLS certificate and key
//! and the users file are watched through their directories (a watch on a file is lost when
//! an editor or a deployment renames over it), and so is each symbolic link on the way to
//! them (a Kubernetes volume swaps a link); a change reloads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Generations;

impl Generations {
    /// Watch the configuration file, every policy file, the TLS certificate and key and the
    /// users file, and reload when one changes.
    /// Directories are watched, not files (a watch on a file is lost when it is renamed
    /// over); a burst of events is taken as one once the files have been quiet for
    /// [`QUIET`] (10 ms after a rename into place or a close after writing), so a file being
    /// written is not taken half-way (and if a writer pauses
    /// longer, the half file fails validation and the running generation stays until the
    /// complete file arrives).
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<notify::Event>();
        let generations = self.clone();
        let files = generations.watched_files();
        // Events are sorted on the watcher's own thread: the watched directories may hold
        // busy files (a log the relay writes, say), whose events never reach the runtime.
        let shared = Arc::new(std::sync::Mutex::new(files.clone()));
        let filter = shared.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && filter.lock().is_ok_and(|files| relevant(&event, &files))
            {
                let _ = tx.send(event);
            }
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
        // The watches are in place when this returns, not when the task first runs.
        let mut watched: HashSet<PathBuf> = HashSet::new();
        sync_watches(&mut watcher, &mut watched, &files);
        tokio::spawn(async move {
            // Only relevant events arrive (the watcher's thread sorted them out).
            while let Some(event) = rx.recv().await {
                // Quiet period: more events for these files restart it (other files in the
                // same directories, such as a log being written, never get here).
                let mut quiet_until = tokio::time::Instant::now() + quiet_after(&event);
                loop {
                    match tokio::time::timeout_at(quiet_until, rx.recv()).await {
                        Ok(Some(event)) => {
                            quiet_until = tokio::time::Instant::now() + quiet_after(&event);
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                generations.reload("file change").await;
                let files = generations.watched_files();
                if let Ok(mut current) = shared.lock() {
                    current.clone_from(&files);
                }
                sync_watches(&mut watcher, &mut watched, &files);
            }
        });
        Ok(())
    }

    /// The configuration file, every policy file, the TLS certificate and key, the users
    /// file, the tenants' recipients files and DKIM keys, absolute.
    fn watched_files(&self) -> HashSet<PathBuf> {
        let snapshot = self.snapshot();
        let config = &snapshot.config;
        let mut files: HashSet<PathBuf> = std::iter::once(config.edge())
            .chain(&config.tenants)
            .flat_map(|t| t.policies.iter().map(|p| config.resolve(&p.path)))
            .collect();
        if let Some(tls) = &config.tls {
            files.insert(config.resolve(&tls.cert));
            files.insert(config.resolve(&tls.key));
        }
        files.extend(config.relay.auth_users_file.iter().map(|f| config.resolve(f)));
        files.extend(config.tenants.iter().filter_map(|t| match &t.recipients {
            crate::config::RecipientCheck::File(path) => Some(config.resolve(path)),
            _ => None,
        }));
        files.extend(config.tenants.iter().filter_map(|t| t.dkim.as_ref().map(|d| config.resolve(&d.key))));
        files.extend(self.config_path.iter().cloned());
        files.into_iter().filter_map(|f| std::path::absolute(f).ok()).flat_map(|f| links_of(&f)).collect()
    }
}

/// `file`, and each symbolic link on the way to what it is: a change to any of them changes
/// what is read. A Kubernetes volume (a ConfigMap or Secret) is `sluice.toml` →
/// `..data/sluice.toml` with `..data` → `..2026_12_04_10_00_00.1234`, updated by renaming a
/// new `..data` over the old one: only `..data` changes, never `sluice.toml` itself.
fn links_of(file: &Path) -> Vec<PathBuf> {
    let mut found = vec![file.to_path_buf()];
    let mut current = file.to_path_buf();
    // A bound, as the kernel has one: a loop of links ends here.
    for _ in 0..16 {
        let is_link = |p: &&Path| p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
        let Some(link) = current.ancestors().find(is_link).map(Path::to_path_buf) else { break };
        let Ok(target) = std::fs::read_link(&link) else { break };
        let rest = current.strip_prefix(&link).map(Path::to_path_buf).unwrap_or_default();
        let target = match link.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
        if !found.contains(&link) {
            found.push(link);
        }
        current = if rest.as_os_str().is_empty() { target } else { target.join(rest) };
    }
    found
}

/// How long files must be quiet before a change is taken.
pub const QUIET: Duration = Duration::from_millis(50);

/// The quiet period after `event`: short when the event says a file is complete (renamed
/// into place, or closed after writing), [`QUIET`] while a file is still being written.
fn quiet_after(event: &notify::Event) -> Duration {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => Duration::from_millis(10),
        _ => QUIET,
    }
}

fn relevant(event: &notify::Event, files: &HashSet<PathBuf>) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    let kind_counts = match event.kind {
        // Our own reads open and close files: only a close after writing counts.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind_counts && event.paths.iter().any(|p| files.contains(p))
}

fn sync_watches(
    watcher: &mut impl notify::Watcher,
    watched: &mut HashSet<PathBuf>,
    files: &HashSet<PathBuf>,
) {
    let dirs: HashSet<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    for dir in watched.difference(&dirs) {
        let _ = watcher.unwatch(dir);
    }
    for dir in dirs.difference(watched) {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this directory; use SIGHUP or sluice reload");
        }
    }
    *watched = dirs;
}

#[cfg(test)]
mod tests {
    use super::links_of;

    #[test]
    fn a_kubernetes_volume_s_links_are_watched() {
        let dir = std::env::temp_dir().join(format!("sluice-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..2026_12_04_10_00_00.1")).expect("dir");
        std::fs::write(dir.join("..2026_12_04_10_00_00.1/sluice.toml"), "").expect("file");
        std::os::unix::fs::symlink("..2026_12_04_10_00_00.1", dir.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/sluice.toml", dir.join("sluice.toml")).expect("link");
        let links = links_of(&dir.join("sluice.toml"));
        assert_eq!(links, vec![dir.join("sluice.toml"), dir.join("..data")]);
        assert_eq!(links_of(&dir.join("..2026_12_04_10_00_00.1/sluice.toml")).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
