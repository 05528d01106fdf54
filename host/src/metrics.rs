//! Counters for Prometheus, served as text on the admin listener (`GET /metrics`, see
//! [`crate::admin`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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
    /// Tenant → when its oldest queued message was accepted (Unix seconds).
    oldest: Mutex<BTreeMap<String, u64>>,
    /// Instances made ahead of sessions, held at the last look.
    prepared: AtomicU64,
    /// Server of an MTA in front (`milter`, `policy_delegation`) → (connections, open).
    fronts: Mutex<BTreeMap<String, (u64, i64)>>,
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

    /// How often `policy`, in shadow in `tenant`'s chain, decided otherwise than the chain.
    pub fn disagreements(&self, tenant: &str, policy: &str) -> u64 {
        let map = self.disagreements.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(tenant.to_string(), policy.to_string())).copied().unwrap_or(0)
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

    /// A connection from an MTA in front opened (`delta` 1) or closed (-1) on `server`.
    pub fn front(&self, server: &str, delta: i64) {
        let mut map = self.fronts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, open) = map.entry(server.to_string()).or_default();
        if delta > 0 {
            *total += 1;
        }
        *open += delta;
    }

    /// Connections from MTAs in front by server: (since start, open now).
    pub fn fronts(&self) -> BTreeMap<String, (u64, i64)> {
        self.fronts.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

    /// The exposition in the OpenMetrics text format (which Prometheus reads), encoded by
    /// `prometheus-client`: every family with its `# HELP` and `# TYPE`, label values escaped.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(self.clone())));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    /// The queue as a rescan of the spool found it: each message's tenant and when it was
    /// accepted (Unix seconds), for the depth and the age of the oldest per tenant.
    pub fn set_queue_ages<'a>(&self, messages: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut depth = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut oldest = self.oldest.lock().unwrap_or_else(|p| p.into_inner());
        depth.values_mut().for_each(|n| *n = 0);
        oldest.clear();
        for (tenant, received_at) in messages {
            *depth.entry(tenant.to_string()).or_insert(0) += 1;
            let first = oldest.entry(tenant.to_string()).or_insert(received_at);
            *first = (*first).min(received_at);
        }
    }

    /// Instances made ahead of sessions and held now, all policies together.
    pub fn set_prepared_instances(&self, held: usize) {
        self.prepared.store(held as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a scrape encodes: the counters as they are at that moment.
#[derive(Debug)]
struct Exposition(Arc<Metrics>);

/// A label value as the text format needs it: the encoder writes values as they are, so a
/// backslash, a double quote or a line break (in a tenant's or a policy's name) is escaped here.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The rows of `map`, each made by `row`.
fn rows<K, V, R>(map: &Mutex<BTreeMap<K, V>>, row: impl Fn(&K, &V) -> R) -> Vec<R> {
    map.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| row(k, v)).collect()
}

/// Encode one family of `kind` from `rows` (label values, value).
fn family<const N: usize, V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    labels: [&str; N],
    rows: impl IntoIterator<Item = ([String; N], V)>,
) -> Result<(), std::fmt::Error>
where
    V: Into<f64>,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (values, value) in rows {
        if N == 0 {
            sample(&mut metric, kind, value.into())?;
            continue;
        }
        let escaped: Vec<String> = values.iter().map(|v| escape(v)).collect();
        let set: Vec<(&str, &str)> = labels.iter().copied().zip(escaped.iter().map(String::as_str)).collect();
        sample(&mut metric.encode_family(&set)?, kind, value.into())?;
    }
    Ok(())
}

