//! A tenant's chain of policies, run stage by stage for one SMTP session, and the judge that
//! turns a transaction's stages into one outcome.
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
        FailureMode::Tempfail(Reply::new(451, "4.3.0", "Temporary policy failure, please try again later"))
    }
}

/// Score thresholds on SpamAssassin's scale, applied when the message is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// At or above: add `X-Spam-Flag: YES` (default 5.0).
    pub add_header: Option<f64>,
    /// At or above: quarantine (default: off).
    pub quarantine: Option<f64>,
    /// At or above: reject with 550 5.7.1 (default 15.0).
    pub reject: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { add_header: Some(5.0), quarantine: None, reject: Some(15.0) }
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

    /// The chain.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Run `stage` through the chain.
    pub async fn run(&mut self, stage: Stage, session: &SessionInfo, input: StageInput<'_>) -> StageResult {
        let mut result = StageResult {
            stage,
            verdict: Verdict::Continue,
            decided_by: None,
            disconnect: false,
            runs: Vec::new(),
            shadow: Vec::new(),
        };
        if !self.chain.policies.iter().any(|p| p.stages.contains(stage)) {
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
        let outcome = match policy.breaker.suspended() {
            Some(left) => Err(Fault::Suspended(left)),
            None => self.call(index, &policy, ctx, input).await,
        };
        let micros = micros_since(started);
        match &outcome {
            Ok(_) => policy.breaker.success(),
            Err(Fault::Suspended(_)) => {}
            // Not the policy's doing, and cheap: an unreachable store does not suspend it.
            Err(Fault::State(_)) => policy.breaker.inconclusive(),
            Err(_) => {
                if let Some(length) = policy.breaker.fault() {
                    tracing::error!(
                        tenant = %self.chain.tenant,
                        policy = %policy.name,
                        file = %policy.file.display(),
                        seconds = length.as_secs(),
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
        policy: &LoadedPolicy,
        ctx: &super::bindings::types::Context,
        input: HookInput<'_>,
    ) -> Result<super::decision::Decision, Fault> {
        let slot = &mut self.instances[index];
        let instance = match slot {
            Some(instance) => instance,
            None => slot.insert(policy.session_instance().await?),
        };
        let result = instance.call_hook(ctx, input).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

/// Final outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Delivered.
    Accept,
    /// Refused (5xx).
    Reject,
    /// Refused for now (4xx).
    Tempfail,
    /// Accepted and dropped.
    Discard,
    /// Accepted into quarantine.
    Quarantine,
}

impl Outcome {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accept => "accept",
            Outcome::Reject => "reject",
            Outcome::Tempfail => "tempfail",
            Outcome::Discard => "discard",
            Outcome::Quarantine => "quarantine",
        }
    }

    /// Parse a lower-case name.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "accept" => Some(Outcome::Accept),
            "reject" => Some(Outcome::Reject),
            "tempfail" => Some(Outcome::Tempfail),
            "discard" => Some(Outcome::Discard),
            "quarantine" => Some(Outcome::Quarantine),
            _ => None,
        }
    }
}

/// The whole verdict on one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Outcome.
    pub outcome: Outcome,
    /// The reply the client gets (250 for the accepting outcomes).
    pub reply: Reply,
    /// Stage that settled it.
    pub stage: Stage,
    /// Policy (or `threshold`) that settled it, if any.
    pub decided_by: Option<String>,
    /// Quarantine reason.
    pub quarantine_reason: Option<String>,
    /// Total score.
    pub score: f64,
    /// Every symbol of the transaction.
    pub symbols: Vec<ScoredSymbol>,
    /// Headers to add, in order.
    pub added_headers: Vec<(String, String)>,
    /// Header names to remove.
    pub removed_headers: Vec<String>,
    /// Recipients to add.
    pub added_recipients: Vec<String>,
    /// Recipients to remove.
    pub removed_recipients: Vec<String>,
    /// Named next hop, if a policy routed the message.
    pub route: Option<String>,
    /// Close the connection after replying.
    pub disconnect: bool,
}

/// Accumulates one transaction's stages into a [`Judgement`].
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    symbols: Vec<ScoredSymbol>,
    held: Option<(Outcome, Option<String>, Stage, String)>,
    disconnect: bool,
}

fn accepted_reply() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

