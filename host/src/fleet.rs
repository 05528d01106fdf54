//! One generation for a fleet of relays sharing a Redis (`[fleet] node = "NAME"`): each node
//! writes a heartbeat with the name of the generation it runs; a reload or rollback asked of
//! any node through its admin API (or `sluice reload`, `sluice policy rollback`) is announced
//! in Redis, and every other node carries it out within a poll period ([`POLL`]) — re-reading
//! its files and re-resolving its OCI tags — or reports why it cannot. `GET /api/fleet` shows
//! each node, its generation and its last heartbeat.
//!
//! A generation's name is the content hash of what judges mail: each party's name, and each
//! of its policies' component hash, name, mode and configuration. Node-local settings
//! (addresses, paths) are left out, so nodes with their own ports and spools but the same
//! policies share a name.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::reload::Generations;
use crate::state::redis_kv::RedisKv;
use crate::tenants::Snapshot;

/// How often a node writes its heartbeat and looks for announcements.
pub const POLL: Duration = Duration::from_millis(250);

/// A heartbeat older than this marks a node as gone.
pub const STALE: Duration = Duration::from_secs(10);

/// This node's part in the fleet.
pub struct Fleet {
    node: String,
    store: Arc<RedisKv>,
    generations: Arc<Generations>,
    /// The last announcement this node carried out (or made).
    seen: std::sync::atomic::AtomicI64,
    /// What the last announcement came to here.
    last: std::sync::Mutex<serde_json::Value>,
}

/// The name of the generation `snapshot` runs: the first 16 hex digits of its content hash.
pub fn generation_name(snapshot: &Snapshot) -> String {
    let mut hash = Sha256::new();
    for party in snapshot.parties() {
        hash.update(party.name.as_bytes());
        hash.update([0]);
        let configured = std::iter::once(snapshot.config.edge())
            .chain(&snapshot.config.tenants)
            .find(|t| t.name == party.name);
        for (i, policy) in party.chain.policies.iter().enumerate() {
            hash.update(policy.hash.as_bytes());
            hash.update(policy.name.as_bytes());
            hash.update([u8::from(party.chain.is_shadow(i))]);
            if let Some(spec) = configured.and_then(|t| t.policies.get(i)) {
                hash.update(format!("{:?}", spec.config).as_bytes());
            }
            hash.update([1]);
        }
    }
    hex::encode(&hash.finalize()[..8])
}

fn now() -> u64 {
    crate::spool::now_secs()
}

impl Fleet {
    /// This node, `node`, on `store`.
    pub fn new(node: &str, store: Arc<RedisKv>, generations: Arc<Generations>) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_string(),
            store,
            generations,
            seen: std::sync::atomic::AtomicI64::new(-1),
            last: std::sync::Mutex::new(serde_json::Value::Null),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}fleet:{name}", self.store.prefix())
    }

    /// Write heartbeats and carry out announcements until the process ends.
    pub async fn run(self: Arc<Self>) {
        // What was announced before this node started is not for it.
        if let Ok(Some(order)) = self.order().await {
            self.seen.store(order["seq"].as_i64().unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
        }
        loop {
            self.heartbeat().await;
            if let Ok(Some(order)) = self.order().await {
                let seq = order["seq"].as_i64().unwrap_or(0);
                if seq > self.seen.swap(seq, std::sync::atomic::Ordering::SeqCst) && order["by"] != self.node
                {
                    self.carry_out(&order).await;
                    self.heartbeat().await;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn order(&self) -> Result<Option<serde_json::Value>, crate::state::kv::KvError> {
        let text: Option<String> =
            self.store.command(redis::cmd("GET").arg(self.key("order")).clone()).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn carry_out(&self, order: &serde_json::Value) {
        let by = order["by"].as_str().unwrap_or("?");
        let outcome = match order["kind"].as_str() {
            Some("rollback") => {
                let tenant = order["tenant"].as_str().unwrap_or_default();
                match self.generations.rollback(tenant).await {
                    Ok(generation) => json!({ "result": "rollback", "generation": generation }),
                    Err(e) => json!({ "result": "failed", "errors": [e] }),
                }
            }
            _ => {
                let report = self.generations.reload(&format!("fleet (announced by {by})")).await;
                json!({ "result": report.result, "errors": report.errors })
            }
        };
        if outcome["result"] == "failed" {
            tracing::warn!(by, errors = %outcome["errors"], "fleet: an announced change failed here; the running generation stays");
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            json!({ "seq": order["seq"], "kind": order["kind"], "by": by, "outcome": outcome });
    }

    async fn heartbeat(&self) {
        let snapshot = self.generations.snapshot();
        let tenants: serde_json::Map<String, serde_json::Value> =
            snapshot.parties().map(|t| (t.name.clone(), t.generation.into())).collect();
        let beat = json!({
            "node": self.node,
            "generation": generation_name(&snapshot),
            "tenants": tenants,
            "heartbeat": now(),
            "last_announcement": *self.last.lock().unwrap_or_else(|p| p.into_inner()),
        });
        let command = redis::cmd("HSET").arg(self.key("nodes")).arg(&self.node).arg(beat.to_string()).clone();
        if let Err(e) = self.store.command::<i64>(command).await {
            tracing::debug!(error = %e, "fleet: heartbeat not written");
        }
    }

    /// Announce a reload (`tenant` None) or a rollback of `tenant` this node has made.
    pub async fn announce(&self, kind: &str, tenant: Option<&str>) -> Result<i64, String> {
        let seq: i64 = self
            .store
            .command(redis::cmd("INCR").arg(self.key("seq")).clone())
            .await
            .map_err(|e| e.to_string())?;
        self.seen.fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        let order = json!({ "seq": seq, "kind": kind, "tenant": tenant, "by": self.node, "at": now() });
        let command = redis::cmd("SET").arg(self.key("order")).arg(order.to_string()).clone();
        self.store.command::<()>(command).await.map_err(|e| e.to_string())?;
        self.heartbeat().await;
        Ok(seq)
    }

    /// `GET /api/fleet`: every node's last heartbeat, its age, and whether it runs the
    /// generation most nodes run.
    pub async fn describe(&self) -> Result<serde_json::Value, String> {
        let all: std::collections::BTreeMap<String, String> = self
            .store
            .command(redis::cmd("HGETALL").arg(self.key("nodes")).clone())
            .await
            .map_err(|e| e.to_string())?;
        let now = now();
        let nodes: Vec<serde_json::Value> = all
            .values()
            .filter_map(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .map(|mut node| {
                let age = now.saturating_sub(node["heartbeat"].as_u64().unwrap_or(0));
                node["age_secs"] = age.into();
                node["alive"] = (age <= STALE.as_secs()).into();
                node
            })
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        for node in nodes.iter().filter(|n| n["alive"] == true) {
            *counts.entry(node["generation"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
        }
        let converged = counts.len() <= 1;
        Ok(json!({ "node": self.node, "converged": converged, "generations": counts, "nodes": nodes }))
    }
}
