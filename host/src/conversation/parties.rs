//! What each party (the edge, each tenant) has seen of the session, which of its stages must
//! run before the one at hand, the context each stage gets, and the running of those stages
//! one after the other ([`Plan`]).
//!
//! A party's connect result is kept for the session, its helo result until the client greets
//! again, its mail result for the transaction. A refusal among them is sticky for as long:
//! a tenant whose connect hook refused has all of its recipients in the session refused with
//! that reply, without running anything again.

use std::collections::VecDeque;

use super::{Action, Conversation, StageData, StageRequest, Waiting};
use crate::policy::{SessionInfo, Stage, StageResult, Verdict};
use crate::smtp::EnvelopeAddress;
use crate::smtp::session::Destination;
use crate::tenants::Party;

/// What a party has seen of the session.
#[derive(Debug, Default)]
pub(super) struct PartyState {
    /// Its connect stage (kept for the session).
    pub connect: Option<StageResult>,
    /// Its helo stage (until the client greets again).
    pub helo: Option<StageResult>,
    /// Its mail stage (for the transaction).
    pub mail: Option<StageResult>,
}

impl PartyState {
    /// The client greets again (EHLO, or after STARTTLS): helo and mail run again.
    pub fn greeted_again(&mut self) {
        self.helo = None;
        self.mail = None;
    }

    /// Its early results, in stage order.
    pub fn early(&self) -> impl Iterator<Item = &StageResult> {
        [&self.connect, &self.helo, &self.mail].into_iter().flatten()
    }

    /// The first early result that refused, if any: its recipients get that reply.
    pub fn refusal(&self) -> Option<&StageResult> {
        self.early().find(|r| refuses(r))
    }
}

/// A stage result that refuses (reject or tempfail).
pub(super) fn refuses(result: &StageResult) -> bool {
    matches!(result.verdict, Verdict::Reject(_) | Verdict::Tempfail(_))
}

/// The stages to run, one after the other, and what to do once they all passed.
#[derive(Debug)]
pub(super) struct Plan {
    pub steps: VecDeque<(Party, Stage)>,
    pub then: Then,
    /// A policy asked to close the connection: after the reply the plan ends in.
    pub disconnect_after: bool,
}

/// What a plan ends in.
#[derive(Debug)]
pub(super) enum Then {
    /// Connect stages passed: send the banner.
    Banner,
    /// Helo stages passed: greet the client.
    Greet { name: String, extended: bool },
    /// The claimed tenant's mail stage passed: accept the sender.
    Mail(EnvelopeAddress),
    /// A party's stages up to rcpt passed: accept the recipient.
    Rcpt { to: EnvelopeAddress, destination: Destination, party: Party, first: bool },
    /// The data stage ran: judge the message.
    Judge { message: super::finish::Body, data: Option<StageResult> },
}

impl Conversation {
    /// The index of a party's state (the edge's for a tenant the snapshot does not have, as
    /// [`crate::tenants::Snapshot::party`] does).
    fn slot(&self, party: Party) -> usize {
        match party {
            Party::Tenant(i) if i + 1 < self.parties.len() => i + 1,
            _ => 0,
        }
    }

    pub(super) fn state(&self, party: Party) -> &PartyState {
        &self.parties[self.slot(party)]
    }

    fn state_mut(&mut self, party: Party) -> &mut PartyState {
        let slot = self.slot(party);
        &mut self.parties[slot]
    }

    /// The parties whose chains run as the session goes, in order: the edge, and the tenant
    /// that claims the session.
    pub(super) fn live_parties(&self) -> Vec<Party> {
        std::iter::once(Party::Edge).chain(self.claimed.map(Party::Tenant)).collect()
    }

    /// The stages `party` has not run yet, up to and including `stage` (connect and helo for
    /// a mail stage; connect, helo and mail for a rcpt stage).
    pub(super) fn catch_up(&self, party: Party, stage: Stage) -> VecDeque<(Party, Stage)> {
        let state = self.state(party);
        let mut steps = VecDeque::new();
        if state.connect.is_none() {
            steps.push_back((party, Stage::Connect));
        }
        if state.helo.is_none() && self.core.helo().is_some() {
            steps.push_back((party, Stage::Helo));
        }
        if stage == Stage::Rcpt && state.mail.is_none() {
            steps.push_back((party, Stage::Mail));
        }
        steps.push_back((party, stage));
        steps
    }

    /// Start a plan.
    pub(super) fn run(&mut self, steps: VecDeque<(Party, Stage)>, then: Then) {
        self.plan = Some(Plan { steps, then, disconnect_after: false });
        self.advance();
    }

