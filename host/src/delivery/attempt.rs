//! One delivery attempt of a queued message: its pending recipients grouped by destination,
//! each group delivered in turn, the results written to its envelope, failures bounced, and
//! the next attempt scheduled with exponential backoff (or the message removed once done).

use std::collections::HashMap;
use std::sync::Arc;

use super::client::Transaction;
use super::maildir::maildir_deliver;
use super::{Context, Outbound, RcptResult, bounce, route};
use crate::spool::{self, QueuedMessage, QueuedRecipient, RecipientStatus, Store};

/// One delivery attempt of a queued message (`preloaded`: its envelope and bytes as just
/// stored). Returns when to try again, if ever.
pub async fn attempt(
    context: &Context,
    outbound: &Outbound,
    id: &str,
    preloaded: Option<(QueuedMessage, Arc<Vec<u8>>)>,
) -> Option<u64> {
    let (mut envelope, mut message) = match preloaded {
        // A rescan may have found the file before its session's notice came, and delivered
        // it already: only a message still in the spool is delivered.
        Some(_) if !context.spool.contains(Store::Queue, id) => return None,
        Some((envelope, message)) => (envelope, Some(message)),
        None => {
            let spool = context.spool.clone();
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
    let snapshot = context.current.load_full();
    let config = &snapshot.config.delivery;

    // Group pending recipients by next hop.
    let mut groups: HashMap<route::Target, Vec<usize>> = HashMap::new();
    for (i, r) in envelope.recipients.iter().enumerate() {
        if r.status == RecipientStatus::Pending {
            groups.entry(route::route(&snapshot, &envelope, &r.address)).or_default().push(i);
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
            None => match read_message(context, &envelope).await {
                Some(bytes) => message.insert(bytes).clone(),
                // Deleted meanwhile, or set aside as damaged.
                None => return None,
            },
        };
        let tx = Transaction { mail_from: &envelope.mail_from, recipients: &addresses, message: &message };
        let results = match &hop {
            route::Target::Mx(domain) => {
                route::mx_deliver(context, outbound, domain, config.mx_port, &tx).await
            }
            route::Target::Maildir(dir) => {
                let dir = dir.clone();
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
            route::Target::Server(peer) => match outbound.pool.deliver(peer, &tx).await {
                Ok(results) => results,
                Err(e) => addresses
                    .iter()
                    .map(|_| RcptResult::Transient(format!("451 4.4.1 {peer}: {e}")))
                    .collect(),
            },
        };
        for (i, result) in indices.iter().zip(results) {
            let r = &mut envelope.recipients[*i];
            match result {
                RcptResult::Delivered(reply) => {
                    context.metrics.delivery(&envelope.tenant, "delivered");
                    tracing::info!(tenant = %envelope.tenant, id = %envelope.id, to = %r.address, hop = %hop, reply = %reply, "delivered");
                    r.status = RecipientStatus::Delivered;
                    r.last_reply = Some(reply);
                }
                RcptResult::Permanent(reply) => {
                    context.metrics.delivery(&envelope.tenant, "failed");
                    tracing::info!(tenant = %envelope.tenant, id = %envelope.id, to = %r.address, hop = %hop, reply = %reply, "delivery failed");
                    r.status = RecipientStatus::Failed;
                    r.last_reply = Some(reply);
                }
                RcptResult::Transient(reply) => {
                    context.metrics.delivery(&envelope.tenant, "deferred");
                    tracing::info!(tenant = %envelope.tenant, id = %envelope.id, to = %r.address, hop = %hop, reply = %reply, "delivery deferred");
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
    // Mail from the internet is bounced only when its tenant says so: its sender is
    // usually forged, and a bounce to it is backscatter.
    let bounce_inbound = {
        let snapshot = context.current.load();
        let rule = snapshot.config.tenant(&envelope.tenant).map(|t| t.bounce_inbound).unwrap_or_default();
        match rule {
            crate::config::BounceInbound::Always => true,
            crate::config::BounceInbound::Authenticated => envelope.sender_authenticated,
            crate::config::BounceInbound::Never => false,
        }
    };
    for r in envelope.recipients.iter_mut() {
        if r.status == RecipientStatus::Failed && !r.bounced {
            r.bounced = true;
            if envelope.inbound && !bounce_inbound && !envelope.mail_from.is_empty() {
                tracing::info!(
                    tenant = %envelope.tenant,
                    id = %envelope.id,
                    recipient = %r.address,
                    reply = %r.last_reply.as_deref().unwrap_or_default(),
                    "inbound recipient failed for good; no bounce to its unauthenticated sender (bounce_inbound)"
                );
                context.metrics.event(&envelope.tenant, "bounce_suppressed");
                continue;
            }
            newly_failed.push(r.clone());
        }
    }
    if !newly_failed.is_empty() && !envelope.mail_from.is_empty() {
        context.metrics.event(&envelope.tenant, "bounce_sent");
    }
    if !newly_failed.is_empty() && !envelope.mail_from.is_empty() && message.is_none() {
        message = read_message(context, &envelope).await;
    }
    if !newly_failed.is_empty()
        && !envelope.mail_from.is_empty()
        && let Err(e) =
            bounce::queue(context, &envelope, &newly_failed, message.as_deref().map_or(&[][..], |m| &m[..]))
                .await
    {
        tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "cannot queue the delivery status notification");
    }

    let spool = context.spool.clone();
    if envelope.pending().next().is_none() {
        if let Err(e) = spool.remove_later(Store::Queue, &envelope.id) {
            tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "cannot remove a delivered message");
        }
        tracing::info!(tenant = %envelope.tenant, id = %envelope.id, attempts = envelope.attempts, "done");
        context.metrics.queue(&envelope.tenant, -1);
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
async fn read_message(context: &Context, envelope: &QueuedMessage) -> Option<Arc<Vec<u8>>> {
    let spool = context.spool.clone();
    let id = envelope.id.clone();
    let read = tokio::task::spawn_blocking(move || spool.message(Store::Queue, &id)).await;
    match read {
        Ok(Ok(bytes)) => Some(Arc::new(bytes)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "damaged message file: moved to the quarantine, not delivered");
            let spool = context.spool.clone();
            let mut held = envelope.clone();
            held.quarantine_reason = Some(format!("spool check failed: {e}"));
            let moved =
                tokio::task::spawn_blocking(move || spool.transfer(Store::Queue, Store::Quarantine, &held))
                    .await;
            if let Ok(Ok(())) = moved {
                context.metrics.queue(&envelope.tenant, -1);
            }
            None
        }
        _ => None,
    }
}
