//! The end of a transaction: the judgement of the party whose transaction it is, the message
//! as it will be stored (our Received field and the policies' header changes on top of what
//! the client sent), the spool envelope, and the record of what happened.

use std::sync::Arc;

use super::{
    Action, Conversation, LearnRequest, RecipientFate, StoreFailure, StoreRequest, TransactionRecord, Waiting,
};
use crate::mail::{append_without_headers, rfc5322_date};
use crate::policy::{Judge, Judgement, Outcome, ParsedMessage, Stage, StageResult};
use crate::smtp::EnvelopeAddress;
use crate::smtp::reply::{self, Reply};
use crate::spool::{self, QueuedMessage, QueuedRecipient, RecipientStatus, Store};
use crate::tenants::Party;

/// A message as received: parsed when a policy reads it, else the bytes alone.
#[derive(Debug)]
pub(crate) enum Body {
    /// Parsed once, shared by every policy of the data stage.
    Parsed(Arc<ParsedMessage>),
    /// Not parsed: no policy reads it.
    Raw(Arc<[u8]>),
}

impl Body {
    /// The bytes as the client sent them.
    pub fn raw(&self) -> &[u8] {
        match self {
            Body::Parsed(message) => message.raw(),
            Body::Raw(bytes) => bytes,
        }
    }

    /// The parsed message, if it was parsed.
    pub fn parsed(&self) -> Option<&Arc<ParsedMessage>> {
        match self {
            Body::Parsed(message) => Some(message),
            Body::Raw(_) => None,
        }
    }
}

/// A judged message waiting for the spool.
#[derive(Debug)]
pub(super) struct PendingStore {
    judgement: Judgement,
    stages: Vec<StageResult>,
}

impl Conversation {
    /// `party`'s judge, having taken in the edge's connect and helo results, the party's own
    /// early results and its rcpt results of this transaction, in order; and the judgement,
    /// if one of them settled the transaction (a refusal before data). The results taken in
    /// are returned too when stages are recorded.
    fn judge(&self, party: Party) -> (Judge, Vec<StageResult>, Option<Judgement>) {
        let mut judge = Judge::new();
        let mut stages = Vec::new();
        let edge = self.state(Party::Edge);
        let edge_early = [&edge.connect, &edge.helo].into_iter().flatten().filter(|_| party != Party::Edge);
        let rcpts = self.transaction.rcpts.iter().filter(|(p, _)| *p == party).map(|(_, r)| r);
        for result in edge_early.chain(self.state(party).early()).chain(rcpts) {
            if self.record_stages {
                stages.push(result.clone());
            }
            if let Some(settled) = judge.absorb(result) {
                return (judge, stages, Some(settled));
            }
        }
        (judge, stages, None)
    }

    /// The data stage ran: judge the message, and store it when it is accepted.
    pub(super) fn judged(&mut self, message: Body, data: Option<StageResult>) {
        let party = self.transaction.party.unwrap_or(Party::Edge);
        let data = data.unwrap_or_else(|| StageResult::passed(Stage::Data));
        let (judge, mut stages, _) = self.judge(party);
        if self.record_stages {
            stages.push(data.clone());
        }
        let thresholds = self.snapshot.party(party).chain.settings.thresholds.clone();
        let judgement = judge.finish(&data, &thresholds);
        self.autolearn(party, &judgement, &message);
        match judgement.outcome {
            Outcome::Reject | Outcome::Tempfail => {
                let answer = judgement.reply.clone();
                self.conclude(party, judgement, answer, stages);
            }
            Outcome::Discard => {
                let answer = reply::queued(&self.id);
                self.conclude(party, judgement, answer, stages);
            }
            Outcome::Accept | Outcome::Quarantine => {
                let store =
                    if judgement.outcome == Outcome::Quarantine { Store::Quarantine } else { Store::Queue };
                let request = self.store_request(party, &judgement, message.raw(), store);
                self.pending_store = Some(PendingStore { judgement, stages });
                self.wait(Action::Store(Box::new(request)), Waiting::Store);
            }
        }
    }

    /// When the party autolearns and its other policies were sure of the message, hand it to
    /// its learning policies (a tempfail teaches nothing: the message will come again).
    fn autolearn(&mut self, party: Party, judgement: &Judgement, message: &Body) {
        let tenant = self.snapshot.party(party);
        let (Some(autolearn), Some(parsed)) = (tenant.autolearn, message.parsed()) else { return };
        if judgement.outcome == Outcome::Tempfail || judgement.stage != Stage::Data {
            return;
        }
        let learners: Vec<&str> = tenant.chain.learners().map(|p| p.name.as_str()).collect();
        if learners.is_empty() {
            return;
        }
        if let Some(lesson) = autolearn.lesson(&judgement.symbols, &learners) {
            let request = LearnRequest { tenant: tenant.clone(), message: parsed.clone(), lesson };
            self.actions.push_back(Action::Learn(Box::new(request)));
        }
    }

    /// The spool answered.
    pub(super) fn store_done(&mut self, outcome: Result<(), StoreFailure>) {
        let Some(PendingStore { judgement, stages }) = self.pending_store.take() else { return };
        let answer = match outcome {
            Ok(()) => reply::queued(&self.id),
            Err(StoreFailure::Full) => reply::INSUFFICIENT_STORAGE,
            Err(StoreFailure::Failed) => reply::LOCAL_ERROR,
        };
        let party = self.transaction.party.unwrap_or(Party::Edge);
        self.conclude(party, judgement, answer, stages);
    }

