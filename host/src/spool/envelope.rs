//! What the spool keeps about a message besides its bytes: the envelope and its delivery state
//! (JSON in the message's file), and queue ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not delivered yet.
    Pending,
    /// Delivered.
    Delivered,
    /// Failed for good (bounced).
    Failed,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredRecipient")]
pub struct QueuedRecipient {
    /// Address.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// The last reply or error from its next hop.
    pub last_reply: Option<String>,
    /// Its failure was reported to the sender (a delivery status notification is queued).
    #[serde(default)]
    pub bounced: bool,
}

/// A recipient as files of every version hold it: earlier versions marked a reported failure
/// with a `[bounced] ` prefix on its last reply.
#[derive(Deserialize)]
struct StoredRecipient {
    address: String,
    status: RecipientStatus,
    last_reply: Option<String>,
    #[serde(default)]
    bounced: bool,
}

impl From<StoredRecipient> for QueuedRecipient {
    fn from(stored: StoredRecipient) -> Self {
        let (last_reply, legacy) = match stored.last_reply {
            Some(reply) => match reply.strip_prefix("[bounced] ") {
                Some(rest) => (Some(rest.to_string()), true),
                None => (Some(reply), false),
            },
            None => (None, false),
        };
        Self { address: stored.address, status: stored.status, last_reply, bounced: stored.bounced || legacy }
    }
}

/// A message's envelope and delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Queue id.
    pub id: String,
    /// Tenant that accepted it.
    pub tenant: String,
    /// MAIL FROM (empty: the null sender).
    pub mail_from: String,
    /// Recipients.
    pub recipients: Vec<QueuedRecipient>,
    /// When it was accepted, Unix seconds.
    pub received_at: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Next attempt, Unix seconds.
    pub next_attempt: u64,
    /// A named next hop chosen by a policy.
    pub route: Option<String>,
    /// Why it is in quarantine, if it is.
    pub quarantine_reason: Option<String>,
    /// It came from the internet (a client that may not relay) for a tenant's domains: a
    /// recipient the inside refuses is bounced only if the tenant's `bounce_inbound` says so.
    #[serde(default)]
    pub inbound: bool,
    /// Its sender was authenticated: SPF or DKIM passed for a domain aligned with From
    /// (`bounce_inbound = "authenticated"` bounces only such mail).
    #[serde(default)]
    pub sender_authenticated: bool,
}

impl QueuedMessage {
    /// Recipients still to deliver.
    pub fn pending(&self) -> impl Iterator<Item = &QueuedRecipient> {
        self.recipients.iter().filter(|r| r.status == RecipientStatus::Pending)
    }
}

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Waiting for delivery.
    Queue,
    /// Held for review.
    Quarantine,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A new queue id: microseconds since the epoch and a per-process counter, in hex; sorts
/// by arrival and is unique across restarts of one spool.
pub fn new_id() -> String {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{micros:014X}{:04X}", n & 0xFFFF)
}

/// A queue id is hex only: nothing a caller passes can name a path outside the spool.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