    /// Ask for the next stage of the plan, or carry out its end. A stage the party's chain
    /// does not hook passes without being asked for.
    fn advance(&mut self) {
        loop {
            let Some(plan) = self.plan.as_mut() else { return };
            let Some(&(party, stage)) = plan.steps.front() else {
                let Some(plan) = self.plan.take() else { return };
                self.plan_passed(plan.then, plan.disconnect_after);
                return;
            };
            if !self.every_stage && !self.snapshot.party(party).chain.hooks(stage) {
                if !self.step_result(StageResult::passed(stage)) {
                    return;
                }
                continue;
            }
            let request = StageRequest {
                party,
                stage,
                context: self.context(party, stage),
                data: self.stage_data(stage),
            };
            self.wait(Action::Stage(Box::new(request)), Waiting::Stage);
            return;
        }
    }

    /// A stage the plan asked for is done.
    pub(super) fn step_done(&mut self, result: StageResult) {
        if self.step_result(result) {
            self.advance();
        }
    }

    /// Take in the result of the plan's current step; false when it ended the plan.
    fn step_result(&mut self, result: StageResult) -> bool {
        let Some(plan) = self.plan.as_mut() else { return false };
        let Some((party, stage)) = plan.steps.pop_front() else { return false };
        let refused = refuses(&result);
        let disconnect = result.disconnect;
        match stage {
            Stage::Connect => self.state_mut(party).connect = Some(result),
            Stage::Helo => self.state_mut(party).helo = Some(result),
            Stage::Mail => self.state_mut(party).mail = Some(result),
            Stage::Rcpt => self.transaction.rcpts.push((party, result)),
            Stage::Data => {
                if let Then::Judge { data, .. } = &mut plan.then {
                    *data = Some(result);
                }
                return true;
            }
        }
        if refused {
            let Some(plan) = self.plan.take() else { return false };
            self.plan_refused(plan.then, party, stage);
            return false;
        }
        if disconnect && let Some(plan) = self.plan.as_mut() {
            plan.disconnect_after = true;
        }
        true
    }

    /// The context `party`'s hook at `stage` gets: what it would have seen had it run when
    /// the client was at that stage (a replayed connect hook sees no HELO, no TLS, no user).
    pub(super) fn context(&self, party: Party, stage: Stage) -> SessionInfo {
        let config = &self.snapshot.config;
        let pending = self.plan.as_ref().map(|p| &p.then);
        let helo = match pending {
            Some(Then::Greet { name, .. }) => Some(name.clone()),
            _ => self.core.helo().map(str::to_string),
        };
        let mail_from = match pending {
            Some(Then::Mail(from)) => Some(from.clone()),
            _ => self.core.mail_from().cloned(),
        };
        let after_connect = stage != Stage::Connect;
        SessionInfo {
            tenant: self.snapshot.party(party).name.clone(),
            transaction_id: self.id.clone(),
            client_ip: self.client.address.ip(),
            client_port: self.client.address.port(),
            reverse_dns: self.client.reverse_dns.clone(),
            helo: helo.filter(|_| after_connect),
            tls: self.tls.clone().filter(|_| after_connect),
            authenticated_user: match stage {
                Stage::Connect => None,
                Stage::Helo => match pending {
                    Some(Then::Greet { .. }) => self.core.authenticated_user().map(str::to_string),
                    _ => self.helo_user.clone(),
                },
                _ => self.core.authenticated_user().map(str::to_string),
            },
            listener: self.client.listener.clone(),
            hostname: config.server.hostname.clone(),
            mail_from: mail_from.filter(|_| matches!(stage, Stage::Mail | Stage::Rcpt | Stage::Data)),
            recipients: match stage {
                Stage::Rcpt | Stage::Data => {
                    self.core.recipients().iter().map(|r| r.address.clone()).collect()
                }
                _ => Vec::new(),
            },
        }
    }

    /// What the current step's stage judges besides the session.
    fn stage_data(&self, stage: Stage) -> StageData {
        match (stage, self.plan.as_ref().map(|p| &p.then)) {
            (Stage::Rcpt, Some(Then::Rcpt { to, .. })) => StageData::Recipient(to.clone()),
            (Stage::Data, Some(Then::Judge { message, .. })) => match message.parsed() {
                Some(parsed) => StageData::Message(parsed.clone()),
                None => StageData::Session,
            },
            _ => StageData::Session,
        }
    }
}
