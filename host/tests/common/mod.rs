//! Helpers shared by the integration tests: an engine, chains of real components, and
//! whole transactions run through them.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sluice::conversation::script::{self, Envelope, Simulation};
use sluice::dns::{FixtureResolver, Resolver};
use sluice::policy::{
    Chain, ChainSettings, Clock, EngineOptions, HostServices, LoadError, LoadedPolicy, ParsedMessage,
    PolicyEngine, PolicyLimits, PolicySpec,
};
use sluice::state::kv::{KvStore, MemoryKv};

pub fn engine() -> PolicyEngine {
    let cache = std::env::temp_dir().join("sluice-test-cache");
    PolicyEngine::new(EngineOptions { max_instances: 32, cache_dir: Some(cache), ..EngineOptions::default() })
        .expect("engine")
}

/// An engine whose `load_quickly` always compiles with the baseline compiler (no cache).
#[allow(dead_code)]
pub fn baseline_engine() -> PolicyEngine {
    PolicyEngine::new(EngineOptions {
        max_instances: 32,
        cache_dir: None,
        baseline_tier: true,
        ..EngineOptions::default()
    })
    .expect("engine")
}

pub fn services() -> HostServices {
    services_with(Arc::new(MemoryKv::new(10_000)), Arc::new(FixtureResolver::default()), Clock::System)
}

pub fn services_with(kv: Arc<dyn KvStore>, resolver: Arc<dyn Resolver>, clock: Clock) -> HostServices {
    HostServices { kv, resolver, clock }
}

pub fn spec(path: &str, config: &[(&str, &str)]) -> PolicySpec {
    PolicySpec {
        path: PathBuf::from(path),
        name: None,
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        limits: PolicyLimits::default(),
    }
}

pub async fn load(engine: &PolicyEngine, path: &str, config: &[(&str, &str)]) -> Arc<LoadedPolicy> {
    engine.load(&spec(path, config), "tenant-a", services()).await.expect("policy loads")
}

pub async fn try_load(engine: &PolicyEngine, spec: &PolicySpec) -> Result<Arc<LoadedPolicy>, LoadError> {
    engine.load(spec, "tenant-a", services()).await
}

pub fn chain(policies: Vec<Arc<LoadedPolicy>>) -> Arc<Chain> {
    chain_with(policies, ChainSettings::default())
}

pub fn chain_with(policies: Vec<Arc<LoadedPolicy>>, settings: ChainSettings) -> Arc<Chain> {
    Arc::new(Chain::new("tenant-a", policies, settings))
}

pub const PLAIN: &str = "From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: Lunch\r\n\
Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nShall we meet at noon?\r\n";

pub fn message(raw: &str) -> Arc<ParsedMessage> {
    Arc::new(ParsedMessage::parse(raw.as_bytes().to_vec()))
}

pub fn envelope(ip: &str, from: &str, to: &[&str]) -> Envelope {
    Envelope {
        client_ip: ip.parse::<IpAddr>().expect("ip"),
        helo: "client.example".into(),
        from: from.into(),
        to: to.iter().map(|s| s.to_string()).collect(),
        authenticated_user: None,
    }
}

/// `raw` sent from `envelope` in a session whose one tenant has `chain`: the first
/// transaction.
pub async fn run(chain: &Arc<Chain>, envelope: &Envelope, raw: &str) -> Simulation {
    let wire = script::wire_form(raw.as_bytes());
    let mut transactions = script::run(script::single_tenant(chain.clone()), envelope, &wire).await;
    assert!(!transactions.is_empty(), "a session always ends in a transaction's record");
    transactions.remove(0)
}

pub fn symbols(sim: &Simulation) -> Vec<String> {
    sim.judgement.symbols.iter().map(|s| s.symbol.name.clone()).collect()
}

/// The shared real-mail corpus beside the repository.
pub fn corpus() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    assert!(dir.is_dir(), "the shared corpus must be beside the repository at {}", dir.display());
    dir
}

/// The files of the corpus folder `class` whose names start with `prefix`, in name order,
/// the `range` of them.
pub fn corpus_files(class: &str, prefix: &str, range: std::ops::Range<usize>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join(class))
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    files.sort();
    files[range].to_vec()
}

/// Run the `sluice` binary with `args` (its compile cache shared by the tests) and wait.
pub fn run_sluice(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("run sluice")
}
