//! `sluice policy test --config` and the relay, on one configuration, give every message the
//! same verdict, code and added header fields: a table of cases, each sent through the running
//! relay with Python's smtplib (to `tests/support/sink.py`) and through `sluice policy test`.

mod relay_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use relay_common::*;
use sluice_test_artifacts::{PROBE, SPAM_HEURISTICS};

const MESSAGE: &str = "From: Alice <alice@remote.test>\r\nTo: someone\r\nSubject: Lunch\r\n\
Date: Sat, 28 Nov 2026 00:00:00 +0000\r\nMessage-ID: <1.2@remote.test>\r\n\r\nShall we meet at noon?\r\n";

const GTUBE: &str = "From: Alice <alice@remote.test>\r\nTo: someone\r\nSubject: Test\r\n\
Date: Sat, 28 Nov 2026 00:00:00 +0000\r\nMessage-ID: <2.2@remote.test>\r\n\r\n\
XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";

fn tenant(name: &str, sink: u16, policy: &str, extra: &str) -> String {
    format!(
        "[[tenant]]\nname = \"{name}\"\ndomains = [\"{name}.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink}\"\n{extra}{policy}"
    )
}

fn probe(config: &str) -> String {
    format!("[[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ {config} }}\n")
}

/// What one transaction came to.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    outcome: String,
    code: u16,
    headers: Vec<(String, String)>,
}

/// The relay's side: every transaction of sending `message` to `to`, by tenant, from the
/// codes the client got and what reached the next hop or the quarantine.
fn through_the_relay(r: &Relay, sink_dir: &Path, message: &str, to: &[&str]) -> BTreeMap<String, Verdict> {
    let before = files(sink_dir, ".eml").len();
    let quarantined_before = files(&r.dir.join("spool/quarantine"), ".mail").len();
    let list = to.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
    let out = python(
        r.port,
        &format!(
            "import json\n\
             s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\ns.ehlo('client.example')\n\
             pending = [{list}]\n\
             while pending:\n\
             \x20   s.mail('alice@remote.test')\n\
             \x20   codes = {{r: s.rcpt(r)[0] for r in pending}}\n\
             \x20   accepted = [r for r, c in codes.items() if c == 250]\n\
             \x20   for r, c in codes.items():\n\
             \x20       if c not in (250, 452):\n\
             \x20           print(json.dumps([r.split('@')[1].split('.')[0], c]))\n\
             \x20   if accepted:\n\
             \x20       code = s.data({message:?}.encode())[0]\n\
             \x20       print(json.dumps([accepted[0].split('@')[1].split('.')[0], code]))\n\
             \x20   else:\n\
             \x20       s.rset()\n\
             \x20   pending = [r for r, c in codes.items() if c == 452]\n\
             s.quit()\n"
        ),
    );
    let mut verdicts = BTreeMap::new();
    for line in out.lines() {
        let (tenant, code): (String, u16) = serde_json::from_str(line).expect("json");
        let outcome = match code {
            250 => "accept",
            400..=499 => "tempfail",
            _ => "reject",
        };
        verdicts.insert(tenant, Verdict { outcome: outcome.into(), code, headers: Vec::new() });
    }
    // What the relay added on top of the message: the fields between its Received field and
    // the message's first line.
    let accepted = verdicts.values().filter(|v| v.code == 250).count();
    wait_for("deliveries or quarantine", Duration::from_secs(20), || {
        files(sink_dir, ".eml").len() + files(&r.dir.join("spool/quarantine"), ".mail").len()
            >= before + quarantined_before + accepted
    });
    let delivered: Vec<String> =
        files(sink_dir, ".eml")[before..].iter().map(|f| std::fs::read_to_string(f).expect("eml")).collect();
    let quarantined = files(&r.dir.join("spool/quarantine"), ".mail").len() - quarantined_before;
    for (tenant, verdict) in verdicts.iter_mut().filter(|(_, v)| v.code == 250) {
        match delivered.iter().find(|m| m.contains(&format!("@{tenant}.test"))) {
            Some(text) => verdict.headers = added_headers(text),
            None if quarantined > 0 => verdict.outcome = "quarantine".into(),
            None => panic!("{tenant}'s message went nowhere"),
        }
    }
    verdicts
}

