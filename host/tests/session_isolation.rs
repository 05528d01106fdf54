//! One instance per session: state lives across the stages of a session and never crosses
//! sessions. Key-value keys are namespaced by tenant and policy. DNS lookups per call are
//! bounded. The message handed to policies is the parsed message; their changes come back.

mod common;

use std::sync::Arc;

use common::*;
use sluice::dns::FixtureResolver;
use sluice::policy::{Clock, Outcome};
use sluice::state::kv::MemoryKv;
use sluice_test_artifacts::PROBE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_lives_for_one_session() {
    let engine = engine();
    let chain = chain(vec![load(&engine, PROBE, &[("calls", "yes")]).await]);
    // connect, helo, mail, two rcpt, data = 6 hooks on the same instance, in every session.
    for _ in 0..3 {
        let sim =
            run(&chain, &envelope("192.0.2.1", "a@example.org", &["b@example.com", "c@example.com"]), PLAIN)
                .await;
        assert!(symbols(&sim).contains(&"CALLS_6".to_string()), "{:?}", symbols(&sim));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_serve_a_bounded_number_of_sessions() {
    let engine = engine();
    let mut warm = spec(PROBE, &[("calls", "yes")]);
    warm.limits.sessions_per_instance = 3;
    let chain = chain(vec![engine.load(&warm, "t", common::services()).await.expect("load")]);
    // Six hooks a session; one instance serves three sessions in a row, then a fresh one.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let sim =
            run(&chain, &envelope("192.0.2.1", "a@example.org", &["b@example.com", "c@example.com"]), PLAIN)
                .await;
        seen.extend(symbols(&sim).into_iter().filter(|s| s.starts_with("CALLS_")));
    }
    assert_eq!(seen, ["CALLS_6", "CALLS_12", "CALLS_18", "CALLS_6"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_keys_are_private_to_tenant_and_policy() {
    let kv = Arc::new(MemoryKv::new(1000));
    let services = services_with(kv, Arc::new(FixtureResolver::default()), Clock::System);
    let engine = engine();
    let named = |name: &str, config: &[(&str, &str)]| {
        let mut s = spec(PROBE, config);
        s.name = Some(name.into());
        s
    };
    let env = envelope("192.0.2.1", "a@example.org", &["b@example.com"]);
    let writer = engine
        .load(&named("writer", &[("kv_set", "secret=42")]), "tenant-a", services.clone())
        .await
        .expect("load");
    run(&chain(vec![writer]), &env, PLAIN).await;

    let same = engine
        .load(&named("writer", &[("kv_get", "secret")]), "tenant-a", services.clone())
        .await
        .expect("load");
    assert!(symbols(&run(&chain(vec![same]), &env, PLAIN).await).contains(&"KV_42".to_string()));

    let other_policy = engine
        .load(&named("reader", &[("kv_get", "secret")]), "tenant-a", services.clone())
        .await
        .expect("load");
    assert!(symbols(&run(&chain(vec![other_policy]), &env, PLAIN).await).contains(&"KV_NONE".to_string()));

    let other_tenant = engine
        .load(&named("writer", &[("kv_get", "secret")]), "tenant-b", services.clone())
        .await
        .expect("load");
    assert!(symbols(&run(&chain(vec![other_tenant]), &env, PLAIN).await).contains(&"KV_NONE".to_string()));

    // Keys that look like another namespace's prefix do not reach it.
    let sneaky = engine
        .load(&named("reader", &[("kv_get", "../writer/secret")]), "tenant-a", services)
        .await
        .expect("load");
    assert!(symbols(&run(&chain(vec![sneaky]), &env, PLAIN).await).contains(&"KV_NONE".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lookups_per_call_are_bounded() {
    let resolver = FixtureResolver::parse("known.test A 192.0.2.53\n", "test").expect("fixture");
    let services = services_with(Arc::new(MemoryKv::new(10)), Arc::new(resolver), Clock::System);
    let engine = engine();
    let probe = engine.load(&spec(PROBE, &[("dns", "known.test")]), "t", services).await.expect("load");
    let sim =
        run(&chain(vec![probe]), &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    let names = symbols(&sim);
    assert!(names.contains(&"DNS_ANSWERS_10".to_string()), "{names:?}");
    assert!(names.contains(&"DNS_BudgetExceeded".to_string()), "{names:?}");
}

/// A name server that never answers.
struct Silent;

#[async_trait::async_trait]
impl sluice::dns::Resolver for Silent {
    async fn lookup(
        &self,
        _name: &str,
        _kind: sluice::dns::RecordType,
    ) -> Result<Vec<String>, sluice::dns::DnsError> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lookups_per_call_are_bounded_in_time() {
    let services = services_with(Arc::new(MemoryKv::new(10)), Arc::new(Silent), Clock::System);
    let engine = engine();
    let mut probe_spec = spec(PROBE, &[("dns", "silent.test")]);
    probe_spec.limits.dns_timeout = std::time::Duration::from_millis(100);
    let probe = engine.load(&probe_spec, "t", services).await.expect("load");
    let started = std::time::Instant::now();
    let sim =
        run(&chain(vec![probe]), &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    let took = started.elapsed();
    // Ten lookups of 100 ms each, then the budget: the call ends, the message goes on.
    let names = symbols(&sim);
    assert!(names.contains(&"DNS_ANSWERS_0".to_string()), "{names:?}");
    assert!(names.contains(&"DNS_BudgetExceeded".to_string()), "{names:?}");
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    assert!(took >= std::time::Duration::from_millis(1000), "{took:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_read_the_message_and_their_changes_come_back() {
    let engine = engine();
    let probe = load(&engine, PROBE, &[("symbol", "SEEN=0.5"), ("header", "X-Probe: checked")]).await;
    let sim =
        run(&chain(vec![probe]), &envelope("192.0.2.1", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    let seen = sim.judgement.symbols.iter().find(|s| s.symbol.name == "SEEN").expect("symbol");
    assert_eq!(seen.symbol.detail.as_deref(), Some("Lunch"), "the policy read the subject");
    let headers = &sim.judgement.added_headers;
    assert!(headers.contains(&("X-Probe".into(), "checked".into())), "{headers:?}");
    assert!(headers.contains(&("X-Spam-Score".into(), "0.5".into())), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_map_to_outcomes() {
    let engine = engine();
    let env = envelope("192.0.2.1", "a@example.org", &["b@example.com"]);
    for (verdict, stage, outcome, code) in [
        ("reject", "mail", Outcome::Reject, 550),
        ("tempfail", "helo", Outcome::Tempfail, 451),
        ("discard", "rcpt", Outcome::Discard, 250),
        ("quarantine", "data", Outcome::Quarantine, 250),
        ("accept", "connect", Outcome::Accept, 250),
    ] {
        let probe = load(&engine, PROBE, &[("verdict", verdict), ("verdict_stage", stage)]).await;
        let sim = run(&chain(vec![probe]), &env, PLAIN).await;
        assert_eq!(
            (sim.judgement.outcome, sim.judgement.reply.code),
            (outcome, code),
            "{verdict} at {stage}"
        );
    }
    let probe =
        load(&engine, PROBE, &[("verdict", "reject"), ("verdict_stage", "connect"), ("disconnect", "true")])
            .await;
    assert!(run(&chain(vec![probe]), &env, PLAIN).await.judgement.disconnect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_corpus_messages_reach_policies_without_a_panic() {
    let engine = engine();
    let chain = chain(vec![load(&engine, PROBE, &[("symbol", "SEEN=0")]).await]);
    let env = envelope("192.0.2.1", "a@example.org", &["b@example.com"]);
    let mut count = 0;
    let snapshot = sluice::conversation::script::single_tenant(chain);
    for entry in std::fs::read_dir(corpus().join("malformed")).expect("corpus").flatten() {
        let raw = std::fs::read(entry.path()).expect("read");
        let wire = sluice::conversation::script::wire_form(&raw);
        let sims = sluice::conversation::script::run(snapshot.clone(), &env, &wire).await;
        let sim = &sims[0];
        // Every message gets a verdict; one with a NUL byte is refused before any policy, as
        // the relay refuses it.
        if raw.contains(&0) {
            assert_eq!(sim.reply.code, 550, "{}", entry.path().display());
        } else {
            assert_eq!(sim.judgement.outcome, Outcome::Accept, "{}", entry.path().display());
        }
        count += 1;
    }
    assert!(count > 200, "read {count} messages");
}

/// Sessions keep their instances between hooks, and an instance keeps its fiber stack between
/// calls: a relay sized for 1,200 connections holds 700 sessions that each passed connect
/// (idle clients after the greeting) without running out of stacks — it once stopped at 512.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_sessions_each_hold_an_instance() {
    use sluice::policy::{
        ChainSession, EngineOptions, PolicyEngine, SessionInfo, Stage, StageInput, Verdict,
    };
    let engine =
        PolicyEngine::new(EngineOptions { max_instances: 2400, ..EngineOptions::default() }).expect("engine");
    let chain = chain(vec![load(&engine, PROBE, &[("calls", "yes")]).await]);
    let info = SessionInfo {
        tenant: "t".into(),
        transaction_id: "T".into(),
        client_ip: "192.0.2.1".parse().expect("ip"),
        client_port: 49152,
        reverse_dns: None,
        helo: None,
        tls: None,
        authenticated_user: None,
        listener: "127.0.0.1:25".into(),
        hostname: "sluice.test".into(),
        mail_from: None,
        recipients: Vec::new(),
    };
    let mut sessions = Vec::new();
    for i in 0..700 {
        let mut session = ChainSession::new(chain.clone());
        let result = session.run(Stage::Connect, &info, StageInput::Session).await;
        assert!(matches!(result.verdict, Verdict::Continue), "session {i}: {:?}", result.runs);
        assert!(result.runs.iter().all(|r| r.outcome.is_ok()), "session {i}: {:?}", result.runs);
        sessions.push(session);
    }
    // Each is still usable.
    for session in sessions.iter_mut().step_by(50) {
        let result = session.run(Stage::Helo, &info, StageInput::Session).await;
        assert!(result.runs.iter().all(|r| r.outcome.is_ok()), "{:?}", result.runs);
    }
}
