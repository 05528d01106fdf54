//! Next hops the inside actually speaks: a real Dovecot LMTP server (Debian's
//! `dovecot-lmtpd`) delivering to Maildirs, over TCP and a Unix socket; a smarthost whose
//! certificate is verified (or not), that takes AUTH only over TLS.

mod relay_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_common::*;

fn support_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(name)
}

/// Dovecot in the foreground, LMTP only, on `port` and `DIR/run/lmtp`; its users are
/// `users` (full addresses, each perhaps followed by a space and userdb extra fields), their
/// Maildirs under `DIR/mail`, with the quota plugin on.
fn dovecot_lmtp(dir: &Path, port: u16, users: &[&str]) -> Proc {
    for sub in ["run", "state", "mail"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dovecot dirs");
    }
    // Mail is written as `nobody`.
    std::process::Command::new("chmod").arg("777").arg(dir.join("mail")).status().expect("chmod");
    let passwd: String = users
        .iter()
        .map(|entry| {
            let (u, extra) = entry.split_once(' ').unwrap_or((entry, ""));
            format!("{u}::65534:65534::{}/mail/{u}::{extra}\n", dir.display())
        })
        .collect();
    std::fs::write(dir.join("users"), passwd).expect("users");
    let d = dir.display();
    let config = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nprotocols = lmtp\n\
         listen = 127.0.0.1\nssl = no\nfirst_valid_uid = 1\nmail_location = maildir:~/Maildir\n\
         mail_plugins = quota\nplugin {{\n  quota = maildir:User quota\n}}\nlmtp_rcpt_check_quota = no\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
         \x20 unix_listener lmtp {{\n    mode = 0666\n  }}\n}}\n\
         service anvil {{\n  chroot =\n}}\n"
    );
    dovecot(dir, &config, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && dir.join("run/lmtp").exists()
    })
}

/// Messages in a Dovecot user's inbox.
fn inbox(dir: &Path, user: &str) -> Vec<String> {
    files(&dir.join("mail").join(user).join("Maildir/new"), "")
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("message"))
        .collect()
}

#[test]
fn dovecot_lmtp_gets_each_recipient_and_answers_each() {
    let dir = temp_dir("lmtp");
    let lmtp = free_port();
    let dv = dir.join("dovecot");
    // `full` has a 10-byte quota: LMTP refuses the message for it alone, after the data.
    let _dovecot = dovecot_lmtp(
        &dv,
        lmtp,
        &[
            "alice@tcp.test",
            "bob@tcp.test",
            "full@tcp.test userdb_quota_rule=*:storage=10B",
            "alice@unix.test",
            "alice@checked.test",
        ],
    );
    let socket = dv.join("run/lmtp");
    let r = relay(
        &dir,
        free_port(),
        &format!(
            "[relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 60\n\
             [[tenant]]\nname = \"tcp\"\ndomains = [\"tcp.test\"]\nnext_hop = \"lmtp:127.0.0.1:{lmtp}\"\n\
             [[tenant]]\nname = \"unix\"\ndomains = [\"unix.test\"]\nnext_hop = \"lmtp:unix:{}\"\n\
             [[tenant]]\nname = \"checked\"\ndomains = [\"checked.test\"]\nnext_hop = \"lmtp:unix:{}\"\n\
             recipients = \"verify\"\n",
            socket.display(),
            socket.display()
        ),
    );
    let out = python(
        r.port,
        "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\n\
         print(s.sendmail('sender@remote.test', ['alice@tcp.test', 'carol@tcp.test', 'full@tcp.test', 'bob@tcp.test'], 'Subject: tcp\\r\\n\\r\\nx\\r\\n'))\n\
         print(s.sendmail('sender@remote.test', ['alice@unix.test'], 'Subject: unix\\r\\n\\r\\nx\\r\\n'))\n\
         s.docmd('MAIL FROM:<sender@remote.test>')\n\
         for r in ['alice@checked.test', 'carol@checked.test']:\n\
         \x20   print(s.docmd('RCPT TO:<' + r + '>')[0])\n\
         s.quit()\n",
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["{}", "{}", "250", "550"], "{out}");
    wait_for("LMTP deliveries", Duration::from_secs(20), || {
        inbox(&dv, "alice@tcp.test").len() == 1
            && inbox(&dv, "bob@tcp.test").len() == 1
            && inbox(&dv, "alice@unix.test").len() == 1
    });
    assert!(inbox(&dv, "alice@tcp.test")[0].contains("Subject: tcp"));
    assert!(inbox(&dv, "alice@unix.test")[0].contains("Subject: unix"));
    // Carol's refusal (at RCPT) and full's (after the data: its quota) are theirs alone,
    // final, and bounce to nobody (inbound mail).
    wait_for("the refusals", Duration::from_secs(20), || {
        log(&dir).matches("no bounce to its unauthenticated sender").count() == 2
    });
    assert!(inbox(&dv, "full@tcp.test").is_empty());
    wait_for("the queue to empty", Duration::from_secs(20), || {
        files(&dir.join("spool/queue"), ".mail").is_empty()
    });
    let log = log(&dir);
    assert!(log.contains("carol@tcp.test") && log.contains("5.1.1"), "{log}");
    assert!(log.contains("full@tcp.test") && log.contains("5.2.2"), "{log}");
}

