//! The relay's recent past for the console: the last transactions (verdict, score, symbols)
//! and mail per minute by outcome over the last hour. In memory only; a restart begins
//! anew (the logs and metrics keep the history).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::conversation::TransactionRecord;
use crate::policy::chain::ScoredSymbol;

/// Transactions kept.
pub const KEPT: usize = 500;

/// Minutes of counts kept.
pub const MINUTES: u64 = 60;

/// One transaction as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Seconds since the epoch.
    pub at: u64,
    /// Queue id.
    pub id: String,
    /// Tenant (or `edge`).
    pub tenant: String,
    /// Client address.
    pub client: String,
    /// MAIL FROM.
    pub from: String,
    /// Recipients accepted.
    pub to: Vec<String>,
    /// `accept`, `reject`, `tempfail`, `quarantine`, `discard` or `error`.
    pub outcome: String,
    /// Stage that decided.
    pub stage: String,
    /// Policy that decided, if one did.
    pub decided_by: Option<String>,
    /// Score of the message's symbols.
    pub score: f64,
    /// The symbols.
    pub symbols: Vec<ScoredSymbol>,
    /// What the client was told.
    pub reply: String,
}

/// The recent transactions and per-minute counts.
#[derive(Default)]
pub struct Recent {
    entries: Mutex<VecDeque<Entry>>,
    /// (minute since the epoch, outcome → messages), oldest first.
    minutes: Mutex<VecDeque<(u64, BTreeMap<String, u64>)>>,
}

impl Recent {
    /// Note what a transaction came to (`outcome` as the metrics count it).
    pub fn add(&self, record: &TransactionRecord, outcome: &str) {
        let j = &record.judgement;
        let entry = Entry {
            at: crate::spool::now_secs(),
            id: record.id.clone(),
            tenant: record.tenant.clone(),
            client: record.client.ip().to_string(),
            from: record.from.clone(),
            to: record.recipients.clone(),
            outcome: outcome.to_string(),
            stage: j.stage.to_string(),
            decided_by: j.decided_by.clone(),
            score: j.score,
            symbols: j.symbols.clone(),
            reply: record.reply.to_string().trim_end().to_string(),
        };
        let minute = entry.at / 60;
        {
            let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
            if minutes.back().is_none_or(|(m, _)| *m != minute) {
                minutes.push_back((minute, BTreeMap::new()));
            }
            while minutes.front().is_some_and(|(m, _)| *m + MINUTES <= minute) {
                minutes.pop_front();
            }
            if let Some((_, counts)) = minutes.back_mut() {
                *counts.entry(outcome.to_string()).or_insert(0) += 1;
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == KEPT {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// `GET /api/transactions[?tenant=NAME][&limit=N]`: the newest first, and the counts of
    /// the last [`MINUTES`] minutes (each minute, oldest first, with every outcome seen).
    pub fn to_json(&self, query: &str) -> serde_json::Value {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(crate::spool::filter::decode)
        };
        let tenant = param("tenant");
        let limit = param("limit").and_then(|n| n.parse().ok()).unwrap_or(100usize);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let shown: Vec<&Entry> = entries
            .iter()
            .rev()
            .filter(|e| tenant.as_deref().is_none_or(|t| e.tenant == t))
            .take(limit)
            .collect();
        let now = crate::spool::now_secs() / 60;
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let per_minute: Vec<serde_json::Value> = (now + 1 - MINUTES..=now)
            .map(|m| {
                let counts =
                    minutes.iter().find(|(at, _)| *at == m).map(|(_, c)| c.clone()).unwrap_or_default();
                serde_json::json!({ "minute": m * 60, "counts": counts })
            })
            .collect();
        serde_json::json!({ "transactions": shown, "per_minute": per_minute })
    }
}
