//! Delivery: takes queued messages to their next hop, retries with exponential backoff,
//! bounces with an RFC 3464 delivery status notification.
//!
//! Routes, in order: a next hop a policy named (`[delivery.next_hops]`); the tenant's
//! `next_hop` for its own domains; `[delivery.smarthost]` for every other domain; without a
//! smarthost, the domain's MX hosts.
//!
//! Each attempt groups a message's pending recipients by destination and delivers each group
//! while holding a slot of that destination (`delivery.destination_concurrency`) and then one
//! of the relay-wide slots (`delivery.max_deliveries`), in that order: a destination with a
//! backlog waits on its own slots and never holds the relay-wide ones other destinations need.
//! The SMTP client and its connection cache are in [`client`].

pub mod client;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::config::NextHop;
use crate::dns::MxAnswer;
use crate::live::Live;
use crate::server::{Relay, rfc5322_date};
use crate::spool::{self, QueuedMessage, QueuedRecipient, RecipientStatus, Store};
use client::{Pool, Transaction};

/// What a next hop said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// Delivered.
    Delivered(String),
    /// Try again later.
    Transient(String),
    /// Failed for good.
    Permanent(String),
}

/// What deliveries share: the connection pool and the relay-wide delivery slots.
pub struct Outbound {
    /// Connections to SMTP next hops.
    pub pool: Pool,
    slots: Arc<Semaphore>,
}

impl Outbound {
    /// From the relay's `[delivery]` settings.
    pub fn new(relay: &Relay) -> Self {
        let live = relay.live();
        let config = &live.config.delivery;
        let pool = Pool::new(client::Settings {
            helo: live.config.server.hostname.clone(),
            timeout: Duration::from_secs(config.timeout_secs),
            tls: relay.tls_client().cloned(),
            idle: Duration::from_secs(config.connection_cache_secs),
            reuse_limit: config.connection_reuse_limit,
            per_destination: config.destination_concurrency,
        });
        Self { pool, slots: Arc::new(Semaphore::new(config.max_deliveries.max(1))) }
    }
}

/// A message the delivery task is told about.
pub struct Queued {
    /// Queue id.
    pub id: String,
    /// Its envelope and bytes as just stored, so the first attempt need not read them back.
    pub loaded: Option<(QueuedMessage, Arc<Vec<u8>>)>,
}

/// Bytes of freshly queued messages kept in memory for their first attempt; beyond it, the
/// attempt reads the spool.
const LOADED_BUDGET: usize = 64 << 20;

/// Run delivery until the process ends: everything in the spool at start, then each new
/// message from `new_ids`, and a rescan of the spool every few seconds (which picks up `sluice
/// queue flush` and messages released from quarantine).
pub async fn run(relay: Arc<Relay>, mut new_ids: mpsc::UnboundedReceiver<Queued>) {
    let outbound = Arc::new(Outbound::new(&relay));
    let mut due: BTreeMap<(u64, String), ()> = BTreeMap::new();
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let mut loaded: HashMap<String, (QueuedMessage, Arc<Vec<u8>>)> = HashMap::new();
    let mut loaded_bytes = 0usize;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Option<u64>)>();
    let mut rescan = tokio::time::interval(Duration::from_secs(5));
    loop {
        let now = spool::now_secs();
        let next_due = due.keys().next().map(|(t, _)| *t);
        let sleep = next_due.map(|t| t.saturating_sub(now)).unwrap_or(3600);
        tokio::select! {
            Some(queued) = new_ids.recv() => {
                if let Some((envelope, message)) = queued.loaded
                    && loaded_bytes + message.len() <= LOADED_BUDGET
                {
                    loaded_bytes += message.len();
                    loaded.insert(queued.id.clone(), (envelope, message));
                }
                due.insert((now, queued.id), ());
            }
            Some((id, next)) = done_rx.recv() => {
                in_flight.remove(&id);
                if let Some(at) = next { due.insert((at, id), ()); }
            }
            _ = rescan.tick() => {
                let spool = relay.spool.clone();
                if let Ok(Ok(all)) = tokio::task::spawn_blocking(move || spool.list(Store::Queue)).await {
                    relay.metrics.set_queue(all.iter().map(|m| m.tenant.as_str()));
                    // Merged, not replaced: what arrived while the listing ran stays due. A
                    // stale entry (an older time of a message, one removed meanwhile) costs
                    // one look at the spool when it comes up.
                    for m in all {
                        if !in_flight.contains(&m.id) { due.insert((m.next_attempt, m.id), ()); }
                    }
                }
                let outbound = outbound.clone();
                tokio::spawn(async move { outbound.pool.close_idle().await });
            }
            _ = tokio::time::sleep(Duration::from_secs(sleep)) => {}
        }
        let now = spool::now_secs();
        while let Some(((at, id), ())) = due.first_key_value() {
            if *at > now {
                break;
            }
            let id = id.clone();
            due.pop_first();
            let preloaded = loaded.remove(&id);
            if let Some((_, message)) = &preloaded {
                loaded_bytes -= message.len();
            }
            if !in_flight.insert(id.clone()) {
                continue;
            }
            let relay = relay.clone();
            let outbound = outbound.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let next = attempt(&relay, &outbound, &id, preloaded).await;
                let _ = done.send((id, next));
            });
        }
    }
}

