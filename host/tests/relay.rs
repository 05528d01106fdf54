//! The relay end to end: the `sluice` binary on loopback, Python's smtplib (and raw sockets
//! for what smtplib will not send) as the client, and `tests/support/sink.py`, a real SMTP
//! server, as the next hop.

mod relay_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use relay_common::*;
use sluice_test_artifacts::{PROBE, RATE_LIMIT};

#[test]
fn delivers_inbound_mail_to_the_next_hop() {
    let dir = temp_dir("inbound");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\n\
             print(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))\ns.quit()"
        ),
    );
    assert_eq!(out.trim(), "{}");
    wait_for("delivery", Duration::from_secs(20), || !files(&dir.join("sink"), ".eml").is_empty());
    let delivered = std::fs::read_to_string(&files(&dir.join("sink"), ".eml")[0]).expect("message");
    assert!(
        delivered.starts_with(
            "Received: from client.remote.test (unknown [127.0.0.1])\r\n\tby relay.test (Sluice)"
        ),
        "{delivered}"
    );
    assert!(delivered.contains("Shall we meet at noon?"));
    let env = std::fs::read_to_string(&files(&dir.join("sink"), ".env")[0]).expect("envelope");
    assert!(env.contains("\"alice@remote.test\"") && env.contains("bob@example.test"), "{env}");
    // Delivered mail leaves the spool.
    wait_for("spool empty", Duration::from_secs(10), || {
        files(&r.dir.join("spool/queue"), ".mail").is_empty()
    });
}

#[test]
fn never_an_open_relay() {
    let dir = temp_dir("open-relay");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    let vectors = RELAY_VECTORS;
    let list = vectors.iter().map(|v| format!("'{}'", v.replace('\'', "\\'"))).collect::<Vec<_>>().join(",");
    let out = python(
        r.port,
        &format!(
            "for froms in ['<relaytest@remote.test>', '<>', '<relaytest@example.test>']:\n\
             \x20   for rcpt in [{list}]:\n\
             \x20       s = smtplib.SMTP('127.0.0.1', PORT)\n\
             \x20       s.ehlo('client.remote.test')\n\
             \x20       s.docmd('MAIL FROM:' + froms)\n\
             \x20       code, text = s.docmd('RCPT TO:' + rcpt)\n\
             \x20       print(code, rcpt, text.decode())\n\
             \x20       s.close()\n"
        ),
    );
    for line in out.lines() {
        let code: u16 = line[..3].parse().expect("code");
        assert!(code >= 500, "relay vector accepted: {line}");
    }
    assert_eq!(out.lines().count(), vectors.len() * 3);
    assert!(files(&dir.join("sink"), ".eml").is_empty());
    assert!(files(&r.dir.join("spool/queue"), ".mail").is_empty());
}

