//! `sluice policy test`: run `.eml` files through a chain of policies offline, exactly as the
//! relay would — the same engine, chain and judge — and print what happened at each stage.
//!
//! The envelope defaults from the message: MAIL FROM from `Return-Path` or `From`, RCPT TO
//! from `To` and `Cc`; the client is `192.0.2.1` saying `HELO client.example`. DNS answers come
//! from a fixture file (`--dns`, format in [`crate::dns`]); unknown names are NXDOMAIN.
//!
//! A suite (`--suite DIR`) pairs every `NAME.eml` with `NAME.expect`:
//!
//! ```text
//! # the outcome is required; the other lines are optional
//! final: reject
//! code: 550
//! stage: data
//! symbols: MISSING_DATE, SUBJ_ALL_CAPS      # must all be present
//! no-symbols: FREEMAIL_FORGED               # must all be absent
//! client-ip: 203.0.113.9                    # envelope for this message
//! helo: mx.example.net
//! from: someone@example.net
//! to: user@example.com, other@example.com
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::dns::{FixtureResolver, Resolver};
use crate::policy::simulate::{Envelope, Simulation, simulate};
use crate::policy::{
    Chain, ChainSettings, Clock, EngineOptions, FailureMode, HostServices, Outcome, ParsedMessage,
    PolicyEngine, PolicyLimits, PolicySpec, Thresholds, Verdict,
};
use crate::state::kv::MemoryKv;

/// Options of `sluice policy test`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyTestArgs {
    /// A policy component, in chain order (repeat for a chain).
    #[arg(long = "policy", value_name = "FILE.wasm", required = true)]
    pub policies: Vec<PathBuf>,
    /// Configuration for a policy: `NAME.key=value`, NAME being the policy's name or file stem.
    #[arg(long = "policy-config", value_name = "NAME.KEY=VALUE")]
    pub policy_config: Vec<String>,
    /// Message files or directories of `*.eml` (repeatable).
    #[arg(long = "eml", value_name = "PATH")]
    pub eml: Vec<PathBuf>,
    /// Run every `*.eml` in DIR against the expectations in the `.expect` file beside it.
    #[arg(long, value_name = "DIR", conflicts_with = "eml")]
    pub suite: Option<PathBuf>,
    /// Client IP address.
    #[arg(long, value_name = "IP")]
    pub client_ip: Option<IpAddr>,
    /// HELO name.
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// MAIL FROM address (`<>` or empty for the null sender).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// RCPT TO address (repeatable).
    #[arg(long = "to", value_name = "ADDR")]
    pub to: Vec<String>,
    /// Authenticated user, as if the client had done SMTP AUTH.
    #[arg(long, value_name = "USER")]
    pub auth_user: Option<String>,
    /// Tenant name.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// One JSON object per message per line.
    #[arg(long)]
    pub json: bool,
    /// DNS fixture file.
    #[arg(long, value_name = "FILE")]
    pub dns: Option<PathBuf>,
    /// Exit with status 1 unless every message gets this outcome.
    #[arg(long, value_name = "OUTCOME")]
    pub expect: Option<String>,
    /// Pretend the time is this many seconds since the Unix epoch.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<i64>,
    /// What a policy fault means: `tempfail` or `continue`.
    #[arg(long, default_value = "tempfail")]
    pub failure_mode: String,
    /// Score at which `X-Spam-Flag: YES` is added (`off` to disable).
    #[arg(long, default_value = "5.0")]
    pub add_header_score: String,
    /// Score at which the message is quarantined (`off` to disable).
    #[arg(long, default_value = "off")]
    pub quarantine_score: String,
    /// Score at which the message is rejected (`off` to disable).
    #[arg(long, default_value = "15.0")]
    pub reject_score: String,
    /// CPU deadline per hook call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub cpu_deadline_ms: u64,
    /// Memory cap per policy instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: usize,
}

/// A failure that ends the run with status 2 (bad usage, unreadable input, policy not loaded).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn threshold(text: &str, flag: &str) -> Result<Option<f64>, UsageError> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Some)
        .ok_or_else(|| UsageError(format!("--{flag}: expected a number or `off`, got {text:?}")))
}

fn normalise_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The envelope and expectations of one message.
#[derive(Debug, Clone, Default)]
struct Case {
    file: PathBuf,
    client_ip: Option<IpAddr>,
    helo: Option<String>,
    from: Option<String>,
    to: Vec<String>,
    expect: Option<Expectation>,
}