/// One delivery attempt of a queued message (`preloaded`: its envelope and bytes as just
/// stored). Returns when to try again, if ever.
pub async fn attempt(
    relay: &Relay,
    outbound: &Outbound,
    id: &str,
    preloaded: Option<(QueuedMessage, Arc<Vec<u8>>)>,
) -> Option<u64> {
    let (mut envelope, mut message) = match preloaded {
        // A rescan may have found the file before its session's notice came, and delivered
        // it already: only a message still in the spool is delivered.
        Some(_) if !relay.spool.contains(Store::Queue, id) => return None,
        Some((envelope, message)) => (envelope, Some(message)),
        None => {
            let spool = relay.spool.clone();
            let owned = id.to_string();
            match tokio::task::spawn_blocking(move || spool.envelope(Store::Queue, &owned)).await {
                Ok(Ok(envelope)) => (envelope, None),
                // Deleted meanwhile (delivered, or removed by an operator).
                _ => return None,
            }
        }
    };
    let now = spool::now_secs();
    if envelope.next_attempt > now {
        return Some(envelope.next_attempt);
    }
    // Routes and retry settings of the current configuration (they change on reload).
    let live = relay.live();
    let config = &live.config.delivery;

    // Group pending recipients by next hop.
    let mut groups: HashMap<Target, Vec<usize>> = HashMap::new();
    for (i, r) in envelope.recipients.iter().enumerate() {
        if r.status == RecipientStatus::Pending {
            groups.entry(route(&live, &envelope, &r.address)).or_default().push(i);
        }
    }
    // The message is read once, when the first group gets its slots.
    for (hop, indices) in groups {
        let addresses: Vec<String> =
            indices.iter().map(|i| envelope.recipients[*i].address.clone()).collect();
        let _destination = match hop.destination() {
            Some(name) => outbound.pool.permit(&name).await,
            None => None,
        };
        let _slot = outbound.slots.clone().acquire_owned().await;
        let message = match &message {
            Some(m) => m.clone(),
            None => match read_message(relay, &envelope).await {
                Some(bytes) => message.insert(bytes).clone(),
                // Deleted meanwhile, or set aside as damaged.
                None => return None,
            },
        };
        let tx = Transaction { mail_from: &envelope.mail_from, recipients: &addresses, message: &message };
        let results = match &hop {
            Target::Mx(domain) => mx_deliver(relay, outbound, domain, config.mx_port, &tx).await,
            Target::Hop(NextHop::Maildir(path)) => {
                let dir = live.config.resolve(path);
                let message = message.clone();
                let envelope_from = envelope.mail_from.clone();
                let addrs = addresses.clone();
                tokio::task::spawn_blocking(move || maildir_deliver(&dir, &envelope_from, &addrs, &message))
                    .await
                    .unwrap_or_else(|e| {
                        addresses
                            .iter()
                            .map(|_| RcptResult::Transient(format!("delivery task failed: {e}")))
                            .collect()
                    })
            }
            Target::Hop(NextHop::Smtp { host, port }) => {
                match outbound.pool.deliver(host, *port, &tx).await {
                    Ok(results) => results,
                    Err(e) => addresses
                        .iter()
                        .map(|_| RcptResult::Transient(format!("451 4.4.1 {host}:{port}: {e}")))
                        .collect(),
                }
            }
        };
        for (i, result) in indices.iter().zip(results) {
            let r = &mut envelope.recipients[*i];
            match result {
                RcptResult::Delivered(reply) => {
                    relay.metrics.delivery(&envelope.tenant, "delivered");
                    tracing::info!(tenant = %envelope.tenant, id = %envelope.id, to = %r.address, hop = ?hop, reply = %reply, "delivered");
                    r.status = RecipientStatus::Delivered;
                    r.last_reply = Some(reply);
                }
                RcptResult::Permanent(reply) => {
                    relay.metrics.delivery(&envelope.tenant, "failed");
                    tracing::info!(tenant = %envelope.tenant, id = %envelope.id, to = %r.address, hop = ?hop, reply = %reply, "delivery failed");
                    r.status = RecipientStatus::Failed;
                    r.last_reply = Some(reply);
                }
                RcptResult::Transient(reply) => {
                    relay.metrics.delivery(&envelope.tenant, "deferred");
                    tracing::info!(tenant = %envelope.tenant, id = %envelope.id, to = %r.address, hop = ?hop, reply = %reply, "delivery deferred");
                    r.last_reply = Some(reply);
                }
            }
        }
    }
    envelope.attempts += 1;

    // Expired: every recipient still pending fails.
    let expired = now.saturating_sub(envelope.received_at) >= config.max_age_secs;
    let mut newly_failed: Vec<QueuedRecipient> = Vec::new();
    for r in envelope.recipients.iter_mut() {
        if r.status == RecipientStatus::Pending && expired {
            r.status = RecipientStatus::Failed;
            let last = r.last_reply.clone().unwrap_or_default();
            r.last_reply = Some(format!("4.4.7 message expired in the queue; last error: {last}"));
        }
    }
    for r in &envelope.recipients {
        if r.status == RecipientStatus::Failed
            && !r.last_reply.as_deref().unwrap_or("").starts_with("[bounced]")
        {
            newly_failed.push(r.clone());
        }
    }
    for r in envelope.recipients.iter_mut() {
        if r.status == RecipientStatus::Failed
            && !r.last_reply.as_deref().unwrap_or("").starts_with("[bounced]")
        {
            r.last_reply = Some(format!("[bounced] {}", r.last_reply.clone().unwrap_or_default()));
        }
    }
    if !newly_failed.is_empty() && !envelope.mail_from.is_empty() && message.is_none() {
        message = read_message(relay, &envelope).await;
    }
    if !newly_failed.is_empty()
        && !envelope.mail_from.is_empty()
        && let Err(e) =
            queue_bounce(relay, &envelope, &newly_failed, message.as_deref().map_or(&[][..], |m| &m[..]))
                .await
    {
        tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "cannot queue the delivery status notification");
    }

    let spool = relay.spool.clone();
    if envelope.pending().next().is_none() {
        if let Err(e) = spool.remove_later(Store::Queue, &envelope.id) {
            tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "cannot remove a delivered message");
        }
        tracing::info!(tenant = %envelope.tenant, id = %envelope.id, attempts = envelope.attempts, "done");
        relay.metrics.queue(&envelope.tenant, -1);
        return None;
    }
    let backoff = config
        .retry_base_secs
        .saturating_mul(1u64 << (envelope.attempts.saturating_sub(1)).min(30))
        .min(config.retry_max_secs);
    envelope.next_attempt = now + backoff;
    let next = envelope.next_attempt;
    let updated = envelope.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || spool.update(Store::Queue, &updated)).await {
        tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "cannot update the envelope");
    }
    Some(next)
}