impl Transaction {
    /// A new, empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take in a stage result before data (connect, helo, mail, or one rcpt). Returns the
    /// judgement when the stage settles the transaction (reject or tempfail at connect, helo
    /// or mail); a rcpt rejection refuses only that recipient and returns `None` — the caller
    /// decides what no recipients left means. Discard and quarantine are remembered and
    /// applied when the message is accepted.
    pub fn absorb(&mut self, result: &StageResult) -> Option<Judgement> {
        self.symbols.extend(result.symbols());
        self.disconnect |= result.disconnect;
        let by = result.decided_by.clone().unwrap_or_default();
        match &result.verdict {
            Verdict::Reject(reply) | Verdict::Tempfail(reply) if result.stage != Stage::Rcpt => {
                let outcome = if matches!(result.verdict, Verdict::Reject(_)) {
                    Outcome::Reject
                } else {
                    Outcome::Tempfail
                };
                Some(self.settle(outcome, reply.clone(), result.stage, result.decided_by.clone(), Vec::new()))
            }
            Verdict::Discard => {
                self.held.get_or_insert((Outcome::Discard, None, result.stage, by));
                None
            }
            Verdict::Quarantine(reason) => {
                if !matches!(self.held, Some((Outcome::Discard, ..))) {
                    self.held.get_or_insert((Outcome::Quarantine, Some(reason.clone()), result.stage, by));
                }
                None
            }
            _ => None,
        }
    }

    /// Judge a transaction whose every recipient was refused, by the last refusal (a rcpt
    /// stage result whose verdict is reject or tempfail).
    pub fn no_recipients(&self, refusal: &StageResult) -> Option<Judgement> {
        let (outcome, reply) = match &refusal.verdict {
            Verdict::Reject(reply) => (Outcome::Reject, reply),
            Verdict::Tempfail(reply) => (Outcome::Tempfail, reply),
            _ => return None,
        };
        Some(self.settle(outcome, reply.clone(), Stage::Rcpt, refusal.decided_by.clone(), Vec::new()))
    }

    /// Total score so far.
    pub fn score(&self) -> f64 {
        self.symbols.iter().fold(0.0, |total, s| total + s.symbol.score)
    }

    fn settle(
        &self,
        outcome: Outcome,
        reply: Reply,
        stage: Stage,
        decided_by: Option<String>,
        changes: Vec<Change>,
    ) -> Judgement {
        let mut j = Judgement {
            outcome,
            reply,
            stage,
            decided_by,
            quarantine_reason: None,
            score: self.score(),
            symbols: self.symbols.clone(),
            added_headers: Vec::new(),
            removed_headers: Vec::new(),
            added_recipients: Vec::new(),
            removed_recipients: Vec::new(),
            route: None,
            disconnect: self.disconnect,
        };
        for change in changes {
            match change {
                Change::AddHeader(name, value) => j.added_headers.push((name, value)),
                Change::RemoveHeader(name) => j.removed_headers.push(name),
                Change::AddRecipient(a) => j.added_recipients.push(a),
                Change::RemoveRecipient(a) => j.removed_recipients.push(a),
                Change::Route(hop) => j.route = Some(hop),
            }
        }
        j
    }

