//! The sender checks against independently made vectors: the RFC 7208 SPF test suite, DKIM
//! signatures and ARC chains made by dkimpy, DMARC alignment and policy cases — all answered
//! from DNS fixtures, offline.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sluice::dns::FixtureResolver;
use sluice::sender::{Checker, CheckerSettings, Sender, SenderChecks};

fn support(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(script)
}

async fn checker(fixture: &str) -> Checker {
    let fixture = FixtureResolver::parse(fixture, "test").expect("fixture");
    Checker::from_fixture(Arc::new(fixture), CheckerSettings::default()).await.expect("checker")
}

async fn check(checker: &Checker, ip: &str, helo: &str, mail_from: &str, message: &[u8]) -> SenderChecks {
    let ip: IpAddr = ip.parse().expect("ip");
    let sender = Sender { ip, helo, mail_from, hostname: "relay.test" };
    checker.check(&sender, message, Duration::from_secs(10)).await
}

/// Cases of the suite whose expected results the SPF evaluator does not give, each with the
/// reason (none today: every case passes); the test fails when a listed case starts passing
/// too, so the list stays exact.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

#[tokio::test(flavor = "multi_thread")]
async fn spf_follows_the_rfc7208_test_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/pyspf");
    let out = Command::new("python3").arg(support("spf_suite.py")).arg(&dir).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scenarios: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (mut passed, mut skipped, mut different, mut failures) = (0, 0, 0, Vec::new());
    for scenario in scenarios.as_array().expect("list") {
        let checker = checker(scenario["fixture"].as_str().expect("fixture")).await;
        for test in scenario["tests"].as_array().expect("tests") {
            let name = test["name"].as_str().expect("name");
            if !test["fixture_complete"].as_bool().unwrap_or(false)
                || test["host"].as_str().and_then(|h| h.parse::<IpAddr>().ok()).is_none()
            {
                skipped += 1;
                continue;
            }
            let message = b"Subject: spf\r\n\r\nbody\r\n";
            let checks = check(
                &checker,
                test["host"].as_str().unwrap_or_default(),
                test["helo"].as_str().unwrap_or_default(),
                test["mailfrom"].as_str().unwrap_or_default(),
                message,
            )
            .await;
            let got = checks.spf.result.as_str();
            let expected: Vec<&str> =
                test["results"].as_array().expect("results").iter().filter_map(|r| r.as_str()).collect();
            let known = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == name);
            match (expected.contains(&got), known) {
                (true, None) => passed += 1,
                (true, Some(_)) => {
                    failures.push(format!("{name}: now passes; take it off KNOWN_DIFFERENCES"))
                }
                (false, Some((_, why))) if why.contains(&format!("gives {got}:")) => different += 1,
                (false, _) => failures.push(format!("{name}: expected {expected:?}, got {got}")),
            }
        }
    }
    eprintln!(
        "RFC 7208 suite: {passed} as expected, {different} known differences, {skipped} skipped, {} unexpected",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(skipped, 0, "every case of the suite is run");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-sender-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn dkim_and_arc_made_by_dkimpy_verify() {
    let dir = temp_dir("dkimpy");
    let out = Command::new("python3").arg(support("dkim_vectors.py")).arg(&dir).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cases: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let fixture = std::fs::read_to_string(dir.join("fixture.dns")).expect("fixture");
    let checker = checker(&fixture).await;
    let mut failures = Vec::new();
    for (name, expect) in cases.as_object().expect("cases") {
        let message = std::fs::read(dir.join(format!("{name}.eml"))).expect("message");
        let checks = check(&checker, "192.0.2.10", "mail.origin.test", "olive@origin.test", &message).await;
        let dkim: Vec<&str> = checks.dkim.iter().map(|d| d.result.as_str()).collect();
        let want: Vec<&str> =
            expect["dkim"].as_array().expect("dkim").iter().filter_map(|v| v.as_str()).collect();
        if dkim != want {
            failures.push(format!("{name}: dkim {dkim:?}, expected {want:?} ({:?})", checks.dkim));
        }
        if checks.arc.result.as_str() != expect["arc"].as_str().unwrap_or_default() {
            failures.push(format!("{name}: arc {}, expected {}", checks.arc.result.as_str(), expect["arc"]));
        }
        if let Some(sealers) = expect.get("sealers") {
            let want: Vec<String> = serde_json::from_value(sealers.clone()).expect("sealers");
            if checks.arc.sealers != want {
                failures.push(format!("{name}: sealers {:?}, expected {want:?}", checks.arc.sealers));
            }
        }
        // SPF passes for the origin's own address; DMARC follows DKIM's alignment.
        assert_eq!(checks.spf.result.as_str(), "pass", "{name}");
        assert_eq!(checks.dmarc.result.as_str(), "pass", "{name}: SPF is aligned");
        if let Some(d) = checks.dkim.first().filter(|d| d.result.as_str() == "pass") {
            assert!(checks.dmarc.dkim_aligned && d.domain == "origin.test", "{name}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const PLAIN: &str = "From: Olive <olive@origin.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn dmarc_alignment_and_policies() {
    let fixture = "origin.test TXT v=spf1 ip4:192.0.2.10 -all\n\
                   bounce.origin.test TXT v=spf1 ip4:192.0.2.10 -all\n\
                   other.test TXT v=spf1 ip4:192.0.2.10 -all\n\
                   _dmarc.origin.test TXT v=DMARC1; p=reject; sp=none; pct=20\n\
                   strict.test TXT v=spf1 ip4:192.0.2.10 -all\n\
                   mail.strict.test TXT v=spf1 ip4:192.0.2.10 -all\n\
                   _dmarc.strict.test TXT v=DMARC1; p=quarantine; aspf=s\n\
                   _dmarc.junk.test TXT v=DMARC1; p=bogus; pct=abc\n\
                   junk.test TXT v=spf1 -all\n\
                   _dmarc.slow.test TIMEOUT\n\
                   slow.test TXT v=spf1 -all\n\
                   xn--bcher-kva.test TXT v=spf1 ip4:192.0.2.10 -all\n";
    let checker = checker(fixture).await;
    let from = |domain: &str| PLAIN.replace("olive@origin.test", &format!("olive@{domain}"));
    // Aligned (relaxed: a subdomain's SPF counts for the organisation).
    let c = check(&checker, "192.0.2.10", "mx.test", "b@bounce.origin.test", PLAIN.as_bytes()).await;
    assert_eq!((c.dmarc.result.as_str(), c.dmarc.spf_aligned), ("pass", true), "{c:?}");
    assert_eq!(c.dmarc.policy.map(|p| p.as_str()), Some("reject"));
    assert_eq!(c.dmarc.pct, 20);
    assert!(c.sender_authenticated());
    // SPF passes for another domain: not aligned; DMARC fails with the domain's policy.
    let c = check(&checker, "192.0.2.10", "mx.test", "b@other.test", PLAIN.as_bytes()).await;
    assert_eq!((c.spf.result.as_str(), c.dmarc.result.as_str()), ("pass", "fail"), "{c:?}");
    assert!(!c.dmarc.spf_aligned && !c.sender_authenticated());
    // A subdomain of origin.test: `sp=none` applies.
    let c =
        check(&checker, "192.0.2.10", "mx.test", "b@other.test", from("news.origin.test").as_bytes()).await;
    assert_eq!(c.dmarc.policy.map(|p| p.as_str()), Some("none"), "{c:?}");
    // Strict SPF alignment: a subdomain does not count.
    let c =
        check(&checker, "192.0.2.10", "mx.test", "b@mail.strict.test", from("strict.test").as_bytes()).await;
    assert_eq!((c.dmarc.result.as_str(), c.dmarc.spf_strict), ("fail", true), "{c:?}");
    assert_eq!(c.dmarc.policy.map(|p| p.as_str()), Some("quarantine"));
    // No record: none, whatever SPF says.
    let c = check(&checker, "192.0.2.99", "mx.test", "b@nowhere.test", from("nowhere.test").as_bytes()).await;
    assert_eq!((c.spf.result.as_str(), c.dmarc.result.as_str()), ("none", "none"), "{c:?}");
    // A record with junk never passes; a DNS timeout is temperror.
    let c = check(&checker, "192.0.2.99", "mx.test", "b@junk.test", from("junk.test").as_bytes()).await;
    assert_ne!(c.dmarc.result.as_str(), "pass", "{c:?}");
    assert_eq!(c.spf.result.as_str(), "fail");
    let c = check(&checker, "192.0.2.99", "mx.test", "b@slow.test", from("slow.test").as_bytes()).await;
    assert_eq!(c.dmarc.result.as_str(), "temperror", "{c:?}");
    // A Unicode domain (SMTPUTF8) is checked in its ASCII form.
    let c = check(&checker, "192.0.2.10", "mx.test", "b@bücher.test", PLAIN.as_bytes()).await;
    assert_eq!((c.spf.result.as_str(), c.spf.domain.as_str()), ("pass", "xn--bcher-kva.test"), "{c:?}");
    // The null sender: SPF is the HELO name's.
    let c = check(&checker, "192.0.2.10", "origin.test", "", PLAIN.as_bytes()).await;
    assert!(c.null_sender && c.spf.domain == "origin.test" && c.spf.result.as_str() == "pass", "{c:?}");
    assert!(c.header_value("relay.test").contains("spf=pass smtp.helo=origin.test"));
}

#[tokio::test(flavor = "multi_thread")]
async fn time_per_message_is_bounded() {
    // Every answer is a timeout: the checks end within their bound, as temperror.
    let checker = checker("slow.test TIMEOUT\n_dmarc.slow.test TIMEOUT\n").await;
    let ip: IpAddr = "192.0.2.1".parse().expect("ip");
    let sender = Sender { ip, helo: "slow.test", mail_from: "a@slow.test", hostname: "relay.test" };
    let message = PLAIN.replace("origin.test", "slow.test");
    let started = std::time::Instant::now();
    let c = checker.check(&sender, message.as_bytes(), Duration::from_millis(600)).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(c.spf.result.as_str(), "temperror", "{c:?}");
    assert_ne!(c.dmarc.result.as_str(), "pass");
}