#[test]
fn smuggling_is_refused() {
    let dir = temp_dir("smuggling");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    let ends = ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r"];
    for end in ends {
        let mut s = TcpStream::connect(("127.0.0.1", r.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let payload = format!(
            "EHLO client.remote.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
             Subject: first\r\n\r\nbody{end}MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
             Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n"
        );
        s.write_all(payload.as_bytes()).expect("write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.contains("521 5.5.2"), "{end:?}: {answer}");
        assert!(!answer.contains("queued as"), "{end:?}: {answer}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(files(&dir.join("sink"), ".eml").is_empty());
    assert!(files(&r.dir.join("spool/queue"), ".mail").is_empty());
}

/// Every stage can refuse. The edge's connect and helo hooks run as the client gets there and
/// refuse the session or its greeting; an inbound tenant's hooks run at its first recipient
/// (its connect, helo and mail hooks replayed there), so their refusals refuse its recipients.
#[test]
fn a_policy_can_refuse_at_every_stage() {
    for (owner, stage, exception) in [
        ("edge", "connect", "SMTPConnectError"),
        ("edge", "helo", "SMTPHeloError"),
        ("tenant", "connect", "SMTPRecipientsRefused"),
        ("tenant", "helo", "SMTPRecipientsRefused"),
        ("tenant", "mail", "SMTPRecipientsRefused"),
        ("tenant", "rcpt", "SMTPRecipientsRefused"),
        ("tenant", "data", "SMTPDataError"),
    ] {
        let dir = temp_dir(&format!("stage-{owner}-{stage}"));
        let sink_port = free_port();
        let _sink = sink(sink_port, &dir.join("sink"), &[]);
        let body = format!(
            "{}[[{owner}.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"reject\", verdict_stage = \"{stage}\" }}\n",
            inbound(sink_port)
        );
        let r = relay(&dir, free_port(), &body);
        let out = python(
            r.port,
            &format!(
                "try:\n    s = smtplib.SMTP('127.0.0.1', PORT)\n    s.ehlo_or_helo_if_needed()\n    \
                 s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}')\n    print('accepted')\n\
                 except smtplib.{exception} as e:\n    print('refused', e.args[0] if not isinstance(e.args[0], dict) else list(e.args[0].values())[0][0])\n"
            ),
        );
        assert!(out.starts_with("refused 5"), "{owner} {stage}: {out} {}", log(&r.dir));
        assert!(files(&r.dir.join("spool/queue"), ".mail").is_empty(), "{owner} {stage}");
    }
}

#[test]
fn several_destinations_each_get_their_copy() {
    let dir = temp_dir("destinations");
    let (local_port, remote_port) = (free_port(), free_port());
    let _local = sink(local_port, &dir.join("local"), &[]);
    let _remote = sink(remote_port, &dir.join("remote"), &[]);
    let mail = dir.join("mail");
    let body = format!(
        "[relay]\ntrusted_networks = [\"127.0.0.0/8\"]\n[delivery]\nsmarthost = \"smtp:127.0.0.1:{remote_port}\"\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{local_port}\"\n\
         [[tenant]]\nname = \"other\"\ndomains = [\"other.test\"]\nnext_hop = \"maildir:{}\"\n",
        mail.display()
    );
    let r = relay(&dir, free_port(), &body);
    // One party per transaction: carol (tenant other) and dave (relayed out by a trusted
    // client no tenant claims: the edge's) are deferred with 452 in the first transaction and
    // sent in the next ones, the way clients retry deferred recipients.
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\n\
             pending = ['bob@example.test', 'carol@other.test', 'dave@remote.test']\n\
             while pending:\n\
             \x20   refused = s.sendmail('alice@example.test', pending, '{MESSAGE}')\n\
             \x20   print(sorted((k, v[0]) for k, v in refused.items()))\n\
             \x20   pending = list(refused)\n\
             s.quit()"
        ),
    );
    assert_eq!(
        out,
        "[('carol@other.test', 452), ('dave@remote.test', 452)]\n[('dave@remote.test', 452)]\n[]\n",
        "{}",
        log(&r.dir)
    );
    wait_for("three deliveries", Duration::from_secs(20), || {
        files(&dir.join("local"), ".eml").len() == 1
            && files(&dir.join("remote"), ".eml").len() == 1
            && files(&mail.join("carol@other.test/new"), ".sluice").len() == 1
    });
    let local = std::fs::read_to_string(&files(&dir.join("local"), ".env")[0]).expect("env");
    assert!(local.contains("bob@example.test") && !local.contains("dave"), "{local}");
    let remote = std::fs::read_to_string(&files(&dir.join("remote"), ".env")[0]).expect("env");
    assert!(remote.contains("dave@remote.test") && !remote.contains("bob"), "{remote}");
    drop(r);
}

#[test]
fn wildcard_domains_route_subdomains_and_the_most_specific_entry_wins() {
    let dir = temp_dir("wildcards");
    let (a_port, b_port) = (free_port(), free_port());
    let _a = sink(a_port, &dir.join("a"), &[]);
    let _b = sink(b_port, &dir.join("b"), &[]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n\
         [[tenant]]\nname = \"a\"\ndomains = [\"example.test\", \"*.example.test\"]\nnext_hop = \"smtp:127.0.0.1:{a_port}\"\n\
         [[tenant]]\nname = \"b\"\ndomains = [\"shop.example.test\"]\nnext_hop = \"smtp:127.0.0.1:{b_port}\"\n"
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\n\
             refused = s.sendmail('alice@remote.test', ['bob@example.test', 'carol@mail.Example.test', \
             'dan@x.y.example.test', 'erin@shop.example.test'], '{MESSAGE}')\n\
             print({{k: v[0] for k, v in refused.items()}})\n\
             print(s.sendmail('alice@remote.test', list(refused), '{MESSAGE}'))\n\
             s.mail('alice@remote.test')\n\
             print(s.rcpt('frank@notexample.test')[0], s.rcpt('gina@example.test.evil.test')[0])\n\
             s.quit()"
        ),
    );
    assert_eq!(out, "{'erin@shop.example.test': 452}\n{}\n554 554\n", "{}", log(&r.dir));
    wait_for("both deliveries", Duration::from_secs(20), || {
        files(&dir.join("a"), ".eml").len() == 1 && files(&dir.join("b"), ".eml").len() == 1
    });
    let a = std::fs::read_to_string(&files(&dir.join("a"), ".env")[0]).expect("env");
    for rcpt in ["bob@example.test", "carol@mail.example.test", "dan@x.y.example.test"] {
        assert!(a.to_lowercase().contains(rcpt), "{rcpt} not in {a}");
    }
    assert!(!a.contains("erin"), "{a}");
    let b = std::fs::read_to_string(&files(&dir.join("b"), ".env")[0]).expect("env");
    assert!(b.contains("erin@shop.example.test") && !b.contains("bob"), "{b}");

    // The same entry in two tenants is refused by `sluice check`, naming both.
    let check = |name: &str, config: &str| {
        let at = dir.join(name);
        std::fs::create_dir_all(&at).expect("dir");
        std::fs::write(at.join("sluice.toml"), config).expect("config");
        sluice(&at, &["check"])
    };
    let (ok, out) = check(
        "overlap",
        "[[tenant]]\nname = \"a\"\ndomains = [\"*.example.test\"]\nnext_hop = \"maildir:m\"\n\
         [[tenant]]\nname = \"b\"\ndomains = [\"*.Example.test.\"]\nnext_hop = \"maildir:m\"\n",
    );
    assert!(!ok && out.contains("*.example.test already belongs to tenant a"), "{out}");
    let (ok, out) =
        check("bad", "[[tenant]]\nname = \"a\"\ndomains = [\"mail.*.test\"]\nnext_hop = \"maildir:m\"\n");
    assert!(!ok && out.contains("not a domain or *.domain wildcard"), "{out}");
}

#[test]
fn each_tenant_judges_its_own_transaction() {
    let dir = temp_dir("per-tenant");
    let (a_port, b_port) = (free_port(), free_port());
    let _a = sink(a_port, &dir.join("a"), &[]);
    let _b = sink(b_port, &dir.join("b"), &[]);
    let tenant = |name: &str, port: u16, extra: &str| {
        format!(
            "[[tenant]]\nname = \"{name}\"\ndomains = [\"{name}.test\"]\nnext_hop = \"smtp:127.0.0.1:{port}\"\n\
             [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ header = \"X-Judged-By:{name}\"{extra} }}\n"
        )
    };
    let body = format!(
        "[relay]\ntrusted_networks = []\n{}{}",
        tenant("a", a_port, ""),
        tenant("b", b_port, ", verdict = \"reject\", verdict_stage = \"data\"")
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\ns.mail('x@remote.test')\n\
             print(s.rcpt('ann@a.test')[0], s.rcpt('bea@b.test')[0], s.rcpt('amy@a.test')[0])\n\
             print(s.data('{MESSAGE}')[0])\n\
             s.mail('x@remote.test')\nprint(s.rcpt('bea@b.test')[0], s.rcpt('ann@a.test')[0])\n\
             print(s.data('{MESSAGE}')[0])\ns.quit()"
        ),
    );
    // Tenant a takes its two recipients and defers b's; then b's chain judges b's message
    // (and rejects it) without a's recipients in it.
    assert_eq!(out, "250 452 250\n250\n250 452\n550\n", "{}", log(&r.dir));
    wait_for("tenant a's delivery", Duration::from_secs(20), || files(&dir.join("a"), ".eml").len() == 1);
    let a = std::fs::read_to_string(&files(&dir.join("a"), ".eml")[0]).expect("message");
    assert!(a.contains("X-Judged-By: a") && !a.contains("X-Judged-By: b"), "{a}");
    let env = std::fs::read_to_string(&files(&dir.join("a"), ".env")[0]).expect("env");
    assert!(env.contains("ann@a.test") && env.contains("amy@a.test") && !env.contains("bea"), "{env}");
    assert!(files(&dir.join("b"), ".eml").is_empty());
}

#[test]
fn outbound_sessions_belong_to_the_tenant_of_their_network_or_user() {
    let dir = temp_dir("outbound-tenants");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    std::fs::write(dir.join("users"), format!("{ALICE}\n")).expect("users");
    let body = format!(
        "[relay]\ntrusted_networks = []\nauth_users_file = \"users\"\nallow_plaintext_auth_on_loopback = true\n\
         [delivery]\nsmarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant]]\nname = \"a\"\ndomains = [\"a.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant]]\nname = \"b\"\ndomains = [\"b.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         outbound_networks = [\"10.0.0.0/8\", \"127.0.0.1/32\"]\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ header = \"X-Judged-By:b\" }}\n\
         [[tenant]]\nname = \"c\"\ndomains = [\"c.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         outbound_users = [\"alice\"]\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"reject\", verdict_stage = \"mail\" }}\n"
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('host.b.test')\n\
             print(s.sendmail('x@b.test', ['dave@remote.test'], '{MESSAGE}'))\ns.quit()\n\
             s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('host.c.test')\ns.login('alice', 'secret')\n\
             print(s.mail('alice@c.test')[0])\ns.quit()"
        ),
    );
    // From 127.0.0.1, without AUTH: tenant b's network lets it relay and b's chain judges
    // it; once alice authenticates, the session is tenant c's, whose chain refuses at MAIL.
    assert_eq!(out, "{}\n550\n", "{}", log(&r.dir));
    wait_for("the relayed message", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
    let delivered = std::fs::read_to_string(&files(&dir.join("sink"), ".eml")[0]).expect("message");
    assert!(delivered.contains("X-Judged-By: b"), "{delivered}");
    let log = log(&r.dir);
    assert!(log.contains("tenant=c"), "{log}");

    // A user or network in two tenants is refused.
    let at = dir.join("dup");
    std::fs::create_dir_all(&at).expect("dir");
    std::fs::write(
        at.join("sluice.toml"),
        "[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:m\"\noutbound_users = [\"bob\"]\n\
         [[tenant]]\nname = \"b\"\nnext_hop = \"maildir:m\"\noutbound_users = [\"bob\"]\n",
    )
    .expect("config");
    let (ok, out) = sluice(&at, &["check"]);
    assert!(!ok && out.contains("bob already belongs to tenant a"), "{out}");
}

#[test]
fn a_tenant_whose_policy_loops_traps_or_hoards_memory_affects_only_its_own_mail() {
    let dir = temp_dir("tenant-faults");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let mut body = format!(
        "[relay]\ntrusted_networks = []\n\
         [[tenant]]\nname = \"good\"\ndomains = [\"good.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\n"
    );
    for fault in ["loop", "trap", "alloc", "log"] {
        body.push_str(&format!(
            "[[tenant]]\nname = \"{fault}\"\ndomains = [\"{fault}.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ fault = \"{fault}\", fault_stage = \"rcpt\" }}\n"
        ));
    }
    let r = relay(&dir, free_port(), &body);
    // Four threads keep the faulty tenants busy while the good tenant's mail goes through.
    let out = python(
        r.port,
        &format!(
            "import threading, time\n\
             stop = False\nbad = {{}}\n\
             def hammer(fault):\n    while not stop:\n        s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\n        \
             s.ehlo('c.remote.test')\n        s.mail('x@remote.test')\n        code = s.rcpt('y@' + fault + '.test')[0]\n        \
             bad.setdefault(fault, set()).add(code)\n        s.quit()\n\
             threads = [threading.Thread(target=hammer, args=(f,)) for f in ['loop', 'trap', 'alloc', 'log']]\n\
             [t.start() for t in threads]\ntime.sleep(0.5)\n\
             slowest = 0.0\nrefused = {{}}\n\
             for i in range(10):\n    t = time.time()\n    s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\n    \
             refused.update(s.sendmail('x@remote.test', ['bob@good.test'], '{MESSAGE}'))\n    s.quit()\n    \
             slowest = max(slowest, time.time() - t)\n\
             stop = True\n[t.join() for t in threads]\n\
             print(sorted((k, sorted(v)) for k, v in bad.items()))\nprint(refused)\nprint(slowest < 2.0, round(slowest, 3))"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("[('alloc', [451]), ('log', [451]), ('loop', [451]), ('trap', [451])]"),
        "{out}\n{}",
        log(&r.dir)
    );
    assert_eq!(lines.get(1).copied(), Some("{}"), "{out}");
    assert!(lines.get(2).is_some_and(|l| l.starts_with("True")), "the good tenant slowed down: {out}");
    wait_for("the good tenant's mail", Duration::from_secs(30), || {
        files(&dir.join("sink"), ".eml").len() == 10
    });
    let log = log(&r.dir);
    for fault in ["CPU deadline", "memory cap", "trapped"] {
        assert!(log.contains(fault), "{fault} not logged: {log}");
    }
    // Faulting on every call, each faulty policy is suspended by the fault breaker: its
    // tenant's failure mode applies without running it.
    for fault in ["loop", "trap", "alloc", "log"] {
        let suspended = log.lines().any(|l| {
            l.contains("policy suspended after 5 faults in a row") && l.contains(&format!("tenant={fault}"))
        });
        assert!(suspended, "{fault} not suspended: {log}");
    }
}

#[test]
fn tenant_limits_apply_to_their_own_mail_only() {
    let dir = temp_dir("tenant-limits");
    let (sink_port, admin) = (free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[relay]\ntrusted_networks = []\n\
         [[tenant]]\nname = \"small\"\ndomains = [\"small.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         max_message_bytes = 4000\nmax_messages_per_minute = 3\nkv_max_keys = 2\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ kv_fill = \"yes\" }}\n\
         [[tenant]]\nname = \"big\"\ndomains = [\"big.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ kv_fill = \"yes\" }}\n\
         [[tenant]]\nname = \"slow\"\ndomains = [\"slow.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         cpu_ms = 20\nmemory_mib = 16\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ fault = \"loop\", fault_stage = \"rcpt\" }}\n"
    );
    let r = relay(&dir, free_port(), &body);
    let big_message = format!("Subject: big\\r\\n\\r\\n{}\\r\\n", "x".repeat(5000));
    let out = python(
        r.port,
        &format!(
            "def session(sender, rcpts, message, size=None):\n    \
             s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\n    s.ehlo('c.remote.test')\n    \
             codes = [s.mail(sender, ['SIZE=%d' % size] if size else [])[0]]\n    \
             codes += [s.rcpt(r)[0] for r in rcpts]\n    \
             if 250 in codes[1:]:\n        codes.append(s.data(message)[0])\n    s.quit()\n    return codes\n\
             print(session('x@remote.test', ['a@small.test', 'a@big.test'], '', size=10000))\n\
             print(session('x@remote.test', ['a@small.test'], '{big_message}'))\n\
             print(session('x@remote.test', ['a@small.test', 'b@small.test', 'c@small.test'], '{MESSAGE}'))\n\
             print(session('x@remote.test', ['a@small.test'], '{MESSAGE}'))\n\
             print(session('x@remote.test', ['b@small.test'], '{MESSAGE}'))\n\
             print(session('x@remote.test', ['a@big.test', 'b@big.test', 'c@big.test'], '{big_message}', size=6000))\n\
             print(session('x@remote.test', ['a@slow.test'], '{MESSAGE}'))"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    let expected = [
        // Declared size over small's limit: 552 for its recipient, fine for big's; big's
        // recipient then counts as big's transaction.
        "[250, 552, 250, 250]",
        // Over small's limit at DATA (first transaction of small this minute).
        "[250, 250, 552]",
        // Small's key quota (2 keys): the third recipient is refused by the policy.
        "[250, 250, 250, 451, 250]",
        // Third transaction of small this minute.
        "[250, 250, 250]",
        // Fourth: over its rate.
        "[250, 451]",
        // Big: none of small's limits.
        "[250, 250, 250, 250, 250]",
        // Slow's policy loops: stopped at slow's own 20 ms deadline, its failure mode applies.
        "[250, 451]",
    ];
    assert_eq!(lines, expected, "{out}\n{}", log(&r.dir));
    let log = log(&r.dir);
    assert!(log.contains("CPU deadline of 20ms exceeded"), "{log}");
    assert!(log.contains("the tenant's message rate is used up"), "{log}");
    // Its share of the store and its limits, as the admin API shows them.
    let tenants = python(
        admin,
        "import urllib.request, json\n\
         for t in json.loads(urllib.request.urlopen(f'http://127.0.0.1:{PORT}/api/tenants').read())['tenants']:\n    \
         print(t['tenant'], t['kv_usage']['keys'], t['limits']['kv_quota']['max_keys'], \
         t['limits']['max_message_bytes'], t['limits']['max_messages_per_minute'])",
    );
    assert_eq!(
        tenants.trim(),
        "small 2 2 4000 3\nbig 3 100000 None None\nslow 0 100000 None None",
        "{tenants}"
    );
}

#[test]
fn policy_state_survives_a_restart_on_the_embedded_store() {
    for (backend, after_restart) in [("embedded", "451"), ("memory", "250")] {
        let dir = temp_dir(&format!("state-{backend}"));
        let sink_port = free_port();
        let _sink = sink(sink_port, &dir.join("sink"), &[]);
        let body = format!(
            "[state]\nbackend = \"{backend}\"\n{}\
             [[tenant.policy]]\npath = \"{RATE_LIMIT}\"\nconfig = {{ messages = \"2\", by = \"ip\" }}\n",
            inbound(sink_port)
        );
        // The tenant's mail-stage rate limit answers at its first recipient.
        let send = |port: u16| {
            python(
                port,
                "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('c.remote.test')\n\
                 s.mail('a@remote.test')\nprint(s.rcpt('bob@example.test')[0])\ns.quit()",
            )
            .trim()
            .to_string()
        };
        let port = free_port();
        let r = relay(&dir, port, &body);
        let counts: Vec<String> = (0..3).map(|_| send(port)).collect();
        assert_eq!(counts, ["250", "250", "451"], "{backend}: {}", log(&r.dir));
        // Past the store's once-a-second flush, then a hard stop.
        std::thread::sleep(Duration::from_millis(1500));
        drop(r);
        let r = start(&dir, port);
        assert_eq!(send(port), after_restart, "{backend} after a restart: {}", log(&r.dir));
    }
}

/// One message through a relay whose next hop is the test sink with `fault`: deferred (with
/// `reply` in the log), then delivered by a retry within `within`, the spool empty after;
/// how long it took from the end of the client's session.
fn delivered_by_a_retry(name: &str, fault: &[&str], reply: &str, within: Duration) -> Duration {
    let dir = temp_dir(name);
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), fault);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}')\ns.quit()"
        ),
    );
    let sent = std::time::Instant::now();
    wait_for("delivery after the retry", within, || files(&dir.join("sink"), ".eml").len() == 1);
    let took = sent.elapsed();
    let log = log(&r.dir);
    assert!(log.contains("delivery deferred") && log.contains(reply), "{log}");
    wait_for("spool empty", Duration::from_secs(10), || {
        files(&r.dir.join("spool/queue"), ".mail").is_empty()
    });
    took
}

