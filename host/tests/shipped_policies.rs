//! Every shipped policy, through the real engine, on real scenarios.

mod common;

use std::sync::Arc;

use common::*;
use sluice::dns::FixtureResolver;
use sluice::policy::{Clock, Outcome, Stage};
use sluice::state::kv::MemoryKv;
use sluice_test_artifacts::{DNSBL, GREYLIST, RATE_LIMIT, SENDER_GUARD, SPAM_HEURISTICS};

const GUARD: &[(&str, &str)] =
    &[("domains", "example.com, *.example.com"), ("trusted_networks", "10.0.0.0/8")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_guard_limits_relaying_senders_to_their_domains() {
    let engine = engine();
    let chain = chain(vec![load(&engine, SENDER_GUARD, GUARD).await]);
    let plain = PLAIN.replace("alice@example.org", "alice@example.com");
    // Internal client, own domain: accepted.
    let sim = run(&chain, &envelope("10.1.2.3", "alice@example.com", &["x@elsewhere.org"]), &plain).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept, "{:?}", sim.judgement);
    // Subdomain, null sender: accepted.
    let sim = run(&chain, &envelope("10.1.2.3", "bob@lists.example.com", &["x@elsewhere.org"]), &plain).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    let sim = run(&chain, &envelope("10.1.2.3", "", &["x@elsewhere.org"]), &plain).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    // Internal client, foreign domain: refused at MAIL.
    let sim = run(&chain, &envelope("10.1.2.3", "alice@gmail.com", &["x@elsewhere.org"]), &plain).await;
    assert_eq!(
        (sim.judgement.outcome, sim.judgement.stage, sim.judgement.reply.code),
        (Outcome::Reject, Stage::Mail, 553)
    );
    // Authenticated from anywhere counts as internal; the user's domain must match.
    let mut env = envelope("198.51.100.7", "alice@example.com", &["x@elsewhere.org"]);
    env.authenticated_user = Some("alice@example.com".into());
    assert_eq!(run(&chain, &env, &plain).await.judgement.outcome, Outcome::Accept);
    env.from = "mallory@other.example.com".into();
    env.authenticated_user = Some("alice@example.net".into());
    let sim = run(&chain, &env, &plain).await;
    assert_eq!(sim.judgement.outcome, Outcome::Reject);
    // Outside client claiming our domain: spoofing.
    let sim = run(&chain, &envelope("198.51.100.7", "ceo@example.com", &["x@example.com"]), &plain).await;
    assert_eq!((sim.judgement.outcome, sim.judgement.stage), (Outcome::Reject, Stage::Mail));
    // Outside client, foreign domain, inbound: not this policy's business.
    let sim = run(&chain, &envelope("198.51.100.7", "a@example.org", &["x@example.com"]), PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    // Address tricks are refused from everyone.
    for trick in [
        "a%evil.org@example.com",
        "evil.org!a@example.com",
        "@hop.example:a@evil.org",
        "a@example.com@evil.org",
    ] {
        let sim = run(&chain, &envelope("10.1.2.3", trick, &["x@elsewhere.org"]), &plain).await;
        assert_eq!((sim.judgement.outcome, sim.judgement.reply.code), (Outcome::Reject, 553), "{trick}");
    }
    // Internal sender with a foreign From: header: refused at data.
    let sim = run(&chain, &envelope("10.1.2.3", "alice@example.com", &["x@elsewhere.org"]), PLAIN).await;
    assert_eq!((sim.judgement.outcome, sim.judgement.stage), (Outcome::Reject, Stage::Data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsbl_refuses_listed_clients_at_rcpt_and_scores_link_domains() {
    let resolver = FixtureResolver::parse(
        "7.100.51.198.bl.test A 127.0.0.2\n9.100.51.198.bl.test A 127.255.255.254\nbadlinks.example.dbl.test A 127.0.1.2\n",
        "test",
    )
    .expect("fixture");
    let services = services_with(Arc::new(MemoryKv::new(100)), Arc::new(resolver), Clock::System);
    let engine = engine();
    let reject = engine
        .load(&spec(DNSBL, &[("zones", "bl.test"), ("url_zones", "dbl.test")]), "t", services.clone())
        .await
        .expect("load");
    let chain = chain(vec![reject]);
    let sim = run(&chain, &envelope("198.51.100.7", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!(
        (sim.judgement.outcome, sim.judgement.stage, sim.judgement.reply.code),
        (Outcome::Reject, Stage::Rcpt, 554)
    );
    assert!(sim.judgement.reply.text.contains("bl.test"), "{}", sim.judgement.reply);
    // An error answer (127.255.255.x) is not a listing; an unlisted client passes.
    for ip in ["198.51.100.9", "198.51.100.8"] {
        let sim = run(&chain, &envelope(ip, "a@example.org", &["b@example.com"]), PLAIN).await;
        assert_eq!(sim.judgement.outcome, Outcome::Accept, "{ip}");
    }
    let spammy = PLAIN.replace("Shall we meet at noon?", "Visit http://www.badlinks.example/offer now");
    let sim = run(&chain, &envelope("198.51.100.8", "a@example.org", &["b@example.com"]), &spammy).await;
    assert!(symbols(&sim).contains(&"URIBL_LISTED".to_string()));

    let scoring = engine
        .load(&spec(DNSBL, &[("zones", "bl.test"), ("action", "score"), ("score", "3.5")]), "t", services)
        .await
        .expect("load");
    let sim =
        run(&chain_one(scoring), &envelope("198.51.100.7", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    assert_eq!(sim.judgement.score, 3.5);
}

fn chain_one(policy: Arc<sluice::policy::LoadedPolicy>) -> Arc<sluice::policy::Chain> {
    chain(vec![policy])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_tempfails_past_the_limit_and_counts_across_sessions() {
    let engine = engine();
    let chain = chain(vec![load(&engine, RATE_LIMIT, &[("messages", "3"), ("recipients", "100")]).await]);
    let env = envelope("203.0.113.5", "a@example.org", &["b@example.com"]);
    for n in 1..=3 {
        assert_eq!(run(&chain, &env, PLAIN).await.judgement.outcome, Outcome::Accept, "message {n}");
    }
    let sim = run(&chain, &env, PLAIN).await;
    assert_eq!(
        (sim.judgement.outcome, sim.judgement.stage, sim.judgement.reply.code),
        (Outcome::Tempfail, Stage::Mail, 451)
    );
    // Another client has its own counter.
    let other = envelope("203.0.113.6", "a@example.org", &["b@example.com"]);
    assert_eq!(run(&chain, &other, PLAIN).await.judgement.outcome, Outcome::Accept);
    // Recipients are counted too.
    let chain = chain_one(load(&engine, RATE_LIMIT, &[("recipients", "2")]).await);
    let many = envelope("203.0.113.7", "a@example.org", &["b@example.com", "c@example.com", "d@example.com"]);
    let sim = run(&chain, &many, PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    assert_eq!(sim.recipients[2].reply.code / 100, 4, "{:?}", sim.recipients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylist_defers_the_first_attempt_and_passes_a_timely_retry() {
    let kv = Arc::new(MemoryKv::new(1000));
    let at = |seconds: i64| {
        services_with(kv.clone(), Arc::new(FixtureResolver::default()), Clock::pinned(seconds * 1000))
    };
    let engine = engine();
    let config = spec(GREYLIST, &[("delay_seconds", "300"), ("retry_window_seconds", "3600")]);
    let env = envelope("192.0.2.10", "a@example.org", &["b@example.com"]);
    let t0 = 1_800_000_000;
    let first = chain_one(engine.load(&config, "t", at(t0)).await.expect("load"));
    let sim = run(&first, &env, PLAIN).await;
    assert_eq!(
        (sim.judgement.outcome, sim.judgement.stage, sim.judgement.reply.code),
        (Outcome::Tempfail, Stage::Rcpt, 451)
    );
    // Too early: still deferred.
    let early = chain_one(engine.load(&config, "t", at(t0 + 60)).await.expect("load"));
    assert_eq!(run(&early, &env, PLAIN).await.judgement.outcome, Outcome::Tempfail);
    // After the delay, from a neighbouring address of the same /24: passes, and is remembered.
    let later = chain_one(engine.load(&config, "t", at(t0 + 400)).await.expect("load"));
    let neighbour = envelope("192.0.2.11", "a@example.org", &["b@example.com"]);
    assert_eq!(run(&later, &neighbour, PLAIN).await.judgement.outcome, Outcome::Accept);
    assert_eq!(run(&later, &env, PLAIN).await.judgement.outcome, Outcome::Accept);
    // A new triplet starts over.
    let other = envelope("192.0.2.10", "z@example.org", &["b@example.com"]);
    assert_eq!(run(&later, &other, PLAIN).await.judgement.outcome, Outcome::Tempfail);
    // Authenticated clients are never greylisted.
    let mut auth = envelope("198.51.100.1", "u@example.org", &["b@example.com"]);
    auth.authenticated_user = Some("u".into());
    assert_eq!(run(&later, &auth, PLAIN).await.judgement.outcome, Outcome::Accept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_heuristics_scores_real_mail() {
    let engine = engine();
    let chain = chain(vec![load(&engine, SPAM_HEURISTICS, &[]).await]);
    let env = envelope("198.51.100.7", "a@example.org", &["b@example.com"]);
    let sim = run(&chain, &env, PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    assert!(sim.judgement.score < 1.0, "{:?}", sim.judgement.symbols);

    let gtube = std::fs::read_to_string(corpus().join("spam/rspamd-gtube.eml")).expect("gtube");
    let sim = run(&chain, &env, &gtube).await;
    assert_eq!((sim.judgement.outcome, sim.judgement.reply.code), (Outcome::Reject, 550));
    assert!(symbols(&sim).contains(&"GTUBE".to_string()));

    let spam = "From: \"support@paypal.com\" <x9@evil.example>\r\nTo: undisclosed-recipients:;\r\n\
Subject: URGENT: VERIFY YOUR ACCOUNT NOW!!\r\nContent-Type: text/html\r\n\r\n\
<p>Dear friend, verify your account: <a href=\"http://192.0.2.66/login\">https://www.paypal.com/login</a></p>\r\n";
    let sim = run(&chain, &env, spam).await;
    assert!(sim.judgement.score >= 5.0, "{:?}", symbols(&sim));
    for expected in
        ["MISSING_DATE", "FROM_DISPLAY_SPOOF", "SUBJ_ALL_CAPS", "LINK_IP_LITERAL", "LINK_TEXT_MISMATCH"]
    {
        assert!(symbols(&sim).contains(&expected.to_string()), "{expected}: {:?}", symbols(&sim));
    }
    let flagged = sim.judgement.added_headers.iter().any(|(n, v)| n == "X-Spam-Flag" && v == "YES");
    assert!(flagged || sim.judgement.outcome == Outcome::Reject, "{:?}", sim.judgement);

    // Rules can be switched off and rescored.
    let quiet = chain_one(load(&engine, SPAM_HEURISTICS, &[("disable", "GTUBE")]).await);
    assert_eq!(run(&quiet, &env, &gtube).await.judgement.outcome, Outcome::Accept);
    let loud = chain_one(load(&engine, SPAM_HEURISTICS, &[("score.MISSING_DATE", "20")]).await);
    let undated = PLAIN.replace("Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n", "");
    assert_eq!(run(&loud, &env, &undated).await.judgement.outcome, Outcome::Reject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_chain_runs_together() {
    let engine = engine();
    let chain = chain(vec![
        load(&engine, DNSBL, &[("zones", "bl.test")]).await,
        load(&engine, SENDER_GUARD, GUARD).await,
        load(&engine, RATE_LIMIT, &[]).await,
        load(&engine, SPAM_HEURISTICS, &[]).await,
    ]);
    let sim = run(&chain, &envelope("198.51.100.7", "a@example.org", &["b@example.com"]), PLAIN).await;
    assert_eq!(sim.judgement.outcome, Outcome::Accept);
    let ran: Vec<&str> = sim.stages.iter().flat_map(|s| &s.runs).map(|r| r.policy.as_str()).collect();
    for name in ["dnsbl", "sender-guard", "rate-limit", "spam-heuristics"] {
        assert!(ran.contains(&name), "{name} did not run: {ran:?}");
    }
}
