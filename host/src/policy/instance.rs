//! One live policy instance: a wasmtime `Store` with its host state, made for one SMTP
//! session and dropped with it. Every call into the guest goes through [`PolicyInstance`],
//! which arms the CPU deadline, the memory cap and the per-call budgets, and turns anything
//! that goes wrong into a [`Fault`] — never into a verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Instance, InstancePre, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::types as wit;
use super::decision::Decision;
use super::hooks::{HookExports, Hooks, VerifiedExports};
use super::loaded::PolicyIo;
use super::message::{MessageHandle, ParsedMessage};

/// Why a call into a policy produced no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// Ran past its CPU deadline.
    #[error("CPU deadline of {0:?} exceeded")]
    Deadline(Duration),
    /// Tried to grow memory past its cap.
    #[error("memory cap of {0} bytes exceeded")]
    Memory(usize),
    /// Wrote more to stdout/stderr than allowed.
    #[error("printed more than {0} bytes to stdout/stderr")]
    Output(usize),
    /// Did not finish within the wall-clock bound.
    #[error("no answer within {0:?} (wall clock)")]
    WallClock(Duration),
    /// A trap or host error.
    #[error("trapped: {0}")]
    Trap(String),
    /// The component's exports do not match the policy world.
    #[error("{0}")]
    Exports(String),
    /// `init` refused the configuration.
    #[error("init refused the configuration: {0}")]
    InitRefused(String),
    /// Suspended by the fault breaker after faults in a row; not run.
    #[error("suspended after {} faults in a row; runs again in {}s", super::breaker::FAULTS_IN_A_ROW, .0.as_secs().max(1))]
    Suspended(Duration),
    /// The key-value store behind `kv-*` could not be reached: the call ends here, and the
    /// tenant's failure mode decides, whatever the policy would have made of the error.
    #[error("key-value store unavailable: {0}")]
    State(String),
}

/// Raised by a `kv-*` import when the store cannot be reached.
#[derive(Debug)]
pub(crate) struct StateUnavailable(pub String);

impl std::fmt::Display for StateUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key-value store unavailable: {}", self.0)
    }
}

impl std::error::Error for StateUnavailable {}

/// Raised by the epoch callback when a call has used its CPU budget.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Raised by the limiter when memory would grow past the cap.
#[derive(Debug)]
struct MemoryCapExceeded;

impl std::fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memory cap exceeded")
    }
}

impl std::error::Error for MemoryCapExceeded {}

/// Memory and table caps of one store.
struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryCapExceeded));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

/// Per-call budgets, reset before every hook call.
#[derive(Debug, Default)]
pub(crate) struct CallBudget {
    /// Epoch ticks the guest ran through in this call.
    pub ticks_used: u64,
    /// Ticks allowed.
    pub ticks_allowed: u64,
    /// DNS lookups made.
    pub dns_lookups: u32,
    /// Log bytes written.
    pub log_bytes: usize,
    /// A log line was dropped for exceeding the budget.
    pub log_truncated: bool,
    /// The guest waited on the host (a lookup, a remote store) for a tick or longer since the
    /// last tick counted: the tick its return meets is the wait's, not the guest's CPU time.
    pub waited: bool,
}

impl CallBudget {
    /// After a host wait that began at `started`: if it lasted a tick or more, the next tick
    /// is not counted against the guest.
    fn note_wait(&mut self, started: Instant, tick: Duration) {
        if started.elapsed() >= tick {
            self.waited = true;
        }
    }

    /// Await a host wait (a DNS lookup, the key-value store) made on the guest's behalf, and
    /// note it (see [`Self::note_wait`]).
    pub(crate) async fn wait_on<F: Future>(&mut self, tick: Duration, wait: F) -> F::Output {
        let started = Instant::now();
        let answer = wait.await;
        self.note_wait(started, tick);
        answer
    }
}

