//! A scripted client: one message sent through a [`Conversation`] the way a mail client sends
//! it — EHLO, MAIL, each RCPT, DATA, and a new transaction for the recipients deferred with
//! `452 4.5.3` — with every stage run through real chains and nothing stored. `sluice policy
//! test` and the tests use it; the listener runs the same conversation over a socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{Action, Client, Conversation, Open, RecipientFate, Stages, TransactionRecord};
use crate::config::Config;
use std::time::Duration;

use crate::policy::{Chain, Judgement, Outcome, Stage, StageResult};
use crate::sender::{Checker, Sender, SenderChecks};
use crate::smtp::data::dot_stuffed;
use crate::smtp::reply::Reply;
use crate::tenants::{Snapshot, Tenant, TenantLimits};

/// The client side of a scripted session.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Client address.
    pub client_ip: IpAddr,
    /// HELO name.
    pub helo: String,
    /// MAIL FROM (empty for the null sender).
    pub from: String,
    /// RCPT TO addresses.
    pub to: Vec<String>,
    /// Treat the session as authenticated as this user (as if it had done SMTP AUTH).
    pub authenticated_user: Option<String>,
}

/// One transaction of a scripted session, as `sluice policy test` reports it.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Whose chain judged it (empty when the protocol refused before any chain).
    pub tenant: String,
    /// Each stage result that went into the judgement, in order.
    pub stages: Vec<StageResult>,
    /// Every recipient of the transaction, with its reply.
    pub recipients: Vec<RecipientFate>,
    /// The judgement.
    pub judgement: Judgement,
    /// What the client was told at the end.
    pub reply: Reply,
    /// What the checks of the sender found, when they ran.
    pub sender_checks: Option<Arc<SenderChecks>>,
    /// The `Authentication-Results` value the relay adds (or would have added, for a
    /// refusal) when the tenant adds the field.
    pub authentication_results: Option<String>,
}

impl From<TransactionRecord> for Simulation {
    fn from(record: TransactionRecord) -> Self {
        Self {
            tenant: record.tenant,
            stages: record.stages,
            recipients: record.fates,
            judgement: record.judgement,
            reply: record.reply,
            sender_checks: record.sender_checks,
            authentication_results: None,
        }
    }
}

/// A snapshot with one tenant, `chain`'s, that claims every client: every stage of the
/// session runs its chain as it comes, and any recipient is its (what `sluice policy test`
/// without `--config` runs on).
pub fn single_tenant(chain: Arc<Chain>) -> Arc<Snapshot> {
    const TEXT: &str = "[server]\nhostname = \"sluice.test\"\n[relay]\ntrusted_networks = []\n\
        [[tenant]]\nname = \"default\"\nnext_hop = \"maildir:/nonexistent\"\n\
        outbound_networks = [\"0.0.0.0/0\", \"::/0\"]\n";
    let mut config = match Config::parse(TEXT, "policy test", std::path::PathBuf::new()) {
        Ok(config) => config,
        Err(e) => unreachable!("the built-in configuration of a single-tenant session is valid: {e}"),
    };
    config.tenants[0].name = chain.tenant.clone();
    let tenant = |chain: Arc<Chain>| {
        Arc::new(Tenant {
            name: chain.tenant.clone(),
            chain,
            next_hop: None,
            domains: Vec::new(),
            generation: 1,
            loaded_at: std::time::SystemTime::now(),
            limits: TenantLimits {
                max_message_bytes: None,
                max_messages_per_minute: None,
                kv_quota: Default::default(),
            },
            recipients: Default::default(),
            authentication_results: true,
            dkim: None,
            autolearn: None,
            fingerprint: String::new(),
        })
    };
    let edge = tenant(Arc::new(Chain::new(crate::config::EDGE, Vec::new(), Default::default())));
    Arc::new(Snapshot::assemble(Arc::new(config), edge, vec![tenant(chain)], None, None))
}

/// Send `message` (as it travels over SMTP: CRLF line ends, not yet dot-stuffed) from
/// `envelope` through a session on `snapshot`; returns each transaction.
pub async fn run(snapshot: Arc<Snapshot>, envelope: &Envelope, message: &[u8]) -> Vec<Simulation> {
    run_checked(snapshot, envelope, message, None, true).await
}

