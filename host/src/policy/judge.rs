//! The judge: what a transaction's stages add up to. Symbols of every stage count towards the
//! score; a reject or tempfail before data settles the transaction; discard and quarantine are
//! remembered and applied when the message is accepted; at the end of data the score
//! thresholds apply and the accepted message gets its `X-Spam-*` header fields.

use super::chain::StageResult;
use super::context::Stage;
use super::decision::{Change, Reply, Verdict};
use crate::smtp::reply;

pub use super::chain::ScoredSymbol;

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

impl Judgement {
    /// A transaction refused before any chain judged it (by the protocol, at `stage`).
    pub fn refused(outcome: Outcome, reply: Reply, stage: Stage) -> Self {
        Self {
            outcome,
            reply,
            stage,
            decided_by: None,
            quarantine_reason: None,
            score: 0.0,
            symbols: Vec::new(),
            added_headers: Vec::new(),
            removed_headers: Vec::new(),
            added_recipients: Vec::new(),
            removed_recipients: Vec::new(),
            route: None,
            disconnect: false,
        }
    }
}

/// Accumulates one transaction's stages into a [`Judgement`].
#[derive(Debug, Clone, Default)]
pub struct Judge {
    symbols: Vec<ScoredSymbol>,
    held: Option<(Outcome, Option<String>, Stage, String)>,
    disconnect: bool,
}

fn accepted_reply() -> Reply {
    reply::OK
}

impl Judge {
    /// A judge of a new transaction, with nothing taken in yet.
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
            let refusal = reply::spam_rejected(score);
            return self.settle(Outcome::Reject, refusal, Stage::Data, Some("threshold".into()), Vec::new());
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
    use crate::policy::chain::PolicyRun;
    use crate::policy::decision::Symbol;

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
        let mut t = Judge::new();
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
        let mut t = Judge::new();
        assert!(t.absorb(&result(Stage::Rcpt, Verdict::Reject(reply.clone()), &[])).is_none());
        let j = t.absorb(&result(Stage::Mail, Verdict::Reject(reply.clone()), &[])).unwrap();
        assert_eq!((j.outcome, j.stage, j.reply.code), (Outcome::Reject, Stage::Mail, 554));
    }

    #[test]
    fn held_quarantine_yields_to_data_reject_but_not_to_accept() {
        let mut t = Judge::new();
        t.absorb(&result(Stage::Rcpt, Verdict::Quarantine("suspicious".into()), &[]));
        let j = t.clone().finish(&result(Stage::Data, Verdict::Continue, &[]), &Thresholds::default());
        assert_eq!((j.outcome, j.stage), (Outcome::Quarantine, Stage::Rcpt));
        assert_eq!(j.quarantine_reason.as_deref(), Some("suspicious"));
        let reply = Reply::new(550, "5.7.1", "spam");
        let j = t.finish(&result(Stage::Data, Verdict::Reject(reply), &[]), &Thresholds::default());
        assert_eq!(j.outcome, Outcome::Reject);
    }
}
