//! The SMTP conversation of one session, without I/O: the one place the session's state lives
//! and every rule of the conversation is applied. It takes the client's bytes and the results
//! of the work it asked for, and says what to do next ([`Action`]): a reply to send, a stage to
//! run for the edge or a tenant, a message to store, a password to check, TLS to start, the
//! connection to close. The listener ([`crate::listener`]) drives it over a socket;
//! `sluice policy test` drives it with a scripted client ([`script`]); the fuzz targets drive it
//! with any bytes. The two cannot drift.
//!
//! Whose chains run when (the parties of a session, [`Party`]):
//! - the **edge** runs at connect and helo for every client, before any tenant is known; a
//!   refusal there ends the session (connect) or the greeting (helo) for everyone;
//! - a client a tenant **claims** (`outbound_networks`, or `outbound_users` after AUTH) runs that
//!   tenant's chain as the session goes: connect, helo and mail refuse the session's commands;
//! - every other tenant's chain runs **all of its stages for its own recipients**: at its first
//!   recipient in a session, its connect, helo and mail hooks run with the context they would
//!   have had, then its rcpt hook, as Postfix does with `smtpd_delay_reject`. A refusal from
//!   one of them refuses that tenant's recipients only;
//! - mail a trusted client relays out that no tenant claims is the edge's: its mail, rcpt and
//!   data hooks judge it.
//!
//! One party per transaction: a recipient of another party gets `452 4.5.3` and comes back in
//! a new transaction. The party's judge ([`crate::policy::Judge`]) takes in the edge's connect
//! and helo results, the party's own early results, its rcpt results and the data stage.
//!
//! Inside: `actions` (what the conversation asks for and tells), `commands` (one handler per
//! command), `parties` (what each party has seen, the stages to run, the contexts), `finish`
//! (the judgement, the message as stored, the record), [`stages`] (running the stages asked
//! for, for the listener and the script), [`script`] (the scripted client).

mod actions;
mod commands;
mod finish;
mod parties;
mod recipients;
pub mod script;
mod sender;
pub mod stages;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{StageResult, TlsInfo};
use crate::smtp::data::{DataDecoder, DataEvent};
use crate::smtp::line::LineReader;
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::{Session, SessionLimits};
use crate::tenants::{Party, Snapshot};
use parties::{PartyState, Plan};

pub use actions::{
    Action, Client, Gates, LearnRequest, Open, RecipientFate, StageData, StageRequest, StoreFailure,
    StoreRequest, TransactionRecord,
};
pub use sender::SenderRequest;
pub use stages::Stages;

/// RFC 4954 §4: an AUTH response line may be up to 12288 octets.
const AUTH_LINE_BYTES: usize = 12_288;

/// The pause after a failed AUTH: guessing passwords is slow.
pub const AUTH_FAILURE_PAUSE: Duration = Duration::from_millis(500);

/// What the conversation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Stage,
    Store,
    Password,
    Tls,
    Recipient,
    Sender,
    Rate,
    AuthLock,
}

/// Where the client's next bytes go.
#[derive(Debug)]
enum Input {
    /// Command lines.
    Commands,
    /// The answer to an AUTH challenge.
    AuthResponse(commands::Auth),
    /// A DATA section.
    Data(DataDecoder),
    /// A BDAT chunk of `size` bytes: the bytes still to come; kept or dropped; then the
    /// refusal to send, if the chunk was refused, or whether it was the last.
    Chunk { size: u64, remaining: u64, keep: bool, refusal: Option<Reply>, last: bool },
}

/// The current transaction, beyond what the protocol state keeps.
#[derive(Debug, Default)]
struct TransactionState {
    /// Whose transaction it is: the party of the first accepted recipient.
    party: Option<Party>,
    /// Every rcpt stage result, with its party.
    rcpts: Vec<(Party, StageResult)>,
    /// The parties whose policies refused recipients, in order.
    refused_by: Vec<Party>,
    /// Every RCPT that reached a party, with its party and reply.
    fates: Vec<(Party, RecipientFate)>,
    /// The message so far, under BDAT.
    chunks: Vec<u8>,
    /// A BDAT chunk went over the size limit.
    chunks_too_big: bool,
    /// The message waiting for its sender's checks.
    unchecked: Option<Arc<[u8]>>,
    /// What the checks of the message's sender found.
    sender: Option<Arc<crate::sender::SenderChecks>>,
}

