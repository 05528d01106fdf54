//! Cost per message of running policies: a fresh instance of every policy in the chain
//! (instantiate + init) and every hook a message passes through (connect, helo, mail, one
//! rcpt, data), on a message parsed once. Run with `cargo bench -p sluice --bench policy_cost`.

mod common;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::policy::{
    Chain, ChainSettings, EngineOptions, LoadedPolicy, ParsedMessage, PolicyEngine, PolicySpec,
};
use sluice_test_artifacts::{DNSBL, GREYLIST, RATE_LIMIT, SENDER_GUARD, SPAM_HEURISTICS};

const MESSAGE: &str = "Return-Path: <alice@example.org>\r\nReceived: from mx.example.org (mx.example.org \
[198.51.100.20])\r\n\tby mx.example.com with ESMTPS; Thu, 1 Jan 2026 09:00:05 +0000\r\nFrom: Alice <alice@example.org>\r\n\
To: Bob <bob@example.com>\r\nSubject: Quarterly report\r\nDate: Thu, 1 Jan 2026 09:00:00 +0000\r\n\
Message-ID: <20260101090000.1234@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Hi Bob,\r\n\r\nthe quarterly report is ready; see https://intranet.example.org/reports/q4 for details.\r\n\r\nAlice\r\n";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let engine =
        PolicyEngine::new(EngineOptions { max_instances: 64, ..EngineOptions::default() }).expect("engine");
    let services = common::services();
    let message = Arc::new(ParsedMessage::parse(MESSAGE.as_bytes().to_vec()));
    let chain =
        |policies: Vec<Arc<LoadedPolicy>>| Arc::new(Chain::new("bench", policies, ChainSettings::default()));

    let all = vec![
        common::load(&rt, &engine, &services, DNSBL, &[("zones", "bl.test")], 1),
        common::load(&rt, &engine, &services, SENDER_GUARD, &[("domains", "example.com")], 1),
        common::load(
            &rt,
            &engine,
            &services,
            RATE_LIMIT,
            &[("messages", "1000000000"), ("recipients", "1000000000")],
            1,
        ),
        common::load(&rt, &engine, &services, GREYLIST, &[("exempt_networks", "198.51.100.0/24")], 1),
        common::load(&rt, &engine, &services, SPAM_HEURISTICS, &[], 1),
    ];
    let mut group = c.benchmark_group("per_message");
    for policy in &all {
        let one = chain(vec![policy.clone()]);
        group.bench_function(format!("one_policy/{}", policy.name), |b| {
            b.iter(|| rt.block_on(common::one_message(&one, &message)))
        });
    }
    let every = chain(all.clone());
    group.bench_function("all_shipped_policies", |b| {
        b.iter(|| rt.block_on(common::one_message(&every, &message)))
    });
    // What a policy runs on between a reload and the moment its optimised code is ready.
    let baseline_engine = PolicyEngine::new(EngineOptions {
        max_instances: 64,
        cache_dir: None,
        baseline_tier: true,
        ..EngineOptions::default()
    })
    .expect("engine");
    let baseline = rt
        .block_on(baseline_engine.load_quickly(&PolicySpec::new(SPAM_HEURISTICS), "bench", services.clone()))
        .expect("load policy");
    let on_baseline = chain(vec![baseline]);
    group.bench_function("baseline_code/spam-heuristics", |b| {
        b.iter(|| rt.block_on(common::one_message(&on_baseline, &message)))
    });
    let empty = chain(Vec::new());
    group.bench_function("no_policies", |b| b.iter(|| rt.block_on(common::one_message(&empty, &message))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
