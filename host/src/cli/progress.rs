//! Progress of long commands (`policy test` over many messages, `learn`) on stderr, drawn by
//! `indicatif`: a bar with the count, the time taken and to go, and the failures, drawn only
//! when stderr is a terminal (and not asked to be quiet); whatever else the command prints
//! goes around it, never through it.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `total` items, or nothing.
pub struct Progress {
    bar: ProgressBar,
    failed: usize,
}

impl Progress {
    /// A bar over `total` items of `what` (`messages`), shown when stderr is a terminal and
    /// `wanted`.
    pub fn new(total: usize, what: &str, wanted: bool) -> Self {
        let bar = if wanted && std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(&format!(
                "[{{bar:40}}] {{pos}}/{{len}} {what}, {{elapsed}} (about {{eta}} to go){{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#> ");
            ProgressBar::new(total as u64).with_style(style)
        } else {
            ProgressBar::hidden()
        };
        Self { bar, failed: 0 }
    }

    /// One more item done (`ok`: without failing).
    pub fn step(&mut self, ok: bool) {
        if !ok {
            self.failed += 1;
            self.bar.set_message(format!(", {} failed", self.failed));
        }
        self.bar.inc(1);
    }

    /// Run `print` with the bar out of the way (for output to stdout or stderr).
    pub fn around<R>(&self, print: impl FnOnce() -> R) -> R {
        self.bar.suspend(print)
    }

    /// Done: the bar is cleared.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// On a terminal, a spinner for each large component being compiled (at start, on a reload,
/// in `check` and `policy test`), replaced by a line with the time it took; elsewhere the
/// engine logs each instead.
pub fn show_compiles() {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use crate::policy::cache::Compiling;
    if !std::io::stderr().is_terminal() {
        return;
    }
    let bars: Mutex<HashMap<PathBuf, ProgressBar>> = Mutex::new(HashMap::new());
    crate::policy::cache::watch_compiles(move |event| {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Compiling::Started(file, bytes) => {
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = ProgressBar::new_spinner().with_style(style).with_message(format!(
                    "compiling {} ({:.1} MiB, once: the result is cached)",
                    file.display(),
                    bytes as f64 / 1048576.0
                ));
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                bars.insert(file.to_path_buf(), bar);
            }
            Compiling::Finished(file, secs) => {
                if let Some(bar) = bars.remove(file) {
                    bar.finish_and_clear();
                    eprintln!("compiled {} in {secs:.1} s", file.display());
                }
            }
        }
    });
}
