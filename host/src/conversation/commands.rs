//! One handler per command, in the order a session meets them, and what each does once the
//! stages it asked for passed (or one of them refused).

use std::collections::VecDeque;
use std::time::Duration;

use super::parties::Then;
use super::recipients::PendingRcpt;
use super::{Action, Conversation, Input, RecipientFate, Waiting};
use crate::mail::OwnedHeaders;
use crate::policy::Stage;
use crate::recipients::Rule;
use crate::smtp::EnvelopeAddress;
use crate::smtp::command;
use crate::smtp::data::DataDecoder;
use crate::smtp::line::Line;
use crate::smtp::reply::{self, Reply};
use crate::smtp::sasl;
use crate::smtp::session::{Destination, Step};
use crate::tenants::Party;

/// What the next line of an AUTH exchange answers.
#[derive(Debug)]
pub(super) enum Auth {
    /// PLAIN's one response.
    Plain,
    /// LOGIN's user name.
    LoginUser,
    /// LOGIN's password, after the user name (still base64).
    LoginPassword { user: String },
}

impl Conversation {
    /// The session opens: the connect stages of the edge and of the tenant that claims the
    /// client, then the banner.
    pub(super) fn start(&mut self) {
        let steps = self.live_parties().into_iter().map(|p| (p, Stage::Connect)).collect();
        self.run(steps, Then::Banner);
    }

    /// A command line (or what was wrong with it).
    pub(super) fn command_line(&mut self, line: Line) {
        let step = match line {
            Line::TooLong => self.core.error(reply::LINE_TOO_LONG),
            Line::Runaway => Step::Close(reply::RUNAWAY_LINE),
            Line::BareLineEnding => self.core.error(reply::BARE_LINE_ENDING_IN_COMMAND),
            Line::Complete(bytes) => match command::parse(&bytes) {
                Ok(cmd) => self.core.command(cmd, self.snapshot.domains.as_ref()),
                Err(e) => self.core.bad_command(&e),
            },
        };
        self.step(step);
    }

    /// Carry out what the protocol state said to do.
    pub(super) fn step(&mut self, step: Step) {
        match step {
            Step::Reply(r) => self.send(&r),
            Step::Close(r) => {
                self.send(&r);
                self.close();
            }
            Step::Reset => {
                self.end_transaction();
                self.send(&reply::OK);
            }
            Step::Helo { name, extended } => self.helo(name, extended),
            Step::Mail(from) => self.mail(from),
            Step::Rcpt(to, destination) => self.rcpt(to, destination),
            Step::Data => {
                self.send(&reply::START_MAIL_INPUT);
                self.input = Input::Data(DataDecoder::new(self.message_limit()));
            }
            Step::Chunk { size, last } => self.chunk(size, last),
            Step::SkipChunk { size, reply } => {
                self.input =
                    Input::Chunk { size, remaining: size, keep: false, refusal: Some(reply), last: false };
                if size == 0 {
                    self.chunk_received();
                }
            }
            Step::StartTls => {
                self.send(&reply::READY_FOR_TLS);
                // Whatever the client sent after STARTTLS, in plaintext, is dropped: it must
                // never be read as if it came over TLS (CVE-2011-0411).
                self.drop_input = true;
                self.wait(Action::StartTls, Waiting::Tls);
            }
            Step::Auth { mechanism, initial } => self.auth(&mechanism, initial),
        }
    }

    /// Count a protocol error and send its reply (or the closing one).
    fn error(&mut self, r: Reply) {
        let step = self.core.error(r);
        self.step(step);
    }

    fn helo(&mut self, name: String, extended: bool) {
        self.end_transaction();
        // A new greeting replaces what the previous one told the policies.
        for party in &mut self.parties {
            party.greeted_again();
        }
        // The live parties' helo stages; a tenant that claimed the session only after connect
        // (by an authenticated user) has its connect stage run first.
        let mut steps = VecDeque::new();
        for party in self.live_parties() {
            if self.state(party).connect.is_none() {
                steps.push_back((party, Stage::Connect));
            }
            steps.push_back((party, Stage::Helo));
        }
        self.run(steps, Then::Greet { name, extended });
    }

