//! The bayes policy through the real engine: learning a few dozen corpus messages moves the
//! classification the way it should, forgetting restores it, a message counts once, bad
//! input trains without a panic or an unbounded model, and the learner export is seen at load.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use sluice::dns::FixtureResolver;
use sluice::policy::{Clock, Learned, Learner, Lesson, LoadedPolicy, ParsedMessage};
use sluice::state::kv::{KvStore, MemoryKv};
use sluice_test_artifacts::{BAYES, SPAM_HEURISTICS};

const CONFIG: &[(&str, &str)] = &[("min_spam", "10"), ("min_ham", "10")];

fn read(path: &PathBuf) -> Arc<ParsedMessage> {
    Arc::new(ParsedMessage::parse(std::fs::read(path).expect("message")))
}

async fn bayes(kv: Arc<dyn KvStore>, tenant: &str, config: &[(&str, &str)]) -> Arc<LoadedPolicy> {
    let services = common::services_with(kv, Arc::new(FixtureResolver::default()), Clock::System);
    common::engine().load(&common::spec(BAYES, config), tenant, services).await.expect("bayes loads")
}

/// The band symbol and probability bayes gives `path`, if any.
async fn classify(policy: &Arc<LoadedPolicy>, path: &PathBuf) -> Option<(String, f64)> {
    let raw = String::from_utf8_lossy(&std::fs::read(path).expect("message")).into_owned();
    let envelope = common::envelope("192.0.2.1", "sender@remote.test", &["bob@example.com"]);
    let sim = common::run(&common::chain(vec![policy.clone()]), &envelope, &raw).await;
    sim.judgement.symbols.iter().find(|s| s.symbol.name.starts_with("BAYES_")).map(|s| {
        let detail = s.symbol.detail.clone().unwrap_or_default();
        let p =
            detail.split_whitespace().next().and_then(|p| p.strip_prefix("p=")).and_then(|p| p.parse().ok());
        (s.symbol.name.clone(), p.expect("probability in the detail"))
    })
}

