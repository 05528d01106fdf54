//! The admin API's queue endpoints, which the console and `sluice queue` use while a relay
//! holds the spool:
//!
//! - `GET /api/queue[?FILTER][&limit=N]`: the queued and quarantined messages the filter
//!   admits (the oldest 500 unless `limit` says otherwise), and their number.
//! - `GET /api/queue/message?id=ID`: one message's envelope, headers and text.
//! - `POST /api/queue/flush[?FILTER]`, `POST /api/queue/delete?id=ID[&id=…]|FILTER`,
//!   `POST /api/queue/hold?id=ID[&id=…]|FILTER`: changes, carried out by the relay's delivery
//!   task ([`crate::delivery::orders`]), so they never race an attempt.
//!
//! FILTER: `tenant=`, `sender=`, `recipient=`, `older_than=` (`90s`, `15m`, `2h`, `3d`),
//! `store=queue|quarantine` ([`crate::spool::filter`]).

use serde_json::json;
use tokio::sync::oneshot;

use super::learn::{Answer, error, param};
use crate::delivery::orders::{Deleted, Held, Order};
use crate::relay::Relay;
use crate::spool::filter::{Filter, store_name};
use crate::spool::{self, QueuedMessage, Store};

/// Bytes of a message's text `GET /api/queue/message` returns at most.
const SHOWN_BYTES: usize = 256 * 1024;

/// Every `name=value` of a query, decoded.
fn params(query: &str) -> impl Iterator<Item = (&str, String)> {
    query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, super::percent_decode(v)))
}

fn filter(query: &str) -> Result<Filter, Answer> {
    Filter::from_params(params(query)).map_err(|e| error("400 Bad Request", e))
}

/// The messages `filter` admits, from both stores, oldest first.
async fn matching(relay: &Relay, filter: Filter) -> Result<Vec<(Store, QueuedMessage)>, Answer> {
    let spool = relay.spool.clone();
    let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(Store, QueuedMessage)>> {
        let now = spool::now_secs();
        let mut all = Vec::new();
        for store in [Store::Queue, Store::Quarantine] {
            let admitted = spool.list(store)?.into_iter().filter(|m| filter.admits(store, m, now));
            all.extend(admitted.map(|m| (store, m)));
        }
        all.sort_by_key(|(_, m)| m.received_at);
        Ok(all)
    })
    .await;
    match listed {
        Ok(Ok(all)) => Ok(all),
        Ok(Err(e)) => Err(error("500 Internal Server Error", format!("the spool: {e}"))),
        Err(e) => Err(error("500 Internal Server Error", format!("the spool: {e}"))),
    }
}

/// Messages `GET /api/queue` returns unless asked for another `limit`.
const LISTED: usize = 500;

/// `GET /api/queue[?FILTER][&limit=N]`: the oldest `limit` (default [`LISTED`]) of the
/// messages the filter admits, and how many it admits in all (`total`).
pub async fn list(relay: &Relay, query: &str) -> Answer {
    let limit = match param(query, "limit").map(|n| n.parse::<usize>()) {
        None => LISTED,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error("400 Bad Request", "limit: a number of messages"),
    };
    let all = match filter(query) {
        Ok(filter) => matching(relay, filter).await,
        Err(answer) => return answer,
    };
    match all {
        Ok(all) => {
            let total = all.len();
            let messages: Vec<serde_json::Value> = all
                .into_iter()
                .take(limit)
                .map(|(store, m)| {
                    let mut value = serde_json::to_value(&m).unwrap_or_default();
                    value["store"] = store_name(store).into();
                    value
                })
                .collect();
            ("200 OK", json!({ "now": spool::now_secs(), "total": total, "messages": messages }))
        }
        Err(answer) => answer,
    }
}

/// `GET /api/queue/message?id=ID`: the envelope, the headers and the text (the first
/// [`SHOWN_BYTES`]).
pub async fn message(relay: &Relay, query: &str) -> Answer {
    let Some(id) = param(query, "id") else { return error("400 Bad Request", "?id=ID") };
    if !spool::valid_id(&id) {
        return error("400 Bad Request", format!("{id}: not a queue id"));
    }
    for store in [Store::Queue, Store::Quarantine] {
        let Ok(envelope) = relay.spool.envelope(store, &id) else { continue };
        let bytes = match relay.spool.message(store, &id) {
            Ok(bytes) => bytes,
            Err(e) => return error("500 Internal Server Error", format!("{id}: {e}")),
        };
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
        let mut value = serde_json::to_value(&envelope).unwrap_or_default();
        value["store"] = store_name(store).into();
        value["size"] = bytes.len().into();
        value["headers"] = String::from_utf8_lossy(&bytes[..end]).into();
        value["body"] = String::from_utf8_lossy(&bytes[end..bytes.len().min(end + SHOWN_BYTES)]).into();
        value["body_cut"] = (bytes.len() > end + SHOWN_BYTES).into();
        return ("200 OK", value);
    }
    error("404 Not Found", format!("{id}: no such message in the queue or the quarantine"))
}

