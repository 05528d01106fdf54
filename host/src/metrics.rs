//! Counters for Prometheus, served as text on the admin listener (`GET /metrics`, see
//! [`crate::admin`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::policy::chain::StageResult;
use crate::policy::decision::Verdict;

/// Calls and total microseconds per (tenant, policy, verdict).
type PolicyCounters = BTreeMap<(String, String, String), (u64, u64)>;

/// Upper bounds, in microseconds, of the policy latency histogram's buckets.
const LATENCY_BUCKETS_MICROS: [u64; 14] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000];

/// Per (tenant, policy): calls per bucket (the last one past every bound), total microseconds.
type LatencyHistograms = BTreeMap<(String, String), ([u64; LATENCY_BUCKETS_MICROS.len() + 1], u64)>;

/// The relay's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Tenant of the session (by client network, else the default tenant) → (connections,
    /// active connections).
    connections: Mutex<BTreeMap<String, (u64, i64)>>,
    /// (tenant, outcome) → transactions.
    transactions: Mutex<BTreeMap<(String, String), u64>>,
    /// (tenant, policy, verdict) → (count, total microseconds).
    policies: Mutex<PolicyCounters>,
    latency: Mutex<LatencyHistograms>,
    /// (tenant, result) → delivery attempts per recipient.
    deliveries: Mutex<BTreeMap<(String, String), u64>>,
    /// Tenant → messages in the queue.
    queued: Mutex<BTreeMap<String, i64>>,
    reloads: Mutex<BTreeMap<String, u64>>,
    generations: Mutex<BTreeMap<String, u64>>,
    /// (tenant, policy, verdict) → shadow decisions.
    shadow: Mutex<BTreeMap<(String, String, String), u64>>,
    /// (tenant, policy) → shadow decisions that differ from the enforced chain's.
    disagreements: Mutex<BTreeMap<(String, String), u64>>,
    /// (tenant, event) → how often an edge duty acted (see [`Metrics::event`]).
    events: Mutex<BTreeMap<(String, String), u64>>,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(key.to_string()).or_insert(0) += 1;
}

fn bump_pair(map: &Mutex<BTreeMap<(String, String), u64>>, tenant: &str, key: &str) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry((tenant.to_string(), key.to_string())).or_insert(0) += 1;
}

/// One tenant's counters, for `GET /api/tenants`.
#[derive(Debug, Default, serde::Serialize)]
pub struct TenantCounters {
    /// Transactions by outcome.
    pub transactions: BTreeMap<String, u64>,
    /// Delivery attempts per recipient by result.
    pub deliveries: BTreeMap<String, u64>,
    /// Policy calls by verdict (`fault` for faults).
    pub policy_calls: BTreeMap<String, u64>,
}