#[test]
fn a_temporary_failure_is_retried() {
    delivered_by_a_retry(
        "retry",
        &["--tempfail-first", "1"],
        "451 4.3.0 try again later",
        Duration::from_secs(30),
    );
}

#[test]
fn a_permanent_failure_bounces_to_the_sender() {
    let dir = temp_dir("bounce");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &["--reject-rcpt", "nobody"]);
    // Inbound mail bounces only when its tenant says so (the default is no backscatter).
    let r = relay(&dir, free_port(), &format!("{}bounce_inbound = \"always\"\n", inbound(sink_port)));
    python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\n\
             s.sendmail('alice@remote.test', ['nobody@example.test', 'bob@example.test'], '{MESSAGE}')\ns.quit()"
        ),
    );
    // The message for bob, and a delivery status notification for alice about nobody.
    wait_for("delivery and bounce", Duration::from_secs(30), || files(&dir.join("sink"), ".eml").len() == 2);
    let mut dsn = None;
    for (eml, env) in files(&dir.join("sink"), ".eml").iter().zip(files(&dir.join("sink"), ".env")) {
        let envelope = std::fs::read_to_string(env).expect("env");
        if envelope.contains("\"from\": \"\"") {
            dsn = Some((std::fs::read_to_string(eml).expect("dsn"), envelope));
        }
    }
    let (dsn, envelope) = dsn.expect("a bounce with the null sender");
    assert!(envelope.contains("alice@remote.test"), "{envelope}");
    assert!(dsn.contains("Content-Type: multipart/report; report-type=delivery-status"), "{dsn}");
    assert!(dsn.contains("Final-Recipient: rfc822; nobody@example.test"), "{dsn}");
    assert!(dsn.contains("Action: failed") && dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(!dsn.contains("Final-Recipient: rfc822; bob@example.test"), "{dsn}");
}

