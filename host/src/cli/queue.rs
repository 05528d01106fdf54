//! `sluice queue …`: the spool seen and changed from the command line. Reading (`list`,
//! `show`) works on the spool's files at any time — they are replaced whole, never written in
//! place. A change (`flush`, `delete`, `release`) is made by whoever holds the spool
//! ([`crate::spool::lock`]): with no relay running the command locks the spool and makes it
//! itself; while a relay holds it, the command asks that relay through its admin API, whose
//! delivery task carries the change out between its own steps, so the two never race.

use crate::config::Config;
use crate::spool::filter::{self, store_name};
use crate::spool::lock::{Holder, SpoolLock};
use crate::spool::{self, Spool, Store};

use super::relay::admin_json;

/// What `sluice queue` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// List queued and quarantined messages: id, where, tenant, age, attempts, next attempt,
    /// sender, pending recipients, and the last error or the quarantine's reason.
    #[command(
        after_help = "Examples:\n  sluice queue list\n  sluice queue list --tenant example --older-than 2h\n  sluice queue list --recipient @example.com --json"
    )]
    List {
        /// Which messages.
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per message (its envelope and `store`), one per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one message's envelope, delivery state and headers.
    Show {
        /// Queue id.
        id: String,
        /// The envelope as JSON (with `store` and `headers`).
        #[arg(long)]
        json: bool,
    },
    /// Make queued messages due now — all, or those the filter admits (a running relay
    /// picks them up within seconds).
    #[command(after_help = "Examples:\n  sluice queue flush\n  sluice queue flush --recipient @example.org")]
    Flush {
        /// Which messages.
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete messages from the queue or the quarantine: by id, or every one the filter
    /// admits (at least one filter then).
    #[command(
        after_help = "Examples:\n  sluice queue delete 0005f3a1b2c3d4e5-0001\n  sluice queue delete --store quarantine --older-than 30d"
    )]
    Delete {
        /// Queue ids.
        ids: Vec<String>,
        /// Which messages, without ids.
        #[command(flatten)]
        filter: Filter,
    },
    /// Hold queued messages: they move into the quarantine (reason "held by an operator")
    /// and wait there for `release` or `delete`. By id, or every queued one the filter admits.
    #[command(
        after_help = "Examples:\n  sluice queue hold 0005f3a1b2c3d4e5-0001\n  sluice queue hold --sender @bulk.example"
    )]
    Hold {
        /// Queue ids.
        ids: Vec<String>,
        /// Which messages, without ids.
        #[command(flatten)]
        filter: Filter,
    },
    /// Release a message from quarantine into the queue.
    Release {
        /// Queue id.
        id: String,
        /// Teach it to the tenant's learning policies as ham first, through the running
        /// relay's admin API (which then releases it); it stays in quarantine if that fails.
        #[arg(long)]
        learn_ham: bool,
    },
}

/// Which messages `sluice queue list` shows (all that match every filter given).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this tenant's messages.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only messages whose sender contains this (case-insensitive; `<>` for the null sender).
    #[arg(long)]
    pub sender: Option<String>,
    /// Only messages with a pending recipient that contains this (case-insensitive).
    #[arg(long)]
    pub recipient: Option<String>,
    /// Only messages accepted at least this long ago: `90s`, `15m`, `2h`, `3d`.
    #[arg(long, value_parser = filter::parse_age)]
    pub older_than: Option<u64>,
    /// Only the queue or only the quarantine.
    #[arg(long, value_parser = filter::parse_store)]
    pub store: Option<Store>,
}