    /// Record the transaction, answer, and end it.
    fn conclude(&mut self, party: Party, judgement: Judgement, answer: Reply, stages: Vec<StageResult>) {
        let disconnect = judgement.disconnect;
        let from = self.core.mail_from().map(|m| m.address.clone()).unwrap_or_default();
        let record = self.record(party, from, judgement, answer.clone(), stages);
        self.actions.push_back(Action::Finished(Box::new(record)));
        self.send(&answer);
        self.end_transaction();
        if disconnect {
            self.close();
        }
    }

    /// The record of a transaction refused before data by `party`'s early stages (the claimed
    /// tenant's, at MAIL).
    pub(super) fn early_refusal_record(
        &self,
        party: Party,
        from: &EnvelopeAddress,
    ) -> Option<TransactionRecord> {
        let (_, stages, settled) = self.judge(party);
        let judgement = settled?;
        let answer = judgement.reply.clone();
        Some(self.record(party, from.address.clone(), judgement, answer, stages))
    }

    /// A transaction ends: record each party that refused its recipients and did not get
    /// the transaction, judged by its refusal (an early stage's, or its last rcpt refusal).
    pub(super) fn record_refusals(&mut self) {
        let parties: Vec<Party> = self
            .transaction
            .refused_by
            .iter()
            .copied()
            .filter(|p| Some(*p) != self.transaction.party)
            .collect();
        for party in parties {
            let (judge, stages, settled) = self.judge(party);
            let last =
                self.transaction.rcpts.iter().rev().find(|(p, r)| *p == party && super::parties::refuses(r));
            let Some(judgement) = settled.or_else(|| last.and_then(|(_, r)| judge.no_recipients(r))) else {
                continue;
            };
            let from = self.core.mail_from().map(|m| m.address.clone()).unwrap_or_default();
            let answer = judgement.reply.clone();
            let mut record = self.record(party, from, judgement, answer, stages);
            record.recipients.clear();
            self.actions.push_back(Action::Finished(Box::new(record)));
        }
    }

    fn record(
        &self,
        party: Party,
        from: String,
        judgement: Judgement,
        reply: Reply,
        stages: Vec<StageResult>,
    ) -> TransactionRecord {
        let owner = self.snapshot.party(party);
        let fates: Vec<RecipientFate> =
            self.transaction.fates.iter().filter(|(p, _)| *p == party).map(|(_, f)| f.clone()).collect();
        TransactionRecord {
            id: self.id.clone(),
            tenant: owner.name.clone(),
            generation: owner.generation,
            client: self.client.address,
            helo: self.core.helo().map(str::to_string),
            user: self.core.authenticated_user().map(str::to_string),
            from,
            recipients: self.core.recipients().iter().map(|r| r.address.address.clone()).collect(),
            fates,
            judgement,
            reply,
            stages,
            session_refused: false,
            sender_checks: self.transaction.sender.clone(),
        }
    }

    /// The spool request of an accepted message: the recipients after the policies' changes,
    /// the route, the message as it will be delivered.
    fn store_request(&self, party: Party, judgement: &Judgement, body: &[u8], store: Store) -> StoreRequest {
        let mut recipients: Vec<String> =
            self.core.recipients().iter().map(|r| r.address.address.clone()).collect();
        recipients.retain(|r| !judgement.removed_recipients.iter().any(|x| x.eq_ignore_ascii_case(r)));
        for added in &judgement.added_recipients {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(added)) {
                recipients.push(added.clone());
            }
        }
        let now = spool::now_secs();
        let envelope = QueuedMessage {
            id: self.id.clone(),
            tenant: self.snapshot.party(party).name.clone(),
            mail_from: self.core.mail_from().map(|m| m.address.clone()).unwrap_or_default(),
            recipients: recipients
                .into_iter()
                .map(|address| QueuedRecipient {
                    address,
                    status: RecipientStatus::Pending,
                    last_reply: None,
                    bounced: false,
                })
                .collect(),
            received_at: now,
            attempts: 0,
            next_attempt: now,
            route: judgement.route.clone(),
            quarantine_reason: judgement.quarantine_reason.clone(),
            inbound: !self.core.relay_allowed(),
            sender_authenticated: self.transaction.sender.as_ref().is_some_and(|c| c.sender_authenticated()),
        };
        let message = self.signed(party, self.final_message(party, judgement, body, now));
        StoreRequest { store, envelope, message: Arc::new(message) }
    }

    /// The message as it will be delivered: our Received field and the policies' header
    /// changes on top of what the client sent.
    fn final_message(&self, party: Party, judgement: &Judgement, body: &[u8], now: u64) -> Vec<u8> {
        let helo = self.core.helo().unwrap_or("unknown");
        let rdns = self.client.reverse_dns.as_deref().unwrap_or("unknown");
        let with = if self.core.extended() { "ESMTP" } else { "SMTP" };
        let for_clause = match self.core.recipients() {
            [only] => format!("\r\n\tfor <{}>", only.address.address),
            _ => String::new(),
        };
        // RFC 5321 §4.1.3: an IPv6 address literal carries the `IPv6:` tag.
        let ip = match self.client.address.ip() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
        };
        let mut out = format!(
            "Received: from {helo} ({rdns} [{ip}])\r\n\tby {} (Sluice) with {with} id {}{for_clause};\r\n\t{}\r\n",
            self.snapshot.config.server.hostname,
            self.id,
            rfc5322_date(now)
        )
        .into_bytes();
        // Room for the fields below and the message: the message is copied once, here.
        out.reserve(body.len() + 512);
        if let Some(field) = self.authentication_results(party) {
            out.extend_from_slice(field.as_bytes());
        }
        for (name, value) in &judgement.added_headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        append_without_headers(&mut out, body, &judgement.removed_headers);
        out
    }
}