#[test]
fn queued_mail_survives_kill_9() {
    let dir = temp_dir("kill9");
    let sink_port = free_port();
    let port = free_port();
    // The next hop is down: the message waits in the spool.
    let r = relay(&dir, port, &inbound(sink_port));
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))\ns.quit()"
        ),
    );
    assert_eq!(out.trim(), "{}");
    assert_eq!(files(&dir.join("spool/queue"), ".mail").len(), 1);
    // kill -9: no shutdown of any kind.
    let mut r = r;
    let _ = Command::new("kill").args(["-9", &r.proc.0.id().to_string()]).status();
    let _ = r.proc.0.wait();
    drop(r);
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let _r = start(&dir, port);
    wait_for("delivery after restart", Duration::from_secs(30), || {
        files(&dir.join("sink"), ".eml").len() == 1
    });
    let delivered = std::fs::read_to_string(&files(&dir.join("sink"), ".eml")[0]).expect("message");
    assert!(delivered.contains("Shall we meet at noon?"));
}

/// `openssl passwd -6 -salt saltsalt secret`.
const ALICE: &str = "alice:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

fn tls_and_auth(dir: &Path, sink_port: u16) -> String {
    std::fs::write(dir.join("users"), format!("{ALICE}\n")).expect("users");
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [relay]\ntrusted_networks = []\nauth_users_file = \"users\"\n\
         [delivery]\nsmarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n",
        support.join("relay-cert.pem").display(),
        support.join("relay-key.pem").display(),
    )
}

#[test]
fn starttls_then_auth_then_relay() {
    let dir = temp_dir("auth");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, sink_port));
    let out = python(
        r.port,
        &format!(
            "import ssl, base64\n\
             ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
             s = smtplib.SMTP('127.0.0.1', PORT); s.ehlo('client.remote.test')\n\
             print('before', s.has_extn('starttls'), s.has_extn('auth'))\n\
             print('plain-auth', s.docmd('AUTH PLAIN ' + base64.b64encode(b'\\0alice\\0secret').decode())[0])\n\
             s.starttls(context=ctx); s.ehlo('client.remote.test')\n\
             print('after', s.has_extn('starttls'), s.has_extn('auth'))\n\
             s.docmd('MAIL FROM:<alice@example.test>')\n\
             print('unauthenticated-relay', s.docmd('RCPT TO:<dave@remote.test>')[0])\n\
             s.docmd('RSET')\n\
             try:\n    s.login('alice', 'wrong')\nexcept smtplib.SMTPAuthenticationError as e:\n    print('wrong-password', e.smtp_code)\n\
             print('login', s.login('alice', 'secret')[0])\n\
             print('relay', s.sendmail('alice@example.test', ['dave@remote.test'], '{MESSAGE}'))\n\
             s.quit()\n\
             s = smtplib.SMTP('127.0.0.1', PORT); s.starttls(context=ctx); s.ehlo('c.remote.test')\n\
             s.user, s.password = 'alice', 'secret'\n\
             print('login-mechanism', s.auth('LOGIN', s.auth_login, initial_response_ok=False)[0])\n\
             s.quit()\n"
        ),
    );
    let expected = "before True False\nplain-auth 530\nafter False True\nunauthenticated-relay 554\n\
                    wrong-password 535\nlogin 235\nrelay {}\nlogin-mechanism 235\n";
    assert_eq!(out, expected, "{}", log(&r.dir));
    wait_for("relayed delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
    let env = std::fs::read_to_string(&files(&dir.join("sink"), ".env")[0]).expect("env");
    assert!(env.contains("dave@remote.test"), "{env}");
}

