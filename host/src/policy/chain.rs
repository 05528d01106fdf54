//! A tenant's chain of policies, run stage by stage for one SMTP session. The judge that turns
//! a transaction's stages into one outcome is in [`super::judge`].
//!
//! Rules of one stage: policies run in configured order, only those that hook the stage.
//! `continue` passes to the next; `accept` ends the stage in favour; `reject`, `tempfail`,
//! `discard` and `quarantine` end it with that verdict. Symbols of every policy that ran are
//! kept. A fault (trap, deadline, memory, output) is logged with the policy and file and maps
//! to the chain's failure mode: `tempfail` (451 4.3.0, the default) or `continue` (skip the
//! policy). A fault never turns into an acceptance the chain would not otherwise give.

use std::sync::Arc;
use std::time::Instant;

use super::context::{EnvelopeAddress, SessionInfo, Stage};
use super::decision::{Change, Reply, Symbol, Verdict};
use super::engine::LoadedPolicy;
use super::instance::{Fault, HookInput, PolicyInstance, micros_since};
use super::judge::Thresholds;
use super::message::ParsedMessage;

/// What to do when a policy faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureMode {
    /// Answer with this 4xx reply (default `451 4.3.0`).
    Tempfail(Reply),
    /// Skip the faulty policy and go on with the chain.
    Continue,
}

impl Default for FailureMode {
    fn default() -> Self {
        FailureMode::Tempfail(crate::smtp::reply::POLICY_FAILURE)
    }
}

/// Chain-wide settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainSettings {
    /// What a fault means.
    pub failure_mode: FailureMode,
    /// Score thresholds.
    pub thresholds: Thresholds,
}

/// A tenant's loaded chain. Immutable; sessions hold it by `Arc`.
#[derive(Debug)]
pub struct Chain {
    /// Tenant.
    pub tenant: String,
    /// Policies in order.
    pub policies: Vec<Arc<LoadedPolicy>>,
    /// Settings.
    pub settings: ChainSettings,
    /// Per policy: runs in shadow mode (decisions logged and counted, never applied).
    /// Missing entries mean enforced.
    pub shadow: Vec<bool>,
}

impl Chain {
    /// A chain whose policies are all enforced.
    pub fn new(tenant: impl Into<String>, policies: Vec<Arc<LoadedPolicy>>, settings: ChainSettings) -> Self {
        Self { tenant: tenant.into(), policies, settings, shadow: Vec::new() }
    }

    /// Whether the policy at `index` runs in shadow mode.
    pub fn is_shadow(&self, index: usize) -> bool {
        self.shadow.get(index).copied().unwrap_or(false)
    }

    /// Whether any of its policies (enforced or in shadow mode) hooks `stage`: a stage nobody
    /// hooks need not be asked for.
    pub fn hooks(&self, stage: Stage) -> bool {
        self.policies.iter().any(|p| p.stages.contains(stage))
    }

    /// Whether any of its policies reads the checks of the sender (imports the `message`
    /// resource's `sender-checks` of interface version 0.2.0 or later).
    pub fn reads_sender_checks(&self) -> bool {
        self.policies.iter().any(|p| p.reads_sender_checks)
    }

    /// Its policies that learn (export `sluice:policy/learner`), in chain order.
    pub fn learners(&self) -> impl Iterator<Item = &Arc<LoadedPolicy>> {
        self.policies.iter().filter(|p| p.learns)
    }
}

/// What a stage is judged on besides the session.
#[derive(Clone, Copy)]
pub enum StageInput<'a> {
    /// connect, helo, mail.
    Session,
    /// rcpt: the recipient being judged.
    Recipient(&'a EnvelopeAddress),
    /// data: the parsed message.
    Message(&'a Arc<ParsedMessage>),
}

/// One policy's part in a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    /// Policy name.
    pub policy: String,
    /// Its verdict, or the fault.
    pub outcome: Result<Verdict, Fault>,
    /// Symbols it gave.
    pub symbols: Vec<Symbol>,
    /// Changes it asked for.
    pub changes: Vec<Change>,
    /// Asked to disconnect.
    pub disconnect: bool,
    /// Time taken, including instantiation when this was its first call in the session.
    pub micros: u64,
}

/// A symbol with the policy that gave it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoredSymbol {
    /// Policy name.
    pub policy: String,
    /// Stage it was given at.
    pub stage: Stage,
    /// The symbol.
    #[serde(flatten)]
    pub symbol: Symbol,
}

