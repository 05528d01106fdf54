//! The admin API's feedback endpoints: `POST /api/learn` (a message, or a queued or
//! quarantined one by id, and its class, taught to a tenant's learning policies) and
//! `POST /api/release` (a message out of quarantine into the queue, learned as ham when
//! asked). Operators' and users' verdicts reach the models through them.

use std::sync::Arc;

use serde_json::json;

use crate::policy::{Learner, Lesson, ParsedMessage};
use crate::relay::Relay;
use crate::spool::{self, Store};
use crate::tenants::Tenant;

/// An answer: HTTP status and JSON body.
pub type Answer = (&'static str, serde_json::Value);

pub(super) fn error(status: &'static str, message: impl Into<String>) -> Answer {
    (status, json!({ "error": message.into() }))
}

/// The value of `name` in a query string, percent-decoded.
pub(super) fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .map(super::percent_decode)
}

/// A spooled message by id: where it is, its tenant and its bytes.
fn spooled(relay: &Relay, id: &str) -> Result<(Store, String, Vec<u8>), Answer> {
    if !spool::valid_id(id) {
        return Err(error("400 Bad Request", format!("{id}: not a queue id")));
    }
    for store in [Store::Quarantine, Store::Queue] {
        if let Ok(envelope) = relay.spool.envelope(store, id) {
            let bytes = relay
                .spool
                .message(store, id)
                .map_err(|e| error("500 Internal Server Error", format!("{id}: {e}")))?;
            return Ok((store, envelope.tenant, bytes));
        }
    }
    Err(error("404 Not Found", format!("{id}: no such message in the queue or the quarantine")))
}

/// The tenant named, or the only one.
fn tenant(relay: &Relay, name: Option<&str>) -> Result<Arc<Tenant>, Answer> {
    let snapshot = relay.snapshot();
    match name {
        Some(name) => snapshot
            .parties()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| error("404 Not Found", format!("no tenant {name:?}"))),
        None if snapshot.tenants.len() == 1 => Ok(snapshot.tenants[0].clone()),
        None => Err(error("400 Bad Request", "say which tenant: ?tenant=NAME")),
    }
}

/// Teach `raw` to `tenant`'s learning policies.
async fn teach(tenant: &Tenant, raw: Vec<u8>, lesson: Lesson) -> Answer {
    let learners: Vec<_> = tenant.chain.learners().cloned().collect();
    if learners.is_empty() {
        return error(
            "409 Conflict",
            format!("tenant {} has no learning policy (none exports sluice:policy/learner)", tenant.name),
        );
    }
    let message = Arc::new(ParsedMessage::parse(raw));
    let mut results = Vec::new();
    let mut failed = false;
    for policy in learners {
        let name = policy.name.clone();
        let outcome = match Learner::new(policy) {
            Ok(mut learner) => learner.learn(message.clone(), lesson, None).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(learned) => json!({ "policy": name, "learned": learned.as_str() }),
            Err(e) => {
                failed = true;
                json!({ "policy": name, "error": e.to_string() })
            }
        });
    }
    let status = if failed { "500 Internal Server Error" } else { "200 OK" };
    (status, json!({ "tenant": tenant.name, "class": lesson.as_str(), "policies": results }))
}

/// `POST /api/learn?class=spam|ham|forget[&tenant=NAME][&id=ID]`: the message is the request
/// body, or the queued or quarantined message `id` (whose tenant it is then).
pub async fn learn(relay: &Relay, query: &str, body: Vec<u8>) -> Answer {
    let Some(lesson) = param(query, "class").as_deref().and_then(Lesson::parse) else {
        return error("400 Bad Request", "class=spam, class=ham or class=forget");
    };
    let (tenant_name, raw) = match param(query, "id") {
        Some(id) => match spooled(relay, &id) {
            Ok((_, tenant, raw)) => (Some(param(query, "tenant").unwrap_or(tenant)), raw),
            Err(answer) => return answer,
        },
        None if body.is_empty() => {
            return error("400 Bad Request", "send the message as the body, or ?id=ID");
        }
        None => (param(query, "tenant"), body),
    };
    match tenant(relay, tenant_name.as_deref()) {
        Ok(tenant) => teach(&tenant, raw, lesson).await,
        Err(answer) => answer,
    }
}

/// `POST /api/release?id=ID[&learn=ham]`: move a quarantined message into the queue (the
/// delivery picks it up at once), teaching it first as ham when asked; a lesson that fails
/// leaves the message in quarantine.
pub async fn release(relay: &Relay, query: &str) -> Answer {
    let Some(id) = param(query, "id") else { return error("400 Bad Request", "?id=ID") };
    let (store, tenant_name, raw) = match spooled(relay, &id) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    if store != Store::Quarantine {
        return error("409 Conflict", format!("{id}: not in quarantine"));
    }
    let mut learned = serde_json::Value::Null;
    match param(query, "learn").as_deref() {
        None => {}
        Some("ham") => {
            let answer = match tenant(relay, Some(&tenant_name)) {
                Ok(tenant) => teach(&tenant, raw, Lesson::Ham).await,
                Err(answer) => answer,
            };
            if answer.0 != "200 OK" {
                return answer;
            }
            learned = answer.1;
        }
        Some(other) => return error("400 Bad Request", format!("learn={other}: only learn=ham")),
    }
    match relay.release(&id) {
        Ok(()) => ("200 OK", json!({ "id": id, "released": true, "learned": learned })),
        Err(e) => error("500 Internal Server Error", format!("{id}: {e}")),
    }
}