impl Filter {
    fn spool(&self) -> filter::Filter {
        filter::Filter {
            tenant: self.tenant.clone(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            older_than: self.older_than,
            store: self.store,
        }
    }
}

/// A span of seconds for people: `42s`, `7m`, `3h 5m`, `2d 4h`.
fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// When the next attempt comes, for people.
fn next_attempt(store: Store, m: &spool::QueuedMessage, now: u64) -> String {
    match store {
        Store::Quarantine => "held".to_string(),
        Store::Queue if m.next_attempt <= now => "now".to_string(),
        Store::Queue => format!("in {}", span(m.next_attempt - now)),
    }
}

/// The last error of a pending recipient, or the quarantine's reason.
fn note(m: &spool::QueuedMessage) -> String {
    let reply = m.pending().filter_map(|r| r.last_reply.as_deref()).last();
    m.quarantine_reason.as_deref().or(reply).unwrap_or("").replace(['\r', '\n'], " ")
}

/// `sluice queue …`.
pub fn queue(config: &Config, command: QueueCommand) -> anyhow::Result<()> {
    let dir = config.resolve(&config.spool.dir);
    let changes = matches!(
        command,
        QueueCommand::Flush { .. }
            | QueueCommand::Delete { .. }
            | QueueCommand::Hold { .. }
            | QueueCommand::Release { learn_ham: false, .. }
    );
    let _lock = match changes {
        false => None,
        true => match SpoolLock::take(&dir, Holder::QueueCommand) {
            Ok(lock) => Some(lock),
            Err(held) if held.held_by_relay() => {
                return through_the_relay(config, command)
                    .map_err(|e| anyhow::anyhow!("{held}; asking that relay through its admin API: {e}"));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let spool = Spool::open(&dir, config.spool.sync)?;
    let find = |id: &str| -> anyhow::Result<Store> {
        if !spool::valid_id(id) {
            anyhow::bail!("{id}: not a queue id");
        }
        for store in [Store::Queue, Store::Quarantine] {
            if spool.envelope(store, id).is_ok() {
                return Ok(store);
            }
        }
        anyhow::bail!("{id}: no such message in the queue or the quarantine")
    };
    match command {
        QueueCommand::List { filter, json } => {
            let (now, filter) = (spool::now_secs(), filter.spool());
            let mut shown = 0;
            for store in [Store::Queue, Store::Quarantine] {
                let name = store_name(store);
                for m in spool.list(store)?.into_iter().filter(|m| filter.admits(store, m, now)) {
                    if json {
                        let mut value = serde_json::to_value(&m)?;
                        value["store"] = name.into();
                        println!("{value}");
                    } else {
                        if shown == 0 {
                            println!(
                                "{:<26} {:<10} {:<12} {:>7} {:>8} {:<9} {:<28} {:<28} LAST ERROR / REASON",
                                "ID", "STORE", "TENANT", "AGE", "ATTEMPTS", "NEXT", "FROM", "TO (PENDING)"
                            );
                        }
                        let pending: Vec<&str> = m.pending().map(|r| r.address.as_str()).collect();
                        let from = if m.mail_from.is_empty() { "<>" } else { m.mail_from.as_str() };
                        println!(
                            "{:<26} {name:<10} {:<12} {:>7} {:>8} {:<9} {from:<28} {:<28} {}",
                            m.id,
                            m.tenant,
                            span(now.saturating_sub(m.received_at)),
                            m.attempts,
                            next_attempt(store, &m, now),
                            pending.join(", "),
                            note(&m)
                        );
                    }
                    shown += 1;
                }
            }
            if shown == 0 && !json {
                println!(
                    "no messages in the queue or the quarantine{}",
                    if filter.is_empty() { "" } else { " match" }
                );
            }
        }
        QueueCommand::Show { id, json } => {
            let store = find(&id)?;
            let envelope = spool.envelope(store, &id)?;
            let message = spool.message(store, &id)?;
            let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
            let headers = String::from_utf8_lossy(&message[..end]);
            let name = if store == Store::Queue { "queue" } else { "quarantine" };
            if json {
                let mut value = serde_json::to_value(&envelope)?;
                value["store"] = name.into();
                value["headers"] = headers.as_ref().into();
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            let now = spool::now_secs();
            let when = |secs: u64| {
                format!("{} ({} ago)", crate::mail::rfc5322_date(secs), span(now.saturating_sub(secs)))
            };
            println!("id:           {}", envelope.id);
            println!("store:        {name}");
            println!("tenant:       {}", envelope.tenant);
            println!("from:         <{}>", envelope.mail_from);
            println!("received:     {}", when(envelope.received_at));
            println!("attempts:     {}", envelope.attempts);
            println!("next attempt: {}", next_attempt(store, &envelope, now));
            if let Some(route) = &envelope.route {
                println!("next hop:     {route}");
            }
            if let Some(reason) = &envelope.quarantine_reason {
                println!("quarantined:  {reason}");
            }
            for r in &envelope.recipients {
                let reply = r.last_reply.as_deref().map(|t| format!("; last reply: {t}")).unwrap_or_default();
                let status = match r.status {
                    spool::RecipientStatus::Pending => "pending",
                    spool::RecipientStatus::Delivered => "delivered",
                    spool::RecipientStatus::Failed if r.bounced => "failed, reported to the sender",
                    spool::RecipientStatus::Failed => "failed",
                };
                println!("recipient:    <{}> {status}{reply}", r.address);
            }
            println!("\n{headers}");
        }
        QueueCommand::Flush { filter } => {
            let (now, filter) = (spool::now_secs(), filter.spool());
            let flushed = spool.flush(|m| !filter.admits(Store::Queue, m, now))?;
            println!("{} message(s) due now", flushed.len());
        }
        QueueCommand::Delete { ids, filter } => {
            for id in targets(&spool, ids, filter.spool())? {
                match spool.remove_anywhere(&id) {
                    Ok(_) => println!("{id} deleted"),
                    Err(e) => eprintln!("{e}"),
                }
            }
        }
        QueueCommand::Hold { ids, filter } => {
            let filter = filter::Filter { store: Some(Store::Queue), ..filter.spool() };
            for id in targets(&spool, ids, filter)? {
                match spool.hold(&id, crate::delivery::orders::HELD) {
                    Ok(()) => println!("{id} held (in the quarantine until released)"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("{id}: not in the queue"),
                    Err(e) => eprintln!("{id}: {e}"),
                }
            }
        }
        QueueCommand::Release { id, learn_ham: true } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let answer =
                runtime.block_on(admin_json(config, "POST", &format!("/api/release?id={id}&learn=ham")))?;
            println!("{answer}");
        }
        QueueCommand::Release { id, learn_ham: false } => {
            if find(&id)? != Store::Quarantine {
                anyhow::bail!("{id}: not in quarantine");
            }
            spool.release(&id)?;
            println!("{id} released into the queue");
        }
    }
    Ok(())
}

/// The ids a change names: those given, else every message `filter` admits (which must
/// say something: a change to everything is asked with a filter, not by accident).
fn targets(spool: &Spool, ids: Vec<String>, filter: filter::Filter) -> anyhow::Result<Vec<String>> {
    if let Some(bad) = ids.iter().find(|id| !spool::valid_id(id)) {
        anyhow::bail!("{bad}: not a queue id");
    }
    if !ids.is_empty() {
        return Ok(ids);
    }
    if filter.is_empty() {
        anyhow::bail!(
            "say which messages: their ids, or a filter (--tenant, --sender, --recipient, --older-than, --store)"
        );
    }
    let now = spool::now_secs();
    let mut found = Vec::new();
    for store in [Store::Queue, Store::Quarantine] {
        found.extend(spool.list(store)?.into_iter().filter(|m| filter.admits(store, m, now)).map(|m| m.id));
    }
    Ok(found)
}

/// The query naming `ids`, or the filter.
fn which(ids: &[String], filter: &Filter) -> anyhow::Result<String> {
    if let Some(bad) = ids.iter().find(|id| !spool::valid_id(id)) {
        anyhow::bail!("{bad}: not a queue id");
    }
    if ids.is_empty() {
        let query = filter.spool().to_query();
        if query.is_empty() {
            anyhow::bail!(
                "say which messages: their ids, or a filter (--tenant, --sender, --recipient, --older-than, --store)"
            );
        }
        return Ok(query);
    }
    Ok(ids.iter().map(|id| format!("id={id}")).collect::<Vec<_>>().join("&"))
}

/// A change asked of the relay that holds the spool, through its admin API.
fn through_the_relay(config: &Config, command: QueueCommand) -> anyhow::Result<()> {
    let target = match &command {
        QueueCommand::Release { id, .. } if !spool::valid_id(id) => anyhow::bail!("{id}: not a queue id"),
        QueueCommand::Flush { filter } => format!("/api/queue/flush?{}", filter.spool().to_query()),
        QueueCommand::Delete { ids, filter } => format!("/api/queue/delete?{}", which(ids, filter)?),
        QueueCommand::Hold { ids, filter } => format!("/api/queue/hold?{}", which(ids, filter)?),
        QueueCommand::Release { id, .. } => format!("/api/release?id={id}"),
        QueueCommand::List { .. } | QueueCommand::Show { .. } => anyhow::bail!("reading needs no relay"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(admin_json(config, "POST", &target))?;
    let done = |key: &str| answer.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key).and_then(|x| x.as_str()).unwrap_or_default().to_string()
    };
    match command {
        QueueCommand::Flush { .. } => {
            println!("{} message(s) due now", answer.get("due_now").and_then(|v| v.as_u64()).unwrap_or(0))
        }
        QueueCommand::Delete { .. } | QueueCommand::Hold { .. } => {
            let (key, verb) = if matches!(command, QueueCommand::Hold { .. }) {
                ("held", "held (in the quarantine until released)")
            } else {
                ("deleted", "deleted")
            };
            for one in done(key) {
                let later = one.get("after_attempt").and_then(|v| v.as_bool()) == Some(true);
                let when = if later { " when the delivery attempt under way ends" } else { "" };
                println!("{} {verb}{when}", text(&one, "id"));
            }
            for id in done("not_found") {
                eprintln!("{}: no such message", id.as_str().unwrap_or_default());
            }
        }
        _ => println!("{} released into the queue", text(&answer, "id")),
    }
    Ok(())
}