/// `POST /api/queue/flush[?FILTER]`: the queued messages the filter admits, due now.
pub async fn flush(relay: &Relay, query: &str) -> Answer {
    let filter = match filter(query) {
        Ok(filter) => filter,
        Err(answer) => return answer,
    };
    let (answer, answered) = oneshot::channel();
    if relay.orders.send(Order::Flush { filter, answer }).is_err() {
        return error("503 Service Unavailable", "delivery is not running");
    }
    match answered.await {
        Ok(Ok(n)) => ("200 OK", json!({ "due_now": n })),
        Ok(Err(e)) => error("500 Internal Server Error", format!("flush: {e}")),
        Err(_) => error("503 Service Unavailable", "delivery is not running"),
    }
}

/// What a change by id or filter does to each message.
#[derive(Clone, Copy)]
enum Change {
    Delete,
    Hold,
}

/// The ids a change names: `id=` (one or more), or every message a non-empty filter admits
/// (queued ones only, for a hold).
async fn targets(relay: &Relay, query: &str, change: Change) -> Result<Vec<String>, Answer> {
    let ids: Vec<String> = params(query).filter(|(k, _)| *k == "id").map(|(_, v)| v).collect();
    if let Some(bad) = ids.iter().find(|id| !spool::valid_id(id)) {
        return Err(error("400 Bad Request", format!("{bad}: not a queue id")));
    }
    let mut filter = filter(query)?;
    if !ids.is_empty() {
        return Ok(ids);
    }
    if filter.is_empty() {
        return Err(error(
            "400 Bad Request",
            "say which messages: ?id=ID, or a filter (tenant=, sender=, …)",
        ));
    }
    if matches!(change, Change::Hold) {
        filter.store = Some(Store::Queue);
    }
    Ok(matching(relay, filter).await?.into_iter().map(|(_, m)| m.id).collect())
}

/// `POST /api/queue/delete?id=ID[&id=…]` or `?FILTER`: out of the queue or the quarantine.
pub async fn delete(relay: &Relay, query: &str) -> Answer {
    change(relay, query, Change::Delete).await
}

/// `POST /api/queue/hold?id=ID[&id=…]` or `?FILTER`: queued messages into the quarantine,
/// where they wait for `release` (or `delete`).
pub async fn hold(relay: &Relay, query: &str) -> Answer {
    change(relay, query, Change::Hold).await
}

async fn change(relay: &Relay, query: &str, change: Change) -> Answer {
    let ids = match targets(relay, query, change).await {
        Ok(ids) => ids,
        Err(answer) => return answer,
    };
    let mut done = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match one(relay, &id, change).await {
            Ok(value) => done.push(value),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(id),
            Err(e) => return error("500 Internal Server Error", format!("{id}: {e}")),
        }
    }
    if done.is_empty() && !missing.is_empty() {
        let place = if matches!(change, Change::Hold) { "the queue" } else { "the queue or the quarantine" };
        return error("404 Not Found", format!("{}: no such message in {place}", missing.join(", ")));
    }
    let verb = if matches!(change, Change::Hold) { "held" } else { "deleted" };
    ("200 OK", json!({ verb: done, "not_found": missing }))
}

async fn one(relay: &Relay, id: &str, change: Change) -> std::io::Result<serde_json::Value> {
    let gone = || std::io::Error::other("delivery is not running");
    match change {
        Change::Delete => {
            let (answer, answered) = oneshot::channel();
            relay.orders.send(Order::Delete { id: id.to_string(), answer }).map_err(|_| gone())?;
            let Deleted { store, after_attempt } = answered.await.map_err(|_| gone())??;
            Ok(json!({ "id": id, "store": store_name(store), "after_attempt": after_attempt }))
        }
        Change::Hold => {
            let (answer, answered) = oneshot::channel();
            relay.orders.send(Order::Hold { id: id.to_string(), answer }).map_err(|_| gone())?;
            let Held { after_attempt } = answered.await.map_err(|_| gone())??;
            Ok(json!({ "id": id, "after_attempt": after_attempt }))
        }
    }
}
