//! Recipient validation at RCPT, end to end: a tenant with a recipients file (reloaded when
//! it changes, the last good list kept when it cannot be read), a tenant whose next hop (a
//! real SMTP server, `tests/support/sink.py`) is asked, one whose next hop is down; and no
//! bounce to the sender of inbound mail the inside refuses later.

mod relay_common;

use std::time::Duration;

use relay_common::*;

fn rcpt_codes(port: u16, recipients: &[&str]) -> Vec<String> {
    let list = recipients.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(",");
    let out = python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\n\
             s.docmd('MAIL FROM:<alice@remote.test>')\n\
             for r in [{list}]:\n\
             \x20   code, text = s.docmd('RCPT TO:<' + r + '>')\n\
             \x20   print(code, text.decode().split(' ')[0])\n\
             s.quit()\n"
        ),
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn unknown_recipients_get_550_and_the_inside_s_refusals_no_bounce() {
    let dir = temp_dir("recipients");
    let sink_port = free_port();
    // The inside knows no `gone` user.
    let _sink = sink(sink_port, &dir.join("sink"), &["--reject-rcpt", "gone"]);
    std::fs::write(
        dir.join("users"),
        "# filed.test's users\nbob@filed.test\ngone@filed.test\nnot an address\n@all.test\n",
    )
    .expect("users");
    let down = free_port();
    let r = relay(
        &dir,
        free_port(),
        &format!(
            "[state]\nbackend = \"memory\"\n\
             [relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
             smarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant]]\nname = \"filed\"\ndomains = [\"filed.test\", \"all.test\"]\n\
             next_hop = \"smtp:127.0.0.1:{sink_port}\"\nrecipients = \"file:users\"\n\
             [[tenant]]\nname = \"verified\"\ndomains = [\"verified.test\", \"bücher.test\"]\n\
             next_hop = \"smtp:127.0.0.1:{sink_port}\"\nrecipients = \"verify\"\n\
             [[tenant]]\nname = \"down\"\ndomains = [\"down.test\"]\nnext_hop = \"smtp:127.0.0.1:{down}\"\n\
             recipients = \"verify\"\nverify_timeout_secs = 2\n"
        ),
    );
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(ok, "{text}");
    assert!(text.contains("line 4: no @domain: \"not an address\""), "{text}");

    let codes = rcpt_codes(
        r.port,
        &[
            "bob@filed.test",
            "BOB@Filed.Test",
            "nobody@filed.test",
            "anyone@all.test",
            "postmaster@filed.test",
        ],
    );
    assert_eq!(codes, ["250 2.1.5", "250 2.1.5", "550 5.1.1", "250 2.1.5", "250 2.1.5"]);
    let codes = rcpt_codes(r.port, &["alice@verified.test", "gone@verified.test", "gone@verified.test"]);
    assert_eq!(codes, ["250 2.1.5", "550 5.1.1", "550 5.1.1"]);
    // The Unicode and ASCII forms of a domain are one tenant's.
    let codes = rcpt_codes(r.port, &["karl@xn--bcher-kva.test", "gone@xn--bcher-kva.test"]);
    assert_eq!(codes, ["250 2.1.5", "550 5.1.1"]);
    let codes = rcpt_codes(r.port, &["alice@down.test"]);
    assert_eq!(codes, ["450 4.1.1"]);
    // The probes left nothing at the next hop.
    assert!(files(&dir.join("sink"), ".eml").is_empty());

    // A listed user the inside no longer knows: accepted, refused by the inside, no bounce.
    let out = python(
        r.port,
        "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\n\
         print(s.sendmail('forged@victim.test', ['gone@filed.test', 'bob@filed.test'], 'Subject: hi\\r\\n\\r\\nx\\r\\n'))\n\
         s.quit()\n",
    );
    assert_eq!(out.trim(), "{}");
    wait_for("the refusal", Duration::from_secs(20), || {
        log(&dir).contains("no bounce to its unauthenticated sender")
    });
    wait_for("the queue to empty", Duration::from_secs(20), || {
        files(&dir.join("spool/queue"), ".mail").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let delivered = files(&dir.join("sink"), ".eml");
    assert_eq!(delivered.len(), 1, "bob's copy only, and no bounce");
    for file in delivered {
        let text = std::fs::read_to_string(file).expect("message");
        assert!(!text.contains("Undelivered Mail"), "{text}");
    }

    // The file changes: the new list is used; then it cannot be read: the last good one stays.
    std::fs::write(dir.join("users"), "bob@filed.test\nnew@filed.test\n").expect("users");
    wait_for("the new list", Duration::from_secs(20), || {
        rcpt_codes(r.port, &["new@filed.test"]) == ["250 2.1.5"]
    });
    std::fs::remove_file(dir.join("users")).expect("remove");
    wait_for("the failed read", Duration::from_secs(20), || log(&dir).contains("last good list"));
    assert_eq!(rcpt_codes(r.port, &["new@filed.test", "gone@filed.test"]), ["250 2.1.5", "550 5.1.1"]);
    let metrics_free = log(&dir);
    assert!(metrics_free.contains("recipient unknown"), "{metrics_free}");
}

#[test]
fn a_tenant_may_bounce_inbound_mail() {
    let dir = temp_dir("bounce-inbound");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &["--reject-rcpt", "gone"]);
    let r = relay(
        &dir,
        free_port(),
        &format!(
            "[relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
             smarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\n\
             next_hop = \"smtp:127.0.0.1:{sink_port}\"\nbounce_inbound = \"always\"\n"
        ),
    );
    let out = python(
        r.port,
        "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\n\
         print(s.sendmail('sender@remote.test', ['gone@example.test'], 'Subject: hi\\r\\n\\r\\nx\\r\\n'))\n\
         s.quit()\n",
    );
    assert_eq!(out.trim(), "{}");
    wait_for("the bounce", Duration::from_secs(30), || {
        files(&dir.join("sink"), ".eml")
            .iter()
            .any(|f| std::fs::read_to_string(f).unwrap_or_default().contains("Undelivered Mail"))
    });
}

