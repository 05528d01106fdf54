//! Sluice's policies inside a real Postfix (Debian's `postfix`, a private instance under the
//! test's folder): as a milter (`smtpd_milters = inet:127.0.0.1:PORT`) and as a policy
//! delegation server (`check_policy_service inet:127.0.0.1:PORT`). The client is Python's
//! smtplib talking to Postfix; the next hop `tests/support/sink.py`.

mod relay_common;

use std::path::Path;
use std::time::Duration;

use relay_common::*;
use sluice_test_artifacts::PROBE;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// One message through Postfix on `port`: "CODE TEXT" of the refusal, or "250".
fn send(port: u16, rcpts: &[&str], subject: &str, body: &str) -> String {
    let rcpts = rcpts.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(",");
    python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT, timeout=60)\ns.ehlo('client.remote.test')\n\
             msg = 'From: alice@remote.test\\r\\nTo: bob@example.test\\r\\nSubject: {subject}\\r\\n\
             Message-ID: <{subject}@remote.test>\\r\\nX-Spam-Flag: YES\\r\\n\\r\\n{body}\\r\\n'\n\
             try:\n    refused = s.sendmail('alice@remote.test', [{rcpts}], msg)\n    print('250', refused)\n\
             except smtplib.SMTPRecipientsRefused as e:\n    code, text = list(e.recipients.values())[0]\n    print(code, text.decode())\n\
             except smtplib.SMTPResponseException as e:\n    print(e.smtp_code, e.smtp_error.decode())"
        ),
    )
    .trim()
    .to_string()
}

