//! Sender authentication end to end: mail from the internet checked against a real name
//! server and labelled with `Authentication-Results`; the `dmarc` policy (interface 0.2.0)
//! refusing a forged message; mail a tenant sends out signed, and the signature checked by
//! another implementation (dkimpy); bounces only to authenticated senders.

mod relay_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use relay_common::*;

fn vectors(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dkim_vectors.py");
    let out = Command::new("python3").arg(script).arg(dir).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn send_file(port: u16, from: &str, to: &str, file: &Path) -> String {
    python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('mail.elsewhere.test')\n\
             try:\n\
             \x20   print(s.sendmail('{from}', ['{to}'], open('{}', 'rb').read()))\n\
             except smtplib.SMTPDataError as e:\n\
             \x20   print(e.smtp_code, e.smtp_error.decode())\n\
             s.quit()\n",
            file.display()
        ),
    )
}

#[test]
fn inbound_mail_is_checked_labelled_and_enforced() {
    let dir = temp_dir("sender-inbound");
    let vectors_dir = dir.join("vectors");
    vectors(&vectors_dir);
    let (sink_port, dns_port) = (free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let _dns =
        support("dns.py", &[dns_port.to_string(), vectors_dir.join("fixture.dns").display().to_string()]);
    let r = relay_with(
        &dir,
        free_port(),
        "authserv_id = \"mx.relay.test\"\n",
        &format!(
            "[dns]\nnameservers = [\"127.0.0.1:{dns_port}\"]\n\
             [relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant.policy]]\npath = \"{}\"\n",
            sluice_test_artifacts::DMARC
        ),
    );
    // The author's own signature: DKIM passes aligned, so DMARC passes (SPF says nothing for
    // the envelope's domain, which publishes no record).
    let out = send_file(r.port, "olive@elsewhere.test", "bob@example.test", &vectors_dir.join("rsa.eml"));
    assert_eq!(out.trim(), "{}");
    // Changed in transit (or forged): DKIM fails, origin.test says p=reject.
    let out =
        send_file(r.port, "olive@elsewhere.test", "bob@example.test", &vectors_dir.join("tampered-body.eml"));
    assert!(out.starts_with("550 5.7.1 Unauthenticated mail from origin.test"), "{out}");
    wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
    let delivered = std::fs::read_to_string(&files(&dir.join("sink"), ".eml")[0]).expect("message");
    assert!(
        delivered
            .contains("Authentication-Results: mx.relay.test;\r\n\tspf=none smtp.mailfrom=elsewhere.test;"),
        "{delivered}"
    );
    assert!(
        delivered.contains("dkim=pass header.d=origin.test header.s=rsa header.a=rsa-sha256"),
        "{delivered}"
    );
    assert!(delivered.contains("dmarc=pass (p=reject) header.from=origin.test"), "{delivered}");
    // Our field comes right after our Received, above the client's.
    let received = delivered.find("Received: from mail.elsewhere.test").expect("received");
    let results = delivered.find("Authentication-Results: mx.relay.test").expect("results");
    let signature = delivered.find("DKIM-Signature").expect("signature");
    assert!(received < results && results < signature, "{delivered}");
    // The refusal is in the log with its policy.
    assert!(log(&dir).contains("outcome=\"reject\" score=3.0 decided_by=\"dmarc\""), "{}", log(&dir));
}

/// The TXT value of a `sluice dkim keygen` zone line.
fn record_of(zone_line: &str) -> String {
    zone_line.split('"').skip(1).step_by(2).collect()
}

fn keygen(dir: &Path, selector: &str, algorithm: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--key",
        ])
        .arg(dir.join(format!("{selector}.pem")))
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(line.starts_with(&format!("{selector}._domainkey.example.test. IN TXT (")), "{line}");
    record_of(&line)
}