/// The data of a policy store: WASI context, resource table, limits, services.
pub struct HostState {
    /// Built on the guest's first WASI call: many policies never make one, and building a
    /// context (random generators, clocks, stdio) is a measurable part of a fresh instance.
    wasi: Option<WasiCtx>,
    pub(crate) table: ResourceTable,
    limiter: Limiter,
    pub(crate) io: Arc<PolicyIo>,
    pub(crate) budget: CallBudget,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    stdout_logged: usize,
    stderr_logged: usize,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let ctx = self.wasi.get_or_insert_with(|| deny_by_default_wasi(stdout, stderr));
        WasiCtxView { ctx, table: &mut self.table }
    }
}

/// No files, no sockets, no name lookups, no environment, no arguments; stdout and stderr
/// into bounded pipes that the host forwards to the log.
fn deny_by_default_wasi(stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> WasiCtx {
    WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// What a hook is called with besides the context.
#[derive(Clone, Copy)]
pub(crate) enum HookInput<'a> {
    Connect,
    Helo,
    Mail,
    Rcpt(&'a wit::Recipient),
    Data(&'a Arc<ParsedMessage>),
}

/// A live instance of one policy.
pub struct PolicyInstance {
    store: Store<HostState>,
    hooks: Hooks,
    /// Sessions it has served (more than one only with warm reuse).
    pub(crate) sessions: u32,
    /// No call is under way or was cut short: it may serve another session.
    pub(crate) reusable: bool,
}

impl PolicyInstance {
    /// Instantiate `pre` in a fresh store with a deny-by-default WASI context: no files, no
    /// sockets, no environment, no arguments; stdout and stderr go to the log. `exports` were
    /// verified on an earlier instance of the same component.
    pub(crate) async fn instantiate(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        exports: &VerifiedExports,
        io: Arc<PolicyIo>,
    ) -> Result<Self, Fault> {
        let (mut store, instance) = Self::start(engine, pre, io).await?;
        let hooks = exports.bind(&mut store, &instance).map_err(Fault::Exports)?;
        let mut instance = Self { store, hooks, sessions: 1, reusable: true };
        instance.flush_output();
        Ok(instance)
    }

    /// The first instance of a component, at load: check its exports' signatures, and hand
    /// back the proof later instances are bound with.
    pub(crate) async fn probe(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        exports: HookExports,
        io: Arc<PolicyIo>,
    ) -> Result<(Self, VerifiedExports), Fault> {
        let (mut store, instance) = Self::start(engine, pre, io).await?;
        let verified = exports.verify(&mut store, &instance).map_err(Fault::Exports)?;
        let hooks = verified.bind(&mut store, &instance).map_err(Fault::Exports)?;
        let mut instance = Self { store, hooks, sessions: 1, reusable: true };
        instance.flush_output();
        Ok((instance, verified))
    }

    async fn start(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        io: Arc<PolicyIo>,
    ) -> Result<(Store<HostState>, Instance), Fault> {
        let mut store = Self::new_store(engine, io);
        let (wall, _running) = call_bounds(&store.data().io);
        match tokio::time::timeout(wall, pre.instantiate_async(&mut store)).await {
            Ok(Ok(instance)) => Ok((store, instance)),
            Ok(Err(e)) => Err(classify(&e, store.data())),
            Err(_) => Err(Fault::WallClock(wall)),
        }
    }

    /// A store for instances of the policy `io` describes: its memory cap, its CPU deadline.
    pub(crate) fn new_store(engine: &Engine, io: Arc<PolicyIo>) -> Store<HostState> {
        let output_cap = io.limits.output_bytes;
        let stdout = MemoryOutputPipe::new(output_cap);
        let stderr = MemoryOutputPipe::new(output_cap);
        let limiter = Limiter { memory_bytes: io.limits.memory_bytes, table_elements: 100_000 };
        let ticks = ticks_for(io.limits.cpu_deadline, io.tick);
        let state = HostState {
            wasi: None,
            table: ResourceTable::new(),
            limiter,
            io,
            budget: CallBudget { ticks_allowed: ticks, ..CallBudget::default() },
            stdout,
            stderr,
            stdout_logged: 0,
            stderr_logged: 0,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let budget = &mut ctx.data_mut().budget;
            if std::mem::take(&mut budget.waited) {
                return Ok(UpdateDeadline::Yield(1));
            }
            budget.ticks_used += 1;
            if budget.ticks_used > budget.ticks_allowed {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }

    fn begin_call(&mut self) {
        // Cleared until the call returns: a call cut short (its session went away while the
        // guest was suspended) leaves the store mid-call, never to be reused.
        self.reusable = false;
        let state = self.store.data_mut();
        state.budget.ticks_used = 0;
        state.budget.dns_lookups = 0;
        state.budget.log_bytes = 0;
        state.budget.log_truncated = false;
        state.budget.waited = false;
        self.store.set_epoch_deadline(1);
    }

    /// Send what the guest printed since the last call to the log.
    fn flush_output(&mut self) {
        let state = self.store.data_mut();
        if state.wasi.is_none() {
            // The pipes are reachable only through WASI: nothing was printed.
            return;
        }
        for (pipe, logged, stream) in [
            (&state.stdout, &mut state.stdout_logged, "stdout"),
            (&state.stderr, &mut state.stderr_logged, "stderr"),
        ] {
            let contents = pipe.contents();
            if contents.len() > *logged {
                let text = String::from_utf8_lossy(&contents[*logged..]);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::info!(policy = %state.io.policy, tenant = %state.io.tenant, stream, "{line}");
                }
                *logged = contents.len();
            }
        }
    }

    /// Call `describe`.
    pub(crate) async fn describe(&mut self) -> Result<wit::PolicyInfo, Fault> {
        self.begin_call();
        let (wall, _running) = call_bounds(&self.store.data().io);
        let describe = self.hooks.describe();
        let call = describe.call_async(&mut self.store, ());
        let result = tokio::time::timeout(wall, call).await;
        self.finish(result, wall).map(|(info,)| info)
    }

    /// Call `init` with the policy's configuration.
    pub(crate) async fn init(&mut self) -> Result<Result<(), String>, Fault> {
        self.begin_call();
        let (wall, _running) = call_bounds(&self.store.data().io);
        let io = self.store.data().io.clone();
        let init = self.hooks.init();
        let call = init.call_async(&mut self.store, (&io.config,));
        let result = tokio::time::timeout(wall, call).await;
        self.finish(result, wall).map(|(answer,)| answer)
    }

    /// Call the hook of one stage.
    pub(crate) async fn call_hook(
        &mut self,
        ctx: &wit::Context,
        input: HookInput<'_>,
    ) -> Result<Decision, Fault> {
        self.begin_call();
        let (wall, _running) = call_bounds(&self.store.data().io);
        let hooks = self.hooks;
        let store = &mut self.store;
        let call = async {
            match input {
                HookInput::Connect => hooks.on_connect().call_async(&mut *store, (ctx,)).await,
                HookInput::Helo => hooks.on_helo().call_async(&mut *store, (ctx,)).await,
                HookInput::Mail => hooks.on_mail().call_async(&mut *store, (ctx,)).await,
                HookInput::Rcpt(rcpt) => hooks.on_rcpt().call_async(&mut *store, (ctx, rcpt)).await,
                HookInput::Data(message) => {
                    let handle = store.data_mut().table.push(MessageHandle(message.clone()))?;
                    let borrowed = Resource::<MessageHandle>::new_borrow(handle.rep());
                    let result = hooks.on_data().call_async(&mut *store, (ctx, borrowed)).await;
                    store.data_mut().table.delete(handle)?;
                    result
                }
            }
        };
        let result = tokio::time::timeout(wall, call).await;
        self.finish(result, wall).map(|(decision,)| Decision::from_wit(decision))
    }

    /// Call `learn` (a class given) or `forget` (none) of a learning policy.
    pub(crate) async fn call_learner(
        &mut self,
        ctx: &wit::Context,
        message: &Arc<ParsedMessage>,
        class: Option<super::bindings::learner::Class>,
    ) -> Result<Result<super::bindings::learner::Learned, String>, Fault> {
        let hooks = self.hooks;
        let (Some(learn), Some(forget)) = (hooks.learn(), hooks.forget()) else {
            return Err(Fault::Exports("the policy does not export sluice:policy/learner".into()));
        };
        self.begin_call();
        let (wall, _running) = call_bounds(&self.store.data().io);
        let store = &mut self.store;
        let call = async {
            let handle = store.data_mut().table.push(MessageHandle(message.clone()))?;
            let borrowed = Resource::<MessageHandle>::new_borrow(handle.rep());
            let result = match class {
                Some(class) => learn.call_async(&mut *store, (ctx, borrowed, class)).await,
                None => forget.call_async(&mut *store, (ctx, borrowed)).await,
            };
            store.data_mut().table.delete(handle)?;
            result
        };
        let result = tokio::time::timeout(wall, call).await;
        self.finish(result, wall).map(|(answer,)| answer)
    }

    fn finish<R>(
        &mut self,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
        wall: Duration,
    ) -> Result<R, Fault> {
        self.flush_output();
        let state = self.store.data();
        if state.budget.log_truncated {
            tracing::warn!(policy = %state.io.policy, tenant = %state.io.tenant, "policy log output over budget was dropped");
        }
        match result {
            Ok(Ok(value)) => {
                self.reusable = true;
                Ok(value)
            }
            Ok(Err(e)) => Err(classify(&e, state)),
            Err(_) => Err(Fault::WallClock(wall)),
        }
    }
}

/// Ticks that make up `deadline` (at least one).
fn ticks_for(deadline: Duration, tick: Duration) -> u64 {
    let tick = tick.as_micros().max(1);
    (deadline.as_micros() / tick).max(1) as u64
}

/// What every call into the guest starts with: its wall-clock bound — generous beyond the CPU
/// deadline, because the guest may wait on DNS lookups (each bounded) and may be preempted by
/// other sessions' work — and the guard that keeps the epoch ticking at full rate meanwhile.
fn call_bounds(io: &PolicyIo) -> (Duration, super::ticker::Running) {
    let dns = io.limits.dns_timeout * io.limits.dns_lookups_per_call;
    (io.limits.cpu_deadline * 20 + dns + Duration::from_secs(1), io.ticker.running())
}

/// Name the cause of a failed call.
fn classify(error: &wasmtime::Error, state: &HostState) -> Fault {
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        return Fault::Deadline(state.io.limits.cpu_deadline);
    }
    if error.downcast_ref::<MemoryCapExceeded>().is_some() {
        return Fault::Memory(state.io.limits.memory_bytes);
    }
    if let Some(StateUnavailable(why)) = error.downcast_ref::<StateUnavailable>() {
        return Fault::State(why.clone());
    }
    // A full output pipe makes the guest's write fail; most languages then abort, which
    // surfaces as a trap. Name the real cause.
    let cap = state.io.limits.output_bytes;
    let full = |pipe: &MemoryOutputPipe| pipe.contents().len() + 4096 >= cap;
    if full(&state.stdout) || full(&state.stderr) || format!("{error:#}").contains("write beyond capacity") {
        return Fault::Output(cap);
    }
    let mut short = error.root_cause().to_string().lines().next().unwrap_or("unknown trap").to_string();
    if short.len() > 500 {
        let mut end = 500;
        while !short.is_char_boundary(end) {
            end -= 1;
        }
        short.truncate(end);
    }
    Fault::Trap(short)
}

/// Time a closure, in microseconds.
pub(crate) fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros().min(u128::from(u64::MAX)) as u64
}
