//! Bounces: an RFC 3464 delivery status notification to the sender for the recipients that
//! failed for good, queued like any message (from the null sender, so it never bounces in
//! turn).

use super::Context;
use crate::mail::rfc5322_date;
use crate::spool::{self, QueuedMessage, QueuedRecipient, RecipientStatus, Store};

/// Queue an RFC 3464 delivery status notification to the sender of `original` for the
/// recipients that failed.
pub(super) async fn queue(
    context: &Context,
    original: &QueuedMessage,
    failed: &[QueuedRecipient],
    message: &[u8],
) -> std::io::Result<()> {
    let snapshot = context.current.load_full();
    let hostname = &snapshot.config.server.hostname;
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
            bounced: false,
        }],
        received_at: now,
        attempts: 0,
        next_attempt: now,
        route: None,
        quarantine_reason: None,
        inbound: false,
        sender_authenticated: false,
    };
    let spool = context.spool.clone();
    tokio::task::spawn_blocking(move || spool.store(Store::Queue, &envelope, text.as_bytes()))
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!(tenant = %original.tenant, id = %id, original = %original.id, to = %original.mail_from, "queued a delivery status notification");
    context.metrics.queue(&original.tenant, 1);
    let _ = context.queue.send(super::Queued { id, loaded: None });
    Ok(())
}