/// One SMTP session's conversation (see the module documentation).
pub struct Conversation {
    snapshot: Arc<Snapshot>,
    gates: Arc<dyn Gates>,
    core: Session,
    client: Client,
    tls: Option<TlsInfo>,
    lines: LineReader,
    input: Input,
    /// The tenant that claims the session (by network, then by authenticated user).
    claimed: Option<usize>,
    /// The authenticated user when the client last greeted (the helo context of replays).
    helo_user: Option<String>,
    /// Queue id of the current transaction (and the id policies see).
    id: String,
    /// Index 0: the edge; 1..: the tenants.
    parties: Vec<PartyState>,
    transaction: TransactionState,
    plan: Option<Plan>,
    waiting: Option<Waiting>,
    /// The user whose password is being checked.
    auth_user: Option<String>,
    /// The judged message waiting for the spool.
    pending_store: Option<finish::PendingStore>,
    actions: VecDeque<Action>,
    record_stages: bool,
    /// Ask for every stage, hooked or not (tests and fuzzing answer them).
    every_stage: bool,
    closed: bool,
    /// The bytes the client sent with the line being handled are dropped (STARTTLS).
    drop_input: bool,
    /// The connect stages were asked for (at the first action).
    started: bool,
    /// The client's first bytes were looked at (for a PROXY header it may not send).
    opened: bool,
    /// The recipient whose existence the next hop is being asked about.
    verifying: Option<recipients::PendingRcpt>,
    /// The AUTH command (mechanism, initial response) waiting for the fleet's lockout check.
    auth_asked: Option<(String, Option<String>)>,
    /// The first recipient whose tenant's fleet-wide message rate is being asked about.
    rating: Option<(crate::smtp::EnvelopeAddress, crate::smtp::session::Destination, Party)>,
    /// Check the senders of clients that may relay too.
    check_every_sender: bool,
}

/// Whether a session's first bytes are a PROXY protocol header (v1, or v2's signature).
fn proxy_header(input: &[u8]) -> bool {
    use crate::smtp::proxy::{V1_PREFIX, V2_SIGNATURE};
    input.starts_with(V1_PREFIX)
        || (input.len() >= 5 && V2_SIGNATURE.starts_with(&input[..input.len().min(12)]))
}

impl Conversation {
    /// A conversation with `client` on `snapshot`. The first actions run the connect stages
    /// and send the banner.
    pub fn new(snapshot: Arc<Snapshot>, gates: Arc<dyn Gates>, client: Client) -> Self {
        let server = &snapshot.config.server;
        let ip = client.address.ip();
        let mut core = Session::new(
            SessionLimits {
                hostname: server.hostname.clone(),
                max_message_bytes: server.max_message_bytes,
                max_recipients: server.max_recipients,
                max_errors: server.max_errors,
            },
            !client.anonymous && snapshot.is_trusted(ip),
        );
        if snapshot.tls.is_some() {
            core.offer_tls();
        }
        if snapshot.users.is_some() {
            core.offer_auth(
                snapshot.config.relay.allow_plaintext_auth_on_loopback
                    && ip.is_loopback()
                    && !client.anonymous,
            );
        }
        let claimed = if client.anonymous { None } else { snapshot.tenant_of_client(ip) };
        let parties = (0..=snapshot.tenants.len()).map(|_| PartyState::default()).collect();
        Self {
            snapshot,
            gates,
            core,
            client,
            tls: None,
            lines: LineReader::default(),
            input: Input::Commands,
            claimed,
            helo_user: None,
            id: crate::spool::new_id(),
            parties,
            transaction: TransactionState::default(),
            plan: None,
            waiting: None,
            auth_user: None,
            pending_store: None,
            actions: VecDeque::new(),
            record_stages: false,
            every_stage: false,
            closed: false,
            drop_input: false,
            started: false,
            opened: false,
            verifying: None,
            rating: None,
            auth_asked: None,
            check_every_sender: false,
        }
    }

    /// Keep every stage result in the transaction records (`sluice policy test` shows them).
    pub fn record_stages(mut self) -> Self {
        self.record_stages = true;
        self
    }

    /// Ask for every stage of every party, even those no policy hooks (which the relay passes
    /// without asking): for tests and fuzzing, whose drivers answer them with any result.
    pub fn ask_every_stage(mut self) -> Self {
        self.every_stage = true;
        self
    }