/// The chain's answer for one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageResult {
    /// Stage.
    pub stage: Stage,
    /// The deciding verdict (`Continue` when nobody decided).
    pub verdict: Verdict,
    /// The policy that decided, if any.
    pub decided_by: Option<String>,
    /// Close the connection after replying.
    pub disconnect: bool,
    /// Every enforced policy's part, in order.
    pub runs: Vec<PolicyRun>,
    /// What the shadow policies would have done; never applied.
    pub shadow: Vec<ShadowRun>,
}

/// A shadow policy's decision at one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRun {
    /// The policy's part, as if it were enforced.
    pub run: PolicyRun,
    /// Its verdict differs from the enforced chain's at this stage (`continue` and `accept`
    /// count as the same: both let the stage pass).
    pub disagrees: bool,
}

/// A verdict's kind, for comparing a shadow decision with the enforced one.
pub fn verdict_kind(verdict: &Result<Verdict, Fault>) -> &'static str {
    match verdict {
        Ok(Verdict::Continue | Verdict::Accept) => "pass",
        Ok(Verdict::Reject(_)) => "reject",
        Ok(Verdict::Tempfail(_)) => "tempfail",
        Ok(Verdict::Discard) => "discard",
        Ok(Verdict::Quarantine(_)) => "quarantine",
        Err(_) => "fault",
    }
}

impl StageResult {
    /// A stage nobody decided: what a stage no policy hooks comes to.
    pub fn passed(stage: Stage) -> Self {
        Self {
            stage,
            verdict: Verdict::Continue,
            decided_by: None,
            disconnect: false,
            runs: Vec::new(),
            shadow: Vec::new(),
        }
    }

    /// Symbols given in this stage, with their policies.
    pub fn symbols(&self) -> impl Iterator<Item = ScoredSymbol> + '_ {
        self.runs.iter().flat_map(move |run| {
            run.symbols.iter().map(move |s| ScoredSymbol {
                policy: run.policy.clone(),
                stage: self.stage,
                symbol: s.clone(),
            })
        })
    }
}

/// One session's view of a chain: the policy instances, created on first use and dropped
/// with the session, so no state crosses sessions.
pub struct ChainSession {
    chain: Arc<Chain>,
    instances: Vec<Option<PolicyInstance>>,
}

impl Drop for ChainSession {
    /// The session is over: instances that may serve another session are kept warm.
    fn drop(&mut self) {
        for (slot, policy) in self.instances.iter_mut().zip(&self.chain.policies) {
            if let Some(instance) = slot.take() {
                policy.session_ended(instance);
            }
        }
    }
}

impl ChainSession {
    /// A session over `chain`; nothing is instantiated until a hook needs it.
    pub fn new(chain: Arc<Chain>) -> Self {
        let instances = chain.policies.iter().map(|_| None).collect();
        Self { chain, instances }
    }

    /// Run `stage` through the chain.
    pub async fn run(&mut self, stage: Stage, session: &SessionInfo, input: StageInput<'_>) -> StageResult {
        let mut result = StageResult::passed(stage);
        if !self.chain.hooks(stage) {
            return result;
        }
        let ctx = session.to_wit();
        let rcpt = match input {
            StageInput::Recipient(r) => Some(r.to_wit_recipient()),
            _ => None,
        };
        let hook_input = match (stage, input, &rcpt) {
            (Stage::Connect, _, _) => HookInput::Connect,
            (Stage::Helo, _, _) => HookInput::Helo,
            (Stage::Mail, _, _) => HookInput::Mail,
            (Stage::Rcpt, _, Some(rcpt)) => HookInput::Rcpt(rcpt),
            (Stage::Data, StageInput::Message(message), _) => HookInput::Data(message),
            // A stage called without its input (a caller bug): nothing to judge.
            _ => return result,
        };
        for index in 0..self.chain.policies.len() {
            if !self.chain.policies[index].stages.contains(stage) || self.chain.is_shadow(index) {
                continue;
            }
            let run = self.run_one(index, stage, session, &ctx, hook_input).await;
            let decided = match &run.outcome {
                Ok(Verdict::Continue) => None,
                Ok(verdict) => Some(verdict.clone()),
                Err(_) => match &self.chain.settings.failure_mode {
                    FailureMode::Tempfail(reply) => Some(Verdict::Tempfail(reply.clone())),
                    FailureMode::Continue => None,
                },
            };
            result.disconnect |= run.disconnect;
            let name = run.policy.clone();
            result.runs.push(run);
            if let Some(verdict) = decided {
                result.verdict = verdict;
                result.decided_by = Some(name);
                break;
            }
        }
        // Shadow policies see every stage the enforced chain saw, whatever it decided.
        for index in 0..self.chain.policies.len() {
            if !self.chain.policies[index].stages.contains(stage) || !self.chain.is_shadow(index) {
                continue;
            }
            let run = self.run_one(index, stage, session, &ctx, hook_input).await;
            let enforced = Ok(result.verdict.clone());
            let disagrees = verdict_kind(&run.outcome) != verdict_kind(&enforced);
            if disagrees || !matches!(run.outcome, Ok(Verdict::Continue)) {
                tracing::info!(
                    tenant = %self.chain.tenant,
                    policy = %run.policy,
                    stage = %stage,
                    transaction = %session.transaction_id,
                    verdict = verdict_kind(&run.outcome),
                    enforced = verdict_kind(&enforced),
                    symbols = %run.symbols.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(","),
                    "shadow decision"
                );
            }
            result.shadow.push(ShadowRun { run, disagrees });
        }
        result
    }