/// A queued message's bytes, read off the async runtime and checked against its envelope
/// (None if it is gone). A message file that does not match its envelope — cut short by a
/// crash before its 250, or damaged on disk since — is never delivered: it moves to the
/// quarantine for an operator to look at.
async fn read_message(relay: &Relay, envelope: &QueuedMessage) -> Option<Arc<Vec<u8>>> {
    let spool = relay.spool.clone();
    let id = envelope.id.clone();
    let read = tokio::task::spawn_blocking(move || spool.message(Store::Queue, &id)).await;
    match read {
        Ok(Ok(bytes)) => Some(Arc::new(bytes)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "damaged message file: moved to the quarantine, not delivered");
            let spool = relay.spool.clone();
            let mut held = envelope.clone();
            held.quarantine_reason = Some(format!("spool check failed: {e}"));
            let moved =
                tokio::task::spawn_blocking(move || spool.transfer(Store::Queue, Store::Quarantine, &held))
                    .await;
            if let Ok(Ok(())) = moved {
                relay.metrics.queue(&envelope.tenant, -1);
            }
            None
        }
        _ => None,
    }
}

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A configured next hop.
    Hop(NextHop),
    /// The MX hosts of this domain.
    Mx(String),
}

impl Target {
    /// The name its concurrency limit goes by (Maildir delivery has none).
    fn destination(&self) -> Option<String> {
        match self {
            Target::Hop(NextHop::Smtp { host, port }) => Some(format!("{host}:{port}")),
            Target::Hop(NextHop::Maildir(_)) => None,
            Target::Mx(domain) => Some(format!("mx:{domain}")),
        }
    }
}