#[derive(Debug, Clone, Default)]
struct Expectation {
    outcome: Option<Outcome>,
    code: Option<u16>,
    stage: Option<String>,
    symbols: Vec<String>,
    no_symbols: Vec<String>,
}

fn split_list(value: &str) -> Vec<String> {
    value.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn read_expect(path: &Path, case: &mut Case) -> Result<(), UsageError> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    let mut expect = Expectation::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| UsageError(format!("{}:{}: {what}", path.display(), n + 1));
        let Some((key, value)) = line.split_once(':') else {
            expect.outcome =
                Some(Outcome::parse(line).ok_or_else(|| bad("expected `key: value` or an outcome"))?);
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "final" | "outcome" => {
                expect.outcome = Some(Outcome::parse(value).ok_or_else(|| bad("unknown outcome"))?)
            }
            "code" => expect.code = Some(value.parse().map_err(|_| bad("code must be a number"))?),
            "stage" => expect.stage = Some(value.to_ascii_lowercase()),
            "symbols" => expect.symbols.extend(split_list(value)),
            "no-symbols" => expect.no_symbols.extend(split_list(value)),
            "client-ip" => case.client_ip = Some(value.parse().map_err(|_| bad("invalid IP address"))?),
            "helo" => case.helo = Some(value.to_string()),
            "from" => case.from = Some(value.to_string()),
            "to" => case.to.extend(split_list(value)),
            other => return Err(bad(&format!("unknown key {other:?}"))),
        }
    }
    if expect.outcome.is_none() {
        return Err(UsageError(format!("{}: no expected outcome (`final: …`)", path.display())));
    }
    case.expect = Some(expect);
    Ok(())
}

fn eml_files_in(dir: &Path) -> Result<Vec<PathBuf>, UsageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("eml")))
        .collect();
    files.sort();
    Ok(files)
}

fn collect_cases(args: &PolicyTestArgs) -> Result<Vec<Case>, UsageError> {
    if let Some(dir) = &args.suite {
        let files = eml_files_in(dir)?;
        if files.is_empty() {
            return Err(UsageError(format!("{}: no *.eml files", dir.display())));
        }
        return files
            .into_iter()
            .map(|file| {
                let mut case = Case { file: file.clone(), ..Case::default() };
                let expect = file.with_extension("expect");
                if !expect.is_file() {
                    return Err(UsageError(format!("{}: missing expectation file", expect.display())));
                }
                read_expect(&expect, &mut case)?;
                Ok(case)
            })
            .collect();
    }
    if args.eml.is_empty() {
        return Err(UsageError("give --eml FILE|DIR (repeatable) or --suite DIR".into()));
    }
    let mut cases = Vec::new();
    for path in &args.eml {
        if path.is_dir() {
            cases.extend(eml_files_in(path)?.into_iter().map(|file| Case { file, ..Case::default() }));
        } else if path.is_file() {
            cases.push(Case { file: path.clone(), ..Case::default() });
        } else {
            return Err(UsageError(format!("{}: no such file or directory", path.display())));
        }
    }
    Ok(cases)
}

/// Bare LF becomes CRLF, as the message would arrive over SMTP.
fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut previous = 0u8;
    for &b in raw {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

fn strip_brackets(addr: &str) -> String {
    let addr = addr.trim();
    let addr = addr.strip_prefix('<').and_then(|a| a.strip_suffix('>')).unwrap_or(addr);
    addr.trim().to_string()
}

/// Everything that happened to one message.
struct Report {
    file: PathBuf,
    simulation: Simulation,
}

async fn run_case(
    chain: &Arc<Chain>,
    args: &PolicyTestArgs,
    case: &Case,
    index: usize,
) -> Result<Report, UsageError> {
    let raw = std::fs::read(&case.file).map_err(|e| UsageError(format!("{}: {e}", case.file.display())))?;
    let message = Arc::new(ParsedMessage::parse(to_crlf(&raw)));

    let from = case
        .from
        .clone()
        .or_else(|| args.from.clone())
        .map(|a| strip_brackets(&a))
        .or_else(|| message.header("Return-Path").map(strip_brackets))
        .or_else(|| message.from().iter().find_map(|m| m.address.clone()))
        .unwrap_or_default();
    let mut to: Vec<String> = if !case.to.is_empty() { case.to.clone() } else { args.to.clone() };
    if to.is_empty() {
        to = message.to().iter().chain(message.cc()).filter_map(|m| m.address.clone()).collect();
    }
    if to.is_empty() {
        to.push("postmaster@localhost".into());
    }
    let envelope = Envelope {
        client_ip: case.client_ip.or(args.client_ip).unwrap_or(IpAddr::from([192, 0, 2, 1])),
        helo: case.helo.clone().or_else(|| args.helo.clone()).unwrap_or_else(|| "client.example".into()),
        from,
        to,
        authenticated_user: args.auth_user.clone(),
        transaction_id: format!("test-{}", index + 1),
    };
    let simulation = simulate(chain, &envelope, &message).await;
    Ok(Report { file: case.file.clone(), simulation })
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Reject(r) | Verdict::Tempfail(r) => format!("{} {r}", verdict.name()),
        Verdict::Quarantine(reason) => format!("quarantine ({reason})"),
        other => other.name().to_string(),
    }
}

