//! The admin API's read-only views of the relay: `GET /api/tenants` and `GET /api/policies`.

use std::time::UNIX_EPOCH;

use crate::relay::Relay;
use crate::tenants::Tenant;

/// `GET /api/tenants`: each tenant's domains, route, chain, generation and counters; the
/// edge's chain and counters beside them.
pub async fn tenants(relay: &Relay) -> serde_json::Value {
    let snapshot = relay.snapshot();
    let mut described = Vec::with_capacity(snapshot.tenants.len() + 1);
    for tenant in snapshot.parties() {
        let kv_usage = match relay.generations.loader.kv().usage(&tenant.name).await {
            Ok(u) => serde_json::json!(u),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        described.push(describe_tenant(relay, tenant, kv_usage));
    }
    let edge = described.remove(0);
    serde_json::json!({ "edge": edge, "tenants": described })
}

fn describe_tenant(relay: &Relay, tenant: &Tenant, kv_usage: serde_json::Value) -> serde_json::Value {
    use crate::policy::FailureMode;
    let chain = &tenant.chain;
    let failure_mode = match &chain.settings.failure_mode {
        FailureMode::Tempfail(_) => "tempfail",
        FailureMode::Continue => "continue",
    };
    let thresholds = &chain.settings.thresholds;
    serde_json::json!({
        "tenant": tenant.name,
        "domains": tenant.domains,
        "next_hop": tenant.next_hop.as_ref().map(ToString::to_string),
        "recipients": match &tenant.recipients {
            crate::recipients::Rule::Any => serde_json::json!({ "check": "any" }),
            crate::recipients::Rule::Verify => serde_json::json!({ "check": "verify" }),
            crate::recipients::Rule::List(list) => serde_json::json!({
                "check": "file",
                "file": list.path.display().to_string(),
                "entries": list.len(),
                "invalid_lines": list.problems.len(),
            }),
        },
        "authentication_results": tenant.authentication_results,
        "dkim": tenant.dkim.as_ref().map(|key| serde_json::json!({ "domain": key.domain(), "selector": key.selector() })),
        "reads_sender_checks": chain.reads_sender_checks(),
        "autolearn": tenant.autolearn.map(|a| serde_json::json!({ "spam_score": a.spam_score, "ham_score": a.ham_score })),
        "generation": tenant.generation,
        "previous_generation": relay.generations.previous_generation(&tenant.name),
        "failure_mode": failure_mode,
        "limits": tenant.limits,
        "kv_usage": kv_usage,
        "thresholds": {
            "add_header": thresholds.add_header,
            "quarantine": thresholds.quarantine,
            "reject": thresholds.reject,
        },
        "chain": chain
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({
                "name": p.name,
                "version": p.version,
                "mode": if chain.is_shadow(i) { "shadow" } else { "enforce" },
            }))
            .collect::<Vec<_>>(),
        "counters": relay.metrics.tenant(&tenant.name),
    })
}

/// `GET /api/policies`: the edge's and each tenant's generation and policies.
pub fn policies(relay: &Relay) -> serde_json::Value {
    let snapshot = relay.snapshot();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut described: Vec<serde_json::Value> = snapshot
        .parties()
        .map(|tenant| {
            let policies: Vec<serde_json::Value> = tenant
                .chain
                .policies
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    serde_json::json!({
                        "name": p.name,
                        "version": p.version,
                        "hash": p.hash,
                        "mode": if tenant.chain.is_shadow(i) { "shadow" } else { "enforce" },
                        "file": p.file.display().to_string(),
                        "generation": tenant.generation,
                        "loaded_at": secs(p.loaded_at),
                        "code": p.code.as_str(),
                        "learns": p.learns,
                        "disagreements": relay.metrics.disagreements(&tenant.name, &p.name),
                    })
                })
                .collect();
            serde_json::json!({
                "tenant": tenant.name,
                "generation": tenant.generation,
                "loaded_at": secs(tenant.loaded_at),
                "previous_generation": relay.generations.previous_generation(&tenant.name),
                "domains": tenant.domains,
                "policies": policies,
            })
        })
        .collect();
    let edge = described.remove(0);
    serde_json::json!({ "edge": edge, "tenants": described })
}

/// `GET /api/listeners`: where the relay listens — SMTP, and the servers for an MTA in front
/// (milter, policy delegation) with their connections since start and open now.
pub fn listeners(relay: &Relay) -> serde_json::Value {
    let snapshot = relay.snapshot();
    let config = &snapshot.config;
    let fronts = relay.metrics.fronts();
    let mut view = serde_json::json!({
        "smtp": config.server.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "admin": config.admin.as_ref().map(|a| a.listen.to_string()),
    });
    for (server, settings) in config.mta_servers() {
        view[server] = settings.map_or(serde_json::Value::Null, |s| {
            let (total, open) = fronts.get(server).copied().unwrap_or_default();
            serde_json::json!({
                "listen": s.listen.to_string(),
                "max_connections": s.max_connections,
                "connections": total,
                "open": open,
            })
        });
    }
    view
}