    /// The snapshot the session runs on.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The name of the tenant that claims the session, or `edge`.
    pub fn session_party_name(&self) -> &str {
        &self.snapshot.party(self.claimed.map_or(Party::Edge, Party::Tenant)).name
    }

    /// The next thing to do.
    pub fn next_action(&mut self) -> Action {
        if !self.started {
            self.started = true;
            self.start();
        }
        if let Some(action) = self.actions.pop_front() {
            return action;
        }
        if self.closed {
            return Action::Close;
        }
        if let Some(waiting) = self.waiting {
            // The driver asked again without answering: nothing sensible can follow.
            tracing::error!(?waiting, "the conversation was driven without an answer; closing");
            self.closed = true;
            return Action::Close;
        }
        let server = &self.snapshot.config.server;
        match &self.input {
            Input::Commands | Input::AuthResponse(_) => {
                Action::Read { timeout: Duration::from_secs(server.command_timeout_secs), bulk: false }
            }
            Input::Data(_) | Input::Chunk { .. } => {
                Action::Read { timeout: Duration::from_secs(server.data_timeout_secs), bulk: true }
            }
        }
    }

    /// Bytes from the client, after [`Action::Read`]: returns how many were used (the rest is
    /// for the next call, once the actions this produced are done).
    pub fn receive(&mut self, input: &[u8]) -> usize {
        if self.closed || self.waiting.is_some() || !self.actions.is_empty() {
            return if self.closed { input.len() } else { 0 };
        }
        if !std::mem::replace(&mut self.opened, true) && proxy_header(input) {
            // Only clients in `server.proxy_trusted_networks` may say whom they stand for.
            tracing::warn!(client = %self.peer(), "PROXY header from an address not in server.proxy_trusted_networks");
            self.gates.event(crate::config::EDGE, "proxy_header_refused");
            self.send(&reply::PROXY_NOT_TRUSTED);
            self.close();
            return input.len();
        }
        let used = match &mut self.input {
            Input::Commands => {
                let max = self.snapshot.config.server.max_line_bytes;
                let (used, line) = self.lines.feed(input, max);
                if let Some(line) = line {
                    self.command_line(line);
                }
                used
            }
            Input::AuthResponse(_) => {
                let max = self.snapshot.config.server.max_line_bytes.max(AUTH_LINE_BYTES);
                let (used, line) = self.lines.feed(input, max);
                if let Some(line) = line {
                    self.auth_response(line);
                }
                used
            }
            Input::Data(decoder) => match decoder.feed(input) {
                DataEvent::More => input.len(),
                DataEvent::End(used) => {
                    let Input::Data(decoder) = std::mem::replace(&mut self.input, Input::Commands) else {
                        return used;
                    };
                    self.data_received(decoder);
                    used
                }
                DataEvent::BareLineEnding => {
                    self.input = Input::Commands;
                    self.end_transaction();
                    self.send(&reply::BARE_LINE_ENDING_IN_DATA);
                    self.close();
                    input.len()
                }
            },
            Input::Chunk { remaining, keep, .. } => {
                let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(input.len());
                if *keep {
                    self.transaction.chunks.extend_from_slice(&input[..take]);
                }
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.chunk_received();
                }
                take
            }
        };
        if std::mem::take(&mut self.drop_input) { input.len() } else { used }
    }

    /// The client sent nothing within the timeout of the last [`Action::Read`].
    pub fn timed_out(&mut self) {
        if matches!(self.input, Input::Commands) {
            self.send(&reply::COMMAND_TIMEOUT);
        }
        self.close();
    }

    /// Whether the session is between commands (not in a message's data, not in the middle
    /// of an AUTH exchange).
    pub fn awaits_command(&self) -> bool {
        matches!(self.input, Input::Commands)
    }

    /// The relay is shutting down and its grace period is over: a session between commands
    /// gets `421 4.3.2` and is closed (one in a message's data is left to finish).
    pub fn shutting_down(&mut self) {
        if self.awaits_command() {
            self.send(&reply::SHUTTING_DOWN);
            self.close();
        }
    }

    /// The client closed the connection (or it broke).
    pub fn client_closed(&mut self) {
        self.close();
    }

    /// The result of the stage asked for.
    pub fn stage_done(&mut self, result: StageResult) {
        if self.waiting.take() != Some(Waiting::Stage) {
            return;
        }
        self.step_done(result);
    }

    /// Whether the message asked to be stored is on disk.
    pub fn stored(&mut self, outcome: Result<(), StoreFailure>) {
        if self.waiting.take() != Some(Waiting::Store) {
            return;
        }
        self.store_done(outcome);
    }

    /// What the next hop said of the recipient asked about.
    pub fn recipient_verified(&mut self, answer: crate::recipients::verify::Answer) {
        if self.waiting.take() != Some(Waiting::Recipient) {
            return;
        }
        self.verify_done(answer);
    }

    /// Whether the tenant's fleet-wide message rate has room for one more transaction.
    pub fn rate_checked(&mut self, ok: bool) {
        if self.waiting.take() != Some(Waiting::Rate) {
            return;
        }
        self.rate_done(ok);
    }

    /// Whether the client's address is locked out of AUTH across the fleet.
    pub fn auth_lock_checked(&mut self, locked: bool) {
        if self.waiting.take() != Some(Waiting::AuthLock) {
            return;
        }
        self.auth_lock_done(locked);
    }

    /// Whether the password asked about is the user's.
    pub fn password_checked(&mut self, ok: bool) {
        if self.waiting.take() != Some(Waiting::Password) {
            return;
        }
        self.auth_done(ok);
    }

    /// TLS is up: the session starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self, tls: TlsInfo) {
        if self.waiting.take() != Some(Waiting::Tls) {
            return;
        }
        self.tls = Some(tls);
        self.end_transaction();
        self.core.tls_started();
        self.lines.reset();
        for party in &mut self.parties {
            party.greeted_again();
        }
    }

    /// A session an MTA in front holds with the client (the milter and policy-delegation
    /// servers): the MTA decided where mail may go, so recipients of no tenant are the
    /// edge's and never refused as relaying.
    pub fn behind_mta(mut self) -> Self {
        self.core.mta_decides_relaying();
        self
    }

    /// The client's TLS with the MTA in front, as it reported it (before the greeting).
    pub fn tls_in_front(&mut self, tls: TlsInfo) {
        self.core.tls_in_front();
        self.tls = Some(tls);
    }

    /// What `sluice policy test --auth-user` asks for: the session as if `user` had
    /// authenticated (the same state a successful AUTH leaves).
    pub fn assume_authenticated(&mut self, user: &str) {
        self.authenticated(user.to_string());
    }

    fn send(&mut self, reply: &Reply) {
        self.actions.push_back(Action::Send(reply.render()));
    }

    fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.actions.push_back(Action::Send(bytes));
    }

    fn wait(&mut self, action: Action, waiting: Waiting) {
        self.actions.push_back(action);
        self.waiting = Some(waiting);
    }

    fn close(&mut self) {
        if !self.closed {
            self.end_transaction();
            self.actions.push_back(Action::Close);
            self.closed = true;
        }
    }

    /// The session state after a successful AUTH; a tenant listing the user claims it.
    fn authenticated(&mut self, user: String) {
        if let Some(tenant) = self.snapshot.tenant_of_user(&user) {
            self.claimed = Some(tenant);
        }
        self.core.authenticated(user);
    }

    /// The largest message the current transaction may carry: the server's limit, or its
    /// party's when lower.
    fn message_limit(&self) -> usize {
        let server = self.core.max_message_bytes();
        let party = self.transaction.party.map(|p| self.snapshot.party(p).limits.max_message_bytes);
        party.flatten().map_or(server, |limit| limit.min(server))
    }

    /// The transaction is over (after DATA, RSET, a new MAIL or EHLO, STARTTLS, the end of the
    /// session): each party whose policies refused its recipients, and which did not get the
    /// transaction, has that refusal recorded.
    fn end_transaction(&mut self) {
        if self.core.mail_from().is_some() {
            self.record_refusals();
        }
        self.core.reset();
        self.transaction = TransactionState::default();
        for party in &mut self.parties {
            party.mail = None;
        }
        self.id = crate::spool::new_id();
    }

    /// The client's address, for logs.
    fn peer(&self) -> SocketAddr {
        self.client.address
    }
}

#[cfg(test)]
mod party_tests;
#[cfg(test)]
mod tests;
