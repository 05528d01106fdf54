use super::*;
use crate::smtp::command::parse;

/// `local.example` is tenant 0's, `other-tenant.example` tenant 1's.
struct Domains;

impl LocalDomains for Domains {
    fn tenant_of(&self, domain: &str) -> Option<usize> {
        match domain {
            "local.example" => Some(0),
            "other-tenant.example" => Some(1),
            _ => None,
        }
    }

    fn postmaster_domain(&self) -> Option<&str> {
        Some("local.example")
    }
}

fn session(relay: bool) -> Session {
    session_with(relay, 10)
}

fn session_with(relay: bool, max_errors: u32) -> Session {
    Session::new(
        SessionLimits { hostname: "mx.test".into(), max_message_bytes: 1000, max_recipients: 2, max_errors },
        relay,
    )
}

fn run(s: &mut Session, line: &str) -> Step {
    match parse(line.as_bytes()) {
        Ok(cmd) => {
            let step = s.command(cmd, &Domains);
            match &step {
                Step::Helo { name, extended } => {
                    s.reset();
                    s.greeted(name.clone(), *extended)
                }
                Step::Reset => s.reset(),
                Step::Mail(from) => s.mail_accepted(from.clone()),
                Step::Rcpt(to, dest) => s.rcpt_accepted(to.clone(), dest.clone()),
                _ => {}
            }
            step
        }
        Err(e) => s.bad_command(&e),
    }
}

fn code(step: &Step) -> u16 {
    match step {
        Step::Reply(r) | Step::Close(r) => r.code,
        Step::Helo { .. } | Step::Mail(_) | Step::Rcpt(..) | Step::Reset => 250,
        Step::Data => 354,
        Step::StartTls => 220,
        Step::Chunk { .. } => 250,
        Step::SkipChunk { reply, .. } => reply.code,
        Step::Auth { .. } => 334,
    }
}

#[test]
fn a_transaction() {
    let mut s = session(false);
    assert_eq!(code(&run(&mut s, "EHLO client.example")), 250);
    assert_eq!(code(&run(&mut s, "MAIL FROM:<a@remote.example> SIZE=100")), 250);
    assert_eq!(s.declared_size(), Some(100));
    // The relay resets the session before it accepts a new MAIL: the size is kept.
    s.reset();
    s.mail_accepted(EnvelopeAddress {
        address: "a@remote.example".into(),
        params: vec![EsmtpParam { name: "SIZE".into(), value: Some("100".into()) }],
    });
    assert_eq!(s.declared_size(), Some(100));
    assert_eq!(
        run(&mut s, "RCPT TO:<b@Local.Example>"),
        Step::Rcpt(EnvelopeAddress::plain("b@local.example"), Destination::Local(0))
    );
    assert_eq!(code(&run(&mut s, "DATA")), 354);
}

#[test]
fn sequence_and_limits() {
    let mut s = session(false);
    assert_eq!(code(&run(&mut s, "MAIL FROM:<a@remote.example>")), 503);
    run(&mut s, "EHLO c.example");
    assert_eq!(code(&run(&mut s, "RCPT TO:<b@local.example>")), 503);
    assert_eq!(code(&run(&mut s, "MAIL FROM:<a@remote.example> SIZE=5000")), 552);
    run(&mut s, "MAIL FROM:<a@remote.example>");
    assert_eq!(code(&run(&mut s, "DATA")), 554);
    run(&mut s, "RCPT TO:<b@local.example>");
    run(&mut s, "RCPT TO:<c@local.example>");
    assert_eq!(code(&run(&mut s, "RCPT TO:<d@local.example>")), 452);
    assert_eq!(code(&run(&mut s, "VRFY b")), 252);
}