fn route(live: &Live, envelope: &QueuedMessage, address: &str) -> Target {
    let config = &live.config.delivery;
    if let Some(name) = &envelope.route {
        if let Some(hop) = config.next_hops.get(name).and_then(|h| NextHop::parse(h).ok()) {
            return Target::Hop(hop);
        }
        tracing::warn!(tenant = %envelope.tenant, id = %envelope.id, route = %name, "a policy routed to an unknown next hop; using the normal route");
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default();
    if let Some(tenant) = live.tenant_of_domain(&domain) {
        return Target::Hop(tenant.next_hop.clone());
    }
    match config.smarthost.as_deref().and_then(|h| NextHop::parse(h).ok()) {
        Some(hop) => Target::Hop(hop),
        None => Target::Mx(domain),
    }
}

/// Deliver to a domain's mail exchangers, most preferred first (RFC 5321 §5.1): a null MX
/// or a domain that does not exist fails for good; a DNS failure or no exchanger answering
/// is transient.
async fn mx_deliver(
    relay: &Relay,
    outbound: &Outbound,
    domain: &str,
    port: u16,
    tx: &Transaction<'_>,
) -> Vec<RcptResult> {
    let all = |r: RcptResult| tx.recipients.iter().map(|_| r.clone()).collect::<Vec<_>>();
    let hosts = match relay.dns.mx(domain).await {
        Ok(MxAnswer::Hosts(hosts)) => hosts,
        Ok(MxAnswer::Implicit) => vec![domain.to_string()],
        Ok(MxAnswer::NullMx) => {
            return all(RcptResult::Permanent(format!("556 5.1.10 {domain} does not accept mail (null MX)")));
        }
        Ok(MxAnswer::NoSuchDomain) => {
            return all(RcptResult::Permanent(format!("550 5.1.2 domain {domain} does not exist")));
        }
        Err(e) => return all(RcptResult::Transient(format!("451 4.4.3 MX lookup for {domain} failed: {e}"))),
    };
    let mut last = format!("451 4.4.1 no mail exchanger of {domain} answered");
    for host in hosts.iter().take(5) {
        // Addresses from the relay's own resolver (the one that gave the MX records).
        let mut addresses = Vec::new();
        for kind in [crate::dns::RecordType::A, crate::dns::RecordType::Aaaa] {
            if let Ok(found) = crate::dns::Resolver::lookup(relay.dns.as_ref(), host, kind).await {
                addresses.extend(found);
            }
        }
        if addresses.is_empty() {
            last = format!("451 4.4.4 {host} has no address");
        }
        for address in addresses.iter().take(3) {
            match outbound.pool.deliver(address, port, tx).await {
                Ok(results) => return results,
                Err(e) => last = format!("451 4.4.1 {host} [{address}]:{port}: {e}"),
            }
        }
    }
    all(RcptResult::Transient(last))
}

/// Deliver into `root/<recipient>/{tmp,new,cur}` (Maildir): write in `tmp`, fsync, rename into
/// `new`, fsync the directory.
pub fn maildir_deliver(
    root: &Path,
    mail_from: &str,
    recipients: &[String],
    message: &[u8],
) -> Vec<RcptResult> {
    recipients
        .iter()
        .map(|rcpt| match maildir_one(root, mail_from, rcpt, message) {
            Ok(path) => RcptResult::Delivered(format!("250 2.0.0 delivered to {}", path.display())),
            Err(e) => RcptResult::Transient(format!("451 4.3.0 maildir: {e}")),
        })
        .collect()
}

fn maildir_one(root: &Path, mail_from: &str, rcpt: &str, message: &[u8]) -> std::io::Result<PathBuf> {
    let mailbox: String = rcpt
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '@') { c } else { '_' })
        .collect();
    let mailbox = if mailbox.starts_with('.') { format!("_{mailbox}") } else { mailbox };
    let dir = root.join(mailbox);
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let name = format!("{}.{}.sluice", spool::now_secs(), spool::new_id());
    let tmp = dir.join("tmp").join(&name);
    let mut content = format!("Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
    content.extend_from_slice(message);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&content)?;
        file.sync_all()?;
    }
    let target = dir.join("new").join(&name);
    std::fs::rename(&tmp, &target)?;
    spool::sync_dir(&dir.join("new"))?;
    Ok(target)
}

