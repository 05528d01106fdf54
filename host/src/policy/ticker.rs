//! The epoch ticker: a thread that advances the engines' epoch, which is what bounds the CPU
//! time of every guest call (each store counts the ticks its guest runs through; see
//! [`super::instance`]).
//!
//! It ticks every `tick` (5 ms) while guest calls keep coming and sleeps once none has run for
//! a second; the first call after that wakes it ([`EpochTicker::running`]). A busy relay
//! wakes it 200 times a second however many calls it makes; an idle one, twenty times.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::Engine;

/// How often the sleeping ticker advances the epoch (a safety net: a call that began without
/// [`EpochTicker::running`] still meets its deadline, later).
const IDLE_TICK: Duration = Duration::from_millis(50);

/// How long the ticker keeps its full rate after the last guest call.
const AWAKE_AFTER_CALLS: Duration = Duration::from_secs(1);

/// The epoch ticker's state: calls under way, calls begun, whether the ticker sleeps, and its
/// thread (to wake when a call begins while it sleeps). Its thread stops when the last
/// [`TickerGuard`] is dropped (the engine and every policy loaded from it are gone).
pub(crate) struct EpochTicker {
    stop: AtomicBool,
    /// Calls under way: a call longer than [`AWAKE_AFTER_CALLS`] keeps the full rate however
    /// few calls begin meanwhile.
    active: AtomicUsize,
    /// Calls begun: short calls in quick succession may all be over whenever the ticker looks,
    /// but the count has moved.
    calls: AtomicU64,
    asleep: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl EpochTicker {
    /// Start the ticker thread for `engines`, ticking every `tick` while calls run.
    pub(crate) fn start(tick: Duration, engines: Vec<Engine>) -> anyhow::Result<Arc<TickerGuard>> {
        let ticker = Arc::new(EpochTicker {
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let shared = ticker.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || shared.run(tick, &engines))
            .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker: {e}"))?;
        let _ = ticker.thread.set(thread.thread().clone());
        Ok(Arc::new(TickerGuard { ticker }))
    }

    /// Held for the length of a call into the guest: the epoch ticks at full rate meanwhile.
    /// Wakes the ticker only when it sleeps (no call for a second): a busy relay's calls cost
    /// it no thread wake-up.
    pub(crate) fn running(self: &Arc<Self>) -> Running {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst)
            && self.asleep.swap(false, Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Running(self.clone())
    }

    /// The ticker thread: ticks every `tick` while calls are under way or have been in the last
    /// [`AWAKE_AFTER_CALLS`], else every [`IDLE_TICK`] until a call wakes it.
    fn run(&self, tick: Duration, engines: &[Engine]) {
        let quiet_ticks = (AWAKE_AFTER_CALLS.as_micros() / tick.as_micros().max(1)).max(1);
        let (mut seen, mut quiet) = (self.calls.load(Ordering::Relaxed), 0u128);
        while !self.stop.load(Ordering::Relaxed) {
            let calls = self.calls.load(Ordering::Relaxed);
            if calls != seen || self.active.load(Ordering::Acquire) > 0 {
                (seen, quiet) = (calls, 0);
            } else {
                quiet += 1;
            }
            if quiet > quiet_ticks {
                self.asleep.store(true, Ordering::SeqCst);
                // A call that began between the checks above and the flag finds it set and
                // wakes the thread; one that began before it is seen at the next round.
                if self.active.load(Ordering::SeqCst) == 0 && self.calls.load(Ordering::SeqCst) == seen {
                    std::thread::park_timeout(IDLE_TICK);
                }
                self.asleep.store(false, Ordering::SeqCst);
            } else {
                std::thread::sleep(tick);
            }
            for engine in engines {
                engine.increment_epoch();
            }
        }
    }
}

/// A guest call under way (see [`EpochTicker::running`]).
pub(crate) struct Running(Arc<EpochTicker>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps the ticker thread running; the last one dropped stops it.
pub(crate) struct TickerGuard {
    pub(crate) ticker: Arc<EpochTicker>,
}

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.ticker.thread.get() {
            thread.unpark();
        }
    }
}
