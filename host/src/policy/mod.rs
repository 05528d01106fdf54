//! Policies: sandboxed WebAssembly components that judge each stage of an SMTP conversation.
//!
//! Where this sits in the flow of a message: the SMTP session calls a [`ChainSession`] at
//! connect, helo, mail, every rcpt and at the end of data; the chain calls each policy that
//! hooks the stage, in order, and folds their decisions into one [`StageResult`]. A
//! [`Transaction`] adds the stages up — symbols, discard/quarantine, changes — and applies
//! the score thresholds when the message is complete, giving a [`Judgement`]. The relay and
//! `sluice policy test` both run exactly this code.
//!
//! Inside:
//! - [`engine`]: the one wasmtime engine, compile cache, loading and validation;
//! - [`instance`]: a store per session, CPU/memory/output limits, faults;
//! - [`imports`]: the host capabilities (log, config, clock, key-value, DNS, message);
//! - [`chain`]: evaluation of a chain for one stage, and the transaction judge;
//! - [`breaker`]: suspension of a policy that keeps faulting.

mod bindings;
pub mod breaker;
pub mod chain;
pub mod context;
pub mod decision;
pub mod engine;
mod hooks;
mod imports;
pub mod instance;
pub mod message;
pub mod simulate;

use std::sync::Arc;
use std::time::Duration;

pub use chain::{
    Chain, ChainSession, ChainSettings, FailureMode, Judgement, Outcome, PolicyRun, ScoredSymbol, StageInput,
    StageResult, Thresholds, Transaction,
};
pub use context::{EnvelopeAddress, EsmtpParam, SessionInfo, Stage, StageSet, TlsInfo};
pub use decision::{Change, Decision, Reply, Symbol, Verdict};
pub use engine::{CodeTier, EngineOptions, LoadError, LoadedPolicy, PolicyEngine, PolicySpec};
pub use instance::Fault;
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

/// Where `now-millis` reads the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// The system clock shifted so that it read `at_start_millis` when the clock was made;
    /// `sluice policy test --now` uses it for reproducible time-dependent policies.
    Pinned {
        /// What the clock read at `origin`.
        at_start_millis: i64,
        /// When it was pinned (system milliseconds).
        origin_millis: i64,
    },
}

fn system_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

impl Clock {
    /// A clock that reads `millis` now and advances in real time.
    pub fn pinned(millis: i64) -> Self {
        Clock::Pinned { at_start_millis: millis, origin_millis: system_millis() }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match *self {
            Clock::System => system_millis(),
            Clock::Pinned { at_start_millis, origin_millis } => {
                at_start_millis.saturating_add(system_millis().saturating_sub(origin_millis))
            }
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
