//! Instances made ahead of sessions: each still serves one session and is never reused; the
//! pool follows demand within its budget; a retired policy drops its instances and makes no
//! more; a fault in a prepared instance is a fault like any other.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sluice::conversation::script::Envelope;
use sluice::policy::{EngineOptions, LoadedPolicy, Outcome, PolicyEngine};
use sluice_test_artifacts::PROBE;

fn preparing_engine(budget: usize) -> PolicyEngine {
    let cache = std::env::temp_dir().join("sluice-test-cache");
    PolicyEngine::new(EngineOptions {
        max_instances: 256,
        cache_dir: Some(cache),
        prepared_instances: budget,
        ..EngineOptions::default()
    })
    .expect("engine")
}

/// Wait until `policy` has at least `n` instances ready (or two seconds went by).
async fn ready(policy: &LoadedPolicy, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    while policy.prepared_instances() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    policy.prepared_instances()
}

fn two_recipients() -> Envelope {
    envelope("192.0.2.1", "a@example.org", &["b@example.com", "c@example.com"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_instance_serves_one_session_and_is_never_reused() {
    let engine = preparing_engine(64);
    let probe = load(&engine, PROBE, &[("calls", "yes")]).await;
    let chain = chain(vec![probe.clone()]);
    let mut from_the_pool = 0;
    for _ in 0..30 {
        let waiting = ready(&probe, 1).await;
        let sim = run(&chain, &two_recipients(), PLAIN).await;
        // Six hooks, all on one instance that served no session before.
        assert!(symbols(&sim).contains(&"CALLS_6".to_string()), "{:?}", symbols(&sim));
        from_the_pool += usize::from(waiting > 0);
    }
    assert!(from_the_pool >= 25, "only {from_the_pool} of 30 sessions found an instance ready");
    assert!(engine.prepared_instances() <= 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_bounds_every_policy_together() {
    let engine = preparing_engine(3);
    let a = load(&engine, PROBE, &[("calls", "yes")]).await;
    let b = load(&engine, PROBE, &[("symbol", "B=0")]).await;
    let chain = chain(vec![a.clone(), b.clone()]);
    for _ in 0..40 {
        run(&chain, &two_recipients(), PLAIN).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(engine.prepared_instances() <= 3, "{} held", engine.prepared_instances());
    assert!(a.prepared_instances() + b.prepared_instances() <= 3);
    assert!(a.prepared_instances() + b.prepared_instances() >= 1, "nothing prepared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_policy_drops_its_instances_and_makes_no_more() {
    let engine = preparing_engine(64);
    let probe = load(&engine, PROBE, &[("calls", "yes")]).await;
    let chain = chain(vec![probe.clone()]);
    run(&chain, &two_recipients(), PLAIN).await;
    assert!(ready(&probe, 1).await >= 1);
    probe.retire();
    assert_eq!(probe.prepared_instances(), 0);
    // One may still be in the making when it retires: it is dropped once made, never kept.
    let deadline = Instant::now() + Duration::from_secs(2);
    while engine.prepared_instances() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(engine.prepared_instances(), 0);
    assert_eq!(probe.prepared_instances(), 0);
    // Sessions still on it make their own instances; none is prepared for it any more.
    for _ in 0..5 {
        let sim = run(&chain, &two_recipients(), PLAIN).await;
        assert!(symbols(&sim).contains(&"CALLS_6".to_string()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(probe.prepared_instances(), 0);
    // Put back in service (a rollback): sessions' demand refills it.
    probe.unretire();
    run(&chain, &two_recipients(), PLAIN).await;
    assert!(ready(&probe, 1).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_in_a_prepared_instance_is_a_fault_and_the_next_session_is_served() {
    let engine = preparing_engine(64);
    let faulty = load(&engine, PROBE, &[("fault", "trap"), ("fault_stage", "rcpt")]).await;
    let chain = chain(vec![faulty.clone()]);
    for _ in 0..3 {
        ready(&faulty, 1).await;
        let sim = run(&chain, &two_recipients(), PLAIN).await;
        // The default failure mode: a fault tempfails, never accepts.
        assert_eq!(sim.judgement.outcome, Outcome::Tempfail);
    }
    let fine = load(&engine, PROBE, &[("calls", "yes")]).await;
    let sim = run(
        &Arc::new(sluice::policy::Chain::new("tenant-a", vec![fine], Default::default())),
        &two_recipients(),
        PLAIN,
    )
    .await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
}