/// The header fields between our Received field and the message's own `From:`.
fn added_headers(delivered: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in delivered.split("\r\n").skip(1) {
        if line.starts_with('\t') {
            // A folded field (Authentication-Results): its lines, as policy test gives them;
            // our Received field's own continuations are skipped.
            if let Some((_, value)) = fields.last_mut() {
                value.push_str("\r\n");
                value.push_str(line);
            }
            continue;
        }
        if line.starts_with("From: Alice") {
            break;
        }
        let (name, value) = line.split_once(": ").expect("a header field");
        fields.push((name.to_string(), value.to_string()));
    }
    fields
}

/// `sluice policy test --config`'s side.
fn through_policy_test(config: &Path, eml: &Path, to: &[&str]) -> BTreeMap<String, Verdict> {
    let mut args = vec!["policy".to_string(), "test".into(), "--json".into(), "--config".into()];
    args.push(config.display().to_string());
    args.extend(["--eml".into(), eml.display().to_string(), "--client-ip".into(), "127.0.0.1".into()]);
    args.extend(["--helo".into(), "client.example".into(), "--from".into(), "alice@remote.test".into()]);
    for t in to {
        args.extend(["--to".into(), t.to_string()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&args)
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("sluice");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut verdicts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let headers = v["added_headers"]
            .as_array()
            .expect("added_headers")
            .iter()
            .map(|h| (h[0].as_str().unwrap_or("").to_string(), h[1].as_str().unwrap_or("").to_string()))
            .collect::<Vec<_>>();
        let outcome = v["final"].as_str().expect("final").to_string();
        let accepting = outcome == "accept" || outcome == "quarantine";
        let verdict = Verdict {
            code: v["code"].as_u64().expect("code") as u16,
            // Only a delivered message shows its header fields.
            headers: if outcome == "accept" && accepting { headers } else { Vec::new() },
            outcome,
        };
        verdicts.insert(v["tenant"].as_str().expect("tenant").to_string(), verdict);
    }
    verdicts
}

#[test]
fn policy_test_and_the_relay_agree() {
    let dir = temp_dir("agree");
    let sink_port = free_port();
    let sink_dir = dir.join("sink");
    let _sink = sink(sink_port, &sink_dir, &[]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n{}{}{}{}{}{}{}",
        tenant("plain", sink_port, &probe("header = \"X-Judged-By:plain\""), ""),
        tenant("strict", sink_port, &probe("verdict = \"reject\", verdict_stage = \"data\""), ""),
        tenant("early", sink_port, &probe("verdict = \"tempfail\", verdict_stage = \"mail\""), ""),
        tenant("noticed", sink_port, &probe("symbol = \"NOTICED=6\""), "reject_score = 20.0\n"),
        tenant("held", sink_port, &probe("verdict = \"quarantine\", verdict_stage = \"rcpt\""), ""),
        tenant(
            "scored",
            sink_port,
            &format!("[[tenant.policy]]\npath = \"{SPAM_HEURISTICS}\"\n"),
            "add_header_score = 4.0\n"
        ),
        tenant("cleaned", sink_port, &probe("header = \"X-Cleaned:yes\""), "failure_mode = \"continue\"\n"),
    );
    let r = relay(&dir, free_port(), &body);
    let config = dir.join("sluice.toml");
    let cases: [(&str, &str, &[&str]); 9] = [
        ("ham to plain", MESSAGE, &["a@plain.test"]),
        ("ham to strict", MESSAGE, &["a@strict.test"]),
        ("ham to early", MESSAGE, &["a@early.test"]),
        ("ham to noticed", MESSAGE, &["a@noticed.test"]),
        ("ham to held", MESSAGE, &["a@held.test"]),
        ("ham to scored", MESSAGE, &["a@scored.test"]),
        ("gtube to scored", GTUBE, &["a@scored.test"]),
        ("two tenants", MESSAGE, &["a@plain.test", "b@strict.test", "c@cleaned.test"]),
        ("refused and accepted", MESSAGE, &["a@early.test", "b@noticed.test"]),
    ];
    for (name, message, to) in cases {
        let eml = dir.join(format!("{}.eml", name.replace(' ', "-")));
        std::fs::write(&eml, message).expect("eml");
        let relay = through_the_relay(&r, &sink_dir, message, to);
        let offline = through_policy_test(&config, &eml, to);
        assert_eq!(offline, relay, "{name}\n{}", log(&r.dir));
        assert!(!relay.is_empty(), "{name}");
    }
}