/// [`run`], the senders checked by `checker` (every check `none` without one): those the
/// relay would check, or with `every_sender` those of clients that may relay too (the
/// single-tenant snapshot's client, which its tenant claims by network).
pub async fn run_checked(
    snapshot: Arc<Snapshot>,
    envelope: &Envelope,
    message: &[u8],
    checker: Option<&Checker>,
    every_sender: bool,
) -> Vec<Simulation> {
    let client = Client::new(SocketAddr::new(envelope.client_ip, 49152), "127.0.0.1:25");
    let mut conversation = Conversation::new(snapshot.clone(), Arc::new(Open), client).record_stages();
    if every_sender {
        conversation = conversation.check_every_sender();
    }
    let mut session = Session {
        checker,
        conversation,
        stages: Stages::new(snapshot.clone()),
        records: Vec::new(),
        sent: Vec::new(),
        closed: false,
    };
    let mut results = Vec::new();
    let banner = session.banner().await;
    if !banner.as_ref().is_some_and(Reply::is_positive) {
        return session.finish(results, banner, Stage::Connect);
    }
    let greeting = session.say(format!("EHLO {}\r\n", envelope.helo).as_bytes()).await;
    if !greeting.as_ref().is_some_and(Reply::is_positive) {
        return session.finish(results, greeting, Stage::Helo);
    }
    if let Some(user) = &envelope.authenticated_user {
        session.conversation.assume_authenticated(user);
    }
    let mut pending = envelope.to.clone();
    while !pending.is_empty() && !session.closed {
        let sender = session.say(format!("MAIL FROM:<{}>\r\n", envelope.from).as_bytes()).await;
        if !sender.as_ref().is_some_and(Reply::is_positive) {
            return session.finish(results, sender, Stage::Mail);
        }
        let (mut accepted, mut deferred, mut last) = (0, Vec::new(), None);
        for to in std::mem::take(&mut pending) {
            let answer = session.say(format!("RCPT TO:<{to}>\r\n").as_bytes()).await;
            match &answer {
                Some(r) if r.is_positive() => accepted += 1,
                Some(r) if r.code == 452 && r.enhanced.as_deref() == Some("4.5.3") => deferred.push(to),
                _ => {}
            }
            last = answer;
            if session.closed {
                break;
            }
        }
        let (answer, stage) = if accepted == 0 {
            let _ = session.say(b"RSET\r\n").await;
            (last, Stage::Rcpt)
        } else {
            match session.say(b"DATA\r\n").await {
                Some(go_ahead) if go_ahead.code == 354 => {
                    (session.say(&dot_stuffed(message)).await, Stage::Data)
                }
                refused => (refused, Stage::Data),
            }
        };
        session.transaction_ended(&mut results, answer, stage);
        if accepted == 0 && deferred.len() == envelope.to.len() {
            break;
        }
        pending = deferred;
    }
    if !session.closed {
        let _ = session.say(b"QUIT\r\n").await;
    }
    results.extend(session.records.drain(..).map(Simulation::from));
    let authserv_id = snapshot.config.server.authserv_id();
    for simulation in &mut results {
        let adds = snapshot.parties().any(|t| t.name == simulation.tenant && t.authentication_results);
        if let Some(checks) = simulation.sender_checks.as_ref().filter(|_| adds) {
            simulation.authentication_results = Some(checks.header_value(authserv_id));
        }
    }
    results
}

/// The conversation, its stages and what it said, driven like a client.
struct Session<'c> {
    checker: Option<&'c Checker>,
    conversation: Conversation,
    stages: Stages,
    records: Vec<TransactionRecord>,
    /// Reply bytes not read yet.
    sent: Vec<u8>,
    closed: bool,
}

