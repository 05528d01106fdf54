//! Instances made ahead of sessions, and instances dropped behind them.
//!
//! Making an instance (a store, the pool slot's memory, `init`) and tearing it down cost more
//! than running a policy's hooks. Neither needs the client to wait: each loaded policy keeps
//! a few fresh, never-used instances ([`Prepared`]), made by a background task as sessions
//! take them, and a session's instances are dropped on the reaper thread ([`reap`]). The
//! isolation promise is unchanged — an instance serves one session of one tenant and is
//! never reused (unless the policy asks for `sessions_per_instance`) — only *when* it is made
//! and dropped moves off the session's path.
//!
//! How many: a policy's target follows its recent demand (the instances taken in the last
//! [`WINDOW`], one more after every miss), at most [`MAX_PREPARED_PER_POLICY`]; all policies
//! of an engine together hold at most its [`Budget`] (`server.prepared_instances`), so idle
//! tenants' instances never crowd out live sessions' slots. A policy replaced by a reload is
//! retired: its instances are dropped and it makes no more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::instance::PolicyInstance;
use super::loaded::LoadedPolicy;
use crate::sync::lock;

/// Most instances one loaded policy keeps ready.
pub const MAX_PREPARED_PER_POLICY: usize = 16;

/// The period over which a policy's demand is counted.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Prepared instances of all the policies of one engine, at most.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    held: AtomicUsize,
}

impl Budget {
    /// A budget of `max` instances (0: nothing is prepared).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, held: AtomicUsize::new(0) })
    }

    /// Instances held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn reserve(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    fn release(&self, n: usize) {
        let _ =
            self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| Some(held.saturating_sub(n)));
    }
}

struct Demand {
    window_started: Instant,
    taken: usize,
    target: usize,
}

/// One loaded policy's instances made ahead of sessions.
pub(crate) struct Prepared {
    ready: Mutex<VecDeque<PolicyInstance>>,
    demand: Mutex<Demand>,
    refilling: AtomicBool,
    retired: AtomicBool,
    budget: Arc<Budget>,
}

impl Prepared {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self {
            ready: Mutex::new(VecDeque::new()),
            demand: Mutex::new(Demand { window_started: Instant::now(), taken: 0, target: 1 }),
            refilling: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            budget,
        }
    }

    /// Whether this engine makes instances ahead (and drops them on the reaper thread).
    pub(crate) fn enabled(&self) -> bool {
        self.budget.max > 0
    }

    /// Instances ready now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.ready).len()
    }

    /// A prepared instance, if one is ready; notes the demand either way. The second value
    /// says whether the pool wants refilling.
    fn take(&self) -> (Option<PolicyInstance>, bool) {
        if !self.enabled() || self.retired.load(Ordering::Acquire) {
            return (None, false);
        }
        let (instance, left) = {
            let mut ready = lock(&self.ready);
            (ready.pop_front(), ready.len())
        };
        if instance.is_some() {
            self.budget.release(1);
        }
        let mut demand = lock(&self.demand);
        let now = Instant::now();
        if now.duration_since(demand.window_started) >= WINDOW {
            // The new target: what the last window took, at least one, at most the cap.
            demand.target = demand.taken.clamp(1, MAX_PREPARED_PER_POLICY);
            demand.window_started = now;
            demand.taken = 0;
        }
        demand.taken += 1;
        if instance.is_none() {
            demand.target = (demand.target + 1).min(MAX_PREPARED_PER_POLICY);
        }
        // Refilled in batches: once half the target is gone.
        let refill = left <= demand.target / 2;
        (instance, refill)
    }

    fn target(&self) -> usize {
        lock(&self.demand).target
    }

    /// Retired (replaced by a reload): drop what is ready and make no more.
    pub(crate) fn retire(&self) {
        let drained: Vec<PolicyInstance> = {
            let mut ready = lock(&self.ready);
            self.retired.store(true, Ordering::Release);
            ready.drain(..).collect()
        };
        self.budget.release(drained.len());
        for instance in drained {
            reap(instance);
        }
    }

    /// An instance is done with: on the reaper thread where the engine prepares instances
    /// (its pool is sized for the instances on their way out), else dropped here.
    pub(crate) fn discard(&self, instance: PolicyInstance) {
        if self.enabled() { reap(instance) } else { drop(instance) }
    }

    /// In service again (a rollback put it back).
    pub(crate) fn unretire(&self) {
        self.retired.store(false, Ordering::Release);
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let ready = std::mem::take(&mut *lock(&self.ready));
        self.budget.release(ready.len());
        for instance in ready {
            reap(instance);
        }
    }
}