/// The open-relay vectors again, each in a session of its own over STARTTLS: as they come,
/// after RSET, after a failed AUTH, all refused; once authenticated, plain foreign recipients are
/// accepted and the tricks still refused.
#[test]
fn never_an_open_relay_after_rset_starttls_or_failed_auth() {
    let dir = temp_dir("open-relay-tls");
    let sink_port = free_port();
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, sink_port));
    let list =
        RELAY_VECTORS.iter().map(|v| format!("'{}'", v.replace('\'', "\\'"))).collect::<Vec<_>>().join(",");
    let out = python(
        r.port,
        &format!(
            "import ssl\n\
             ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
             def session(mode, n):\n\
             \x20   source = '127.0.1.%d' % (n + 1) if mode == 'failed-auth' else '127.0.0.1'\n\
             \x20   s = smtplib.SMTP('127.0.0.1', PORT, source_address=(source, 0)); s.ehlo('client.remote.test')\n\
             \x20   s.starttls(context=ctx); s.ehlo('client.remote.test')\n\
             \x20   if mode == 'failed-auth':\n\
             \x20       s.user, s.password = 'alice', 'wrong'\n\
             \x20       try:\n\
             \x20           s.auth('PLAIN', s.auth_plain)\n\
             \x20       except smtplib.SMTPAuthenticationError:\n\
             \x20           pass\n\
             \x20   if mode == 'authenticated':\n\
             \x20       s.login('alice', 'secret')\n\
             \x20   if mode == 'rset':\n\
             \x20       s.docmd('MAIL FROM:<relaytest@example.test>'); s.docmd('RSET')\n\
             \x20   return s\n\
             for mode in ['tls', 'rset', 'failed-auth', 'authenticated']:\n\
             \x20   for n, rcpt in enumerate([{list}]):\n\
             \x20       s = session(mode, n)\n\
             \x20       s.docmd('MAIL FROM:<relaytest@remote.test>')\n\
             \x20       code, text = s.docmd('RCPT TO:' + rcpt)\n\
             \x20       print(mode, code, rcpt)\n\
             \x20       s.close()\n"
        ),
    );
    assert_eq!(out.lines().count(), RELAY_VECTORS.len() * 4, "{out}");
    for line in out.lines() {
        let mut parts = line.splitn(3, ' ');
        let (mode, code, rcpt) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let code: u16 = code.parse().expect("code");
        // Authenticated users may relay to an ordinary foreign address; every trick stays
        // refused for them too.
        let ordinary = rcpt == "<relaytest@elsewhere.test>";
        // The percent hack, bang paths, source routes and quoted or doubled @ never route.
        let trick =
            rcpt.contains('%') || rcpt.contains('!') || rcpt.contains(':') || rcpt.matches('@').count() != 1;
        if mode == "authenticated" && ordinary {
            assert_eq!(code, 250, "authenticated relay refused: {line}");
        } else if mode == "authenticated" && !trick {
            // Its own domains and address literals: for the user to send to, never a relay hole.
        } else {
            assert!(code >= 500, "relay vector accepted: {line}");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(files(&r.dir.join("spool/queue"), ".mail").is_empty());
}

/// AUTH brute force: after five failures from one address within the lockout window, AUTH from
/// it gets `421 4.7.0` and the connection closes, even with the right password; another
/// address is not affected.
#[test]
fn auth_brute_force_is_locked_out() {
    let dir = temp_dir("auth-lockout");
    let sink_port = free_port();
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, sink_port));
    let out = python(
        r.port,
        "import ssl\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         def attempt(password, source='127.0.0.1'):\n\
         \x20   s = smtplib.SMTP('127.0.0.1', PORT, source_address=(source, 0)); s.ehlo('c.remote.test')\n\
         \x20   s.starttls(context=ctx); s.ehlo('c.remote.test')\n\
         \x20   s.user, s.password = 'alice', password\n\
         \x20   try:\n\
         \x20       return s.auth('PLAIN', s.auth_plain)[0]\n\
         \x20   except smtplib.SMTPAuthenticationError as e:\n\
         \x20       return e.smtp_code\n\
         \x20   except smtplib.SMTPServerDisconnected:\n\
         \x20       return 'closed'\n\
         for n in range(6):\n\
         \x20   print(attempt('guess%d' % n))\n\
         print(attempt('secret'))\n\
         print(attempt('secret', '127.0.0.2'))\n",
    );
    // smtplib reports a 421 to AUTH as a closed connection or as the code itself.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..5], &["535"; 5], "{out}");
    assert!(["421", "closed"].contains(&lines[5]) && ["421", "closed"].contains(&lines[6]), "{out}");
    assert_eq!(lines[7], "235", "{out}");
    assert!(log(&r.dir).contains("AUTH refused: too many failures"), "{}", log(&r.dir));
}

/// STARTTLS negotiates TLS 1.2 or 1.3 only; what the client said before it is forgotten
/// (RFC 3207 §4.2), and after a failed handshake nothing goes on in plaintext.
#[test]
fn starttls_is_tls_1_2_or_1_3_and_starts_the_session_over() {
    let dir = temp_dir("tls-versions");
    let sink_port = free_port();
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, sink_port));
    let out = python(
        r.port,
        "import ssl\n\
         def reply(f):\n\
         \x20   while True:\n\
         \x20       line = f.readline()\n\
         \x20       if not line or line[3:4] != b'-':\n\
         \x20           return line[:3].decode() or 'closed'\n\
         def attempt(version):\n\
         \x20   ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         \x20   ctx.set_ciphers('ALL:@SECLEVEL=0')\n\
         \x20   ctx.minimum_version = version; ctx.maximum_version = version\n\
         \x20   raw = socket.create_connection(('127.0.0.1', PORT), timeout=10); f = raw.makefile('rb')\n\
         \x20   reply(f)\n\
         \x20   for cmd in [b'EHLO c.remote.test', b'STARTTLS']:\n\
         \x20       raw.sendall(cmd + b'\\r\\n'); reply(f)\n\
         \x20   try:\n\
         \x20       tls = ctx.wrap_socket(raw)\n\
         \x20   except (ssl.SSLError, OSError):\n\
         \x20       try:\n\
         \x20           raw.sendall(b'NOOP\\r\\n'); return 'refused', reply(f)\n\
         \x20       except OSError:\n\
         \x20           return 'refused', 'closed'\n\
         \x20   t = tls.makefile('rb')\n\
         \x20   tls.sendall(b'MAIL FROM:<a@remote.test>\\r\\n')\n\
         \x20   return tls.version(), reply(t)\n\
         for version in [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]:\n\
         \x20   print(*attempt(version))\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    // Old versions: no handshake, and the plaintext session does not go on.
    assert_eq!(&lines[..2], &["refused closed", "refused closed"], "{out}");
    // 1.2 and 1.3: negotiated, and the session starts over: the EHLO before STARTTLS is
    // forgotten, so MAIL without a new EHLO gets 503.
    assert_eq!(&lines[2..], &["TLSv1.2 503", "TLSv1.3 503"], "{out}");
}

#[test]
fn commands_pipelined_behind_starttls_are_dropped() {
    let dir = temp_dir("tls-injection");
    let sink_port = free_port();
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, sink_port));
    // The NOOP sent in plaintext right behind STARTTLS must not be answered inside TLS.
    let out = python(
        r.port,
        "import ssl\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         raw = socket.create_connection(('127.0.0.1', PORT)); f = raw.makefile('rb')\n\
         f.readline(); raw.sendall(b'EHLO c.test\\r\\n')\n\
         while not f.readline().startswith(b'250 '): pass\n\
         raw.sendall(b'STARTTLS\\r\\nNOOP\\r\\n')\n\
         print(f.readline().decode().strip())\n\
         t = ctx.wrap_socket(raw); tf = t.makefile('rb')\n\
         t.sendall(b'EHLO c.test\\r\\n')\n\
         print(tf.readline().decode().strip())\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "220 2.0.0 Ready to start TLS");
    assert!(lines[1].starts_with("250-relay.test Hello"), "{out}");
}