    fn mail(&mut self, from: EnvelopeAddress) {
        let declared = from.declared_size();
        self.end_transaction();
        if let Some(refusal) = self.gates.storage_refusal(declared) {
            self.send(&refusal);
            return;
        }
        let Some(tenant) = self.claimed else {
            // Nobody's mail stage runs yet: each party's runs at its first recipient.
            self.core.mail_accepted(from);
            self.send(&reply::SENDER_OK);
            return;
        };
        let party = Party::Tenant(tenant);
        if self.state(party).refusal().is_some() {
            self.mail_refused(party, &from);
            return;
        }
        let steps = self.catch_up(party, Stage::Mail);
        self.run(steps, Then::Mail(from));
    }

    fn rcpt(&mut self, to: EnvelopeAddress, destination: Destination) {
        let party = match destination {
            Destination::Local(tenant) => Party::Tenant(tenant),
            Destination::Relay => self.claimed.map_or(Party::Edge, Party::Tenant),
        };
        // One party per transaction: its chain judges the message and its copy is queued with
        // its changes. Recipients of another are deferred (RFC 5321 §4.5.3.1.10): the client
        // sends them in a new transaction.
        if self.transaction.party.is_some_and(|current| current != party) {
            self.send(&reply::ANOTHER_TRANSACTION);
            return;
        }
        let owner = self.snapshot.party(party).clone();
        if let (Some(max), Some(declared)) = (owner.limits.max_message_bytes, self.core.declared_size())
            && declared > max
        {
            // RFC 1870 §6.1: the declared size is over this recipient's limit.
            self.send(&reply::MESSAGE_TOO_BIG_FOR_RECIPIENT);
            return;
        }
        let first = self.transaction.party.is_none();
        if first && let Some(per_minute) = owner.limits.max_messages_per_minute {
            if self.gates.shared_limits() {
                // Counted across the fleet: the store is asked, the recipient waits.
                self.rating = Some((to, destination, party));
                let action = Action::CheckRate { tenant: owner.name.clone(), per_minute };
                self.wait(action, Waiting::Rate);
                return;
            }
            if !self.gates.message_rate(&owner.name, per_minute, false) {
                self.rate_exceeded(&owner.name);
                return;
            }
        }
        self.rcpt_admitted(to, destination, party, first);
    }

    fn rate_exceeded(&mut self, tenant: &str) {
        tracing::info!(
            tenant = %tenant,
            client = %self.peer(),
            "recipient deferred: the tenant's message rate is used up for this minute"
        );
        self.send(&reply::RATE_EXCEEDED);
    }

    /// The fleet's store answered about the first recipient's tenant's message rate.
    pub(super) fn rate_done(&mut self, ok: bool) {
        let Some((to, destination, party)) = self.rating.take() else { return };
        if ok {
            self.rcpt_admitted(to, destination, party, true);
        } else {
            let tenant = self.snapshot.party(party).name.clone();
            self.rate_exceeded(&tenant);
        }
    }

    /// A recipient past the transaction's and the tenant's limits: refused by a stage that
    /// already refused, checked for existence, then judged by the rcpt stage.
    fn rcpt_admitted(&mut self, to: EnvelopeAddress, destination: Destination, party: Party, first: bool) {
        let owner = self.snapshot.party(party).clone();
        if let Some(refusal) = self.state(party).refusal() {
            let (answer, disconnect) = (verdict_reply(&refusal.verdict), refusal.disconnect);
            self.recipient_refused(party, &to, answer, disconnect);
            return;
        }
        // Does the recipient exist? Asked before any policy runs for it.
        let pending = PendingRcpt { to, destination, party, first };
        match (&pending.destination, &owner.recipients) {
            (Destination::Local(_), Rule::List(list)) if !list.contains(&pending.to.address) => {
                self.recipient_unknown(&pending, "not in the recipients file");
            }
            (Destination::Local(tenant), Rule::Verify) => {
                let action = Action::VerifyRecipient { tenant: *tenant, address: pending.to.address.clone() };
                self.verifying = Some(pending);
                self.wait(action, Waiting::Recipient);
            }
            _ => self.rcpt_exists(pending),
        }
    }