/// The message the next hop got with `subject`, and its envelope's recipients.
fn delivered(sink: &Path, subject: &str) -> Option<(String, Vec<String>)> {
    for file in files(sink, ".eml") {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains(&format!("Subject: {subject}\r\n")) {
            let envelope = std::fs::read_to_string(file.with_extension("env")).unwrap_or_default();
            let envelope: serde_json::Value = serde_json::from_str(&envelope).unwrap_or_default();
            let mut to: Vec<String> = envelope["to"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            to.sort();
            return Some((text, to));
        }
    }
    None
}

fn config(milter: u16, delegation: u16, admin: u16, sink_port: u16, header: &str) -> String {
    format!(
        "[server]\nhostname = \"relay.test\"\nlisten = []\n[spool]\ndir = \"spool\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [milter]\nlisten = \"127.0.0.1:{milter}\"\n[policy_delegation]\nlisten = \"127.0.0.1:{delegation}\"\n\
         [relay]\ntrusted_networks = []\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         max_messages_per_minute = 1000\n\
         [[tenant.policy]]\npath = \"builtin:spam-heuristics\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ header = \"{header}\", add_recipient = \"archive@example.test\", \
         remove_recipient = \"drop@example.test\", \
         session_header = \"X-Probe-Session\" }}\n\
         [[tenant]]\nname = \"faulty\"\ndomains = [\"faulty.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ fault = \"trap\" }}\n\
         [[tenant]]\nname = \"closed\"\ndomains = [\"closed.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"reject\", verdict_stage = \"rcpt\", disconnect = \"true\" }}\n\
         [[tenant]]\nname = \"held\"\ndomains = [\"held.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"quarantine\" }}\n\
         [[tenant]]\nname = \"dropped\"\ndomains = [\"dropped.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"discard\" }}\n"
    )
}

/// Sluice (milter and policy servers, tenants example/faulty/closed, `rate` messages a
/// minute for example.test), a next hop, and a private Postfix in front with `main` (given
/// the milter's and the policy server's ports).
struct Site {
    milter: u16,
    delegation: u16,
    admin: u16,
    postfix_port: u16,
    sink_dir: std::path::PathBuf,
    relay: Option<Relay>,
    mta: Postfix,
    _sink: Proc,
}

fn site(name: &str, rate: u32, main: impl Fn(u16, u16) -> String) -> Site {
    let dir = temp_dir(name);
    let (milter, delegation, sink_port, postfix_port) = (free_port(), free_port(), free_port(), free_port());
    let admin = free_port();
    let sink_dir = dir.join("sink");
    let sink = sink(sink_port, &sink_dir, &[]);
    let relay_dir = dir.join("sluice");
    std::fs::create_dir_all(&relay_dir).expect("dir");
    let text = config(milter, delegation, admin, sink_port, "X-Sluice-Probe: first")
        .replace("max_messages_per_minute = 1000", &format!("max_messages_per_minute = {rate}"));
    std::fs::write(relay_dir.join("sluice.toml"), text).expect("config");
    let relay = start(&relay_dir, milter);
    let main = main(milter, delegation);
    let mta = postfix(&dir.join("postfix"), postfix_port, sink_port, &main.lines().collect::<Vec<_>>());
    Site { milter, delegation, admin, postfix_port, sink_dir, relay: Some(relay), mta, _sink: sink }
}

#[test]
fn a_postfix_with_sluice_as_its_milter() {
    let site = site("inside-postfix-milter", 1000, |milter, _| {
        format!(
            "smtpd_milters = inet:127.0.0.1:{milter}\nmilter_default_action = tempfail\nmilter_protocol = 6"
        )
    });
    let Site { milter, delegation, admin, postfix_port, ref sink_dir, ref mta, .. } = site;
    let relay = site.relay.as_ref().expect("relay");
    let relay_dir = relay.dir.clone();

    // GTUBE: refused with Sluice's own reply.
    let reply = send(postfix_port, &["bob@example.test"], "gtube", GTUBE);
    assert!(
        reply.starts_with("550 5.7.1 Message rejected as spam"),
        "{reply}\n{}\n{}",
        log(&relay.dir),
        mta.log()
    );

    // A plain message: the policy's header added, the client's X-Spam-Flag removed, the
    // recipients changed (drop@ removed, archive@ added).
    let reply = send(postfix_port, &["bob@example.test", "drop@example.test"], "plain", "Hello.");
    assert!(reply.starts_with("250"), "{reply}\n{}", mta.log());
    let mut got = None;
    wait_for("the plain message at the next hop", Duration::from_secs(30), || {
        got = delivered(sink_dir, "plain");
        got.is_some()
    });
    let (text, to) = got.expect("delivered");
    assert!(text.contains("X-Sluice-Probe: first\r\n"), "{text}");
    assert!(!text.contains("X-Spam-Flag: YES"), "{text}");
    assert!(text.contains("X-Spam-Score:") || text.contains("X-Spam-Status:"), "{text}");
    assert_eq!(to, vec!["archive@example.test", "bob@example.test"], "{text}");

    // Ten SMTP sessions at once, each abandoning one transaction (RSET: the milter's abort)
    // and then sending two messages.
    let out = python(
        postfix_port,
        "import threading\nresults = []\n\
         def session(n):\n    s = smtplib.SMTP('127.0.0.1', PORT, timeout=60)\n    s.ehlo('c.remote.test')\n\
         \x20   s.mail('alice@remote.test')\n    s.rcpt('bob@example.test')\n    s.rset()\n\
         \x20   for m in range(2):\n        msg = 'From: alice@remote.test\\r\\nSubject: many-%d-%d\\r\\n\\r\\nHi.\\r\\n' % (n, m)\n\
         \x20       results.append(s.sendmail('alice@remote.test', ['bob@example.test'], msg))\n    s.quit()\n\
         threads = [threading.Thread(target=session, args=(n,)) for n in range(10)]\n\
         [t.start() for t in threads]\n[t.join() for t in threads]\nprint(len(results), all(r == {} for r in results))",
    );
    assert_eq!(out.trim(), "20 True", "{}", mta.log());
    wait_for("twenty messages at the next hop", Duration::from_secs(60), || {
        (0..10).all(|n| (0..2).all(|m| delivered(sink_dir, &format!("many-{n}-{m}")).is_some()))
    });

    // A refusal that ends the session (the policy asks to disconnect): every later command
    // of that session is refused too, whatever its recipient.
    let out = python(
        postfix_port,
        "s = smtplib.SMTP('127.0.0.1', PORT, timeout=60)\ns.ehlo('c.remote.test')\ns.mail('alice@remote.test')\n\
         print(s.rcpt('dave@closed.test')[0], s.rcpt('bob@example.test')[0])",
    );
    assert_eq!(out.trim(), "550 550", "{}", mta.log());

    // Quarantine: Postfix puts the message on hold; discard: accepted and dropped.
    assert!(send(postfix_port, &["erin@held.test"], "held", "Hello.").starts_with("250"));
    assert!(send(postfix_port, &["fred@dropped.test"], "dropped", "Hello.").starts_with("250"));
    wait_for("the hold and the discard in Postfix's log", Duration::from_secs(30), || {
        let log = mta.log();
        log.contains("milter triggers HOLD action") && log.contains("milter triggers DISCARD action")
    });
    let held = std::process::Command::new("postqueue")
        .arg("-c")
        .arg(&mta.conf)
        .arg("-j")
        .output()
        .expect("postqueue");
    let held = String::from_utf8_lossy(&held.stdout);
    assert!(held.contains("\"queue_name\": \"hold\"") && held.contains("erin@held.test"), "{held}");

    // A trapping policy: its tenant's failure mode (tempfail), never a 250.
    let reply = send(postfix_port, &["carol@faulty.test"], "faulty", "Hello.");
    assert!(reply.starts_with("451"), "{reply}");

    // A reload mid-run: the next SMTP session runs the new configuration.
    let text = std::fs::read_to_string(relay_dir.join("sluice.toml")).expect("config");
    std::fs::write(
        relay_dir.join("sluice.toml"),
        text.replace("X-Sluice-Probe: first", "X-Sluice-Probe: second"),
    )
    .expect("config");
    wait_for("the reload", Duration::from_secs(30), || log(&relay.dir).contains("result=\"applied\""));
    let reply = send(postfix_port, &["bob@example.test"], "reloaded", "Hello again.");
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("the reloaded message at the next hop", Duration::from_secs(30), || {
        delivered(sink_dir, "reloaded").is_some_and(|(text, _)| text.contains("X-Sluice-Probe: second\r\n"))
    });

    // The operator's view: `sluice check` and the admin API name the servers; the metrics
    // count the MTA's connections.
    let (ok, out) = sluice(&relay_dir, &["check"]);
    assert!(
        ok && out
            .contains(&format!("milter on 127.0.0.1:{milter}, policy_delegation on 127.0.0.1:{delegation}")),
        "{out}"
    );
    let listeners = admin_api(admin, "GET", "/api/listeners");
    assert_eq!(listeners["milter"]["listen"], format!("127.0.0.1:{milter}"), "{listeners}");
    assert!(listeners["milter"]["connections"].as_u64().unwrap_or(0) >= 14, "{listeners}");
    assert_eq!(listeners["smtp"], serde_json::json!([]), "{listeners}");

    // Sluice away: Postfix's milter_default_action (tempfail) answers.
    let mut site = site;
    drop(site.relay.take());
    let reply = send(postfix_port, &["bob@example.test"], "away", "Hello.");
    assert!(reply.starts_with("451 4.7.1"), "{reply}");
}

/// Dovecot's authentication service alone on `port` (Postfix's `smtpd_sasl_type = dovecot`),
/// one user `user` with the password `password`.
fn dovecot_auth(dir: &Path, port: u16, user: &str, password: &str) -> Proc {
    for sub in ["run", "state"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dovecot dirs");
    }
    std::fs::write(dir.join("users"), format!("{user}:{{PLAIN}}{password}::::::\n")).expect("users");
    let d = dir.display();
    let config = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nprotocols = none\n\
         listen = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}}\n\
         service auth {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n\
         service anvil {{\n  chroot =\n}}\n"
    );
    dovecot(dir, &config, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// The client's TLS and SMTP AUTH at Postfix reach the policies through the milter's macros
/// (`{tls_version}`, `{cipher}`, `{auth_authen}`): Postfix with a certificate and Dovecot's
/// authentication; one message in the clear, one over STARTTLS with AUTH.
#[test]
fn tls_and_auth_at_postfix_reach_the_policies() {
    let dir = temp_dir("inside-postfix-tls-auth");
    let auth_port = free_port();
    let _auth = dovecot_auth(&dir.join("dovecot"), auth_port, "alice", "secret");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mx.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let site = site("inside-postfix-tls-auth-site", 1000, |milter, _| {
        format!(
            "smtpd_milters = inet:127.0.0.1:{milter}\nmilter_default_action = tempfail\n\
             smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_security_level = may\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{auth_port}",
            cert = cert.display(),
            key = key.display()
        )
    });
    let Site { postfix_port, ref sink_dir, ref mta, .. } = site;
    let relay = site.relay.as_ref().expect("relay");

    assert!(send(postfix_port, &["bob@example.test"], "clear", "Hello.").starts_with("250"));
    let out = python(
        postfix_port,
        "import ssl\ns = smtplib.SMTP('127.0.0.1', PORT, timeout=60)\ns.ehlo('client.remote.test')\n\
         s.starttls(context=ssl._create_unverified_context())\ns.ehlo('client.remote.test')\n\
         s.login('alice', 'secret')\n\
         msg = 'From: alice@remote.test\\r\\nTo: bob@example.test\\r\\nSubject: sealed\\r\\n\\r\\nHello.\\r\\n'\n\
         print(s.sendmail('alice@remote.test', ['bob@example.test'], msg))\ns.quit()",
    );
    assert_eq!(out.trim(), "{}", "{}\n{}", mta.log(), log(&relay.dir));
    let mut got = None;
    wait_for("both messages at the next hop", Duration::from_secs(30), || {
        got = delivered(sink_dir, "clear").zip(delivered(sink_dir, "sealed"));
        got.is_some()
    });
    let ((clear, _), (sealed, _)) = got.expect("delivered");
    assert!(clear.contains("X-Probe-Session: tls=none; user=none\r\n"), "{clear}");
    assert!(sealed.contains("X-Probe-Session: tls=TLSv1."), "{sealed}");
    assert!(sealed.contains("; user=alice\r\n"), "{sealed}");
    // The relay's record of the transaction names the user, as for its own AUTH.
    assert!(log(&relay.dir).contains("user=\"alice\""), "{}", log(&relay.dir));
}

#[test]
fn a_postfix_with_sluice_as_its_policy_service() {
    let site = site("inside-postfix-policy", 2, |_, delegation| {
        format!("smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{delegation}, permit")
    });
    let Site { postfix_port, ref sink_dir, ref mta, .. } = site;
    let relay = site.relay.as_ref().expect("relay");

    // A tenant whose rcpt stage refuses: Sluice's reply, from Postfix.
    let reply = send(postfix_port, &["dave@closed.test"], "closed", "Hello.");
    assert!(
        reply.starts_with("550 5.7.1") && reply.ends_with("probe rejects"),
        "{reply}\n{}\n{}",
        log(&relay.dir),
        mta.log()
    );
    // A rate of two a minute for example.test: the third is deferred (within one minute: the
    // count must not be cut by the minute's end).
    let second =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() % 60;
    if second > 45 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
    let replies: Vec<String> =
        (0..3).map(|i| send(postfix_port, &["bob@example.test"], &format!("rate{i}"), "Hello.")).collect();
    assert!(replies[0].starts_with("250") && replies[1].starts_with("250"), "{replies:?}\n{}", mta.log());
    assert!(replies[2].starts_with("451 4.7.1") && replies[2].contains("rate"), "{replies:?}");
    // The early stages only: no message here, so nothing is changed in it.
    wait_for("the first two at the next hop", Duration::from_secs(30), || {
        delivered(sink_dir, "rate0").is_some() && delivered(sink_dir, "rate1").is_some()
    });
    let (text, _) = delivered(sink_dir, "rate0").expect("delivered");
    assert!(!text.contains("X-Sluice-Probe"), "{text}");

    // A reload that moves the policy server: the new address answers, the old one is closed.
    let moved = free_port();
    let config = relay.dir.join("sluice.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let old = format!("127.0.0.1:{}", site.delegation);
    std::fs::write(&config, text.replace(&old, &format!("127.0.0.1:{moved}"))).expect("config");
    wait_for("the policy server on its new address", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", moved)).is_ok()
    });
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", moved)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let request = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
                   client_address=192.0.2.7\nclient_name=unknown\nhelo_name=c.remote.test\n\
                   sender=alice@remote.test\nrecipient=dave@closed.test\ninstance=1.2.3\n\n";
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("request");
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut answer).expect("answer");
    assert_eq!(answer.trim(), "action=550 5.7.1 probe rejects");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", site.delegation)).is_err(),
        "the old address still accepts"
    );
}