    /// Take in the data stage and judge the transaction: a policy's reject or tempfail wins;
    /// then the score thresholds (reject, quarantine); then a remembered or data-stage
    /// discard or quarantine; else accept. Accepted messages get `X-Spam-Score` and
    /// `X-Spam-Symbols`, and `X-Spam-Flag: YES` at the add-header threshold.
    pub fn finish(mut self, result: &StageResult, thresholds: &Thresholds) -> Judgement {
        self.symbols.extend(result.symbols());
        self.disconnect |= result.disconnect;
        let changes: Vec<Change> = result
            .runs
            .iter()
            .filter(|run| run.outcome.is_ok())
            .flat_map(|run| run.changes.iter().cloned())
            .collect();
        let score = self.score();
        let refusal = match &result.verdict {
            Verdict::Reject(reply) => Some((Outcome::Reject, reply)),
            Verdict::Tempfail(reply) => Some((Outcome::Tempfail, reply)),
            _ => None,
        };
        if let Some((outcome, reply)) = refusal {
            return self.settle(outcome, reply.clone(), Stage::Data, result.decided_by.clone(), Vec::new());
        }
        if thresholds.reject.is_some_and(|t| score >= t) {
            let reply = Reply::new(550, "5.7.1", &format!("Message rejected as spam (score {score:.1})"));
            return self.settle(Outcome::Reject, reply, Stage::Data, Some("threshold".into()), Vec::new());
        }
        let by = result.decided_by.clone();
        let data_hold = match &result.verdict {
            Verdict::Discard => Some((Outcome::Discard, None, Stage::Data, by.clone().unwrap_or_default())),
            Verdict::Quarantine(reason) => {
                Some((Outcome::Quarantine, Some(reason.clone()), Stage::Data, by.clone().unwrap_or_default()))
            }
            _ => None,
        };
        let threshold_hold = thresholds.quarantine.filter(|t| score >= *t).map(|t| {
            (
                Outcome::Quarantine,
                Some(format!("spam score {score:.1} >= {t:.1}")),
                Stage::Data,
                "threshold".to_string(),
            )
        });
        let hold = match (self.held.take(), data_hold, threshold_hold) {
            (Some(h @ (Outcome::Discard, ..)), _, _) | (_, Some(h @ (Outcome::Discard, ..)), _) => Some(h),
            (Some(h), _, _) | (None, Some(h), _) | (None, None, Some(h)) => Some(h),
            (None, None, None) => None,
        };
        let mut judgement = match hold {
            Some((outcome, reason, stage, by)) => {
                let mut j = self.settle(outcome, accepted_reply(), stage, Some(by), changes);
                j.quarantine_reason = reason;
                j
            }
            None => self.settle(Outcome::Accept, accepted_reply(), Stage::Data, by, changes),
        };
        judgement.added_headers.push(("X-Spam-Score".into(), format!("{score:.1}")));
        if !judgement.symbols.is_empty() {
            let list = judgement
                .symbols
                .iter()
                .map(|s| format!("{}({:.1})", s.symbol.name, s.symbol.score))
                .collect::<Vec<_>>()
                .join(", ");
            judgement.added_headers.push(("X-Spam-Symbols".into(), list));
        }
        if thresholds.add_header.is_some_and(|t| score >= t) {
            judgement.added_headers.push(("X-Spam-Flag".into(), "YES".into()));
        }
        judgement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(stage: Stage, verdict: Verdict, symbols: &[(&str, f64)]) -> StageResult {
        StageResult {
            shadow: Vec::new(),
            stage,
            verdict,
            decided_by: Some("p".into()),
            disconnect: false,
            runs: vec![PolicyRun {
                policy: "p".into(),
                outcome: Ok(Verdict::Continue),
                symbols: symbols
                    .iter()
                    .map(|(n, s)| Symbol { name: n.to_string(), score: *s, detail: None })
                    .collect(),
                changes: vec![Change::AddHeader("X-P".into(), "1".into())],
                disconnect: false,
                micros: 0,
            }],
        }
    }

    #[test]
    fn scores_add_up_across_stages_and_thresholds_apply() {
        let mut t = Transaction::new();
        assert!(t.absorb(&result(Stage::Connect, Verdict::Continue, &[("A", 3.0)])).is_none());
        let j =
            t.clone().finish(&result(Stage::Data, Verdict::Continue, &[("B", 2.5)]), &Thresholds::default());
        assert_eq!(j.outcome, Outcome::Accept);
        assert_eq!(j.score, 5.5);
        assert!(j.added_headers.contains(&("X-Spam-Flag".into(), "YES".into())));
        assert!(j.added_headers.contains(&("X-P".into(), "1".into())));
        let j = t.finish(&result(Stage::Data, Verdict::Continue, &[("C", 20.0)]), &Thresholds::default());
        assert_eq!(j.outcome, Outcome::Reject);
        assert_eq!(j.reply.code, 550);
        assert_eq!(j.decided_by.as_deref(), Some("threshold"));
    }

    #[test]
    fn early_reject_settles_and_rcpt_reject_does_not() {
        let reply = Reply::new(554, "5.7.1", "no");
        let mut t = Transaction::new();
        assert!(t.absorb(&result(Stage::Rcpt, Verdict::Reject(reply.clone()), &[])).is_none());
        let j = t.absorb(&result(Stage::Mail, Verdict::Reject(reply.clone()), &[])).unwrap();
        assert_eq!((j.outcome, j.stage, j.reply.code), (Outcome::Reject, Stage::Mail, 554));
    }

    #[test]
    fn held_quarantine_yields_to_data_reject_but_not_to_accept() {
        let mut t = Transaction::new();
        t.absorb(&result(Stage::Rcpt, Verdict::Quarantine("suspicious".into()), &[]));
        let j = t.clone().finish(&result(Stage::Data, Verdict::Continue, &[]), &Thresholds::default());
        assert_eq!((j.outcome, j.stage), (Outcome::Quarantine, Stage::Rcpt));
        assert_eq!(j.quarantine_reason.as_deref(), Some("suspicious"));
        let reply = Reply::new(550, "5.7.1", "spam");
        let j = t.finish(&result(Stage::Data, Verdict::Reject(reply), &[]), &Thresholds::default());
        assert_eq!(j.outcome, Outcome::Reject);
    }
}