    fn recipient_refused(&mut self, party: Party, to: &EnvelopeAddress, answer: Reply, disconnect: bool) {
        if !self.transaction.refused_by.contains(&party) {
            self.transaction.refused_by.push(party);
        }
        let fate = RecipientFate { address: to.address.clone(), reply: answer.clone() };
        self.transaction.fates.push((party, fate));
        self.send(&answer);
        if disconnect {
            self.close();
        }
    }

    fn chunk(&mut self, size: u64, last: bool) {
        let limit = self.message_limit() as u64;
        // The size is declared up front: a chunk that would go over the limit is read and
        // dropped, never kept.
        let transaction = &mut self.transaction;
        if transaction.chunks_too_big || (transaction.chunks.len() as u64).saturating_add(size) > limit {
            transaction.chunks_too_big = true;
            transaction.chunks = Vec::new();
        }
        let keep = !transaction.chunks_too_big;
        self.input = Input::Chunk { size, remaining: size, keep, refusal: None, last };
        if size == 0 {
            self.chunk_received();
        }
    }

    /// A BDAT chunk is in.
    pub(super) fn chunk_received(&mut self) {
        let Input::Chunk { size, refusal, last, .. } = std::mem::replace(&mut self.input, Input::Commands)
        else {
            return;
        };
        if let Some(refusal) = refusal {
            self.send(&refusal);
        } else if !last {
            self.send(&reply::chunk_received(size));
        } else if self.transaction.chunks_too_big {
            self.end_transaction();
            self.send(&reply::MESSAGE_TOO_BIG);
        } else {
            let body = std::mem::take(&mut self.transaction.chunks);
            if has_bare_line_ending(&body) {
                self.end_transaction();
                self.send(&reply::BARE_LINE_ENDING_IN_CHUNKS);
            } else {
                self.message(body);
            }
        }
    }

    /// The DATA section is in.
    pub(super) fn data_received(&mut self, decoder: DataDecoder) {
        if decoder.too_big() {
            self.end_transaction();
            self.send(&reply::MESSAGE_TOO_BIG);
            return;
        }
        self.message(decoder.into_body());
    }

    /// A complete message (under DATA or BDAT): refused if it holds a NUL byte, else judged by
    /// its party's data stage. It is parsed only when a policy will read it.
    fn message(&mut self, body: Vec<u8>) {
        if memchr::memchr(0, &body).is_some() {
            self.end_transaction();
            self.send(&reply::NUL_IN_DATA);
            return;
        }
        // The fields the relay owns: a loop is refused, and a client's own spam verdicts and
        // authentication results are dropped before any policy reads the message.
        let server = &self.snapshot.config.server;
        let owned = OwnedHeaders::scan(&body, server.authserv_id());
        if owned.received > server.max_received_headers {
            tracing::info!(
                id = %self.id,
                client = %self.peer(),
                received = owned.received,
                "message refused: too many Received headers (mail loop)"
            );
            let party = self.transaction.party.unwrap_or(Party::Edge);
            self.gates.event(&self.snapshot.party(party).name, "mail_loop");
            self.end_transaction();
            self.send(&reply::MAIL_LOOP);
            return;
        }
        if !owned.forged.is_empty() {
            tracing::debug!(id = %self.id, fields = owned.forged.len(), "client-supplied X-Spam-*/Authentication-Results fields removed");
        }
        self.message_ready(owned.strip(body));
    }

