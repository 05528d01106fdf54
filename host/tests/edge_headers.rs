//! The headers the relay owns, end to end: a client's own spam verdicts and our
//! authentication results never reach the inside, and a looping message is refused.

mod relay_common;

use std::time::Duration;

use relay_common::*;

#[test]
fn forged_verdicts_are_removed_and_loops_refused() {
    let dir = temp_dir("owned-headers");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = relay_with(&dir, free_port(), "authserv_id = \"mx.relay.test\"\n", &inbound(sink_port));
    let forged = "X-Spam-Flag: NO\\r\\nX-Spam-Score: -100\\r\\nX-Spam-Status: No\\r\\n\
                  Authentication-Results: mx.relay.test; spf=pass smtp.mailfrom=remote.test\\r\\n\
                  Authentication-Results: elsewhere.test; dkim=pass\\r\\nSubject: trust me\\r\\n\\r\\nbody\\r\\n";
    let looping = "Received: from a by b; now\\r\\n".repeat(51) + "Subject: loop\\r\\n\\r\\nbody\\r\\n";
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\n\
             print(s.sendmail('alice@remote.test', ['bob@example.test'], '{forged}'))\n\
             try:\n\
             \x20   s.sendmail('alice@remote.test', ['bob@example.test'], '{looping}')\n\
             except smtplib.SMTPDataError as e:\n\
             \x20   print(e.smtp_code, e.smtp_error.decode())\n\
             s.quit()\n"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "{}");
    assert!(lines[1].starts_with("554 5.4.6"), "{out}");
    wait_for("delivery", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 1);
    let delivered = std::fs::read_to_string(&files(&dir.join("sink"), ".eml")[0]).expect("message");
    assert!(!delivered.contains("X-Spam-Flag: NO") && !delivered.contains("-100"), "{delivered}");
    assert!(!delivered.contains("X-Spam-Status: No"), "{delivered}");
    assert!(!delivered.contains("mx.relay.test; spf=pass"), "{delivered}");
    assert!(delivered.contains("Authentication-Results: elsewhere.test; dkim=pass"), "{delivered}");
    assert!(delivered.contains("Subject: trust me"), "{delivered}");
}
