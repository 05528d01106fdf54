//! The admin API's queue endpoints — `POST /api/queue/flush` and `POST /api/queue/delete?id=`
//! — which `sluice queue flush|delete` use while a relay holds the spool: the relay's delivery
//! task carries them out ([`crate::delivery::orders`]), so they never race an attempt.

use serde_json::json;
use tokio::sync::oneshot;

use super::learn::{Answer, error, param};
use crate::delivery::orders::Order;
use crate::relay::Relay;
use crate::spool::{self, Store};

/// `POST /api/queue/flush`: every queued message due now.
pub async fn flush(relay: &Relay) -> Answer {
    let (answer, answered) = oneshot::channel();
    if relay.orders.send(Order::Flush(answer)).is_err() {
        return error("503 Service Unavailable", "delivery is not running");
    }
    match answered.await {
        Ok(Ok(n)) => ("200 OK", json!({ "due_now": n })),
        Ok(Err(e)) => error("500 Internal Server Error", format!("flush: {e}")),
        Err(_) => error("503 Service Unavailable", "delivery is not running"),
    }
}

/// `POST /api/queue/delete?id=ID`: one message out of the queue or the quarantine.
pub async fn delete(relay: &Relay, query: &str) -> Answer {
    let Some(id) = param(query, "id") else { return error("400 Bad Request", "?id=ID") };
    if !spool::valid_id(&id) {
        return error("400 Bad Request", format!("{id}: not a queue id"));
    }
    let (answer, answered) = oneshot::channel();
    if relay.orders.send(Order::Delete { id: id.clone(), answer }).is_err() {
        return error("503 Service Unavailable", "delivery is not running");
    }
    match answered.await {
        Ok(Ok(deleted)) => (
            "200 OK",
            json!({
                "id": id,
                "deleted": true,
                "store": if deleted.store == Store::Queue { "queue" } else { "quarantine" },
                "after_attempt": deleted.after_attempt,
            }),
        ),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            error("404 Not Found", format!("{id}: no such message in the queue or the quarantine"))
        }
        Ok(Err(e)) => error("500 Internal Server Error", format!("{id}: {e}")),
        Err(_) => error("503 Service Unavailable", "delivery is not running"),
    }
}