#[test]
fn never_an_open_relay() {
    let mut s = session_with(false, 6);
    run(&mut s, "HELO c.example");
    run(&mut s, "MAIL FROM:<a@remote.example>");
    for (rcpt, expected) in [
        ("<victim@elsewhere.example>", 554),
        ("<victim%elsewhere.example@local.example>", 554),
        ("<elsewhere.example!victim@local.example>", 554),
        ("<@local.example:victim@elsewhere.example>", 554),
        ("<\"victim@elsewhere.example\"@local.example>", 554),
    ] {
        assert_eq!(code(&run(&mut s, &format!("RCPT TO:{rcpt}"))), expected, "{rcpt}");
    }
    // The sixth error of the session hangs up.
    assert!(matches!(run(&mut s, "RCPT TO:<victim@[192.0.2.1]>"), Step::Close(r) if r.code == 421));
}

#[test]
fn trusted_clients_relay() {
    let mut s = session(true);
    run(&mut s, "EHLO c.example");
    run(&mut s, "MAIL FROM:<a@local.example>");
    assert_eq!(
        run(&mut s, "RCPT TO:<x@elsewhere.example>"),
        Step::Rcpt(EnvelopeAddress::plain("x@elsewhere.example"), Destination::Relay)
    );
    // Routing tricks stay refused even for them.
    assert_eq!(code(&run(&mut s, "RCPT TO:<x%y@local.example>")), 554);
}

#[test]
fn starttls_and_auth_rules() {
    let mut s = session(false);
    s.offer_tls();
    s.offer_auth(false);
    run(&mut s, "EHLO c.example");
    let text = String::from_utf8(s.greeting_reply("c.example")).unwrap();
    assert!(text.contains("STARTTLS") && !text.contains("AUTH"), "{text}");
    // AUTH before TLS: refused with the reason.
    assert_eq!(code(&run(&mut s, "AUTH PLAIN AGEAYg==")), 530);
    assert_eq!(run(&mut s, "STARTTLS"), Step::StartTls);
    s.tls_started();
    // The session starts over: EHLO again, and now AUTH is offered.
    assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b.example>")), 503);
    run(&mut s, "EHLO c.example");
    let text = String::from_utf8(s.greeting_reply("c.example")).unwrap();
    assert!(!text.contains("STARTTLS") && text.contains("AUTH PLAIN LOGIN"), "{text}");
    assert_eq!(code(&run(&mut s, "STARTTLS")), 503);
    assert_eq!(code(&run(&mut s, "AUTH CRAM-MD5")), 504);
    assert!(matches!(run(&mut s, "AUTH LOGIN"), Step::Auth { .. }));
    s.authenticated("alice".into());
    // Authenticated clients relay.
    run(&mut s, "MAIL FROM:<a@local.example>");
    assert!(matches!(run(&mut s, "RCPT TO:<x@elsewhere.example>"), Step::Rcpt(_, Destination::Relay)));
}

#[test]
fn chunking() {
    let mut s = session(false);
    run(&mut s, "EHLO c.example");
    assert!(matches!(run(&mut s, "BDAT 10"), Step::SkipChunk { size: 10, reply } if reply.code == 503));
    run(&mut s, "MAIL FROM:<a@remote.example>");
    assert!(matches!(run(&mut s, "BDAT 10"), Step::SkipChunk { reply, .. } if reply.code == 554));
    run(&mut s, "RCPT TO:<b@local.example>");
    assert_eq!(run(&mut s, "BDAT 10"), Step::Chunk { size: 10, last: false });
    assert_eq!(code(&run(&mut s, "DATA")), 503);
    assert_eq!(run(&mut s, "BDAT 0 LAST"), Step::Chunk { size: 0, last: true });
}

#[test]
fn ehlo_advertises() {
    let mut s = session(false);
    run(&mut s, "EHLO c.example");
    let text = String::from_utf8(s.greeting_reply("c.example")).unwrap();
    for ext in ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"] {
        assert!(text.contains(ext), "{text}");
    }
    assert!(text.ends_with("250 CHUNKING\r\n"));
}
