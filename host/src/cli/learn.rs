//! `sluice learn`: teach a learning policy (one that exports `sluice:policy/learner`, such
//! as the shipped `bayes`) messages whose class is known, offline. Its key-value writes go
//! where the relay's would for that tenant and policy: the embedded store file given by
//! `--state`, or the state backend of a relay configuration (`--config`, Redis included),
//! under the policy's name in that tenant's chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::dns::FixtureResolver;
use crate::policy::{
    Clock, EngineOptions, Fault, HostServices, LearnError, Learner, Lesson, LoadedPolicy, MAX_LESSON_BYTES,
    ParsedMessage, PolicyEngine, PolicySpec,
};
use crate::state::kv::KvStore;
use crate::state::redb_kv::RedbKv;

/// Options of `sluice learn`.
#[derive(Debug, Clone, clap::Args)]
pub struct LearnArgs {
    /// The learning policy component (`builtin:bayes` for the one built into sluice).
    #[arg(long, value_name = "FILE.wasm", value_parser = crate::builtin::path_arg)]
    pub policy: PathBuf,
    /// Spam: message files, or directories of them (repeatable).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub spam: Vec<PathBuf>,
    /// Ham: message files, or directories of them (repeatable).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub ham: Vec<PathBuf>,
    /// Unlearn the messages given (with --spam or --ham alike) instead of learning them.
    #[arg(long)]
    pub forget: bool,
    /// The tenant whose model it is (default: `default`, the tenant `sluice policy test` uses).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// The embedded key-value store file to write (as `sluice policy test --state` reads).
    #[arg(long, value_name = "FILE", conflicts_with = "config", required_unless_present = "config")]
    pub state: Option<PathBuf>,
    /// A relay configuration: write to its state backend, as the tenant's policy of that file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Policy configuration `KEY=VALUE` (with --state; with --config the tenant's is used).
    #[arg(long = "policy-config", value_name = "KEY=VALUE", conflicts_with = "config")]
    pub policy_config: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Every message file under `path`: the file itself, or the files of a directory and its
/// subdirectories (a maildir's `cur` and `new`), dotfiles left out, in name order.
fn message_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    entries.sort();
    for entry in entries {
        message_files(&entry, out)?;
    }
    Ok(())
}

/// The policy, loaded as the relay loads it for the tenant, and the store it writes to.
async fn load(args: &LearnArgs) -> Result<(Arc<LoadedPolicy>, Arc<dyn KvStore>), String> {
    let engine = PolicyEngine::new(EngineOptions { max_instances: 4, ..EngineOptions::default() })
        .map_err(|e| format!("{e:#}"))?;
    let services = |kv: Arc<dyn KvStore>| HostServices {
        kv,
        resolver: Arc::new(FixtureResolver::default()),
        clock: Clock::System,
    };
    match (&args.config, &args.state) {
        (Some(path), _) => {
            let mut config = Config::from_file(path).map_err(|e| e.to_string())?;
            crate::oci::resolve(&mut config).await.map_err(|e| e.to_string())?;
            let tenant = std::iter::once(config.edge())
                .chain(&config.tenants)
                .find(|t| t.name == args.tenant)
                .ok_or_else(|| {
                    let names: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
                    format!("{}: no tenant {:?} (tenants: {})", path.display(), args.tenant, names.join(", "))
                })?;
            let wanted =
                std::fs::canonicalize(&args.policy).map_err(|e| format!("{}: {e}", args.policy.display()))?;
            let entry = tenant
                .policies
                .iter()
                .find(|p| std::fs::canonicalize(config.resolve(&p.path)).is_ok_and(|p| p == wanted))
                .ok_or_else(|| {
                    format!(
                        "tenant {:?} of {} has no policy at {}: the model belongs to a policy of its chain",
                        args.tenant,
                        path.display(),
                        args.policy.display()
                    )
                })?;
            let spec = entry.spec(&config, tenant);
            let kv = crate::relay::open_state(&config).map_err(|e| format!("{e:#}"))?;
            let policy =
                engine.load(&spec, &args.tenant, services(kv.clone())).await.map_err(|e| e.to_string())?;
            Ok((policy, kv))
        }
        (None, Some(state)) => {
            let kv: Arc<dyn KvStore> = Arc::new(RedbKv::open(state, 10_000_000)?);
            let mut spec = PolicySpec::new(&args.policy);
            for item in &args.policy_config {
                let (key, value) = item
                    .split_once('=')
                    .ok_or_else(|| format!("--policy-config {item:?}: expected KEY=VALUE"))?;
                spec.config.push((key.trim().to_string(), value.to_string()));
            }
            let policy =
                engine.load(&spec, &args.tenant, services(kv.clone())).await.map_err(|e| e.to_string())?;
            Ok((policy, kv))
        }
        (None, None) => Err("give --state FILE or --config FILE: where the model is kept".into()),
    }
}

