//! How `sluice policy test` shows a transaction: text, or one JSON object per line.

use std::path::Path;

use serde_json::json;

use crate::conversation::script::Simulation;
use crate::policy::Verdict;

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Reject(r) | Verdict::Tempfail(r) => format!("{} {r}", verdict.name()),
        Verdict::Quarantine(reason) => format!("quarantine ({reason})"),
        other => other.name().to_string(),
    }
}

/// The fields added on top of the message: the relay's `Authentication-Results`, then the
/// policies'.
fn added_headers(simulation: &Simulation) -> Vec<(&str, &str)> {
    let relay = simulation.authentication_results.as_deref().map(|v| ("Authentication-Results", v));
    relay
        .into_iter()
        .chain(simulation.judgement.added_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .collect()
}

/// One transaction as a JSON object (one line of `--json`).
pub(super) fn json(file: &Path, simulation: &Simulation) -> serde_json::Value {
    let j = &simulation.judgement;
    let stages: Vec<serde_json::Value> = simulation
        .stages
        .iter()
        .flat_map(|stage| {
            stage.runs.iter().map(move |run| {
                let (verdict, reply, fault) = match &run.outcome {
                    Ok(v) => {
                        let reply = match v {
                            Verdict::Reject(r) | Verdict::Tempfail(r) => Some(r.to_string()),
                            _ => None,
                        };
                        (v.name(), reply, None)
                    }
                    Err(fault) => ("fault", None, Some(fault.to_string())),
                };
                json!({
                    "stage": stage.stage,
                    "policy": run.policy,
                    "verdict": verdict,
                    "reply": reply,
                    "fault": fault,
                    "symbols": run.symbols,
                    "micros": run.micros,
                })
            })
        })
        .collect();
    json!({
        "file": file.display().to_string(),
        "tenant": simulation.tenant,
        "final": j.outcome,
        "code": simulation.reply.code,
        "reply": j.reply.to_string(),
        "stage": j.stage,
        "decided_by": j.decided_by,
        "score": (j.score * 100.0).round() / 100.0,
        "symbols": j.symbols.iter().map(|s| s.symbol.name.clone()).collect::<Vec<_>>(),
        "symbol_details": j.symbols,
        "added_headers": added_headers(simulation).into_iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "sender_checks": simulation.sender_checks.as_deref(),
        "removed_headers": j.removed_headers,
        "added_recipients": j.added_recipients,
        "removed_recipients": j.removed_recipients,
        "route": j.route,
        "quarantine_reason": j.quarantine_reason,
        "disconnect": j.disconnect,
        "recipients": simulation
            .recipients
            .iter()
            .map(|r| json!({"address": r.address, "code": r.reply.code, "reply": r.reply.to_string()}))
            .collect::<Vec<_>>(),
        "policies": stages,
    })
}

/// One transaction as text: each policy's verdict per stage, then the outcome.
pub(super) fn text(file: &Path, simulation: &Simulation, show_tenant: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match show_tenant {
        true => {
            let tenant = if simulation.tenant.is_empty() { "-" } else { simulation.tenant.as_str() };
            let _ = writeln!(out, "{}  (tenant {tenant})", file.display());
        }
        false => {
            let _ = writeln!(out, "{}", file.display());
        }
    }
    for stage in &simulation.stages {
        for run in &stage.runs {
            let outcome = match &run.outcome {
                Ok(v) => verdict_text(v),
                Err(fault) => format!("FAULT: {fault}"),
            };
            let symbols = run
                .symbols
                .iter()
                .map(|s| format!("{}({:+.1})", s.name, s.score))
                .collect::<Vec<_>>()
                .join(" ");
            let _ =
                writeln!(out, "  {:<8} {:<18} {:<40} {}", stage.stage.as_str(), run.policy, outcome, symbols);
        }
    }
    let j = &simulation.judgement;
    let _ = writeln!(
        out,
        "  final: {} ({}) at {}{}  score {:.1}",
        j.outcome.as_str(),
        j.reply,
        j.stage,
        j.decided_by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default(),
        j.score
    );
    for (name, value) in added_headers(simulation) {
        let _ = writeln!(out, "  + {name}: {}", value.replace("\r\n", "\n   "));
    }
    for name in &j.removed_headers {
        let _ = writeln!(out, "  - {name}");
    }
    if let Some(route) = &j.route {
        let _ = writeln!(out, "  route: {route}");
    }
    out
}
