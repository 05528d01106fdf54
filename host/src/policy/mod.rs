//! Policies: sandboxed WebAssembly components that judge each stage of an SMTP conversation.
//!
//! Where this sits in the flow of a message: the conversation ([`crate::conversation`]) asks a
//! [`ChainSession`] for a stage — connect, helo, mail, every rcpt, the end of data — for the
//! edge or a tenant; the chain calls each policy that hooks the stage, in order, and folds
//! their decisions into one [`StageResult`]. A [`Judge`] adds a transaction's stages up —
//! symbols, discard/quarantine, changes — and applies the score thresholds when the message
//! is complete, giving a [`Judgement`]. The relay and `sluice policy test` both run exactly
//! this code, through the same conversation.
//!
//! Inside:
//! - [`engine`]: the one wasmtime engine and the loading and validation of components, with
//!   [`ticker`] (the epoch thread that bounds CPU time), [`cache`] (compiled code) and
//!   [`loaded`] (a loaded policy and its pool of warm instances) and [`prepared`] (fresh
//!   instances made ahead of sessions, and dropped behind them on the reaper thread);
//! - [`instance`]: a store per session, CPU/memory/output limits, faults;
//! - [`host`]: the host capabilities (log, config, clock, key-value, DNS, message);
//! - [`chain`]: evaluation of a chain for one stage; [`judge`]: the transaction judge;
//! - [`breaker`]: suspension of a policy that keeps faulting;
//! - [`learn`]: feeding messages of a known class to a policy that exports `learner`.

mod bindings;
pub mod breaker;
pub mod cache;
pub mod chain;
pub mod context;
pub mod decision;
pub mod engine;
mod hooks;
pub mod host;
pub mod instance;
pub mod judge;
pub mod learn;
pub mod loaded;
pub mod message;
pub mod prepared;
pub mod store_cost;
mod ticker;

use std::sync::Arc;
use std::time::Duration;

pub use chain::{
    Chain, ChainSession, ChainSettings, FailureMode, PolicyRun, ScoredSymbol, StageInput, StageResult,
};
pub use context::{EnvelopeAddress, EsmtpParam, SessionInfo, Stage, StageSet, TlsInfo};
pub use decision::{Change, Decision, Reply, Symbol, Verdict};
pub use engine::{CodeTier, EngineOptions, LoadError, LoadedPolicy, PolicyEngine, PolicySpec};
pub use host::Clock;
pub use instance::Fault;
pub use judge::{Judge, Judgement, Outcome, Thresholds};
pub use learn::{Autolearn, LearnError, Learned, Learner, Lesson, MAX_LESSON_BYTES};
pub use message::ParsedMessage;

use crate::dns::Resolver;
use crate::state::kv::{KvStore, Quota};

/// Bounds on every call into one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLimits {
    /// CPU time one hook call may use (default 50 ms).
    pub cpu_deadline: Duration,
    /// Linear memory cap of an instance (default 64 MiB).
    pub memory_bytes: usize,
    /// DNS lookups one hook call may make (default 10).
    pub dns_lookups_per_call: u32,
    /// Timeout of one DNS lookup (default 2 s).
    pub dns_timeout: Duration,
    /// Bytes an instance may print to stdout and stderr, each (default 64 KiB).
    pub output_bytes: usize,
    /// The tenant's share of the key-value store (default 100 000 keys, 64 MiB).
    pub kv_quota: Quota,
    /// Sessions one instance may serve (default 1: a fresh instance for every session).
    /// Above 1, an instance that ended its session cleanly is kept warm for the next session
    /// of the same tenant: no instantiation and no `init`, but what the policy keeps in
    /// memory (globals) carries over between those sessions.
    pub sessions_per_instance: u32,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            cpu_deadline: Duration::from_millis(50),
            memory_bytes: 64 << 20,
            dns_lookups_per_call: 10,
            dns_timeout: Duration::from_secs(2),
            output_bytes: 64 << 10,
            kv_quota: Quota::default(),
            sessions_per_instance: 1,
        }
    }
}

/// The services behind the host imports, shared by the policies of a tenant.
#[derive(Clone)]
pub struct HostServices {
    /// Key-value backend.
    pub kv: Arc<dyn KvStore>,
    /// DNS resolver.
    pub resolver: Arc<dyn Resolver>,
    /// Clock.
    pub clock: Clock,
}