    /// Every stage of a plan passed.
    pub(super) fn plan_passed(&mut self, then: Then, disconnect: bool) {
        match then {
            Then::Banner => {
                let banner = self.core.banner();
                self.send(&banner);
            }
            Then::Greet { name, extended } => {
                self.core.greeted(name.clone(), extended);
                self.helo_user = self.core.authenticated_user().map(str::to_string);
                let greeting = self.core.greeting_reply(&name);
                self.send_bytes(greeting);
            }
            Then::Mail(from) => {
                self.core.mail_accepted(from);
                self.send(&reply::SENDER_OK);
            }
            Then::Rcpt { to, destination, party, first } => {
                let owner = self.snapshot.party(party).clone();
                if first && let Some(per_minute) = owner.limits.max_messages_per_minute {
                    self.gates.message_rate(&owner.name, per_minute, true);
                }
                self.transaction.party = Some(party);
                let fate = RecipientFate { address: to.address.clone(), reply: reply::RECIPIENT_OK };
                self.transaction.fates.push((party, fate));
                self.core.rcpt_accepted(to, destination);
                self.send(&reply::RECIPIENT_OK);
            }
            Then::Judge { message, data } => self.judged(message, data),
        }
        if disconnect {
            self.close();
        }
    }

    /// A stage of a plan refused (reject or tempfail) at `stage` for `party`.
    pub(super) fn plan_refused(&mut self, then: Then, party: Party, stage: Stage) {
        let refusal = match stage {
            Stage::Rcpt => self.transaction.rcpts.last().map(|(_, r)| r),
            _ => self.state(party).refusal(),
        };
        let Some(refusal) = refusal else { return };
        let (answer, disconnect) = (verdict_reply(&refusal.verdict), refusal.disconnect);
        if let (Then::Rcpt { to, .. }, Stage::Rcpt) = (&then, stage) {
            // Each recipient a policy refuses at rcpt is logged here, once; a transaction
            // that ends with none accepted is summed up at debug level (see `Relay::record`).
            tracing::info!(
                id = %self.id,
                tenant = %self.snapshot.party(party).name,
                client = %self.peer(),
                recipient = %to.address,
                stage = %stage,
                policy = refusal.decided_by.as_deref().unwrap_or(""),
                reply = %answer,
                "recipient refused"
            );
        }
        match then {
            Then::Banner => {
                self.session_refused(party);
                self.send(&answer);
                self.close();
            }
            Then::Greet { .. } => {
                self.session_refused(party);
                self.send(&answer);
                if disconnect {
                    self.close();
                }
            }
            Then::Mail(from) => self.mail_refused(party, &from),
            Then::Rcpt { to, .. } => self.recipient_refused(party, &to, answer, disconnect),
            Then::Judge { .. } => {}
        }
    }

    /// The edge or the claimed tenant refused the connection or the greeting: recorded.
    fn session_refused(&mut self, party: Party) {
        let nobody = EnvelopeAddress::plain("");
        if let Some(mut record) = self.early_refusal_record(party, &nobody) {
            record.session_refused = true;
            self.actions.push_back(Action::Finished(Box::new(record)));
        }
    }

    /// The claimed tenant refused the sender (at mail, or at a connect or helo stage caught
    /// up before it): the transaction is refused and recorded.
    fn mail_refused(&mut self, party: Party, from: &EnvelopeAddress) {
        let Some(refusal) = self.state(party).refusal() else { return };
        let disconnect = refusal.disconnect;
        if let Some(record) = self.early_refusal_record(party, from) {
            let answer = record.reply.clone();
            self.actions.push_back(Action::Finished(Box::new(record)));
            self.send(&answer);
        }
        if disconnect {
            self.close();
        }
    }

    fn auth(&mut self, mechanism: &str, initial: Option<String>) {
        let relay = &self.snapshot.config.relay;
        let (limit, window) = (relay.auth_failures_per_ip, Duration::from_secs(relay.auth_lockout_secs));
        if self.gates.shared_limits() {
            // Failures are counted across the fleet: the store is asked first.
            self.auth_asked = Some((mechanism.to_string(), initial));
            let action = Action::CheckAuthLock { ip: self.peer().ip(), limit, window };
            self.wait(action, Waiting::AuthLock);
            return;
        }
        let locked = self.gates.auth_locked(self.peer().ip(), limit, window);
        self.auth_lock_done_with(locked, mechanism, initial);
    }