/// Probes keep the tenant's TLS mode: verified TLS when its next hop's is `verify`, and no
/// probe in plaintext when TLS is required and not offered.
#[test]
fn verify_probes_use_the_next_hop_s_tls() {
    let dir = temp_dir("recipients-tls");
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let (tls_port, plain_port) = (free_port(), free_port());
    let cert = support.join("hop-cert.pem").display().to_string();
    let key = support.join("hop-key.pem").display().to_string();
    let _tls = sink(tls_port, &dir.join("tls"), &["--reject-rcpt", "gone", "--tls", &cert, &key]);
    let _plain = sink(plain_port, &dir.join("plain"), &[]);
    let r = relay(
        &dir,
        free_port(),
        &format!(
            "[relay]\ntrusted_networks = []\n\
             [[tenant]]\nname = \"secure\"\ndomains = [\"secure.test\"]\nnext_hop = \"smtp:127.0.0.1:{tls_port}\"\n\
             recipients = \"verify\"\nnext_hop_tls = \"verify\"\nnext_hop_ca_file = \"{}\"\n\
             [[tenant]]\nname = \"plain\"\ndomains = [\"plain.test\"]\nnext_hop = \"smtp:127.0.0.1:{plain_port}\"\n\
             recipients = \"verify\"\nnext_hop_tls = \"required\"\n",
            support.join("ca-cert.pem").display()
        ),
    );
    assert_eq!(rcpt_codes(r.port, &["alice@secure.test", "gone@secure.test"]), ["250 2.1.5", "550 5.1.1"]);
    assert_eq!(rcpt_codes(r.port, &["alice@plain.test"]), ["450 4.1.1"]);
    let log = log(&dir);
    assert!(log.contains("TLS is required"), "{log}");
}