/// Send raw bytes, then read everything the relay answers until it closes (or 10 s pass).
fn raw_session(port: u16, input: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = s.write_all(input);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bad_input_gets_a_reply_or_a_clean_close() {
    let dir = temp_dir("bad-input");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &inbound(sink_port));

    // Garbage and NUL bytes: 500s, then the error limit hangs up with 421.
    let answer = raw_session(
        r.port,
        b"\x00\x01\x02garbage\r\nHELO\r\nMAIL\r\n\xff\xfe\r\nEHLO x\x00y\r\nFOO BAR\r\n\
        RCPT TO:<a@b>\r\nDATA\r\nBDAT\r\nAUTH\r\nQUIT\r\n",
    );
    assert!(answer.starts_with("220 relay.test"), "{answer}");
    assert!(answer.contains("500 5.5.2") && answer.contains("501 5.5.4"), "{answer}");
    assert!(answer.contains("421 4.7.0 Too many errors"), "{answer}");

    // A line over the limit: refused without being kept, and the session goes on.
    let mut input = b"EHLO client.test\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'A', 16 << 10));
    input.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
    let answer = raw_session(r.port, &input);
    assert!(answer.contains("500 5.5.6 Line too long\r\n"), "{answer}");
    assert!(answer.contains("250 2.0.0 Ok\r\n221 2.0.0"), "{answer}");

    // A 1 MiB line: no client overshoots by that much; refused, and the connection closes
    // once 64 KiB have come without a line end.
    let mut input = b"EHLO client.test\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'A', 1 << 20));
    input.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
    let answer = raw_session(r.port, &input);
    assert!(answer.ends_with("500 5.5.6 Line too long, closing connection\r\n"), "{answer}");

    // A pipelined flood of transactions: every one answered, in order.
    let mut input = b"EHLO client.test\r\n".to_vec();
    for i in 0..200 {
        input.extend_from_slice(
            format!("MAIL FROM:<a{i}@remote.test>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\n").as_bytes(),
        );
    }
    input.extend_from_slice(b"QUIT\r\n");
    let answer = raw_session(r.port, &input);
    assert_eq!(answer.matches("250 2.1.0 Ok").count(), 200, "{answer}");
    assert_eq!(answer.matches("250 2.1.5 Ok").count(), 200);
    assert!(answer.ends_with("221 2.0.0 relay.test closing connection\r\n"), "{answer}");

    // A client that vanishes in the middle of DATA: nothing is queued or delivered.
    let answer = raw_session(
        r.port,
        b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: half\r\n\r\nhalf a mess",
    );
    assert!(answer.contains("354 "), "{answer}");
    // A message over the size limit: 552 after the data, nothing kept.
    let mut input =
        b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n".to_vec();
    for _ in 0..2000 {
        input
            .extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let answer = raw_session(r.port, &input);
    assert!(answer.contains("552 5.3.4"), "{answer}");

    // A TLS handshake that fails (TLS is not even offered here): a reply, not a crash.
    let answer = raw_session(r.port, b"EHLO c.test\r\nSTARTTLS\r\n\x16\x03\x01\x02\x00garbage\r\nQUIT\r\n");
    assert!(answer.contains("502 5.5.1"), "{answer}");

    std::thread::sleep(Duration::from_millis(500));
    assert!(files(&dir.join("sink"), ".eml").is_empty());
    assert!(files(&r.dir.join("spool/queue"), ".mail").is_empty());
    // Still serving.
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}");
}

#[test]
fn a_failed_tls_handshake_closes_cleanly() {
    let dir = temp_dir("tls-fail");
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, free_port()));
    let answer = raw_session(r.port, b"EHLO c.test\r\nSTARTTLS\r\nthis is not a TLS client hello\r\n\r\n");
    assert!(answer.contains("220 2.0.0 Ready to start TLS"), "{answer}");
    // The relay is still there for the next client.
    let out = python(r.port, "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.noop()[0])");
    assert_eq!(out.trim(), "250");
}

#[test]
fn a_next_hop_that_hangs_or_resets_keeps_the_mail_queued() {
    for behaviour in ["--hang", "--reset"] {
        let dir = temp_dir(&format!("hop{behaviour}"));
        let sink_port = free_port();
        let _sink = sink(sink_port, &dir.join("sink"), &[behaviour]);
        let body = inbound(sink_port).replace("[delivery]\n", "[delivery]\ntimeout_secs = 2\n");
        let r = relay(&dir, free_port(), &body);
        python(
            r.port,
            &format!(
                "s = smtplib.SMTP('127.0.0.1', PORT)\ns.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}')"
            ),
        );
        wait_for("a deferred attempt", Duration::from_secs(20), || log(&r.dir).contains("delivery deferred"));
        let queued = files(&r.dir.join("spool/queue"), ".mail");
        assert_eq!(queued.len(), 1, "{behaviour}");
        let envelope = std::fs::read_to_string(&queued[0]).expect("spool file");
        assert!(envelope.contains("\"status\":\"pending\""), "{envelope}");
    }
}

/// A next hop that forgets the relay's connection without a word — neither FIN nor RST, as a
/// busy server does when its accept queue drops the handshake's last ACK — while the relay
/// waits for its greeting: TCP keepalive's first probe (after 15 s) draws a reset, the attempt
/// is deferred and the retry delivers, instead of waiting out the 5-minute greeting timeout.
#[test]
fn a_connection_the_next_hop_forgot_is_noticed_by_keepalive() {
    let took = delivered_by_a_retry(
        "hop-forgets",
        &["--forget-first", "1"],
        "reset by peer",
        Duration::from_secs(60),
    );
    assert!(took >= Duration::from_secs(14), "delivered before any probe: {took:?}");
}

/// A next hop that resets the connection in the middle of DATA, twice, and answers slowly
/// (a second per message): the messages stay queued, are retried, and once it recovers each
/// reaches it exactly once — nothing lost, no duplicate of what it confirmed.
#[test]
fn a_next_hop_that_resets_mid_data_then_recovers_gets_each_message_once() {
    let dir = temp_dir("hop-reset-in-data");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &["--reset-in-data", "2", "--delay", "1"]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    python(
        r.port,
        "for n in range(3):\n\
         \x20   s = smtplib.SMTP('127.0.0.1', PORT)\n\
         \x20   s.sendmail('alice@remote.test', ['bob@example.test'], 'Subject: number %d\\r\\n\\nline one\\r\\nline two\\r\\nline three\\r\\n' % n)\n\
         \x20   s.quit()\n",
    );
    wait_for("every message delivered", Duration::from_secs(60), || {
        files(&dir.join("sink"), ".eml").len() >= 3 && files(&r.dir.join("spool/queue"), ".mail").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut subjects: Vec<String> = files(&dir.join("sink"), ".eml")
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("message"))
        .map(|m| m.split("Subject: ").nth(1).and_then(|r| r.split("\r\n").next()).unwrap_or("").to_string())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["number 0", "number 1", "number 2"]);
    assert!(log(&r.dir).contains("delivery deferred"), "{}", log(&r.dir));
}

#[test]
fn chunking_with_bdat() {
    let dir = temp_dir("bdat");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    let first = "From: a@remote.test\r\nSubject: chunks\r\n\r\n";
    let second = ".a line starting with a dot\r\nend\r\n";
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT {}\r\n{first}BDAT {} LAST\r\n{second}\
         MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 9 LAST\r\nbare\nLF\r\n\
         BDAT 5 LAST\r\nhelloQUIT\r\n",
        first.len(),
        second.len()
    );
    let answer = raw_session(r.port, input.as_bytes());
    assert!(answer.contains("CHUNKING"), "{answer}");
    assert!(answer.contains(&format!("250 2.0.0 {} octets received", first.len())), "{answer}");
    assert!(answer.contains("250 2.0.0 Ok: queued as"), "{answer}");
    assert!(answer.contains("550 5.6.11"), "{answer}");
    // A BDAT without a transaction still has its data consumed: "hello" is not a command.
    assert!(answer.contains("503 5.5.1") && !answer.contains("500 5.5.2"), "{answer}");
    wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
    let delivered = std::fs::read_to_string(&files(&dir.join("sink"), ".eml")[0]).expect("message");
    assert!(
        delivered.ends_with("Subject: chunks\r\n\r\n.a line starting with a dot\r\nend\r\n"),
        "{delivered}"
    );
}

