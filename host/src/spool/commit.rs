//! Group commit (`[spool] sync = "group"`): a committer thread runs `syncfs(2)` for every
//! write finished before it starts, so one journal commit covers the messages of that moment.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use super::lock;

/// Group commit: a committer thread runs `syncfs` for every write finished before it starts.
/// A writer takes a ticket once its write is done and waits (a thread or a task) until a
/// commit covers it; while one commit runs, the tickets of the next pile up behind it.
#[derive(Debug)]
pub(super) struct GroupSync {
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

impl GroupSync {
    /// Tickets handed out, tickets covered, and whether any commit failed (for tests).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (u64, u64, bool) {
        let state = lock(&self.shared.state);
        (state.issued, state.covered, !state.failed.is_empty())
    }

    pub(super) fn new(dir: &Path) -> io::Result<Self> {
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
    pub(super) fn sync(&self) -> io::Result<()> {
        let ticket = self.ticket();
        let mut state = lock(&self.shared.state);
        while state.covered < ticket {
            state = self.shared.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.outcome(ticket)
    }

    /// Returns once everything written before the call is on disk (without blocking).
    pub(super) async fn sync_async(&self) -> io::Result<()> {
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