impl LoadedPolicy {
    /// A fresh instance for a session: a prepared one when ready, else made now. Either way
    /// the background task is asked to make the pool whole again.
    pub(crate) async fn fresh_instance(self: &Arc<Self>) -> Result<PolicyInstance, super::instance::Fault> {
        let (ready, refill) = self.prepared.take();
        if refill && !self.prepared.refilling.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(refill_task(Arc::downgrade(self)));
                }
                Err(_) => self.prepared.refilling.store(false, Ordering::Release),
            }
        }
        match ready {
            Some(instance) => Ok(instance),
            None => self.instantiate().await,
        }
    }
}

/// Make instances of `policy` until its pool reaches its target, the budget is spent, the
/// policy is retired or gone, or making one fails (the next miss tries again, inline, where
/// a failure is the session's fault to report).
async fn refill_task(policy: Weak<LoadedPolicy>) {
    loop {
        let Some(policy) = policy.upgrade() else { return };
        let prepared = &policy.prepared;
        let wanted = !prepared.retired.load(Ordering::Acquire) && prepared.len() < prepared.target();
        if !wanted || !prepared.budget.reserve() {
            prepared.refilling.store(false, Ordering::Release);
            return;
        }
        match policy.instantiate().await {
            Ok(instance) => {
                // Checked under the lock `retire` drains with: an instance pushed here is
                // either drained by it or never pushed.
                let mut ready = lock(&prepared.ready);
                if prepared.retired.load(Ordering::Acquire) {
                    drop(ready);
                    prepared.budget.release(1);
                    reap(instance);
                } else {
                    ready.push_back(instance);
                }
            }
            Err(fault) => {
                prepared.budget.release(1);
                tracing::debug!(policy = %policy.name, tenant = %policy.io.tenant, cause = %fault, "cannot prepare an instance");
                prepared.refilling.store(false, Ordering::Release);
                return;
            }
        }
    }
}

/// Instances waiting for the reaper, at most (each holds a pool slot); beyond, the caller
/// drops its own.
pub const REAPER_QUEUE: usize = 64;

/// The reaper collects for this long after the first instance arrives (or until
/// [`REAPER_WAKE_AT`] are waiting), then drops the batch: one thread wake-up per batch, not
/// per instance, and never many pool slots held by instances on their way out.
const REAPER_BATCH: Duration = Duration::from_millis(2);

/// Instances waiting that wake the reaper at once.
const REAPER_WAKE_AT: usize = 16;

struct Reaper {
    queue: Mutex<Vec<PolicyInstance>>,
    arrived: Condvar,
}

/// Drop `instance` (its store, its pool slot) on the reaper thread, not on the caller's.
pub(crate) fn reap(instance: PolicyInstance) {
    static REAPER: OnceLock<Option<Arc<Reaper>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let reaper = Arc::new(Reaper { queue: Mutex::new(Vec::new()), arrived: Condvar::new() });
        let shared = reaper.clone();
        std::thread::Builder::new()
            .name("sluice-reaper".into())
            .spawn(move || {
                loop {
                    let mut queue = lock(&shared.queue);
                    while queue.is_empty() {
                        queue = shared.arrived.wait(queue).unwrap_or_else(|p| p.into_inner());
                    }
                    if queue.len() < REAPER_WAKE_AT {
                        queue = match shared.arrived.wait_timeout(queue, REAPER_BATCH) {
                            Ok((queue, _)) => queue,
                            Err(poisoned) => poisoned.into_inner().0,
                        };
                    }
                    let batch = std::mem::take(&mut *queue);
                    drop(queue);
                    drop(batch);
                }
            })
            .ok()
            .map(|_| reaper)
    });
    let Some(reaper) = reaper else { return drop(instance) };
    let mut queue = lock(&reaper.queue);
    if queue.len() >= REAPER_QUEUE {
        drop(queue);
        return drop(instance);
    }
    queue.push(instance);
    if queue.len() == 1 || queue.len() == REAPER_WAKE_AT {
        reaper.arrived.notify_one();
    }
}