/// Queue an RFC 3464 delivery status notification to the sender of `original` for the
/// recipients that failed.
async fn queue_bounce(
    relay: &Relay,
    original: &QueuedMessage,
    failed: &[QueuedRecipient],
    message: &[u8],
) -> std::io::Result<()> {
    let live = relay.live();
    let hostname = &live.config.server.hostname;
    let id = spool::new_id();
    let now = spool::now_secs();
    let boundary = format!("{id}/{hostname}");
    let headers_end =
        message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
    let original_headers = String::from_utf8_lossy(&message[..headers_end]);
    let mut human = String::new();
    let mut machine = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Sluice-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.id,
        rfc5322_date(original.received_at)
    );
    for r in failed {
        let diagnostic = r.last_reply.clone().unwrap_or_default();
        let diagnostic = diagnostic.trim_start_matches("[bounced] ").to_string();
        let status = diagnostic
            .split_whitespace()
            .find(|w| w.len() >= 5 && w.as_bytes()[1] == b'.' && matches!(w.as_bytes()[0], b'4' | b'5'))
            .map(|s| s.trim_end_matches([',', ';']).to_string())
            .unwrap_or_else(|| "5.0.0".to_string());
        let status = if status.starts_with('4') && !diagnostic.contains("expired") {
            format!("5{}", &status[1..])
        } else {
            status
        };
        human.push_str(&format!("<{}>: {diagnostic}\r\n", r.address));
        machine.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n",
            r.address
        ));
    }
    let text = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
To: <{to}>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Date: {date}\r\n\
Message-ID: <{id}@{hostname}>\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
This is the mail system at {hostname}.\r\n\
\r\n\
Your message (queue id {oid}) could not be delivered to the following recipients:\r\n\
\r\n\
{human}\r\n\
--{boundary}\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
{machine}\r\n\
--{boundary}\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
{original_headers}\r\n\
--{boundary}--\r\n",
        to = original.mail_from,
        date = rfc5322_date(now),
        oid = original.id,
    );
    let envelope = QueuedMessage {
        id: id.clone(),
        tenant: original.tenant.clone(),
        mail_from: String::new(),
        recipients: vec![QueuedRecipient {
            address: original.mail_from.clone(),
            status: RecipientStatus::Pending,
            last_reply: None,
        }],
        received_at: now,
        attempts: 0,
        next_attempt: now,
        route: None,
        quarantine_reason: None,
    };
    let spool = relay.spool.clone();
    tokio::task::spawn_blocking(move || spool.store(Store::Queue, &envelope, text.as_bytes()))
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!(tenant = %original.tenant, id = %id, original = %original.id, to = %original.mail_from, "queued a delivery status notification");
    relay.metrics.queue(&original.tenant, 1);
    relay.notify(id);
    Ok(())
}