/// Bytes that are not the milter protocol close that connection, and only it.
#[test]
fn a_broken_milter_connection_is_closed_and_the_server_goes_on() {
    use std::io::{Read, Write};
    let dir = temp_dir("inside-postfix-broken");
    let (milter, delegation, admin, sink_port) = (free_port(), free_port(), free_port(), free_port());
    let text = config(milter, delegation, admin, sink_port, "X-A: b").replace(
        &format!("listen = \"127.0.0.1:{milter}\"\n"),
        &format!("listen = \"127.0.0.1:{milter}\"\nidle_timeout_secs = 1\n"),
    );
    std::fs::write(dir.join("sluice.toml"), text).expect("config");
    let _relay = start(&dir, milter);
    for garbage in [&[0x7f, 0, 0, 0, b'B'][..], &[0, 0, 0, 1, b'Z'], &[0, 0, 0, 0]] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", milter)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(garbage).expect("write");
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).expect("closed, not timed out"), 0, "{garbage:?}");
    }
    // A connection silent past idle_timeout_secs (1 here) is closed.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", milter)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut rest = Vec::new();
    let waited = std::time::Instant::now();
    assert_eq!(stream.read_to_end(&mut rest).expect("closed, not timed out"), 0);
    assert!(waited.elapsed() < Duration::from_secs(5), "{:?}", waited.elapsed());

    // A negotiation as Postfix opens it.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", milter)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut packet = vec![0, 0, 0, 13, b'O'];
    for n in [6u32, 0x1ff, 0x1f_ffff] {
        packet.extend_from_slice(&n.to_be_bytes());
    }
    stream.write_all(&packet).expect("write");
    let mut answer = [0u8; 17];
    stream.read_exact(&mut answer).expect("negotiated");
    assert_eq!(&answer[..5], &[0, 0, 0, 13, b'O']);
    assert_eq!(u32::from_be_bytes([answer[5], answer[6], answer[7], answer[8]]), 6);
}