/// Run the command; returns the exit status (0: every message taken, 1: some failed).
pub async fn run(args: LearnArgs) -> Result<i32, String> {
    let mut work: Vec<(PathBuf, Lesson)> = Vec::new();
    for (paths, class) in [(&args.spam, Lesson::Spam), (&args.ham, Lesson::Ham)] {
        let mut files = Vec::new();
        for path in paths {
            message_files(path, &mut files)?;
        }
        let lesson = if args.forget { Lesson::Forget } else { class };
        work.extend(files.into_iter().map(|f| (f, lesson)));
    }
    if work.is_empty() {
        return Err("nothing to learn: give --spam and/or --ham with message files or directories".into());
    }
    let (policy, kv) = load(&args).await?;
    let name = policy.name.clone();
    let mut learner = Learner::new(policy).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut progress = super::progress::Progress::new(work.len(), "messages", !args.quiet);
    let mut outcomes: std::collections::BTreeMap<(&'static str, &'static str), usize> = Default::default();
    let mut failed = 0usize;
    for (file, lesson) in &work {
        let failed_before = failed;
        let too_large = std::fs::metadata(file).is_ok_and(|m| m.len() > MAX_LESSON_BYTES as u64);
        let result = if too_large {
            Err((format!("over {} MiB: not a message, left out", MAX_LESSON_BYTES >> 20), false))
        } else {
            match std::fs::read(file) {
                Ok(raw) => {
                    learner.learn(Arc::new(ParsedMessage::parse(raw)), *lesson, None).await.map_err(|e| {
                        let stop = fatal(&e);
                        (e.to_string(), stop)
                    })
                }
                Err(e) => Err((format!("cannot read: {e}"), false)),
            }
        };
        match result {
            Ok(learned) => *outcomes.entry((lesson.as_str(), learned.as_str())).or_default() += 1,
            Err((why, stop)) => {
                failed += 1;
                progress.around(|| eprintln!("{}: {why}", file.display()));
                if stop {
                    progress.finish();
                    return Err(why);
                }
            }
        }
        progress.step(failed == failed_before);
    }
    progress.finish();
    drop(learner);
    drop(kv);
    let elapsed = started.elapsed().as_secs_f64();
    let mut summary: Vec<String> = Vec::new();
    for lesson in [Lesson::Spam, Lesson::Ham, Lesson::Forget].map(Lesson::as_str) {
        let counts: Vec<String> = outcomes
            .iter()
            .filter(|((l, _), _)| *l == lesson)
            .map(|((_, learned), n)| format!("{n} {learned}"))
            .collect();
        if !counts.is_empty() {
            summary.push(format!("{lesson}: {}", counts.join(", ")));
        }
    }
    eprintln!(
        "sluice learn: policy {name}, tenant {}: {} messages in {elapsed:.1} s ({:.0}/s): {}{}",
        args.tenant,
        work.len(),
        work.len() as f64 / elapsed.max(1e-3),
        summary.join("; "),
        if failed > 0 { format!("; {failed} failed") } else { String::new() }
    );
    Ok(if failed > 0 { 1 } else { 0 })
}

/// A store that cannot be reached fails every message alike: stop at the first.
fn fatal(error: &LearnError) -> bool {
    matches!(error, LearnError::Fault { fault: Fault::State(_), .. })
}