#[test]
fn metrics_and_json_logs() {
    let dir = temp_dir("metrics");
    let (sink_port, port, admin) = (free_port(), free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}", inbound(sink_port));
    let config = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\n[spool]\ndir = \"spool\"\n{body}\
         [[tenant.policy]]\npath = \"{PROBE}\"\n"
    );
    std::fs::write(dir.join("sluice.toml"), config).expect("config");
    let r = start_with(&dir, port, &["--log-format", "json"]);
    python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}')\ns.quit()"
        ),
    );
    wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
    let scrape = || {
        python(
            admin,
            "import urllib.request\nprint(urllib.request.urlopen(f'http://127.0.0.1:{PORT}/metrics').read().decode())",
        )
    };
    wait_for("delivery counted", Duration::from_secs(10), || {
        scrape().contains("sluice_delivery_attempts_total{tenant=\"example\",result=\"delivered\"} 1")
    });
    let metrics = scrape();
    for expected in [
        // A session no tenant claims is counted as the edge's.
        "sluice_connections_total{tenant=\"edge\"} ",
        "sluice_connections_active{tenant=\"edge\"} 0",
        "sluice_transactions_total{tenant=\"example\",outcome=\"accept\"} 1",
        "sluice_policy_calls_total{tenant=\"example\",policy=\"probe\",verdict=\"continue\"}",
        "sluice_policy_duration_seconds_bucket{le=\"+Inf\",tenant=\"example\",policy=\"probe\"} 5",
        "sluice_policy_duration_seconds_count{tenant=\"example\",policy=\"probe\"} 5",
        "sluice_queue_messages{tenant=\"example\"} 0",
        "sluice_prepared_instances 0",
        // Every family says what it is (OpenMetrics text, encoded by prometheus-client).
        "# HELP sluice_transactions Transactions by tenant and outcome",
        "# TYPE sluice_transactions counter",
        "# TYPE sluice_policy_duration_seconds histogram",
        "# TYPE sluice_queue_oldest_age_seconds gauge",
        "# EOF",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    // The tenant's view: domains, route, chain, generation and counters.
    let tenants = python(
        admin,
        "import urllib.request, json\n\
         t = json.loads(urllib.request.urlopen(f'http://127.0.0.1:{PORT}/api/tenants').read())['tenants'][0]\n\
         print(t['tenant'], t['domains'], t['next_hop'].startswith('smtp:127.0.0.1:'), t['generation'], \
         t['failure_mode'], [p['name'] for p in t['chain']], t['counters']['transactions'], \
         t['counters']['deliveries'], t['counters']['policy_calls'].get('continue', 0) > 0)",
    );
    assert_eq!(
        tenants.trim(),
        "example ['example.test'] True 1 tempfail ['probe'] {'accept': 1} {'delivered': 1} True"
    );
    // Every log line is one JSON object; the transaction line carries the envelope.
    let log = log(&r.dir);
    let transaction =
        log.lines().find(|l| l.contains("\"message\":\"transaction\"")).expect("transaction line");
    for field in ["\"outcome\":\"accept\"", "\"from\":", "\"to\":", "\"id\":"] {
        assert!(transaction.contains(field), "{field} missing: {transaction}");
    }
    assert!(log.lines().all(|l| l.starts_with('{') && l.ends_with('}')), "{log}");
}

#[test]
fn check_names_what_is_wrong() {
    let dir = temp_dir("check");
    let good = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\n{}[[tenant.policy]]\npath = \"{PROBE}\"\n",
        free_port(),
        inbound(free_port())
    );
    std::fs::write(dir.join("sluice.toml"), &good).expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(ok, "{text}");
    assert!(text.contains("1 tenant(s), 1 policy component(s) loaded"), "{text}");

    for (broken, expected) in [
        (good.replace("next_hop = ", "next_hopp = "), "unknown field `next_hopp`"),
        (good.replace("[server]\n", "[server]\nmax_recipients = \"many\"\n"), "line 2"),
        (good.replace(PROBE, "/nonexistent/policy.wasm"), "/nonexistent/policy.wasm"),
        (
            good.replace(
                "[[tenant.policy]]\n",
                "[[tenant.policy]]\nconfig = { refuse_init = \"no thanks\" }\n",
            ),
            "no thanks",
        ),
    ] {
        std::fs::write(dir.join("sluice.toml"), &broken).expect("config");
        let (ok, text) = sluice(&dir, &["check"]);
        assert!(!ok, "accepted: {broken}");
        assert!(text.contains(expected), "{expected} not in: {text}");
    }
    let broken = good.replace("[[tenant.policy]]\n", "kv_max_keys = 0\n[[tenant.policy]]\n");
    std::fs::write(dir.join("sluice.toml"), &broken).expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(!ok && text.contains("tenant[0] (example).kv_max_keys: must be positive"), "{text}");

    // Valid but probably not meant: warnings, and the check passes.
    let state = format!("[state]\nbackend = \"redis://127.0.0.1:{}/0\"\n[[tenant]]", free_port());
    let odd = format!(
        "{}[[tenant]]\nname = \"empty\"\nnext_hop = \"maildir:m\"\nmax_message_bytes = 999999999\n",
        good.replacen("[[tenant]]", &state, 1)
    );
    std::fs::write(dir.join("sluice.toml"), &odd).expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(ok, "{odd}\n{text}");
    for expected in [
        "warning: tenant[1] (empty): no policies",
        "warning: tenant[1] (empty): no domains, outbound_networks or outbound_users",
        "warning: tenant[1] (empty).max_message_bytes: 999999999 is above server.max_message_bytes",
        "warning: state.backend: redis://127.0.0.1:",
    ] {
        assert!(text.contains(expected), "{expected} not in: {text}");
    }
}

#[test]
fn quarantine_list_and_release() {
    let dir = temp_dir("quarantine");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{}\"\n{}[[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"quarantine\" }}\n",
        free_port(),
        inbound(sink_port)
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}");
    let held = files(&dir.join("spool/quarantine"), ".mail");
    assert_eq!(held.len(), 1);
    let id = held[0].file_stem().expect("id").to_string_lossy().into_owned();
    let (ok, list) = sluice(&dir, &["queue", "list"]);
    assert!(ok && list.contains(&id) && list.contains("quarantine"), "{list}");
    let (ok, show) = sluice(&dir, &["queue", "show", &id]);
    assert!(
        ok && show.contains("from:         <alice@remote.test>") && show.contains("Subject: Lunch"),
        "{show}"
    );
    assert!(show.contains("store:        quarantine") && show.contains("next attempt: held"), "{show}");
    let (ok, json) = sluice(&dir, &["queue", "show", &id, "--json"]);
    assert!(
        ok && json.contains("\"mail_from\": \"alice@remote.test\"")
            && json.contains("\"store\": \"quarantine\""),
        "{json}"
    );
    assert!(!sluice(&dir, &["queue", "show", "../../etc/passwd"]).0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(files(&dir.join("sink"), ".eml").is_empty(), "quarantined mail was delivered");
    // The relay holds the spool: the release goes through its admin API.
    let (ok, text) = sluice(&dir, &["queue", "release", &id]);
    assert!(ok && text.contains(&format!("{id} released into the queue")), "{text}");
    // The running relay picks the released message up.
    wait_for("delivery after release", Duration::from_secs(20), || {
        files(&dir.join("sink"), ".eml").len() == 1
    });
    assert!(files(&dir.join("spool/quarantine"), ".mail").is_empty());
}

