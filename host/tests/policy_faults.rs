//! A policy that traps, loops, hoards memory, prints or logs without end is a fault: it maps
//! to the chain's failure mode (451 4.3.0 by default), is never an acceptance, and leaves the
//! rest of the chain and later sessions unaffected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice::policy::{ChainSettings, CodeTier, FailureMode, Fault, Outcome, Stage};
use sluice_test_artifacts::PROBE;

/// The probe made to fault at data, on optimised code and on baseline code (what a policy
/// runs on right after a reload): both must give the same result.
async fn faulting(fault: &str) -> (Outcome, u16, Vec<String>, Option<Fault>) {
    let optimized = faulting_on(engine(), CodeTier::Optimized, fault).await;
    let baseline = faulting_on(baseline_engine(), CodeTier::Baseline, fault).await;
    assert_eq!(optimized, baseline, "{fault}: optimised and baseline code disagree");
    optimized
}

async fn faulting_on(
    engine: sluice::policy::PolicyEngine,
    tier: CodeTier,
    fault: &str,
) -> (Outcome, u16, Vec<String>, Option<Fault>) {
    let mut spec = spec(PROBE, &[("fault", fault), ("fault_stage", "data")]);
    if fault == "print" {
        // The output cap must stop it, not the CPU deadline, however loaded the machine.
        spec.limits.cpu_deadline = Duration::from_secs(10);
    }
    let probe = engine.load_quickly(&spec, "tenant-a", services()).await.expect("policy loads");
    assert_eq!(probe.code, tier);
    let chain = chain(vec![probe]);
    let sim = run(&chain, &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    let fault = sim.stages.iter().flat_map(|s| &s.runs).find_map(|r| r.outcome.clone().err());
    (sim.judgement.outcome, sim.judgement.reply.code, symbols(&sim), fault)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_a_tempfail_not_a_verdict() {
    let (outcome, code, _, fault) = faulting("trap").await;
    assert_eq!((outcome, code), (Outcome::Tempfail, 451));
    assert!(matches!(fault, Some(Fault::Trap(ref why)) if why.contains("unreachable")), "{fault:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_cpu_deadline() {
    let started = Instant::now();
    let (outcome, code, _, fault) = faulting("loop").await;
    assert_eq!((outcome, code), (Outcome::Tempfail, 451));
    assert_eq!(fault, Some(Fault::Deadline(Duration::from_millis(50))));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap() {
    let (outcome, _, _, fault) = faulting("alloc").await;
    assert_eq!(outcome, Outcome::Tempfail);
    assert_eq!(fault, Some(Fault::Memory(64 << 20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_without_end_is_cut_off() {
    let (outcome, _, _, fault) = faulting("print").await;
    assert_eq!(outcome, Outcome::Tempfail);
    assert_eq!(fault, Some(Fault::Output(64 << 10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_without_end_is_stopped_by_the_deadline() {
    // Lines over the per-call log budget are dropped; the endless loop around them is
    // stopped like any other.
    let (outcome, _, _, fault) = faulting("log").await;
    assert_eq!(fault, Some(Fault::Deadline(Duration::from_millis(50))));
    assert_eq!(outcome, Outcome::Tempfail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_mode_skips_the_faulty_policy_and_runs_the_rest() {
    let engine = engine();
    let faulty = load(&engine, PROBE, &[("fault", "trap"), ("fault_stage", "mail")]).await;
    let scorer = engine
        .load(
            &{
                let mut s = spec(PROBE, &[("symbol", "AFTER_FAULT=1.5")]);
                s.name = Some("scorer".into());
                s
            },
            "tenant-a",
            services(),
        )
        .await
        .expect("load");
    let chain = chain_with(
        vec![faulty, scorer],
        ChainSettings { failure_mode: FailureMode::Continue, ..Default::default() },
    );
    let sim = run(&chain, &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    assert!(symbols(&sim).contains(&"AFTER_FAULT".to_string()));
    // The faulted instance was replaced: later stages of the same session ran on a new one.
    let data_runs: Vec<_> =
        sim.stages.iter().filter(|s| s.stage == Stage::Data).flat_map(|s| &s.runs).collect();
    assert!(data_runs.iter().all(|r| r.outcome.is_ok()), "{data_runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_early_in_the_chain_stops_it_in_tempfail_mode() {
    let engine = engine();
    let faulty = load(&engine, PROBE, &[("fault", "loop"), ("fault_stage", "connect")]).await;
    let chain = chain(vec![faulty]);
    let sim = run(&chain, &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!((sim.judgement.outcome, sim.judgement.stage), (Outcome::Tempfail, Stage::Connect));
    assert_eq!(sim.judgement.reply.enhanced.as_deref(), Some("4.3.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_serves_sessions_after_faults() {
    let engine = engine();
    let faulty = load(&engine, PROBE, &[("fault", "alloc")]).await;
    let good = load(&engine, PROBE, &[("verdict", "accept")]).await;
    for _ in 0..3 {
        let sim =
            run(&chain(vec![faulty.clone()]), &envelope("192.0.2.1", "a@b.org", &["c@d.org"]), PLAIN).await;
        assert_eq!(sim.judgement.outcome, Outcome::Tempfail);
    }
    for _ in 0..20 {
        let sim =
            run(&chain(vec![good.clone()]), &envelope("192.0.2.1", "a@b.org", &["c@d.org"]), PLAIN).await;
        assert_eq!(sim.judgement.outcome, Outcome::Accept);
    }
}

/// A policy cannot read or write files, list directories, read the environment or arguments,
/// open or bind sockets or resolve names: every attempt the standard library offers fails
/// inside the sandbox, and the policy goes on to its verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_cannot_reach_files_environment_or_network() {
    let probe =
        engine().load(&spec(PROBE, &[("escape", "yes")]), "tenant-a", services()).await.expect("loads");
    let chain = chain(vec![probe]);
    let sim = run(&chain, &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    let found = symbols(&sim);
    for name in ["FILE", "WRITE", "ENV", "ARGS", "SOCKET", "LOOKUP"] {
        assert!(found.contains(&format!("ESCAPE_{name}_DENIED")), "{name}: {found:?}");
    }
    assert!(!std::path::Path::new("/tmp/sluice-probe-escape").exists());
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
}

/// A policy the baseline compiler cannot compile (here: an extra core module with a relaxed
/// SIMD instruction, which Winch does not support) still loads after a reload, as optimised
/// code, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_baseline_compiler_rejects_loads_optimised() {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module,
    };
    use wasm_encoder::{TypeSection, ValType};
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::V128, ValType::V128], [ValType::V128]);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("swizzle", ExportKind::Func, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::LocalGet(0))
        .instruction(&Instruction::LocalGet(1))
        .instruction(&Instruction::I8x16RelaxedSwizzle)
        .instruction(&Instruction::End);
    code.function(&body);
    module.section(&code);
    let module = module.finish();
    // The probe policy with that module appended as one more (never instantiated) core module
    // section of the component: id 1, the length in LEB128, the module.
    let mut bytes = std::fs::read(PROBE).expect("probe");
    bytes.push(1);
    let mut length = module.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        bytes.push(if length == 0 { byte } else { byte | 0x80 });
        if length == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&module);
    let path = std::env::temp_dir().join(format!("sluice-relaxed-probe-{}.wasm", std::process::id()));
    std::fs::write(&path, &bytes).expect("write");

    let engine = baseline_engine();
    let loaded = engine
        .load_quickly(&spec(path.to_str().expect("path"), &[]), "tenant-a", services())
        .await
        .expect("the policy loads all the same");
    assert_eq!(loaded.code, CodeTier::Optimized);
    let probe = engine.load_quickly(&spec(PROBE, &[]), "tenant-a", services()).await.expect("probe");
    assert_eq!(probe.code, CodeTier::Baseline, "other policies still load quickly");
    let sim =
        run(&chain(vec![loaded]), &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    let _ = std::fs::remove_file(&path);
}
