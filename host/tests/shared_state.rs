//! Shared state for more than one node: two `sluice serve` processes on one real
//! `redis-server` share the rate-limit counter; the server going away is met by each
//! tenant's failure mode (tempfail or continue), promptly; its coming back is survived (no
//! crash, the counters resume). The Redis backend keeps per-tenant quotas like the others.

mod relay_common;

use std::time::{Duration, Instant};

use relay_common::*;
use sluice_test_artifacts::RATE_LIMIT;

/// The reply to the first recipient of a new session ("code text"), where the tenant's
/// mail-stage rate limit answers; and how long the session took.
fn mail(port: u16) -> (String, Duration) {
    let started = Instant::now();
    let out = python(
        port,
        "s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\ns.ehlo('c.remote.test')\n\
         s.mail('a@remote.test')\ncode, text = s.rcpt('bob@example.test')\nprint(code, text.decode())\ns.quit()",
    );
    (out.trim().to_string(), started.elapsed())
}

fn code(reply: &str) -> &str {
    reply.split(' ').next().unwrap_or("")
}

#[test]
fn redis_backend_keeps_tenant_quotas() {
    let dir = temp_dir("redis-quotas");
    let port = free_port();
    let _server = redis(port, &dir);
    let kv = sluice::state::redis_kv::RedisKv::new(
        &format!("redis://127.0.0.1:{port}/0"),
        "quota:",
        Default::default(),
    )
    .expect("url");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(sluice::state::conformance::tenant_quotas(&kv));
    runtime.block_on(sluice::state::conformance::batches(&kv));
}

#[test]
fn two_relays_share_one_counter_on_redis_and_survive_its_restart() {
    let dir = temp_dir("shared-state");
    let redis_port = free_port();
    let mut server = redis(redis_port, &dir);
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[state]\nbackend = \"redis://127.0.0.1:{redis_port}/0\"\nprefix = \"test{}:\"\n{}\
         [[tenant.policy]]\npath = \"{RATE_LIMIT}\"\nconfig = {{ messages = \"3\", by = \"ip\" }}\n",
        std::process::id(),
        inbound(sink_port)
    );
    // The same tenant on both, except for its failure mode: tempfail on a, continue on b.
    let body_b = body.replace("[[tenant.policy]]", "failure_mode = \"continue\"\n[[tenant.policy]]");
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).expect("dir");
    std::fs::create_dir_all(&b_dir).expect("dir");
    let a = relay(&a_dir, free_port(), &body);
    let b = relay(&b_dir, free_port(), &body_b);

    // One counter for both: the fourth message from this address, wherever it arrives, is
    // over the limit of three.
    let replies: Vec<String> = [a.port, b.port, a.port, b.port].map(|p| mail(p).0).to_vec();
    let codes: Vec<&str> = replies.iter().map(|r| code(r)).collect();
    assert_eq!(codes, ["250", "250", "250", "451"], "{replies:?}\n{}\n{}", log(&a.dir), log(&b.dir));
    assert!(replies[3].contains("4.7.1 Rate limit"), "{replies:?}");
    assert_eq!(code(&mail(a.port).0), "451");

    // The server goes away: the policy's call ends and each relay applies the tenant's
    // failure mode, promptly; nothing crashes.
    drop(server);
    for _ in 0..3 {
        let (reply, took) = mail(a.port);
        assert!(reply.starts_with("451 4.3.0"), "{reply}\n{}", log(&a.dir));
        assert!(took < Duration::from_secs(10), "a session took {took:?} with the store away");
        let (reply, took) = mail(b.port);
        assert_eq!(code(&reply), "250", "{reply}\n{}", log(&b.dir));
        assert!(took < Duration::from_secs(10), "a session took {took:?} with the store away");
    }
    assert!(log(&a.dir).contains("key-value store unavailable"), "{}", log(&a.dir));

    // It comes back (empty): both relays reconnect and count again, together.
    server = redis(redis_port, &dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut replies = Vec::new();
    // Until both have counted on the new server: 3 accepted in all, then refused.
    let limited = |replies: &[String]| replies.iter().any(|r| r.contains("4.7.1 Rate limit"));
    while Instant::now() < deadline {
        replies = [a.port, b.port, a.port, b.port].map(|p| mail(p).0).to_vec();
        if limited(&replies) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(limited(&replies), "{replies:?}\n{}", log(&a.dir));
    assert!(limited(&[mail(b.port).0]));
    assert!(!log(&a.dir).contains("panicked") && !log(&b.dir).contains("panicked"));
    drop(server);
}