/// A relay whose trusted clients (loopback) send everything else to the smarthost on `port`
/// with `tls` (and `extra` `[delivery]` keys).
fn smarthost_relay(dir: &Path, port: u16, tls: &str, extra: &str) -> Relay {
    relay(
        dir,
        free_port(),
        &format!(
            "[delivery]\nretry_base_secs = 60\nsmarthost = \"smtp:127.0.0.1:{port}\"\nsmarthost_tls = \"{tls}\"\n{extra}\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"maildir:maildir\"\n"
        ),
    )
}

fn send_out(port: u16) {
    let out = python(
        port,
        "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('inside.test')\n\
         print(s.sendmail('a@example.test', ['b@elsewhere.test'], 'Subject: out\\r\\n\\r\\nx\\r\\n'))\ns.quit()\n",
    );
    assert_eq!(out.trim(), "{}");
}

#[test]
fn smarthost_tls_modes_and_auth() {
    let self_signed = [support_file("relay-cert.pem"), support_file("relay-key.pem")];
    let signed = [support_file("hop-cert.pem"), support_file("hop-key.pem")];
    let ca = support_file("ca-cert.pem");
    let tls_args = |pair: &[PathBuf; 2]| {
        vec!["--tls".to_string(), pair[0].display().to_string(), pair[1].display().to_string()]
    };
    // (case, sink arguments, smarthost_tls, extra [delivery] keys, delivered?)
    let cases: Vec<(&str, Vec<String>, &str, String, bool)> = vec![
        ("self-signed, opportunistic", tls_args(&self_signed), "opportunistic", String::new(), true),
        (
            "self-signed, verify",
            tls_args(&self_signed),
            "verify",
            format!("smarthost_ca_file = \"{}\"\n", ca.display()),
            false,
        ),
        (
            "signed, verify against the CA",
            tls_args(&signed),
            "verify",
            format!("smarthost_ca_file = \"{}\"\n", ca.display()),
            true,
        ),
        ("signed, verify against the system's roots", tls_args(&signed), "verify", String::new(), false),
        ("no STARTTLS, required", Vec::new(), "required", String::new(), false),
        ("no STARTTLS, opportunistic", Vec::new(), "opportunistic", String::new(), true),
    ];
    for (case, sink_args, tls, extra, delivered) in cases {
        let dir = temp_dir(&format!("smarthost-{}", case.replace([' ', ',', '\''], "-")));
        let sink_port = free_port();
        let args: Vec<&str> = sink_args.iter().map(String::as_str).collect();
        let _sink = sink(sink_port, &dir.join("sink"), &args);
        let r = smarthost_relay(&dir, sink_port, tls, &extra);
        send_out(r.port);
        if delivered {
            wait_for(case, Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
        } else {
            wait_for(case, Duration::from_secs(20), || log(&dir).contains("delivery deferred"));
            assert!(files(&dir.join("sink"), ".eml").is_empty(), "{case}: delivered");
            let log = log(&dir);
            assert!(log.contains("4.7.5"), "{case}: {log}");
        }
    }

    // AUTH, only over verified TLS; the credentials file is read at each connection.
    let dir = temp_dir("smarthost-auth");
    let sink_port = free_port();
    let mut args = tls_args(&signed);
    args.extend(["--auth".to_string(), "relay:s3cret".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _sink = sink(sink_port, &dir.join("sink"), &args);
    std::fs::write(dir.join("smarthost.auth"), "# the smarthost's account\nrelay:s3cret\n")
        .expect("auth file");
    let r = smarthost_relay(
        &dir,
        sink_port,
        "verify",
        &format!("smarthost_ca_file = \"{}\"\nsmarthost_auth_file = \"smarthost.auth\"\n", ca.display()),
    );
    send_out(r.port);
    wait_for("the authenticated delivery", Duration::from_secs(20), || {
        files(&dir.join("sink"), ".env").len() == 1
    });
    let env = std::fs::read_to_string(&files(&dir.join("sink"), ".env")[0]).expect("env");
    assert!(env.contains("\"auth\": \"relay\"") && env.contains("\"tls\": true"), "{env}");

    // AUTH without TLS is refused by `sluice check`; a smarthost that is not verified is warned of.
    std::fs::write(
        dir.join("sluice.toml"),
        "[delivery]\nsmarthost = \"smtp:127.0.0.1:25\"\nsmarthost_auth_file = \"smarthost.auth\"\n\
         [[tenant]]\nname = \"e\"\nnext_hop = \"maildir:m\"\n",
    )
    .expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(!ok && text.contains("delivery.smarthost_auth_file") && text.contains("only over TLS"), "{text}");
    std::fs::write(
        dir.join("sluice.toml"),
        "[state]\nbackend = \"memory\"\n[delivery]\nsmarthost = \"smtp:127.0.0.1:25\"\n\
         [[tenant]]\nname = \"e\"\nnext_hop = \"maildir:m\"\n",
    )
    .expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(ok && text.contains("warning: delivery.smarthost_tls"), "{text}");
}