    /// One policy's part in a stage; a fault is logged with the policy and its file.
    async fn run_one(
        &mut self,
        index: usize,
        stage: Stage,
        session: &SessionInfo,
        ctx: &super::bindings::types::Context,
        input: HookInput<'_>,
    ) -> PolicyRun {
        let policy = self.chain.policies[index].clone();
        let started = Instant::now();
        let outcome = match policy.breaker.suspended(stage) {
            Some(left) => Err(Fault::Suspended(left)),
            None => self.call(index, &policy, ctx, input).await,
        };
        let micros = micros_since(started);
        match &outcome {
            Ok(_) => policy.breaker.success(stage),
            Err(Fault::Suspended(_)) => {}
            // Not the policy's doing, and cheap: an unreachable store does not suspend it.
            Err(Fault::State(_)) => policy.breaker.inconclusive(stage),
            Err(_) => {
                if let Some(length) = policy.breaker.fault(stage) {
                    tracing::error!(
                        tenant = %self.chain.tenant,
                        policy = %policy.name,
                        file = %policy.file.display(),
                        seconds = length.as_secs(),
                        stage = %stage,
                        "policy suspended after {} faults in a row: the tenant's failure mode applies without running it",
                        super::breaker::FAULTS_IN_A_ROW
                    );
                }
            }
        }
        match outcome {
            Ok(decision) => PolicyRun {
                policy: policy.name.clone(),
                outcome: Ok(decision.verdict),
                symbols: decision.symbols,
                changes: decision.changes,
                disconnect: decision.disconnect,
                micros,
            },
            Err(fault) => {
                if matches!(fault, Fault::Suspended(_)) {
                    tracing::debug!(
                        tenant = %self.chain.tenant,
                        policy = %policy.name,
                        stage = %stage,
                        transaction = %session.transaction_id,
                        cause = %fault,
                        "policy suspended"
                    );
                } else {
                    tracing::warn!(
                        tenant = %self.chain.tenant,
                        policy = %policy.name,
                        file = %policy.file.display(),
                        stage = %stage,
                        transaction = %session.transaction_id,
                        shadow = self.chain.is_shadow(index),
                        cause = %fault,
                        "policy fault"
                    );
                }
                PolicyRun {
                    policy: policy.name.clone(),
                    outcome: Err(fault),
                    symbols: Vec::new(),
                    changes: Vec::new(),
                    disconnect: false,
                    micros,
                }
            }
        }
    }

    /// Call one policy, instantiating it first if this session has no live instance. After
    /// a fault the instance is dropped (its store may be poisoned); the next stage gets a
    /// fresh one.
    async fn call(
        &mut self,
        index: usize,
        policy: &Arc<LoadedPolicy>,
        ctx: &super::bindings::types::Context,
        input: HookInput<'_>,
    ) -> Result<super::decision::Decision, Fault> {
        let slot = &mut self.instances[index];
        let instance = match slot {
            Some(instance) => instance,
            None => slot.insert(policy.session_instance().await?),
        };
        let result = instance.call_hook(ctx, input).await;
        if result.is_err()
            && let Some(faulted) = slot.take()
        {
            policy.prepared.discard(faulted);
        }
        result
    }
}