fn report_json(report: &Report) -> serde_json::Value {
    let j = &report.simulation.judgement;
    let stages: Vec<serde_json::Value> = report
        .simulation
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
        "file": report.file.display().to_string(),
        "final": j.outcome,
        "code": j.reply.code,
        "reply": j.reply.to_string(),
        "stage": j.stage,
        "decided_by": j.decided_by,
        "score": (j.score * 100.0).round() / 100.0,
        "symbols": j.symbols.iter().map(|s| s.symbol.name.clone()).collect::<Vec<_>>(),
        "symbol_details": j.symbols,
        "added_headers": j.added_headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "removed_headers": j.removed_headers,
        "added_recipients": j.added_recipients,
        "removed_recipients": j.removed_recipients,
        "route": j.route,
        "quarantine_reason": j.quarantine_reason,
        "disconnect": j.disconnect,
        "recipients": report.simulation.recipients.iter().map(|r| json!({"address": r.address, "verdict": verdict_text(&r.verdict)})).collect::<Vec<_>>(),
        "policies": stages,
    })
}

fn report_text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.file.display());
    for stage in &report.simulation.stages {
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
    let j = &report.simulation.judgement;
    let _ = writeln!(
        out,
        "  final: {} ({}) at {}{}  score {:.1}",
        j.outcome.as_str(),
        j.reply,
        j.stage,
        j.decided_by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default(),
        j.score
    );
    for (name, value) in &j.added_headers {
        let _ = writeln!(out, "  + {name}: {value}");
    }
    for name in &j.removed_headers {
        let _ = writeln!(out, "  - {name}");
    }
    if let Some(route) = &j.route {
        let _ = writeln!(out, "  route: {route}");
    }
    out
}

fn check(report: &Report, expect: &Expectation) -> Vec<String> {
    let j = &report.simulation.judgement;
    let mut problems = Vec::new();
    if let Some(outcome) = expect.outcome.filter(|o| *o != j.outcome) {
        problems.push(format!("expected {}, got {} ({})", outcome.as_str(), j.outcome.as_str(), j.reply));
    }
    if let Some(code) = expect.code.filter(|c| *c != j.reply.code) {
        problems.push(format!("expected code {code}, got {}", j.reply.code));
    }
    if let Some(stage) = expect.stage.as_deref().filter(|s| *s != j.stage.as_str()) {
        problems.push(format!("expected stage {stage}, got {}", j.stage));
    }
    let names: Vec<&str> = j.symbols.iter().map(|s| s.symbol.name.as_str()).collect();
    for wanted in &expect.symbols {
        if !names.contains(&wanted.as_str()) {
            problems.push(format!("missing symbol {wanted}"));
        }
    }
    for unwanted in &expect.no_symbols {
        if names.contains(&unwanted.as_str()) {
            problems.push(format!("unexpected symbol {unwanted}"));
        }
    }
    problems
}

