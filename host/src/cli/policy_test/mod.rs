//! `sluice policy test`: run `.eml` files through a relay's chains offline, exactly as the relay
//! would — the same conversation ([`crate::conversation`]), engine, chains and judge — and
//! print what happened at each stage. Either a chain given on the command line (one tenant that
//! every client and recipient belongs to), or with `--config` the edge and tenants of a relay
//! configuration, each message sent to its recipients the way a client sends it (one
//! transaction per tenant).
//!
//! The envelope defaults from the message: MAIL FROM from `Return-Path` or `From`, RCPT TO
//! from `To` and `Cc`; the client is `192.0.2.1` saying `EHLO client.example`. DNS answers come
//! from a fixture file (`--dns`, format in [`crate::dns`]); unknown names are NXDOMAIN. The
//! sender of each message is checked (SPF, DKIM, DMARC, ARC) with the same fixture, through a
//! name server on loopback, and the `Authentication-Results` field is reported among the
//! added fields. The key-value store is in memory: empty, or a copy of the embedded store
//! file `--state` names (a model `sluice learn` trained). Nothing is stored or delivered.
//!
//! Inside: [`cases`] (messages and expectations), [`report`] (text and JSON).

mod cases;
mod report;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::conversation::script::{self, Envelope, Simulation};
use crate::dns::{FixtureResolver, Resolver};
use crate::policy::{
    Chain, ChainSettings, Clock, EngineOptions, FailureMode, HostServices, Outcome, ParsedMessage,
    PolicyEngine, PolicyLimits, PolicySpec, Thresholds,
};
use crate::reload::Loader;
use crate::sender::{Checker, CheckerSettings};
use crate::state::kv::MemoryKv;
use crate::state::redb_kv::RedbKv;
use crate::tenants::Snapshot;
use cases::{Case, Expectation};

/// Options of `sluice policy test`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyTestArgs {
    /// A relay configuration: run the messages through its edge and tenants, as the relay
    /// would (instead of --policy).
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "policies", "policy_config", "tenant", "failure_mode", "add_header_score",
        "quarantine_score", "reject_score", "cpu_deadline_ms", "memory_mib",
    ])]
    pub config: Option<PathBuf>,
    /// A policy component, in chain order (repeat for a chain); `builtin:NAME` for a shipped
    /// one built into sluice (`builtin:spam-heuristics`).
    #[arg(long = "policy", value_name = "FILE.wasm", required_unless_present = "config", value_parser = crate::builtin::path_arg)]
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
    /// Tenant name (the chain's key-value namespace).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// One JSON object per transaction per line (one per message, unless a message's
    /// recipients belong to several tenants of --config).
    #[arg(long)]
    pub json: bool,
    /// DNS fixture file: the answers policies' lookups and the sender checks (SPF, DKIM keys,
    /// DMARC) get; without it every name is NXDOMAIN.
    #[arg(long, value_name = "FILE")]
    pub dns: Option<PathBuf>,
    /// Exit with status 1 unless every message gets this outcome.
    #[arg(long, value_name = "OUTCOME")]
    pub expect: Option<String>,
    /// Run on a copy of this embedded key-value store file (a model trained by `sluice
    /// learn --state FILE`, say) instead of an empty in-memory store; the file is not changed.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
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

fn strip_brackets(addr: &str) -> String {
    let addr = addr.trim();
    let addr = addr.strip_prefix('<').and_then(|a| a.strip_suffix('>')).unwrap_or(addr);
    addr.trim().to_string()
}

/// A recipient taken from the message's header fields, if a client could send it (the
/// relay refuses the others before any policy sees them).
fn sendable(address: &str) -> bool {
    crate::smtp::address::parse_mailbox(address).is_ok()
}

/// Run one message through a session on `snapshot`.
async fn run_case(
    snapshot: &Arc<Snapshot>,
    checker: &Checker,
    args: &PolicyTestArgs,
    case: &Case,
) -> Result<Vec<Simulation>, UsageError> {
    let raw = std::fs::read(&case.file).map_err(|e| UsageError(format!("{}: {e}", case.file.display())))?;
    let wire = script::wire_form(&raw);
    // Its addresses only: the session parses the whole message at DATA.
    let message = ParsedMessage::parse_headers(wire.clone());
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
        to = message
            .to()
            .iter()
            .chain(message.cc())
            .filter_map(|m| m.address.clone())
            .filter(|a| sendable(a))
            .collect();
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
    };
    // With --config the relay's rules say whose senders are checked; the single tenant of
    // --policy claims every client by network, and its senders are checked all the same.
    let every_sender = args.config.is_none();
    Ok(script::run_checked(snapshot.clone(), &envelope, &wire, Some(checker), every_sender).await)
}

