//! What a conversation asks of its driver and tells it: the [`Action`]s and what they carry,
//! and the [`Gates`] — the relay's shared counters and the spool — it consults as it goes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{Judgement, ParsedMessage, SessionInfo, Stage, StageResult};
use crate::smtp::EnvelopeAddress;
use crate::smtp::reply::Reply;
use crate::spool::{QueuedMessage, Store};
use crate::tenants::Party;

/// What the relay's shared counters and the spool tell a session (the script and the fuzz
/// targets use [`Open`], which allows everything).
pub trait Gates: Send + Sync {
    /// `452 4.3.1` when the spool has less room than it must keep plus `declared` bytes.
    fn storage_refusal(&self, declared: Option<usize>) -> Option<Reply>;
    /// Whether `tenant` may take one more transaction this minute; `take`: count it.
    fn message_rate(&self, tenant: &str, per_minute: u32, take: bool) -> bool;
    /// Whether `ip` failed AUTH `limit` times within `window`.
    fn auth_locked(&self, ip: IpAddr, limit: u32, window: Duration) -> bool;
    /// Count a failed AUTH from `ip`.
    fn auth_failed(&self, ip: IpAddr, window: Duration);
    /// Count an edge duty's act for `tenant` (see [`crate::metrics::Metrics::event`]).
    fn event(&self, _tenant: &str, _event: &str) {}
    /// Whether message rates and AUTH failures are counted in a store the fleet shares: the
    /// conversation then asks with [`Action::CheckRate`] and [`Action::CheckAuthLock`] instead
    /// of [`Gates::message_rate`] without `take` and [`Gates::auth_locked`].
    fn shared_limits(&self) -> bool {
        false
    }
}

/// Gates that never close: no spool to fill, no rates, no lockouts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Open;

impl Gates for Open {
    fn storage_refusal(&self, _: Option<usize>) -> Option<Reply> {
        None
    }
    fn message_rate(&self, _: &str, _: u32, _: bool) -> bool {
        true
    }
    fn auth_locked(&self, _: IpAddr, _: u32, _: Duration) -> bool {
        false
    }
    fn auth_failed(&self, _: IpAddr, _: Duration) {}
}

/// The client of a session, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its address.
    pub address: SocketAddr,
    /// Its forward-confirmed reverse DNS name.
    pub reverse_dns: Option<String>,
    /// The listener it came in on.
    pub listener: String,
    /// The address is a proxy's own, standing for no client (a PROXY `LOCAL` or `UNKNOWN`
    /// header: the balancer's health checks). It grants nothing: no relaying through
    /// `trusted_networks`, no tenant's `outbound_networks`, no plaintext AUTH on loopback.
    pub anonymous: bool,
}

impl Client {
    /// A client at `address`, on `listener`, with no reverse DNS name.
    pub fn new(address: SocketAddr, listener: &str) -> Self {
        Self { address, reverse_dns: None, listener: listener.to_string(), anonymous: false }
    }
}

/// What the driver of a conversation does next.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes to the client. Replies may be held until the next [`Action::Read`]
    /// (PIPELINING).
    Send(Vec<u8>),
    /// Nothing to do until the client sends more: send what is held, then read (in large
    /// chunks when `bulk`: a message is coming) and hand the bytes to
    /// [`Conversation::receive`]; [`Conversation::timed_out`] after `timeout`,
    /// [`Conversation::client_closed`] at the end of the stream.
    Read {
        /// How long the client may take.
        timeout: Duration,
        /// A message is coming.
        bulk: bool,
    },
    /// Run a stage; answer with [`Conversation::stage_done`].
    Stage(Box<StageRequest>),
    /// Put a message in the spool; answer with [`Conversation::stored`].
    Store(Box<StoreRequest>),
    /// Check a user's password; answer with [`Conversation::password_checked`].
    CheckPassword {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
    /// Ask tenant `tenant`'s next hop whether `address` exists (`recipients = "verify"`);
    /// answer with [`Conversation::recipient_verified`].
    VerifyRecipient {
        /// The tenant, by index into the snapshot's tenants.
        tenant: usize,
        /// The recipient.
        address: String,
    },
    /// Check the sender of a message from the internet (SPF, DKIM, DMARC, ARC); answer with
    /// [`Conversation::sender_checked`].
    CheckSender(Box<super::SenderRequest>),
    /// Ask the store the fleet shares whether `tenant` may take one more transaction this
    /// minute under `per_minute` (see [`Gates::shared_limits`]); answer with
    /// [`Conversation::rate_checked`].
    CheckRate {
        /// The tenant's name.
        tenant: String,
        /// Its limit.
        per_minute: u32,
    },
    /// Ask the store the fleet shares whether `ip` failed AUTH `limit` times within `window`
    /// (see [`Gates::shared_limits`]); answer with [`Conversation::auth_lock_checked`].
    CheckAuthLock {
        /// The client's address.
        ip: IpAddr,
        /// Failures that lock it out.
        limit: u32,
        /// How long failures count.
        window: Duration,
    },
    /// Wait this long before the next action (after a failed AUTH).
    Pause(Duration),
    /// Send what is held, drop whatever the client sent after STARTTLS, and start TLS; answer
    /// with [`Conversation::tls_started`], or end the session if the handshake fails.
    StartTls,
    /// A transaction ended: log and count it.
    Finished(Box<TransactionRecord>),
    /// Teach the tenant's learning policies a message (autolearning): nothing to answer,
    /// and nothing the client waits for.
    Learn(Box<LearnRequest>),
    /// Send what is held and close the connection.
    Close,
}