#[test]
fn swaks_with_starttls_auth_and_pipelining() {
    let dir = temp_dir("swaks");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay(&dir, free_port(), &tls_and_auth(&dir, sink_port));
    let swaks = |extra: &[&str]| {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &r.port.to_string(), "--helo", "client.remote.test"])
            .args(extra)
            .output()
            .expect("swaks (installed by .ci/run: apt-get install swaks libnet-ssleay-perl)");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, text) = swaks(&[
        "--from",
        "alice@example.test",
        "--to",
        "dave@remote.test",
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "secret",
        "--pipeline",
    ]);
    assert!(ok && text.contains("250 2.0.0 Ok: queued as"), "{text}");
    // Without AUTH the same relay attempt is refused.
    let (ok, text) = swaks(&["--from", "alice@example.test", "--to", "dave@remote.test", "--tls"]);
    assert!(!ok && text.contains("554 5.7.1 Relaying denied"), "{text}");
    // Inbound mail needs neither.
    let (ok, text) = swaks(&["--from", "eve@remote.test", "--to", "bob@example.test"]);
    assert!(ok && text.contains("250 2.0.0 Ok: queued as"), "{text}");
    wait_for("two deliveries", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 2);
}

#[test]
fn mx_resolution_and_its_failures() {
    let dir = temp_dir("mx");
    let (sink_port, dns_port) = (free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let dns = support("dns.py", &[dns_port.to_string()]);
    let mail = dir.join("mail");
    // No smarthost: mail for other domains goes to their MX (whose port is the sink's here).
    let body = format!(
        "[dns]\nnameservers = [\"127.0.0.1:{dns_port}\"]\n[relay]\ntrusted_networks = [\"127.0.0.0/8\"]\n\
         [delivery]\nmx_port = {sink_port}\nretry_base_secs = 1\nretry_max_secs = 2\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"maildir:{}\"\n",
        mail.display()
    );
    let r = relay(&dir, free_port(), &body);
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\n\
             print(s.sendmail('alice@example.test', ['a@mx-ok.test', 'b@no-mx.test', 'c@null-mx.test', 'd@gone.test'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}");
    // The MX host and the implicit MX each get a copy.
    wait_for("two MX deliveries", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 2);
    // The null MX and the missing domain bounce to alice, who is local.
    let inbox = mail.join("alice@example.test/new");
    wait_for("the bounce", Duration::from_secs(20), || files(&inbox, ".sluice").len() == 1);
    let dsn = std::fs::read_to_string(&files(&inbox, ".sluice")[0]).expect("dsn");
    assert!(
        dsn.contains("Final-Recipient: rfc822; c@null-mx.test") && dsn.contains("Status: 5.1.10"),
        "{dsn}"
    );
    assert!(dsn.contains("Final-Recipient: rfc822; d@gone.test") && dsn.contains("Status: 5.1.2"), "{dsn}");
    drop(dns);
}

#[test]
fn delivery_uses_starttls_when_offered() {
    let dir = temp_dir("hop-tls");
    let sink_port = free_port();
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let (cert, key) = (support.join("relay-cert.pem"), support.join("relay-key.pem"));
    let _sink =
        sink(sink_port, &dir.join("sink"), &["--tls", &cert.to_string_lossy(), &key.to_string_lossy()]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}')"
        ),
    );
    wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".env").len() == 1);
    let env = std::fs::read_to_string(&files(&dir.join("sink"), ".env")[0]).expect("env");
    assert!(env.contains("\"tls\": true"), "{env}");

    // A next hop whose TLS is broken still gets the mail, in plaintext, in the same attempt.
    let dir = temp_dir("hop-broken-tls");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &["--broken-tls"]);
    let r = relay(&dir, free_port(), &inbound(sink_port));
    python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}')"
        ),
    );
    wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".env").len() == 1);
    let env = std::fs::read_to_string(&files(&dir.join("sink"), ".env")[0]).expect("env");
    assert!(env.contains("\"tls\": false"), "{env}");
    assert!(log(&r.dir).contains("TLS with the next hop failed"), "{}", log(&r.dir));
}

#[test]
fn delivery_reuses_connections_pipelines_and_limits_concurrency() {
    let dir = temp_dir("reuse");
    let (fast, plain, closing) = (free_port(), free_port(), free_port());
    // Each end of DATA takes 0.3 s, so queued messages overlap and the limit shows.
    let _fast = sink(fast, &dir.join("fast"), &["--delay", "0.3"]);
    let _plain = sink(plain, &dir.join("plain"), &["--no-pipelining"]);
    // Drops each connection a moment after its transaction, while the relay still caches it.
    let _closing = sink(closing, &dir.join("closing"), &["--close-after", "0.2"]);
    let body = format!(
        "[relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
         destination_concurrency = 2\nconnection_cache_secs = 60\n\
         [[tenant]]\nname = \"fast\"\ndomains = [\"fast.test\"]\nnext_hop = \"smtp:127.0.0.1:{fast}\"\n\
         [[tenant]]\nname = \"plain\"\ndomains = [\"plain.test\"]\nnext_hop = \"smtp:127.0.0.1:{plain}\"\n\
         [[tenant]]\nname = \"closing\"\ndomains = [\"closing.test\"]\nnext_hop = \"smtp:127.0.0.1:{closing}\"\n"
    );
    let r = relay(&dir, free_port(), &body);
    python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\n\
             for i in range(10):\n    assert s.sendmail('alice@remote.test', ['u%d@fast.test' % i, 'v%d@fast.test' % i], '{MESSAGE}') == {{}}\n\
             s.quit()"
        ),
    );
    wait_for("ten deliveries", Duration::from_secs(30), || files(&dir.join("fast"), ".eml").len() == 10);
    let (connections, transactions, most_open) = sink_stats(&dir.join("fast"));
    assert_eq!(transactions, 10);
    assert_eq!(most_open, 2, "two deliveries at a time, no more");
    assert!(connections <= 2, "connections were reused: {connections} for 10 messages");
    for env in files(&dir.join("fast"), ".env") {
        let env = std::fs::read_to_string(env).expect("env");
        assert!(env.contains("\"pipelined\": true") && env.contains("fast.test\", \"v"), "{env}");
    }

    // One message at a time to `domain`, each delivered into `sink` before the next is sent.
    let one_by_one = |domain: &str, sink: &Path, pause: Duration| {
        for i in 0..3 {
            python(
                r.port,
                &format!(
                    "s = smtplib.SMTP('127.0.0.1', PORT)\n\
                     assert s.sendmail('alice@remote.test', ['u{i}@{domain}'], '{MESSAGE}') == {{}}"
                ),
            );
            wait_for("delivery", Duration::from_secs(20), || files(sink, ".eml").len() == i + 1);
            std::thread::sleep(pause);
        }
    };
    // Without PIPELINING, one command at a time; the connection is still reused.
    one_by_one("plain.test", &dir.join("plain"), Duration::ZERO);
    let env = std::fs::read_to_string(&files(&dir.join("plain"), ".env")[0]).expect("env");
    assert!(env.contains("\"pipelined\": false"), "{env}");
    assert_eq!(sink_stats(&dir.join("plain")).0, 1, "one connection for three messages");

    // A cached connection the server dropped is replaced at once: no deferral, nothing lost.
    one_by_one("closing.test", &dir.join("closing"), Duration::from_millis(500));
    assert_eq!(sink_stats(&dir.join("closing")).0, 3);
    assert!(!log(&r.dir).contains("delivery deferred"), "{}", log(&r.dir));
    drop(r);
}
