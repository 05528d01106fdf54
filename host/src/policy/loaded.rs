//! A loaded policy: what sessions instantiate, and the pool of warm instances kept for the
//! next session of the same tenant when the policy allows reuse (`sessions_per_instance`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::InstancePre;

use super::context::StageSet;
use super::engine::{CodeTier, PolicySpec};
use super::hooks::VerifiedExports;
use super::instance::{Fault, HostState, PolicyInstance};
use super::ticker::{EpochTicker, TickerGuard};
use super::{HostServices, PolicyLimits};

/// A policy ready to be instantiated for sessions.
pub struct LoadedPolicy {
    /// Name (configured or from `describe`).
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// Stages it hooks.
    pub stages: StageSet,
    /// File it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// What it was loaded from (a reload reuses it when the spec and the file's hash match).
    pub spec: PolicySpec,
    /// When it was loaded.
    pub loaded_at: std::time::SystemTime,
    /// Which compiler made its code.
    pub code: CodeTier,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) exports: VerifiedExports,
    pub(crate) io: Arc<PolicyIo>,
    /// It imports `message.sender-checks`: its tenant's inbound mail is checked for it.
    pub reads_sender_checks: bool,
    /// It exports `sluice:policy/learner`: messages of a known class can be taught to it.
    pub learns: bool,
    /// Suspends it after faults in a row (one per loaded policy: a new load starts closed).
    pub breaker: Arc<super::breaker::Breaker>,
    /// Warm instances waiting for the next session (with `sessions_per_instance` above 1).
    pub(crate) warm: std::sync::Mutex<Vec<PolicyInstance>>,
    /// Fresh instances made ahead of sessions ([`super::prepared`]).
    pub(crate) prepared: super::prepared::Prepared,
    pub(crate) engine: Engine,
    pub(crate) _ticker: Arc<TickerGuard>,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file", &self.file)
            .finish()
    }
}

/// What every instance of one loaded policy shares: identity, configuration, services.
pub(crate) struct PolicyIo {
    pub policy: String,
    pub tenant: String,
    pub config: Vec<(String, String)>,
    pub limits: PolicyLimits,
    pub services: HostServices,
    pub tick: Duration,
    pub ticker: Arc<EpochTicker>,
}

/// Warm instances kept per policy, at most (each holds a slot of the instance pool).
pub const MAX_WARM_INSTANCES: usize = 16;

impl LoadedPolicy {
    /// An instance for a new session: a warm one when the policy allows reuse and one is
    /// waiting, else a fresh one (prepared ahead when one is ready).
    pub(crate) async fn session_instance(self: &Arc<Self>) -> Result<PolicyInstance, Fault> {
        if self.io.limits.sessions_per_instance > 1 {
            let warm = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(mut instance) = warm {
                instance.sessions += 1;
                return Ok(instance);
            }
        }
        self.fresh_instance().await
    }

    /// The session of `instance` is over: keep it warm if it may serve another one, else
    /// drop it on the reaper thread.
    pub(crate) fn session_ended(&self, instance: PolicyInstance) {
        if !instance.reusable || instance.sessions >= self.io.limits.sessions_per_instance {
            return self.prepared.discard(instance);
        }
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() < MAX_WARM_INSTANCES {
            warm.push(instance);
        } else {
            drop(warm);
            self.prepared.discard(instance);
        }
    }

    /// Replaced by a reload: drop the instances made ahead for it and make no more.
    pub fn retire(&self) {
        self.prepared.retire();
    }

    /// In service (again): sessions' demand refills its prepared instances.
    pub fn unretire(&self) {
        self.prepared.unretire();
    }

    /// Fresh instances ready for sessions now.
    pub fn prepared_instances(&self) -> usize {
        self.prepared.len()
    }

    /// A fresh instance for one session, initialised with the policy's configuration.
    pub(crate) async fn instantiate(&self) -> Result<PolicyInstance, Fault> {
        let mut instance =
            PolicyInstance::instantiate(&self.engine, &self.pre, &self.exports, self.io.clone()).await?;
        match instance.init().await? {
            Ok(()) => Ok(instance),
            Err(message) => Err(Fault::InitRefused(message)),
        }
    }
}
