//! Delivery: takes queued messages to their next hop, retries with exponential backoff,
//! bounces with an RFC 3464 delivery status notification.
//!
//! Routes, in order: a next hop a policy named (`[delivery.next_hops]`); the tenant's
//! `next_hop` for its own domains; `[delivery.smarthost]` for every other domain; without a
//! smarthost, the domain's MX hosts ([`route`]).
//!
//! Each attempt ([`attempt`]) groups a message's pending recipients by destination and delivers
//! each group while holding a slot of that destination (`delivery.destination_concurrency`)
//! and then one of the relay-wide slots (`delivery.max_deliveries`), in that order: a
//! destination with a backlog waits on its own slots and never holds the relay-wide ones other
//! destinations need. The SMTP client and its connection cache are in [`client`]; Maildir
//! delivery in [`maildir`]; bounces in [`bounce`].

mod attempt;
pub mod bounce;
pub mod client;
pub mod maildir;
pub mod orders;
mod route;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use orders::{Deleted, HELD, Held, Order};

use crate::dns::DnsResolver;
use crate::metrics::Metrics;
use crate::spool::{self, QueuedMessage, Spool, Store};
use crate::tenants::Current;
pub use maildir::maildir_deliver;

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

/// A message the delivery task is told about.
pub struct Queued {
    /// Queue id.
    pub id: String,
    /// Its envelope and bytes as just stored, so the first attempt need not read them back.
    pub loaded: Option<(QueuedMessage, Arc<Vec<u8>>)>,
}

/// What delivery works with: the snapshot in force (routes and retry settings change on
/// reload), the spool, the counters, DNS, the TLS client, and its own queue (for bounces).
pub struct Context {
    current: Arc<Current>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    dns: Arc<DnsResolver>,
    /// TLS client for opportunistic STARTTLS (None: `delivery.starttls` is off).
    tls: Option<tokio_rustls::TlsConnector>,
    /// TLS client that accepts any certificate, for next hops whose TLS is `required`.
    any_certificate: Option<tokio_rustls::TlsConnector>,
    queue: mpsc::UnboundedSender<Queued>,
}

/// Delivery, ready to [`run`]: its context, the queue the relay feeds and the operators'
/// orders ([`orders`]).
pub struct Delivery {
    context: Arc<Context>,
    queue: mpsc::UnboundedReceiver<Queued>,
    orders: mpsc::UnboundedReceiver<Order>,
}

impl Delivery {
    /// Delivery over `spool` with the routes of the snapshot in `current`; returns it, the
    /// sender of its queue and the sender of orders.
    pub fn new(
        current: Arc<Current>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        dns: Arc<DnsResolver>,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> (Self, mpsc::UnboundedSender<Queued>, mpsc::UnboundedSender<Order>) {
        let (sender, queue) = mpsc::unbounded_channel();
        let (order_sender, orders) = mpsc::unbounded_channel();
        let any_certificate = client::tls_connector().ok();
        let context =
            Arc::new(Context { current, spool, metrics, dns, tls, any_certificate, queue: sender.clone() });
        (Self { context, queue, orders }, sender, order_sender)
    }
}

/// What deliveries share: the connection pool and the relay-wide delivery slots.
pub struct Outbound {
    /// Connections to SMTP next hops.
    pub pool: client::Pool,
    slots: Arc<Semaphore>,
}

impl Outbound {
    /// From the `[delivery]` settings of the snapshot in force.
    fn new(context: &Context) -> Self {
        let snapshot = context.current.load_full();
        let config = &snapshot.config.delivery;
        let pool = client::Pool::new(client::Settings {
            helo: snapshot.config.server.hostname.clone(),
            timeout: Duration::from_secs(config.timeout_secs),
            tls: context.tls.clone(),
            any_certificate: context.any_certificate.clone(),
            idle: Duration::from_secs(config.connection_cache_secs),
            reuse_limit: config.connection_reuse_limit,
            per_destination: config.destination_concurrency,
        });
        Self { pool, slots: Arc::new(Semaphore::new(config.max_deliveries.max(1))) }
    }
}

/// Bytes of freshly queued messages kept in memory for their first attempt; beyond it, the
/// attempt reads the spool.
const LOADED_BUDGET: usize = 64 << 20;

/// Run delivery until the process ends: everything in the spool at start, then each new
/// message from the relay's queue, operators' orders, and a rescan of the spool every few
/// seconds.
pub async fn run(delivery: Delivery) {
    let Delivery { context, queue: mut new_ids, mut orders } = delivery;
    // Deleted by an operator while an attempt was working on them: removed when it ends.
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    // Held by an operator while an attempt was working on them: held when it ends.
    let mut to_hold: BTreeSet<String> = BTreeSet::new();
    let outbound = Arc::new(Outbound::new(&context));
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
                if doomed.remove(&id) {
                    // Already gone if the attempt finished the message.
                    let _ = context.spool.remove_anywhere(&id);
                } else if to_hold.remove(&id) && next.is_some() {
                    if let Err(e) = context.spool.hold(&id, HELD) {
                        tracing::warn!(id = %id, error = %e, "cannot hold the message after its attempt");
                    }
                } else if let Some(at) = next {
                    due.insert((at, id), ());
                }
            }
            Some(order) = orders.recv() => match order {
                Order::Flush { filter, answer } => {
                    let (spool, busy) = (context.spool.clone(), in_flight.clone());
                    let now = spool::now_secs();
                    let skip = move |m: &QueuedMessage| busy.contains(&m.id) || !filter.admits(Store::Queue, m, now);
                    let flushed = tokio::task::spawn_blocking(move || spool.flush(skip))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                    let answered = flushed.map(|ids| {
                        let n = ids.len();
                        due.extend(ids.into_iter().map(|id| ((0, id), ())));
                        n
                    });
                    let _ = answer.send(answered);
                }
                Order::Delete { id, answer } => {
                    let deleted = if in_flight.contains(&id) {
                        doomed.insert(id.clone());
                        Ok(Deleted { store: Store::Queue, after_attempt: true })
                    } else {
                        if let Some((_, message)) = loaded.remove(&id) {
                            loaded_bytes -= message.len();
                        }
                        context.spool.remove_anywhere(&id).map(|store| Deleted { store, after_attempt: false })
                    };
                    let _ = answer.send(deleted);
                }
                Order::Hold { id, answer } => {
                    let held = if in_flight.contains(&id) {
                        to_hold.insert(id.clone());
                        Ok(Held { after_attempt: true })
                    } else {
                        if let Some((_, message)) = loaded.remove(&id) {
                            loaded_bytes -= message.len();
                        }
                        context.spool.hold(&id, HELD).map(|()| Held { after_attempt: false })
                    };
                    let _ = answer.send(held);
                }
            },
            _ = rescan.tick() => {
                let spool = context.spool.clone();
                if let Ok(Ok(all)) = tokio::task::spawn_blocking(move || spool.list(Store::Queue)).await {
                    context.metrics.set_queue_ages(all.iter().map(|m| (m.tenant.as_str(), m.received_at)));
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
            let context = context.clone();
            let outbound = outbound.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let next = attempt::attempt(&context, &outbound, &id, preloaded).await;
                let _ = done.send((id, next));
            });
        }
    }
}
