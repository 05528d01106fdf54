//! Every tenant's rules at every stage, end to end: the `sluice` binary, Python's smtplib as
//! the client, `tests/support/sink.py` as the next hop. Each inbound tenant's connect, helo and
//! mail hooks run at its first recipient and their verdicts apply to its recipients only; the
//! edge's run for everyone.

mod relay_common;

use std::time::Duration;

use relay_common::*;
use sluice_test_artifacts::PROBE;

fn tenant(name: &str, sink_port: u16, probe_config: &str, extra: &str) -> String {
    format!(
        "[[tenant]]\nname = \"{name}\"\ndomains = [\"{name}.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n{extra}\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ header = \"X-Judged-By:{name}\"{probe_config} }}\n"
    )
}

const SESSION: &str = "def codes(rcpts):\n\
    \x20   s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\n\
    \x20   s.ehlo('client.remote.test')\n\
    \x20   out = [s.mail('x@remote.test')[0]] + [s.rcpt(r)[0] for r in rcpts]\n\
    \x20   if 250 in out[1:]:\n\
    \x20       out.append(s.data('Subject: hi\\r\\n\\r\\nhello\\r\\n')[0])\n\
    \x20   s.quit()\n\
    \x20   return out\n";

#[test]
fn each_tenant_s_early_verdicts_apply_to_its_own_recipients_only() {
    let dir = temp_dir("tenant-early");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n{}{}{}{}{}{}",
        tenant("alpha", sink_port, ", verdict = \"reject\", verdict_stage = \"connect\"", ""),
        tenant("beta", sink_port, ", verdict = \"tempfail\", verdict_stage = \"helo\"", ""),
        tenant("gamma", sink_port, ", verdict = \"reject\", verdict_stage = \"mail\"", ""),
        tenant("delta", sink_port, "", ""),
        tenant("faulty", sink_port, ", fault = \"trap\", fault_stage = \"connect\"", ""),
        tenant(
            "lenient",
            sink_port,
            ", fault = \"trap\", fault_stage = \"helo\"",
            "failure_mode = \"continue\"\n"
        ),
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "{SESSION}\
             print(codes(['a@alpha.test', 'b@beta.test', 'g@gamma.test', 'f@faulty.test', 'd@delta.test', 'a2@alpha.test']))\n\
             print(codes(['l@lenient.test']))\n"
        ),
    );
    // alpha (connect), beta (helo), gamma (mail) and faulty (a trap at connect, its failure
    // mode tempfail) refuse their own recipients, never another tenant's; delta takes the
    // transaction (alpha's second recipient is deferred to another one). lenient's policy traps
    // in its replayed helo hook: its failure mode is continue.
    assert_eq!(out, "[250, 550, 451, 550, 451, 250, 452, 250]\n[250, 250, 250]\n", "{}", log(&r.dir));
    wait_for("two deliveries", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 2);
    let mut judged = Vec::new();
    for eml in files(&dir.join("sink"), ".eml") {
        let text = std::fs::read_to_string(eml).expect("message");
        judged.extend(text.lines().filter_map(|l| l.strip_prefix("X-Judged-By: ")).map(str::to_string));
    }
    judged.sort();
    assert_eq!(judged, ["delta", "lenient"]);
    let log = log(&r.dir);
    // Each refusing tenant's verdict is logged under its own name.
    for (tenant, stage) in [("alpha", "connect"), ("beta", "helo"), ("gamma", "mail"), ("faulty", "connect")]
    {
        assert!(
            log.lines().any(|l| l.contains("transaction refused")
                && l.contains(&format!("tenant={tenant}"))
                && l.contains(&format!("stage={stage}"))),
            "{tenant} at {stage}: {log}"
        );
    }
}

#[test]
fn one_transaction_per_tenant_each_judged_by_its_own_chain() {
    let dir = temp_dir("tenant-each");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n{}{}{}",
        tenant("one", sink_port, "", ""),
        tenant("two", sink_port, ", verdict = \"reject\", verdict_stage = \"data\"", ""),
        tenant("three", sink_port, ", symbol = \"THREE=6\"", "add_header_score = 5.0\n"),
    );
    let r = relay(&dir, free_port(), &body);
    // One session, a transaction for each tenant in turn, as an MTA sends them.
    let out = python(
        r.port,
        "s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\ns.ehlo('client.remote.test')\n\
         for rcpt in ['a@one.test', 'b@two.test', 'c@three.test']:\n\
         \x20   s.mail('x@remote.test')\n\
         \x20   s.rcpt(rcpt)\n\
         \x20   print(rcpt, s.data('Subject: hi\\r\\n\\r\\nhello\\r\\n')[0])\n\
         s.quit()\n",
    );
    assert_eq!(out, "a@one.test 250\nb@two.test 550\nc@three.test 250\n", "{}", log(&r.dir));
    wait_for("two deliveries", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 2);
    for eml in files(&dir.join("sink"), ".eml") {
        let text = std::fs::read_to_string(&eml).expect("message");
        let judges: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("X-Judged-By: ")).collect();
        assert_eq!(judges.len(), 1, "{text}");
        let flagged = text.contains("X-Spam-Flag: YES");
        assert_eq!(flagged, judges[0] == "three", "only three's own symbol flags its message: {text}");
    }
}

#[test]
fn an_edge_policy_refusing_at_connect_refuses_everyone() {
    let dir = temp_dir("edge-connect");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n{}{}\
         [edge]\nfailure_mode = \"tempfail\"\n\
         [[edge.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"reject\", verdict_stage = \"connect\" }}\n",
        tenant("one", sink_port, "", ""),
        tenant("two", sink_port, "", ""),
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        "for rcpt in ['a@one.test', 'b@two.test']:\n\
         \x20   try:\n\
         \x20       smtplib.SMTP('127.0.0.1', PORT, timeout=30)\n\
         \x20       print('connected')\n\
         \x20   except smtplib.SMTPConnectError as e:\n\
         \x20       print(e.smtp_code)\n",
    );
    assert_eq!(out, "550\n550\n", "{}", log(&r.dir));
    let log = log(&r.dir);
    assert!(log.contains("connection refused by policy") && log.contains("tenant=edge"), "{log}");
    assert!(files(&dir.join("sink"), ".eml").is_empty());
}

#[test]
fn a_recipient_refused_at_rcpt_is_logged_once_with_its_tenant_policy_and_reply() {
    let dir = temp_dir("tenant-rcpt-log");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n{}{}",
        tenant("strict", sink_port, ", verdict = \"tempfail\", verdict_stage = \"rcpt\"", ""),
        tenant("delta", sink_port, "", ""),
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "{SESSION}print(codes(['s@strict.test', 'd@delta.test']))\nprint(codes(['s2@strict.test']))\n"
        ),
    );
    assert_eq!(out, "[250, 451, 250, 250]\n[250, 451]\n", "{}", log(&r.dir));
    let log = log(&r.dir);
    for recipient in ["s@strict.test", "s2@strict.test"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("recipient refused") && l.contains(&format!("recipient={recipient}")))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        for field in ["tenant=strict", "stage=rcpt", "policy=", "reply=451"] {
            assert!(lines[0].contains(field), "{field}: {}", lines[0]);
        }
    }
    // The transaction that accepted no recipient is not logged a second time at info level.
    assert!(!log.lines().any(|l| l.contains("transaction refused") && l.contains("tenant=strict")), "{log}");
}
