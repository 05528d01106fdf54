//! `sluice policy test`, run as a user would: the real binary on real files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use sluice_test_artifacts::{DMARC, DNSBL, GREYLIST, PROBE, RATE_LIMIT, SENDER_GUARD, SPAM_HEURISTICS};

use common::run_sluice as sluice;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn count_eml(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .count()
}

#[test]
fn json_output_has_the_documented_fields() {
    let gtube = common::corpus().join("spam/rspamd-gtube.eml");
    let out = sluice(&[
        "policy",
        "test",
        "--policy",
        SPAM_HEURISTICS,
        "--eml",
        gtube.to_str().expect("path"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(v["final"], "reject");
    assert_eq!(v["code"], 550);
    assert_eq!(v["stage"], "data");
    assert!(v["score"].as_f64().expect("score") >= 1000.0);
    assert!(v["symbols"].as_array().expect("symbols").iter().any(|s| s == "GTUBE"));
    assert!(v["added_headers"].is_array());
    assert!(v["file"].as_str().expect("file").ends_with("rspamd-gtube.eml"));
}

#[test]
fn human_output_shows_each_stage_and_the_final_outcome() {
    let ham = common::corpus().join("ham/sa-t-nice-001.eml");
    let out = sluice(&[
        "policy",
        "test",
        "--policy",
        SPAM_HEURISTICS,
        "--policy",
        PROBE,
        "--policy-config",
        "probe.header=X-Seen: 1",
        "--eml",
        ham.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("data     spam-heuristics"), "{text}");
    assert!(text.contains("final: accept"), "{text}");
    assert!(text.contains("+ X-Seen: 1"), "{text}");
    assert!(text.contains("+ X-Spam-Score:"), "{text}");
}

#[test]
fn expect_sets_the_exit_status() {
    let gtube = common::corpus().join("spam/rspamd-gtube.eml");
    let path = gtube.to_str().expect("path");
    let ok = sluice(&["policy", "test", "--policy", SPAM_HEURISTICS, "--eml", path, "--expect", "reject"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let mismatch =
        sluice(&["policy", "test", "--policy", SPAM_HEURISTICS, "--eml", path, "--expect", "accept"]);
    assert_eq!(mismatch.status.code(), Some(1));
    assert!(stderr(&mismatch).contains("expected accept, got reject"), "{}", stderr(&mismatch));
}

/// `sluice policy test --suite` on `suite` (under the repository) with `policies`, the
/// suite's `config.args` and its `dns.txt`: every case passes.
fn suite_passes(suite: &str, policies: &[&str]) {
    let suite = repo().join(suite);
    let args_file = std::fs::read_to_string(suite.join("config.args")).expect("config.args");
    let mut args: Vec<String> = vec!["policy".into(), "test".into()];
    for policy in policies {
        args.extend(["--policy".to_string(), policy.to_string()]);
    }
    args.extend(args_file.split_whitespace().map(str::to_string));
    args.extend(["--dns".into(), suite.join("dns.txt").display().to_string()]);
    args.extend(["--suite".into(), suite.display().to_string()]);
    let out = sluice(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let n = count_eml(&suite);
    assert!(stderr(&out).contains(&format!("{n} passed, 0 failed")), "{}", stderr(&out));
}

#[test]
fn the_golden_suite_passes() {
    suite_passes("policies/suite", &[DNSBL, SENDER_GUARD, SPAM_HEURISTICS]);
}

#[test]
fn the_dmarc_suite_passes() {
    suite_passes("policies/dmarc/suite", &[DMARC]);
}

/// The header the relay adds is among the added headers, with what each check said, for a
/// refusal too; the checks themselves are in `--json`.
#[test]
fn authentication_results_are_reported() {
    let suite = repo().join("policies/dmarc/suite");
    let dns = suite.join("dns.txt");
    let forged = suite.join("forged-reject.eml");
    let out = sluice(&[
        "policy",
        "test",
        "--policy",
        DMARC,
        "--dns",
        dns.to_str().expect("path"),
        "--eml",
        forged.to_str().expect("path"),
        "--client-ip",
        "203.0.113.7",
        "--from",
        "bounce@elsewhere.test",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines[0]["final"], "reject", "{}", stdout(&out));
    let added = lines[0]["added_headers"].as_array().expect("added headers");
    assert_eq!(added[0][0], "Authentication-Results");
    let value = added[0][1].as_str().expect("value");
    assert!(value.starts_with("sluice.test;"), "{value}");
    for part in [
        "spf=none smtp.mailfrom=elsewhere.test",
        "dkim=none",
        "dmarc=fail (p=reject) header.from=origin.test",
        "arc=none",
    ] {
        assert!(value.contains(part), "{part}: {value}");
    }
    assert_eq!(lines[0]["sender_checks"]["dmarc"]["policy"], "reject");
}

/// Components built against interfaces 0.1.0 and 0.2.0 (the shipped spam-heuristics of the
/// previous releases, kept as binaries) load beside 0.2.1 ones and judge the corpus exactly
/// as the same policy built against 0.2.1.
#[test]
fn policies_built_against_earlier_interfaces_behave_as_before() {
    let corpus = common::corpus();
    let run = |policy: &str| {
        let mut args = vec!["policy", "test", "--policy", policy, "--json", "--now", "1796300000"];
        let dirs: Vec<String> =
            ["ham", "spam", "malformed"].iter().map(|d| corpus.join(d).display().to_string()).collect();
        for dir in &dirs {
            args.extend(["--eml", dir.as_str()]);
        }
        let out = sluice(&args);
        assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
        json_lines(&out)
            .into_iter()
            .map(|mut line| {
                for policy in line["policies"].as_array_mut().expect("policies") {
                    policy["micros"] = serde_json::Value::Null;
                }
                line
            })
            .collect::<Vec<_>>()
    };
    let now = run(SPAM_HEURISTICS);
    assert!(now.len() > 50, "{}", now.len());
    for version in ["0.1.0", "0.2.0"] {
        let old = repo().join(format!("host/tests/fixtures/spam-heuristics-wit-{version}.wasm"));
        let bytes = std::fs::read(&old).expect("fixture");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&format!("sluice:policy/hooks@{version}")), "{version}");
        assert!(!text.contains("sluice:policy/hooks@0.2.1"), "{version}");
        let before = run(old.to_str().expect("path"));
        assert_eq!(before.len(), now.len(), "{version}");
        for (a, b) in before.iter().zip(&now) {
            assert_eq!(a, b, "{version}");
        }
    }
}

#[test]
fn a_failing_suite_fails() {
    let dir = std::env::temp_dir().join(format!("sluice-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("m.eml"), common::PLAIN).expect("eml");
    std::fs::write(dir.join("m.expect"), "final: reject\n").expect("expect");
    let out =
        sluice(&["policy", "test", "--policy", SPAM_HEURISTICS, "--suite", dir.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("0 passed, 1 failed"), "{}", stderr(&out));
    std::fs::remove_file(dir.join("m.expect")).expect("rm");
    let out =
        sluice(&["policy", "test", "--policy", SPAM_HEURISTICS, "--suite", dir.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing expectation file"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_policy_is_a_clear_error() {
    let ham = common::corpus().join("ham/sa-t-nice-001.eml");
    let ham = ham.to_str().expect("path");
    let out = sluice(&["policy", "test", "--policy", "/nonexistent.wasm", "--eml", ham]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent.wasm"), "{}", stderr(&out));
    let out = sluice(&[
        "policy",
        "test",
        "--policy",
        SPAM_HEURISTICS,
        "--policy-config",
        "nosuch.key=1",
        "--eml",
        ham,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
}

#[test]
fn the_whole_corpus_runs_through_every_shipped_policy() {
    let corpus = common::corpus();
    let mut args = vec![
        "policy",
        "test",
        "--json",
        "--policy",
        DNSBL,
        "--policy",
        SENDER_GUARD,
        "--policy",
        RATE_LIMIT,
        "--policy",
        GREYLIST,
        "--policy",
        SPAM_HEURISTICS,
        "--policy-config",
        "sender-guard.domains=sluice.invalid",
        "--policy-config",
        "greylist.delay_seconds=0",
        "--policy-config",
        "rate-limit.messages=1000000",
    ];
    let dirs: Vec<String> = ["spam", "ham", "malformed", "rspamd-functional"]
        .iter()
        .map(|d| corpus.join(d).display().to_string())
        .collect();
    for dir in &dirs {
        args.extend(["--eml", dir.as_str()]);
    }
    let out = sluice(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    let expected: usize = dirs.iter().map(|d| count_eml(Path::new(d))).sum();
    assert_eq!(lines.len(), expected);
    // Nothing faulted. Greylisting defers each new triplet; a triplet seen again (the same
    // sender and recipient in several corpus messages) passes, its delay being 0.
    for line in &lines {
        assert!(
            line["policies"].as_array().expect("policies").iter().all(|p| p["verdict"] != "fault"),
            "{line}"
        );
    }
    let deferred = lines.iter().filter(|l| l["final"] == "tempfail" && l["stage"] == "rcpt").count();
    let passed = lines
        .iter()
        .filter(|l| l["symbols"].as_array().is_some_and(|s| s.iter().any(|n| n == "GREYLIST_PASSED")))
        .count();
    assert!(
        deferred > lines.len() / 2 && passed > 0,
        "{deferred} deferred, {passed} passed of {}",
        lines.len()
    );
    // The message that makes the MIME parser panic is handled (headers only).
    let mime9 = corpus.join("ham/sa-t-nice-mime9.eml");
    let out =
        sluice(&["policy", "test", "--json", "--policy", PROBE, "--eml", mime9.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["final"], "accept");
    // A contained panic is one warning line, never the panic message or a backtrace.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "test", "--json", "--policy", PROBE, "--eml", mime9.to_str().expect("path")])
        .env("RUST_BACKTRACE", "1")
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("sluice");
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    let warnings: Vec<&str> =
        text.lines().filter(|l| l.contains("the MIME parser failed on this message (")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(!text.contains("panicked at") && !text.contains("stack backtrace"), "{text}");
}

#[test]
fn a_progress_bar_on_a_terminal_and_none_in_a_pipe() {
    let suite = repo().join("policies/suite");
    let command = format!(
        "{} policy test --json --policy {PROBE} --eml {}",
        env!("CARGO_BIN_EXE_sluice"),
        suite.display()
    );
    // `script` gives the command a pseudo-terminal, as a user's shell would.
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("script (util-linux)");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(seen.contains("/7 messages, ") && seen.contains("] "), "no bar: {seen}");
    // In a pipe: only the report, one JSON object per line.
    let piped =
        sluice(&["policy", "test", "--json", "--policy", PROBE, "--eml", suite.to_str().expect("path")]);
    assert!(piped.status.success());
    assert!(!stderr(&piped).contains("messages,"), "{}", stderr(&piped));
    assert_eq!(json_lines(&piped).len(), 7);
}