impl Metrics {
    /// A connection of `tenant` opened; the returned guard counts it as active until dropped.
    pub fn connection(&self, tenant: &str) -> ActiveConnection<'_> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let (total, active) = map.entry(tenant.to_string()).or_default();
        *total += 1;
        *active += 1;
        ActiveConnection(self, tenant.to_string())
    }

    /// A transaction of `tenant` ended with `outcome`.
    pub fn transaction(&self, tenant: &str, outcome: &str) {
        bump_pair(&self.transactions, tenant, outcome);
    }

    /// `tenant`'s counters.
    pub fn tenant(&self, tenant: &str) -> TenantCounters {
        let of = |map: &Mutex<BTreeMap<(String, String), u64>>| {
            map.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|((t, _), _)| t == tenant)
                .map(|((_, k), n)| (k.clone(), *n))
                .collect()
        };
        let mut policy_calls = BTreeMap::new();
        for ((t, _, verdict), (n, _)) in self.policies.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if t == tenant {
                *policy_calls.entry(verdict.clone()).or_insert(0) += n;
            }
        }
        TenantCounters {
            transactions: of(&self.transactions),
            deliveries: of(&self.deliveries),
            policy_calls,
        }
    }

    /// Every policy run of a stage.
    pub fn stage(&self, tenant: &str, result: &StageResult) {
        let mut map = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        for run in &result.runs {
            let verdict = match &run.outcome {
                Ok(Verdict::Continue) => "continue",
                Ok(Verdict::Accept) => "accept",
                Ok(Verdict::Reject(_)) => "reject",
                Ok(Verdict::Tempfail(_)) => "tempfail",
                Ok(Verdict::Discard) => "discard",
                Ok(Verdict::Quarantine(_)) => "quarantine",
                Err(_) => "fault",
            };
            let entry =
                map.entry((tenant.to_string(), run.policy.clone(), verdict.to_string())).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += run.micros;
        }
        drop(map);
        if !result.shadow.is_empty() {
            let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
            let mut disagreements = self.disagreements.lock().unwrap_or_else(|p| p.into_inner());
            for s in &result.shadow {
                let verdict = crate::policy::chain::verdict_kind(&s.run.outcome);
                *shadow
                    .entry((tenant.to_string(), s.run.policy.clone(), verdict.to_string()))
                    .or_insert(0) += 1;
                let n = disagreements.entry((tenant.to_string(), s.run.policy.clone())).or_insert(0);
                *n += u64::from(s.disagrees);
            }
        }
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for run in &result.runs {
            let (buckets, sum) = latency.entry((tenant.to_string(), run.policy.clone())).or_default();
            let bucket = LATENCY_BUCKETS_MICROS.iter().position(|b| run.micros <= *b);
            buckets[bucket.unwrap_or(LATENCY_BUCKETS_MICROS.len())] += 1;
            *sum += run.micros;
        }
    }

    /// An edge duty acted for `tenant` (`edge` when no tenant is concerned): `event` is one
    /// of `proxy_header_refused`, `recipient_unknown`, `recipient_unverified`, `mail_loop`,
    /// `bounce_suppressed`, `bounce_sent`, or a checked sender's `spf_RESULT` and
    /// `dmarc_RESULT`.
    pub fn event(&self, tenant: &str, event: &str) {
        bump_pair(&self.events, tenant, event);
    }

    /// A connection from a trusted proxy came without a valid PROXY header.
    pub fn proxy_header_refused(&self) {
        self.event(crate::config::EDGE, "proxy_header_refused");
    }

    /// A reload ended with `result` (applied, unchanged, failed, rollback).
    pub fn reload(&self, result: &str) {
        bump(&self.reloads, result);
    }

    /// Tenant `tenant` now runs generation `generation`.
    pub fn set_generation(&self, tenant: &str, generation: u64) {
        self.generations.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_string(), generation);
    }

    /// A delivery attempt for one recipient of `tenant`: `delivered`, `deferred` or `failed`.
    pub fn delivery(&self, tenant: &str, result: &str) {
        bump_pair(&self.deliveries, tenant, result);
    }

    /// A message of `tenant` entered (+1) or left (-1) the queue.
    pub fn queue(&self, tenant: &str, delta: i64) {
        let mut map = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(tenant.to_string()).or_insert(0) += delta;
    }

    /// Set the queue depth of every tenant from the tenants of the queued messages (after
    /// scanning the spool).
    pub fn set_queue<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        let mut map = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        map.values_mut().for_each(|n| *n = 0);
        for tenant in tenants {
            *map.entry(tenant.to_string()).or_insert(0) += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ");
        {
            let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            out.push_str("# TYPE sluice_connections_total counter\n");
            for (tenant, (total, _)) in connections.iter() {
                out.push_str(&format!("sluice_connections_total{{tenant=\"{}\"}} {total}\n", label(tenant)));
            }
            out.push_str("# TYPE sluice_connections_active gauge\n");
            for (tenant, (_, active)) in connections.iter() {
                out.push_str(&format!(
                    "sluice_connections_active{{tenant=\"{}\"}} {}\n",
                    label(tenant),
                    active.max(&0)
                ));
            }
        }
        out.push_str("# TYPE sluice_transactions_total counter\n");
        for ((tenant, outcome), n) in self.transactions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "sluice_transactions_total{{tenant=\"{}\",outcome=\"{}\"}} {n}\n",
                label(tenant),
                label(outcome)
            ));
        }
        out.push_str(
            "# TYPE sluice_policy_calls_total counter\n# TYPE sluice_policy_seconds_total counter\n",
        );
        for ((tenant, policy, verdict), (n, micros)) in
            self.policies.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let labels = format!(
                "tenant=\"{}\",policy=\"{}\",verdict=\"{}\"",
                label(tenant),
                label(policy),
                label(verdict)
            );
            out.push_str(&format!("sluice_policy_calls_total{{{labels}}} {n}\n"));
            out.push_str(&format!("sluice_policy_seconds_total{{{labels}}} {:.6}\n", *micros as f64 / 1e6));
        }
        out.push_str("# TYPE sluice_policy_duration_seconds histogram\n");
        for ((tenant, policy), (buckets, micros)) in
            self.latency.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let labels = format!("tenant=\"{}\",policy=\"{}\"", label(tenant), label(policy));
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS_MICROS.iter().zip(buckets) {
                cumulative += n;
                let le = *bound as f64 / 1e6;
                out.push_str(&format!(
                    "sluice_policy_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}\n"
                ));
            }
            cumulative += buckets[LATENCY_BUCKETS_MICROS.len()];
            out.push_str(&format!(
                "sluice_policy_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n"
            ));
            out.push_str(&format!(
                "sluice_policy_duration_seconds_sum{{{labels}}} {:.6}\n",
                *micros as f64 / 1e6
            ));
            out.push_str(&format!("sluice_policy_duration_seconds_count{{{labels}}} {cumulative}\n"));
        }
        out.push_str("# TYPE sluice_delivery_attempts_total counter\n");
        for ((tenant, result), n) in self.deliveries.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "sluice_delivery_attempts_total{{tenant=\"{}\",result=\"{}\"}} {n}\n",
                label(tenant),
                label(result)
            ));
        }
        out.push_str("# TYPE sluice_queue_messages gauge\n");
        for (tenant, n) in self.queued.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!("sluice_queue_messages{{tenant=\"{}\"}} {}\n", label(tenant), n.max(&0)));
        }
        out.push_str("# TYPE sluice_edge_events_total counter\n");
        for ((tenant, event), n) in self.events.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "sluice_edge_events_total{{tenant=\"{}\",event=\"{}\"}} {n}\n",
                label(tenant),
                label(event)
            ));
        }
        out.push_str("# TYPE sluice_reloads_total counter\n");
        for (result, n) in self.reloads.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!("sluice_reloads_total{{result=\"{}\"}} {n}\n", label(result)));
        }
        out.push_str("# TYPE sluice_tenant_generation gauge\n");
        for (tenant, generation) in self.generations.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!("sluice_tenant_generation{{tenant=\"{}\"}} {generation}\n", label(tenant)));
        }
        out.push_str("# TYPE sluice_shadow_verdicts_total counter\n");
        for ((tenant, policy, verdict), n) in self.shadow.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "sluice_shadow_verdicts_total{{tenant=\"{}\",policy=\"{}\",verdict=\"{}\"}} {n}\n",
                label(tenant),
                label(policy),
                label(verdict)
            ));
        }
        out.push_str("# TYPE sluice_shadow_disagreements_total counter\n");
        for ((tenant, policy), n) in self.disagreements.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "sluice_shadow_disagreements_total{{tenant=\"{}\",policy=\"{}\"}} {n}\n",
                label(tenant),
                label(policy)
            ));
        }
        out
    }
}

/// Counts a connection of a tenant as active while alive.
pub struct ActiveConnection<'a>(&'a Metrics, String);

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        let mut map = self.0.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, active)) = map.get_mut(&self.1) {
            *active -= 1;
        }
    }
}