impl Session<'_> {
    /// Carry out the conversation's actions until it waits for the client (what it sends
    /// gathers in `sent`).
    async fn pump(&mut self) {
        loop {
            match self.conversation.next_action() {
                Action::Send(bytes) => self.sent.extend_from_slice(&bytes),
                Action::Read { .. } => return,
                Action::Stage(request) => {
                    let result = self.stages.run(&request).await;
                    self.conversation.stage_done(result);
                }
                Action::Store(_) => self.conversation.stored(Ok(())),
                // No next hop is asked here: a recipient to verify is taken as existing.
                Action::VerifyRecipient { .. } => {
                    self.conversation.recipient_verified(crate::recipients::verify::Answer::Exists)
                }
                Action::CheckPassword { .. } => self.conversation.password_checked(true),
                Action::CheckSender(request) => {
                    let checks = match self.checker {
                        Some(checker) => {
                            let config = &self.conversation.snapshot().config;
                            let sender = Sender {
                                ip: request.ip,
                                helo: &request.helo,
                                mail_from: &request.mail_from,
                                hostname: &config.server.hostname,
                            };
                            let timeout = Duration::from_secs(config.relay.sender_checks_timeout_secs.max(1));
                            checker.check(&sender, &request.message, timeout).await
                        }
                        None => crate::sender::SenderChecks::default(),
                    };
                    self.conversation.sender_checked(checks);
                }
                Action::Pause(_) => {}
                Action::CheckRate { .. } => self.conversation.rate_checked(true),
                Action::CheckAuthLock { .. } => self.conversation.auth_lock_checked(false),
                // The script never asks for TLS.
                Action::StartTls => self.conversation.client_closed(),
                Action::Finished(record) => self.records.push(*record),
                // Offline runs teach no model.
                Action::Learn(_) => {}
                Action::Close => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// The first reply: the banner, or the refusal of the connection.
    async fn banner(&mut self) -> Option<Reply> {
        self.pump().await;
        last_reply(&std::mem::take(&mut self.sent))
    }

    /// Send `bytes` and wait for the answer (the last reply they got).
    async fn say(&mut self, bytes: &[u8]) -> Option<Reply> {
        self.sent.clear();
        let mut rest = bytes;
        while !rest.is_empty() && !self.closed {
            let used = self.conversation.receive(rest);
            rest = &rest[used..];
            self.pump().await;
        }
        last_reply(&std::mem::take(&mut self.sent))
    }

    /// A transaction ended with `reply` at `stage`: its records, or, when no chain judged it
    /// (the protocol refused it), a judgement made of that reply.
    fn transaction_ended(&mut self, results: &mut Vec<Simulation>, reply: Option<Reply>, stage: Stage) {
        if self.records.is_empty() {
            results.push(refused_by_protocol(reply, stage));
        }
        results.extend(self.records.drain(..).map(Simulation::from));
    }

    /// The session ended at `stage` with `reply`.
    fn finish(mut self, mut results: Vec<Simulation>, reply: Option<Reply>, stage: Stage) -> Vec<Simulation> {
        self.transaction_ended(&mut results, reply, stage);
        results
    }
}

/// A transaction the protocol refused (relaying denied, a bad address, a NUL byte in the
/// message) before or without any chain's judgement.
fn refused_by_protocol(reply: Option<Reply>, stage: Stage) -> Simulation {
    let reply = reply.unwrap_or(crate::smtp::reply::LOCAL_ERROR);
    let outcome = if reply.code >= 500 { Outcome::Reject } else { Outcome::Tempfail };
    Simulation {
        tenant: String::new(),
        stages: Vec::new(),
        recipients: Vec::new(),
        judgement: Judgement::refused(outcome, reply.clone(), stage),
        reply,
        sender_checks: None,
        authentication_results: None,
    }
}

/// The last complete reply in `bytes`.
fn last_reply(bytes: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(bytes);
    let last = text.split("\r\n").filter(|l| l.len() >= 3 && l.as_bytes().get(3) != Some(&b'-')).last()?;
    let code: u16 = last.get(..3)?.parse().ok()?;
    let rest = last.get(4..).unwrap_or("");
    match rest.split_once(' ') {
        Some((e, t)) if e.split('.').count() == 3 && e.starts_with(['2', '4', '5']) => {
            Some(Reply::new(code, e, t))
        }
        _ => Some(Reply::plain(code, rest.to_string())),
    }
}

/// The message as it travels over SMTP: every line end CRLF (a bare CR or LF made one, as
/// mail clients do), a final CRLF.
pub fn wire_form(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