async fn build_chain(args: &PolicyTestArgs, services: HostServices) -> Result<Arc<Chain>, UsageError> {
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

/// The edge and tenants of a relay configuration, loaded with an in-memory key-value store,
/// the DNS fixture and the clock the arguments give.
async fn snapshot_of(path: &Path, services: HostServices) -> Result<Arc<Snapshot>, UsageError> {
    let mut config = Config::from_file(path).map_err(|e| UsageError(e.to_string()))?;
    crate::oci::resolve(&mut config).await.map_err(|e| UsageError(e.to_string()))?;
    let engine = PolicyEngine::new(EngineOptions { max_instances: 256, ..EngineOptions::default() })
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let loader = Loader::new(engine, services);
    Ok(Arc::new(loader.snapshot(config).await.map_err(UsageError)?))
}

/// The DNS fixture (empty without `--dns`: every name NXDOMAIN).
fn fixture(args: &PolicyTestArgs) -> Result<Arc<FixtureResolver>, UsageError> {
    Ok(Arc::new(match &args.dns {
        Some(path) => FixtureResolver::from_file(path).map_err(|e| UsageError(e.to_string()))?,
        None => FixtureResolver::default(),
    }))
}

/// The services the policies get: an in-memory store (empty, or a copy of `--state`), the DNS fixture, the (pinned) clock.
fn services(args: &PolicyTestArgs, fixture: Arc<FixtureResolver>) -> Result<HostServices, UsageError> {
    let resolver: Arc<dyn Resolver> = fixture;
    let kv = match &args.state {
        Some(path) => RedbKv::read_copy(path, 10_000_000).map_err(UsageError)?,
        None => MemoryKv::new(1_000_000),
    };
    Ok(HostServices {
        kv: Arc::new(kv),
        resolver,
        clock: args.now.map(|s| Clock::pinned(s.saturating_mul(1000))).unwrap_or(Clock::System),
    })
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
    let mut cases = cases::collect(&args)?;
    if let Some(outcome) = expect_all {
        for case in &mut cases {
            case.expect.get_or_insert_with(Expectation::default).outcome = Some(outcome);
        }
    }
    let fixture = fixture(&args)?;
    // The sender checks ask the fixture too, through a name server on loopback.
    let checker =
        Checker::from_fixture(fixture.clone(), CheckerSettings::default()).await.map_err(UsageError)?;
    let services = services(&args, fixture)?;
    let snapshot = match &args.config {
        Some(path) => snapshot_of(path, services).await?,
        None => script::single_tenant(build_chain(&args, services).await?),
    };
    let show_tenant = args.config.is_some();

    let (mut passed, mut failed) = (0usize, 0usize);
    // Over many messages, a bar on stderr (when it is a terminal) says how far it has come.
    let mut progress = super::progress::Progress::new(cases.len(), "messages", cases.len() > 1);
    for case in &cases {
        let simulations = run_case(&snapshot, &checker, &args, case).await?;
        let mut problems = Vec::new();
        progress.around(|| {
            for simulation in &simulations {
                if args.json {
                    println!("{}", report::json(&case.file, simulation));
                } else if args.suite.is_none() {
                    print!("{}", report::text(&case.file, simulation, show_tenant));
                }
                if let Some(expect) = &case.expect {
                    problems.extend(cases::problems(simulation, expect));
                }
            }
        });
        progress.step(problems.is_empty());
        let Some(_) = &case.expect else { continue };
        progress.around(|| {
            if problems.is_empty() {
                passed += 1;
                if args.suite.is_some() && !args.json {
                    println!("PASS {}", case.file.display());
                }
            } else {
                failed += 1;
                if args.suite.is_some() && !args.json {
                    for simulation in &simulations {
                        print!("{}", report::text(&case.file, simulation, show_tenant));
                    }
                }
                eprintln!("FAIL {}: {}", case.file.display(), problems.join("; "));
            }
        });
    }
    progress.finish();
    if args.suite.is_some() || expect_all.is_some() {
        eprintln!("{passed} passed, {failed} failed");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