/// One sample: counters and whole numbers as integers.
fn sample(encoder: &mut MetricEncoder<'_>, kind: MetricType, value: f64) -> Result<(), std::fmt::Error> {
    let whole = value.fract() == 0.0;
    match kind {
        MetricType::Counter if whole && value >= 0.0 => {
            encoder.encode_counter::<NoLabelSet, _, u64>(&(value as u64), None)
        }
        MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ if whole => encoder.encode_gauge(&(value as i64)),
        _ => encoder.encode_gauge(&value),
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let m = &self.0;
        let e = &mut encoder;
        let pairs = |map| rows(map, |(a, b): &(String, String), n: &u64| ([a.clone(), b.clone()], *n as f64));
        let connections: Vec<(String, u64, i64)> = {
            let map = m.connections.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(t, (total, active))| (t.clone(), *total, (*active).max(0))).collect()
        };
        family(
            e,
            "sluice_connections",
            "SMTP connections accepted, by the tenant whose session it was (edge: no tenant claimed it)",
            Counter,
            ["tenant"],
            connections.iter().map(|(t, total, _)| ([t.clone()], *total as f64)),
        )?;
        family(
            e,
            "sluice_connections_active",
            "SMTP connections open now, by tenant",
            Gauge,
            ["tenant"],
            connections.iter().map(|(t, _, active)| ([t.clone()], *active as f64)),
        )?;
        family(
            e,
            "sluice_transactions",
            "Transactions by tenant and outcome (the verdict a tenant's chain gave: accept, reject, tempfail, quarantine, discard, or error when an accepted message could not be stored)",
            Counter,
            ["tenant", "outcome"],
            pairs(&m.transactions),
        )?;
        let policies: Vec<([String; 3], u64, u64)> = {
            let map = m.policies.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .map(|((t, p, v), (n, micros))| ([t.clone(), p.clone(), v.clone()], *n, *micros))
                .collect()
        };
        family(
            e,
            "sluice_policy_calls",
            "Policy hook calls by tenant, policy and verdict (fault for a trap, deadline, memory or output overrun)",
            Counter,
            ["tenant", "policy", "verdict"],
            policies.iter().map(|(l, n, _)| (l.clone(), *n as f64)),
        )?;
        family(
            e,
            "sluice_policy_seconds",
            "Time spent in policy hook calls, by tenant, policy and verdict",
            Counter,
            ["tenant", "policy", "verdict"],
            policies.iter().map(|(l, _, micros)| (l.clone(), *micros as f64 / 1e6)),
        )?;
        {
            let latency = m.latency.lock().unwrap_or_else(|p| p.into_inner());
            let mut metric = e.encode_descriptor(
                "sluice_policy_duration_seconds",
                "Duration of one policy's hook calls, by tenant and policy",
                None,
                MetricType::Histogram,
            )?;
            for ((tenant, policy), (counts, micros)) in latency.iter() {
                let (tenant, policy) = (escape(tenant), escape(policy));
                let set = [("tenant", tenant.as_str()), ("policy", policy.as_str())];
                let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MICROS
                    .iter()
                    .map(|b| *b as f64 / 1e6)
                    .chain(std::iter::once(f64::MAX))
                    .zip(counts.iter().copied())
                    .collect();
                let count = counts.iter().sum();
                metric.encode_family(&set)?.encode_histogram::<NoLabelSet>(
                    *micros as f64 / 1e6,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        family(
            e,
            "sluice_delivery_attempts",
            "Delivery attempts per recipient, by tenant and result (delivered, deferred, failed)",
            Counter,
            ["tenant", "result"],
            pairs(&m.deliveries),
        )?;
        let depth = rows(&m.queued, |t, n| ([t.clone()], (*n).max(0) as f64));
        family(
            e,
            "sluice_queue_messages",
            "Messages in the queue waiting for delivery, by tenant",
            Gauge,
            ["tenant"],
            depth,
        )?;
        let now = crate::spool::now_secs();
        let oldest = rows(&m.oldest, |t, at| ([t.clone()], now.saturating_sub(*at) as f64));
        family(
            e,
            "sluice_queue_oldest_age_seconds",
            "Age of the oldest message in the queue, by tenant (as of the last rescan of the spool)",
            Gauge,
            ["tenant"],
            oldest,
        )?;
        family(
            e,
            "sluice_edge_events",
            "Edge duties that acted, by tenant and event (recipient_unknown, mail_loop, bounce_sent, spf_pass, ...)",
            Counter,
            ["tenant", "event"],
            pairs(&m.events),
        )?;
        let fronts = m.fronts();
        let total = fronts.iter().map(|(s, (n, _))| ([s.clone()], *n as f64)).collect::<Vec<_>>();
        family(
            e,
            "sluice_mta_connections",
            "Connections from MTAs in front, by server (milter, policy_delegation)",
            Counter,
            ["server"],
            total,
        )?;
        let open = fronts.iter().map(|(s, (_, n))| ([s.clone()], *n as f64)).collect::<Vec<_>>();
        family(
            e,
            "sluice_mta_connections_open",
            "Connections from MTAs in front open now, by server",
            Gauge,
            ["server"],
            open,
        )?;
        let reloads = rows(&m.reloads, |r, n| ([r.clone()], *n as f64));
        family(
            e,
            "sluice_reloads",
            "Reloads by result (applied, unchanged, failed, rollback)",
            Counter,
            ["result"],
            reloads,
        )?;
        let generations = rows(&m.generations, |t, g| ([t.clone()], *g as f64));
        family(
            e,
            "sluice_tenant_generation",
            "The generation of policies each tenant runs now",
            Gauge,
            ["tenant"],
            generations,
        )?;
        let shadow = rows(&m.shadow, |(t, p, v), n| ([t.clone(), p.clone(), v.clone()], *n as f64));
        family(
            e,
            "sluice_shadow_verdicts",
            "What shadow policies would have decided, by tenant, policy and verdict (never applied)",
            Counter,
            ["tenant", "policy", "verdict"],
            shadow,
        )?;
        family(
            e,
            "sluice_shadow_disagreements",
            "Shadow decisions that differ from the enforced chain's, by tenant and policy",
            Counter,
            ["tenant", "policy"],
            pairs(&m.disagreements),
        )?;
        let held = m.prepared.load(std::sync::atomic::Ordering::Relaxed) as f64;
        family(
            e,
            "sluice_prepared_instances",
            "Policy instances made ahead of sessions and held now ([server] prepared_instances)",
            Gauge,
            [],
            [([], held)],
        )?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_label_values_are_escaped() {
        let metrics = Arc::new(Metrics::default());
        metrics.transaction("a \"quoted\" \\ tenant\nwith a newline", "accept");
        metrics.set_queue_ages([("example", 0)]);
        let text = metrics.render();
        assert!(
            text.contains(
                "sluice_transactions_total{tenant=\"a \\\"quoted\\\" \\\\ tenant\\nwith a newline\",outcome=\"accept\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("sluice_queue_messages{tenant=\"example\"} 1"), "{text}");
        assert!(text.contains("sluice_queue_oldest_age_seconds{tenant=\"example\"} "), "{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap_or_default();
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