/// An RSA key written by Python's cryptography package in PKCS#1 (`BEGIN RSA PRIVATE KEY`);
/// its DNS record.
fn pkcs1_key(path: &Path) -> String {
    let script = format!(
        "import base64\nfrom cryptography.hazmat.primitives import serialization as s\n\
         from cryptography.hazmat.primitives.asymmetric import rsa\n\
         k = rsa.generate_private_key(public_exponent=65537, key_size=2048)\n\
         open('{}', 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()))\n\
         spki = k.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)\n\
         print('v=DKIM1; k=rsa; p=' + base64.b64encode(spki).decode())\n",
        path.display()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(path).expect("key").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn outbound_mail_is_signed_and_dkimpy_verifies_it() {
    // Keys from keygen (PKCS#8), and an RSA key in PKCS#1 made by another tool.
    for algorithm in ["rsa", "ed25519", "rsa-pkcs1"] {
        let dir = temp_dir(&format!("sender-outbound-{algorithm}"));
        let record = match algorithm {
            "rsa-pkcs1" => pkcs1_key(&dir.join("s1.pem")),
            _ => keygen(&dir, "s1", algorithm),
        };
        let sink_port = free_port();
        let _sink = sink(sink_port, &dir.join("sink"), &[]);
        let r = relay(
            &dir,
            free_port(),
            &format!(
                "[relay]\ntrusted_networks = []\n[delivery]\nsmarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
                 [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
                 outbound_networks = [\"127.0.0.0/8\"]\n\
                 [tenant.dkim]\ndomain = \"example.test\"\nselector = \"s1\"\nkey = \"s1.pem\"\n"
            ),
        );
        let out = python(
            r.port,
            &format!(
                "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@example.test', ['dave@remote.test'], '{MESSAGE}'.replace('alice@remote.test', 'alice@example.test')))\ns.quit()\n"
            ),
        );
        assert_eq!(out.trim(), "{}");
        wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
        let file = files(&dir.join("sink"), ".eml")[0].clone();
        let delivered = std::fs::read_to_string(&file).expect("message");
        assert!(delivered.starts_with("DKIM-Signature: "), "{delivered}");
        assert!(
            !delivered.contains("Authentication-Results"),
            "outbound mail is signed, not checked: {delivered}"
        );
        // dkimpy checks it, with the record keygen printed; and refuses it once changed.
        let verify = format!(
            "import sys, os\nsys.path = [p for p in sys.path if not p.endswith('support')]\nimport dkim\n\
             msg = open('{}', 'rb').read()\n\
             dns = lambda name, timeout=5: b'{record}' if name == b's1._domainkey.example.test.' else None\n\
             print(dkim.verify(msg, dnsfunc=dns), dkim.verify(msg.replace(b'noon', b'one'), dnsfunc=dns))\n\
             extra = b'From: mallory@evil.test\\r\\n' + msg\n\
             print(dkim.verify(extra, dnsfunc=dns))\n",
            file.display()
        );
        let out = Command::new("python3").arg("-c").arg(&verify).output().expect("python3");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "True False\nFalse",
            "{algorithm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bounces_go_only_to_authenticated_senders() {
    let dir = temp_dir("sender-bounces");
    let vectors_dir = dir.join("vectors");
    vectors(&vectors_dir);
    let (sink_port, dns_port) = (free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &["--reject-rcpt", "gone"]);
    let _dns =
        support("dns.py", &[dns_port.to_string(), vectors_dir.join("fixture.dns").display().to_string()]);
    let r = relay(
        &dir,
        free_port(),
        &format!(
            "[dns]\nnameservers = [\"127.0.0.1:{dns_port}\"]\n\
             [relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
             smarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n"
        ),
    );
    // Signed by its author's domain (the default `bounce_inbound = "authenticated"`): bounced.
    let out = send_file(r.port, "olive@origin.test", "gone@example.test", &vectors_dir.join("rsa.eml"));
    assert_eq!(out.trim(), "{}");
    // Unsigned, from a domain that says nothing: no bounce.
    let out = send_file(
        r.port,
        "someone@elsewhere.test",
        "gone@example.test",
        &vectors_dir.join("tampered-body.eml"),
    );
    assert_eq!(out.trim(), "{}");
    wait_for("the bounce and the suppression", Duration::from_secs(30), || {
        log(&dir).contains("no bounce to its unauthenticated sender")
            && files(&dir.join("sink"), ".eml").iter().any(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                text.contains("Undelivered Mail") && text.contains("olive@origin.test")
            })
    });
    std::thread::sleep(Duration::from_secs(2));
    let bounces = files(&dir.join("sink"), ".eml")
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap_or_default().contains("Undelivered Mail"))
        .count();
    assert_eq!(bounces, 1);
}

#[test]
fn a_bad_signing_key_is_refused_by_name() {
    let dir = temp_dir("sender-bad-key");
    let config = |key: &str| {
        format!(
            "[server]\nhostname = \"relay.test\"\n[spool]\ndir = \"spool\"\n\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"maildir:mail\"\n\
             [tenant.dkim]\ndomain = \"example.test\"\nselector = \"s1\"\nkey = \"{key}\"\n"
        )
    };
    std::fs::write(dir.join("sluice.toml"), config("missing.pem")).expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(!ok && text.contains("tenant example: DKIM key") && text.contains("missing.pem"), "{text}");
    std::fs::write(dir.join("junk.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .expect("junk");
    std::fs::write(dir.join("sluice.toml"), config("junk.pem")).expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(!ok && text.contains("junk.pem"), "{text}");
    // A weak RSA key (openssl makes what the relay must refuse to sign with).
    let out = Command::new("openssl").args(["genrsa", "-out"]).arg(dir.join("weak.pem")).arg("768").output();
    if out.is_ok_and(|o| o.status.success()) {
        std::fs::write(dir.join("sluice.toml"), config("weak.pem")).expect("config");
        let (ok, text) = sluice(&dir, &["check"]);
        assert!(!ok && text.contains("768 bits is too weak"), "{text}");
    }
    // The edge sends nothing out: it has no key.
    std::fs::write(
        dir.join("sluice.toml"),
        "[server]\nhostname = \"relay.test\"\n[spool]\ndir = \"spool\"\n[edge.dkim]\ndomain = \"a.test\"\nselector = \"s\"\nkey = \"k.pem\"\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"maildir:mail\"\n",
    )
    .expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(!ok && text.contains("edge.dkim"), "{text}");
}