/// A message the tenant's other policies were sure of, for its learning policies.
#[derive(Clone)]
pub struct LearnRequest {
    /// The tenant, whose chain's learning policies learn it.
    pub tenant: Arc<crate::tenants::Tenant>,
    /// The message.
    pub message: Arc<ParsedMessage>,
    /// Spam or ham.
    pub lesson: crate::policy::Lesson,
}

impl std::fmt::Debug for LearnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnRequest")
            .field("tenant", &self.tenant.name)
            .field("lesson", &self.lesson)
            .finish()
    }
}

/// What a stage is judged on besides the session.
#[derive(Debug, Clone)]
pub enum StageData {
    /// connect, helo, mail.
    Session,
    /// rcpt: the recipient.
    Recipient(EnvelopeAddress),
    /// data: the message.
    Message(Arc<ParsedMessage>),
}

/// A stage to run for one party.
#[derive(Debug, Clone)]
pub struct StageRequest {
    /// Whose chain.
    pub party: Party,
    /// Which stage.
    pub stage: Stage,
    /// The context the hooks get.
    pub context: SessionInfo,
    /// What the stage judges.
    pub data: StageData,
}

/// A message to put in the spool before its 250.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    /// Queue or quarantine.
    pub store: Store,
    /// Its envelope and delivery state.
    pub envelope: QueuedMessage,
    /// The message as it will be delivered (our Received field and the policies' changes on
    /// top of what the client sent).
    pub message: Arc<Vec<u8>>,
}

/// Why a message could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// The spool's file system is full.
    Full,
    /// Anything else (logged by the store).
    Failed,
}

/// What one recipient got at RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientFate {
    /// Address as given.
    pub address: String,
    /// The reply.
    pub reply: Reply,
}

/// A transaction that ended: how it was judged and what the client was told.
#[derive(Debug, Clone)]
pub struct TransactionRecord {
    /// Queue id (also the transaction id policies saw).
    pub id: String,
    /// Whose chain judged it (a tenant's name, or `edge`).
    pub tenant: String,
    /// The generation of that chain.
    pub generation: u64,
    /// The client.
    pub client: SocketAddr,
    /// Its HELO name.
    pub helo: Option<String>,
    /// Its authenticated user.
    pub user: Option<String>,
    /// MAIL FROM.
    pub from: String,
    /// The recipients accepted.
    pub recipients: Vec<String>,
    /// Every RCPT of the transaction that reached this party, with its reply.
    pub fates: Vec<RecipientFate>,
    /// The judgement.
    pub judgement: Judgement,
    /// What the client was told at the end (differs from the judgement's reply when the spool
    /// could not take the message).
    pub reply: Reply,
    /// Every stage result that went into the judgement, in order (when the conversation was
    /// made with [`super::Conversation::record_stages`]).
    pub stages: Vec<StageResult>,
    /// The edge or the tenant that claims the session refused the connection or the greeting:
    /// no transaction began.
    pub session_refused: bool,
    /// What the checks of the message's sender found, when they ran.
    pub sender_checks: Option<Arc<crate::sender::SenderChecks>>,
}