async fn teach(learner: &mut Learner, files: &[PathBuf], lesson: Lesson) -> Vec<Learned> {
    let mut outcomes = Vec::new();
    for file in files {
        outcomes.push(learner.learn(read(file), lesson, None).await.expect("learns"));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_moves_the_classification_and_forgetting_restores_it() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::new(1_000_000));
    let policy = bayes(kv.clone(), "default", CONFIG).await;
    assert!(policy.learns, "bayes exports the learner");
    let spam = common::corpus_files("spam", "sapub-spam-00", 0..30);
    let ham = common::corpus_files("ham", "sapub-easy_ham-00", 0..30);
    let unseen_spam = common::corpus_files("spam", "sapub-spam-00", 31..32)[0].clone();
    let unseen_ham = common::corpus_files("ham", "sapub-easy_ham-00", 30..31)[0].clone();

    // Untrained: no opinion at all.
    assert_eq!(classify(&policy, &unseen_spam).await, None);

    let mut learner = Learner::new(policy.clone()).expect("a learner");
    assert!(teach(&mut learner, &spam, Lesson::Spam).await.iter().all(|l| *l == Learned::Learned));
    assert!(teach(&mut learner, &ham, Lesson::Ham).await.iter().all(|l| *l == Learned::Learned));
    let (band, spam_p) = classify(&policy, &unseen_spam).await.expect("trained");
    assert!(spam_p > 0.99, "{band} {spam_p}");
    let (band, ham_p) = classify(&policy, &unseen_ham).await.expect("trained");
    assert!(ham_p < 0.01 && band == "BAYES_00", "{band} {ham_p}");

    // The same message twice counts once; as the other class it moves.
    assert_eq!(learner.learn(read(&spam[0]), Lesson::Spam, None).await, Ok(Learned::AlreadyLearned));
    // A message the model is unsure of.
    let unsure = common::corpus_files("spam", "sapub-spam-00", 30..31)[0].clone();
    let before = classify(&policy, &unsure).await;
    let p = before.as_ref().expect("trained").1;
    assert!((0.2..0.99).contains(&p), "{before:?}");

    // Learned as ham (a user's verdict), it moves to ham; more learning moves it again;
    // forgetting all that restores the model exactly.
    assert_eq!(learner.learn(read(&unsure), Lesson::Ham, None).await, Ok(Learned::Learned));
    let moved = classify(&policy, &unsure).await.expect("trained").1;
    assert!(moved < 0.05, "{moved} after learning it as ham, {p} before");
    let more = common::corpus_files("spam", "sapub-spam-00", 40..50);
    teach(&mut learner, &more, Lesson::Spam).await;
    assert_eq!(learner.learn(read(&ham[0]), Lesson::Spam, None).await, Ok(Learned::Relearned));
    assert!(teach(&mut learner, &more, Lesson::Forget).await.iter().all(|l| *l == Learned::Forgotten));
    assert_eq!(learner.learn(read(&ham[0]), Lesson::Ham, None).await, Ok(Learned::Relearned));
    assert_eq!(learner.learn(read(&unsure), Lesson::Forget, None).await, Ok(Learned::Forgotten));
    assert_eq!(classify(&policy, &unsure).await, before);
    assert_eq!(learner.learn(read(&more[0]), Lesson::Forget, None).await, Ok(Learned::NotLearned));

    // Forgetting everything leaves no counts behind: untrained again.
    teach(&mut learner, &spam, Lesson::Forget).await;
    teach(&mut learner, &ham, Lesson::Forget).await;
    assert_eq!(classify(&policy, &unseen_spam).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_models_stay_apart() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::new(1_000_000));
    let alpha = bayes(kv.clone(), "alpha", CONFIG).await;
    let beta = bayes(kv.clone(), "beta", CONFIG).await;
    let mut learner = Learner::new(alpha.clone()).expect("a learner");
    teach(&mut learner, &common::corpus_files("spam", "sapub-spam-00", 0..30), Lesson::Spam).await;
    teach(&mut learner, &common::corpus_files("ham", "sapub-easy_ham-00", 0..30), Lesson::Ham).await;
    let unseen = common::corpus_files("spam", "sapub-spam-00", 31..32)[0].clone();
    assert!(classify(&alpha, &unseen).await.is_some());
    assert_eq!(classify(&beta, &unseen).await, None, "beta's model is its own, and empty");
    assert_eq!(kv.usage("beta").await.expect("usage").keys, 0);
    assert!(kv.usage("alpha").await.expect("usage").keys > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_the_learner_export_is_not_a_learner() {
    let policy = common::load(&common::engine(), SPAM_HEURISTICS, &[]).await;
    assert!(!policy.learns);
    assert!(Learner::new(policy).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_trains_without_a_panic_or_an_unbounded_model() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::new(1_000_000));
    let policy =
        bayes(kv.clone(), "default", &[("min_spam", "1"), ("min_ham", "1"), ("max_tokens", "1000")]).await;
    let mut learner = Learner::new(policy.clone()).expect("a learner");

    // 100 000 distinct words: bounded keys (max_tokens, plus the totals and the message's
    // record) and bounded time.
    let mut huge = String::from("From: a@b.test\r\nSubject: words\r\nMessage-ID: <huge@b.test>\r\n\r\n");
    for i in 0..100_000 {
        huge.push_str(&format!("w{i:06}x "));
        if i % 10 == 9 {
            huge.push_str("\r\n");
        }
    }
    let started = std::time::Instant::now();
    let learned = learner.learn(Arc::new(ParsedMessage::parse(huge.into_bytes())), Lesson::Spam, None).await;
    assert_eq!(learned, Ok(Learned::Learned));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    let keys = kv.usage("default").await.expect("usage").keys;
    assert!(keys <= 1002, "{keys} keys for one message");

    // Empty, binary and malformed messages, and the corpus' hardest: no panic, no fault.
    let mut inputs: Vec<Vec<u8>> =
        vec![Vec::new(), b"\r\n\r\n".to_vec(), (0..=255u8).cycle().take(200_000).collect()];
    let malformed = common::corpus().join("malformed");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&malformed).expect("dir").flatten().map(|e| e.path()).collect();
    files.sort();
    inputs.extend(files.iter().map(|f| std::fs::read(f).expect("read")));
    for (i, raw) in inputs.into_iter().enumerate() {
        let lesson = if i % 2 == 0 { Lesson::Spam } else { Lesson::Ham };
        let learned = learner.learn(Arc::new(ParsedMessage::parse(raw)), lesson, None).await;
        assert!(learned.is_ok(), "input {i}: {learned:?}");
    }
    // And they classify.
    for file in files.iter().take(40) {
        let _ = classify(&policy, file).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_tokens_expire_and_tokens_seen_again_stay() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::new(1_000_000));
    // A token of one message lives two seconds here; a token seen again, a day.
    let config =
        [("min_spam", "1"), ("min_ham", "1"), ("rare_token_ttl_days", "0.000023"), ("token_ttl_days", "1")];
    let policy = bayes(kv.clone(), "default", &config).await;
    let mut learner = Learner::new(policy).expect("a learner");
    let message = |id: &str, words: &str| {
        let raw = format!(
            "From: Sender <sender@one.test>\r\nTo: rcpt@two.test\r\nSubject: offer\r\nMessage-ID: <{id}@one.test>\r\n\r\n\
             shared common wording {words}\r\n"
        );
        Arc::new(ParsedMessage::parse(raw.into_bytes()))
    };
    assert_eq!(
        learner.learn(message("1", "alphaonly uniqueone"), Lesson::Spam, None).await,
        Ok(Learned::Learned)
    );
    assert_eq!(
        learner.learn(message("2", "betaonly uniquetwo"), Lesson::Spam, None).await,
        Ok(Learned::Learned)
    );
    let before = kv.usage("default").await.expect("usage").keys;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = kv.usage("default").await.expect("usage").keys;
    // Gone: the four words of one message each (and the message-id shapes that differ);
    // kept: the tokens both share, the totals, the two messages' records.
    assert!(after < before && before - after >= 4, "{before} keys before, {after} after");
    assert!(after > 10, "{after}");
}