    /// The fleet's store answered whether the client is locked out of AUTH.
    pub(super) fn auth_lock_done(&mut self, locked: bool) {
        let Some((mechanism, initial)) = self.auth_asked.take() else { return };
        self.auth_lock_done_with(locked, &mechanism, initial);
    }

    fn auth_lock_done_with(&mut self, locked: bool, mechanism: &str, initial: Option<String>) {
        if locked {
            tracing::warn!(client = %self.peer(), "AUTH refused: too many failures from this address");
            self.send(&reply::AUTH_LOCKED_OUT);
            self.close();
            return;
        }
        let first = if mechanism == "PLAIN" { Auth::Plain } else { Auth::LoginUser };
        match initial {
            Some(response) if response == "=" => self.auth_answer(first, ""),
            Some(response) => self.auth_answer(first, &response),
            None => self.challenge(first),
        }
    }

    /// Ask for the next response of the exchange.
    fn challenge(&mut self, next: Auth) {
        let prompt = match next {
            Auth::Plain => "",
            Auth::LoginUser => sasl::LOGIN_USER_PROMPT,
            Auth::LoginPassword { .. } => sasl::LOGIN_PASSWORD_PROMPT,
        };
        self.send_bytes(format!("334 {prompt}\r\n").into_bytes());
        self.input = Input::AuthResponse(next);
    }

    /// A line answering an AUTH challenge.
    pub(super) fn auth_response(&mut self, line: Line) {
        let Input::AuthResponse(state) = std::mem::replace(&mut self.input, Input::Commands) else { return };
        match line {
            Line::Complete(bytes) => self.auth_answer(state, &String::from_utf8_lossy(&bytes)),
            Line::Runaway => self.close(),
            Line::TooLong | Line::BareLineEnding => self.auth_answer(state, ""),
        }
    }

    fn auth_answer(&mut self, state: Auth, response: &str) {
        if response.trim() == "*" {
            self.error(reply::AUTH_CANCELLED);
            return;
        }
        let credentials = match state {
            Auth::Plain => sasl::decode_plain(response),
            Auth::LoginUser => return self.challenge(Auth::LoginPassword { user: response.to_string() }),
            Auth::LoginPassword { user } => sasl::decode_line(&user).zip(sasl::decode_line(response)),
        };
        let Some((user, password)) = credentials else {
            self.error(reply::AUTH_UNDECODABLE);
            return;
        };
        self.auth_user = Some(user.clone());
        self.wait(Action::CheckPassword { user, password }, Waiting::Password);
    }

    /// The password check is done.
    pub(super) fn auth_done(&mut self, ok: bool) {
        let user = self.auth_user.take().unwrap_or_default();
        if ok {
            self.authenticated(user.clone());
            tracing::info!(tenant = %self.session_party_name(), client = %self.peer(), user = %user, "authenticated");
            self.send(&reply::AUTHENTICATED);
        } else {
            tracing::info!(tenant = %self.session_party_name(), client = %self.peer(), user = %user, "authentication failed");
            let window = Duration::from_secs(self.snapshot.config.relay.auth_lockout_secs);
            self.gates.auth_failed(self.peer().ip(), window);
            self.actions.push_back(Action::Pause(super::AUTH_FAILURE_PAUSE));
            self.error(reply::AUTH_FAILED);
        }
    }
}

/// The reply of a refusing verdict.
pub(super) fn verdict_reply(verdict: &crate::policy::Verdict) -> Reply {
    match verdict {
        crate::policy::Verdict::Reject(r) | crate::policy::Verdict::Tempfail(r) => r.clone(),
        _ => reply::POLICY_FAILURE,
    }
}

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_line_ending(message: &[u8]) -> bool {
    message.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || message[i - 1] != b'\r',
        _ => false,
    })
}