async fn build_chain(args: &PolicyTestArgs) -> Result<Arc<Chain>, UsageError> {
    let failure_mode = match args.failure_mode.as_str() {
        "tempfail" => FailureMode::default(),
        "continue" => FailureMode::Continue,
        other => {
            return Err(UsageError(format!("--failure-mode: expected tempfail or continue, got {other:?}")));
        }
    };
    let thresholds = Thresholds {
        add_header: threshold(&args.add_header_score, "add-header-score")?,
        quarantine: threshold(&args.quarantine_score, "quarantine-score")?,
        reject: threshold(&args.reject_score, "reject-score")?,
    };
    let limits = PolicyLimits {
        cpu_deadline: std::time::Duration::from_millis(args.cpu_deadline_ms.max(1)),
        memory_bytes: args.memory_mib.saturating_mul(1 << 20),
        ..PolicyLimits::default()
    };

    let mut configs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for item in &args.policy_config {
        let parsed = item.split_once('=').and_then(|(left, value)| {
            left.split_once('.').map(|(name, key)| (normalise_name(name), key.to_string(), value.to_string()))
        });
        let Some((name, key, value)) = parsed else {
            return Err(UsageError(format!("--policy-config {item:?}: expected NAME.KEY=VALUE")));
        };
        configs.entry(name).or_default().push((key, value));
    }

    let resolver: Arc<dyn Resolver> = match &args.dns {
        Some(path) => Arc::new(FixtureResolver::from_file(path).map_err(|e| UsageError(e.to_string()))?),
        None => Arc::new(FixtureResolver::default()),
    };
    let services = HostServices {
        kv: Arc::new(MemoryKv::new(1_000_000)),
        resolver,
        clock: args.now.map(|s| Clock::pinned(s.saturating_mul(1000))).unwrap_or(Clock::System),
    };
    let engine = PolicyEngine::new(EngineOptions { max_instances: 64, ..EngineOptions::default() })
        .map_err(|e| UsageError(format!("{e:#}")))?;

    let mut policies = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for path in &args.policies {
        let stem = path.file_stem().map(|s| normalise_name(&s.to_string_lossy())).unwrap_or_default();
        let config = configs.get(&stem).cloned().unwrap_or_default();
        if configs.contains_key(&stem) {
            used.insert(stem.clone());
        }
        let spec = PolicySpec { path: path.clone(), name: None, config, limits: limits.clone() };
        let mut loaded = engine
            .load(&spec, &args.tenant, services.clone())
            .await
            .map_err(|e| UsageError(e.to_string()))?;
        // Configuration addressed by the described name (when it differs from the file stem).
        let described = normalise_name(&loaded.name);
        if described != stem && configs.contains_key(&described) {
            used.insert(described.clone());
            let spec = PolicySpec { config: configs[&described].clone(), ..spec };
            loaded = engine
                .load(&spec, &args.tenant, services.clone())
                .await
                .map_err(|e| UsageError(e.to_string()))?;
        }
        policies.push(loaded);
    }
    if let Some(unused) = configs.keys().find(|k| !used.contains(*k)) {
        return Err(UsageError(format!("--policy-config names {unused:?}, which is not a loaded policy")));
    }
    Ok(Arc::new(Chain::new(args.tenant.clone(), policies, ChainSettings { failure_mode, thresholds })))
}

/// Run the command; returns the process exit status.
pub async fn run(args: PolicyTestArgs) -> Result<i32, UsageError> {
    let expect_all = match &args.expect {
        Some(text) => Some(Outcome::parse(text).ok_or_else(|| {
            UsageError(format!(
                "--expect: expected accept, reject, tempfail, discard or quarantine, got {text:?}"
            ))
        })?),
        None => None,
    };
    let mut cases = collect_cases(&args)?;
    if let Some(outcome) = expect_all {
        for case in &mut cases {
            case.expect.get_or_insert_with(Expectation::default).outcome = Some(outcome);
        }
    }
    let chain = build_chain(&args).await?;

    let (mut passed, mut failed) = (0usize, 0usize);
    for (index, case) in cases.iter().enumerate() {
        let report = run_case(&chain, &args, case, index).await?;
        if args.json {
            println!("{}", report_json(&report));
        } else if args.suite.is_none() {
            print!("{}", report_text(&report));
        }
        if let Some(expect) = &case.expect {
            let problems = check(&report, expect);
            if problems.is_empty() {
                passed += 1;
                if args.suite.is_some() && !args.json {
                    println!("PASS {}", case.file.display());
                }
            } else {
                failed += 1;
                if args.suite.is_some() && !args.json {
                    print!("{}", report_text(&report));
                }
                eprintln!("FAIL {}: {}", case.file.display(), problems.join("; "));
            }
        }
    }
    if args.suite.is_some() || expect_all.is_some() {
        eprintln!("{passed} passed, {failed} failed");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
