//! Whole sessions through the conversation, without sockets or policies: bytes in, actions
//! out. (Sessions with policies: `host/tests/tenant_stages.rs`; over a duplex stream through
//! the listener: `host/tests/session_over_duplex.rs`.)

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::Config;

/// A snapshot of `config` (with the test server settings) whose tenants have no policies.
fn snapshot(config: &str) -> Arc<Snapshot> {
    let text = format!(
        "[server]\nhostname = \"relay.test\"\nmax_message_bytes = 1000\nmax_recipients = 3\nmax_errors = 5\n{config}"
    );
    let config = Config::parse(&text, "test", std::path::PathBuf::new()).expect("config");
    Arc::new(Snapshot::unloaded(config, None, None))
}

const TWO_TENANTS: &str = "[relay]\ntrusted_networks = []\n\
    [[tenant]]\nname = \"a\"\ndomains = [\"a.test\"]\nnext_hop = \"maildir:m\"\n\
    [[tenant]]\nname = \"b\"\ndomains = [\"b.test\"]\nnext_hop = \"maildir:m\"\nmax_messages_per_minute = 1\n";

/// Gates that count and can refuse.
#[derive(Default)]
struct Counting {
    rates: Mutex<Vec<(String, bool)>>,
    locked: bool,
    failures: Mutex<u32>,
}

impl Gates for Counting {
    fn storage_refusal(&self, declared: Option<usize>) -> Option<Reply> {
        declared.filter(|d| *d == 999).map(|_| reply::INSUFFICIENT_STORAGE)
    }
    fn message_rate(&self, tenant: &str, _: u32, take: bool) -> bool {
        let mut rates = self.rates.lock().unwrap();
        let taken = rates.iter().filter(|(t, took)| t == tenant && *took).count();
        rates.push((tenant.to_string(), take));
        taken < 1
    }
    fn auth_locked(&self, _: IpAddr, _: u32, _: Duration) -> bool {
        self.locked
    }
    fn auth_failed(&self, _: IpAddr, _: Duration) {
        *self.failures.lock().unwrap() += 1;
    }
}

/// What a session did: everything sent, the stored messages, the records, whether it closed.
#[derive(Default)]
struct Seen {
    sent: String,
    stored: Vec<StoreRequest>,
    records: Vec<TransactionRecord>,
    passwords: Vec<(String, String)>,
    paused: bool,
    tls: bool,
    closed: bool,
    /// Messages whose sender was to be checked.
    checked: Vec<SenderRequest>,
}

/// Drive `conversation` with `input` handed over in pieces of `piece` bytes; passwords are
/// right when they are `secret`.
fn drive(conversation: &mut Conversation, input: &[u8], piece: usize) -> Seen {
    let mut seen = Seen::default();
    let mut chunks = input.chunks(piece.max(1));
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        match conversation.next_action() {
            Action::Send(bytes) => seen.sent.push_str(&String::from_utf8_lossy(&bytes)),
            Action::Read { .. } => {
                if buffer.is_empty() {
                    match chunks.next() {
                        Some(chunk) => buffer.extend_from_slice(chunk),
                        None => {
                            conversation.client_closed();
                            continue;
                        }
                    }
                }
                let used = conversation.receive(&buffer);
                buffer.drain(..used);
            }
            Action::Stage(_) => unreachable!("no policies, no stages"),
            Action::Store(request) => {
                seen.stored.push(*request);
                conversation.stored(Ok(()));
            }
            Action::CheckPassword { user, password } => {
                let ok = password == "secret";
                seen.passwords.push((user, password));
                conversation.password_checked(ok);
            }
            Action::Pause(_) => seen.paused = true,
            Action::CheckRate { .. } => conversation.rate_checked(true),
            Action::CheckAuthLock { .. } => conversation.auth_lock_checked(false),
            // Every sender passes SPF for its own domain.
            Action::CheckSender(request) => {
                use crate::sender::{DmarcCheck, SenderChecks, SpfCheck, Verdict};
                let domain =
                    request.mail_from.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
                let checks = SenderChecks {
                    spf: SpfCheck { result: Verdict::Pass, domain },
                    dmarc: DmarcCheck { spf_aligned: true, ..DmarcCheck::default() },
                    ..SenderChecks::default()
                };
                seen.checked.push(*request);
                conversation.sender_checked(checks);
            }
            // The next hop knows the recipients whose local part is not `unknown`, and is
            // down for `down`.
            Action::VerifyRecipient { address, .. } => {
                use crate::recipients::verify::Answer;
                conversation.recipient_verified(match address.split('@').next() {
                    Some("unknown") => Answer::Unknown("550 5.1.1 no such user".into()),
                    Some("down") => Answer::Unavailable("cannot connect".into()),
                    _ => Answer::Exists,
                })
            }
            Action::StartTls => {
                seen.tls = true;
                buffer.clear();
                conversation.tls_started(TlsInfo::default());
            }
            Action::Finished(record) => seen.records.push(*record),
            Action::Learn(_) => {}
            Action::Close => {
                seen.closed = true;
                return seen;
            }
        }
    }
}

fn session(config: &str, client: &str) -> Conversation {
    session_with(config, client, Arc::new(Open))
}

fn session_with(config: &str, client: &str, gates: Arc<dyn Gates>) -> Conversation {
    let address: SocketAddr = format!("{client}:40000").parse().unwrap();
    Conversation::new(snapshot(config), gates, Client::new(address, "l"))
}

/// The reply codes sent, in order.
fn codes(sent: &str) -> Vec<u16> {
    sent.split("\r\n")
        .filter(|l| l.len() > 3 && l.as_bytes()[3] == b' ')
        .filter_map(|l| l[..3].parse().ok())
        .collect()
}

const MESSAGE: &str = "Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n";

#[test]
fn a_whole_session_the_same_however_the_bytes_are_cut() {
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nRCPT TO:<v@b.test>\r\nDATA\r\n{MESSAGE}QUIT\r\n"
    );
    let mut first: Option<(String, Vec<u8>)> = None;
    for piece in [1, 2, 3, 5, 8, 13, 64, 4096] {
        let mut conversation = session(TWO_TENANTS, "192.0.2.7");
        let seen = drive(&mut conversation, input.as_bytes(), piece);
        assert_eq!(
            codes(&seen.sent),
            [220, 250, 250, 250, 452, 354, 250, 221],
            "pieces of {piece}: {}",
            seen.sent
        );
        assert!(seen.closed);
        let stored = &seen.stored[0];
        assert_eq!(stored.envelope.tenant, "a");
        let recipients: Vec<&str> = stored.envelope.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(recipients, ["u@a.test"]);
        let message = String::from_utf8_lossy(&stored.message).to_string();
        assert!(message.starts_with(
            "Received: from c.test (unknown [192.0.2.7])\r\n\tby relay.test (Sluice) with ESMTP id "
        ));
        assert!(message.contains("\r\n\tfor <u@a.test>;\r\n"), "{message}");
        assert!(message.contains("X-Spam-Score: 0.0\r\n"), "{message}");
        // Dot-stuffing undone.
        let body = message.split("\r\n\r\n").nth(1).unwrap().to_string();
        assert_eq!(body, ".dot\r\nbody\r\n");
        assert_eq!(seen.records.len(), 1);
        assert_eq!(seen.records[0].judgement.outcome, crate::policy::Outcome::Accept);
        let replies = seen.sent.replace(&stored.envelope.id, "ID");
        match &first {
            None => first = Some((replies, body.into_bytes())),
            Some((replies_before, _)) => assert_eq!(&replies, replies_before, "pieces of {piece}"),
        }
    }
}

#[test]
fn pipelined_commands_are_answered_in_order_and_limits_hold() {
    let input = "EHLO c.test\r\nMAIL FROM:<x@remote.test> SIZE=5000\r\nMAIL FROM:<x@remote.test> SIZE=999\r\n\
                 MAIL FROM:<x@remote.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<u@a.test>\r\nRCPT TO:<v@a.test>\r\n\
                 RCPT TO:<w@a.test>\r\nRCPT TO:<z@a.test>\r\nRSET\r\nVRFY u\r\nEXPN u\r\nQUIT\r\n";
    let gates = Arc::new(Counting::default());
    let mut conversation = session_with(TWO_TENANTS, "192.0.2.7", gates);
    let seen = drive(&mut conversation, input.as_bytes(), 4096);
    // SIZE over the limit; SIZE the spool has no room for; relaying denied; three recipients at
    // most; the rest.
    assert_eq!(
        codes(&seen.sent),
        [220, 250, 552, 452, 250, 554, 250, 250, 250, 452, 250, 252, 502, 221],
        "{}",
        seen.sent
    );
}

#[test]
fn data_over_the_limit_bare_line_ends_and_nul_bytes() {
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(1200));
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\n{big}\
         MAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\nnul\0byte\r\n.\r\n\
         MAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\nbare\nline\r\n.\r\nNOOP\r\n"
    );
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), input.as_bytes(), 100);
    assert_eq!(
        codes(&seen.sent),
        [220, 250, 250, 250, 354, 552, 250, 250, 354, 550, 250, 250, 354, 521],
        "{}",
        seen.sent
    );
    assert!(seen.sent.contains("550 5.6.0") && seen.sent.contains("521 5.5.2"));
    assert!(seen.closed && seen.stored.is_empty());
}

#[test]
fn chunks_are_counted_and_refused_chunks_consumed() {
    let input = "EHLO c.test\r\nBDAT 4\r\nabcdMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\n\
                 BDAT 14\r\nSubject: x\r\n\r\nBDAT 6 LAST\r\nhello\nQUIT\r\n";
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), input.as_bytes(), 7);
    // BDAT before MAIL: refused, its 4 bytes read; a chunk; a last chunk with a bare LF.
    assert_eq!(codes(&seen.sent), [220, 250, 503, 250, 250, 250, 550, 221], "{}", seen.sent);
    let input = "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nBDAT 14\r\nSubject: x\r\n\r\nBDAT 0 LAST\r\nQUIT\r\n";
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), input.as_bytes(), 3);
    assert_eq!(codes(&seen.sent), [220, 250, 250, 250, 250, 250, 221], "{}", seen.sent);
    assert_eq!(seen.stored.len(), 1);
}

#[test]
fn timeouts_long_lines_and_too_many_errors() {
    let mut conversation = session(TWO_TENANTS, "192.0.2.7");
    let _ = conversation.next_action();
    assert!(matches!(conversation.next_action(), Action::Read { bulk: false, .. }));
    conversation.timed_out();
    assert!(matches!(conversation.next_action(), Action::Send(bytes) if bytes.starts_with(b"421 4.4.2")));
    assert!(matches!(conversation.next_action(), Action::Close));

    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(3000));
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), long.as_bytes(), 512);
    assert_eq!(codes(&seen.sent), [220, 500, 250], "{}", seen.sent);
    let runaway = "x".repeat(100_000);
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), runaway.as_bytes(), 4096);
    assert!(seen.sent.ends_with("500 5.5.6 Line too long, closing connection\r\n") && seen.closed);
    let errors = "FOO\r\n".repeat(6);
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), errors.as_bytes(), 4096);
    assert_eq!(codes(&seen.sent), [220, 500, 500, 500, 500, 421], "{}", seen.sent);
}

#[test]
fn one_tenant_per_transaction_and_its_message_rate() {
    let gates = Arc::new(Counting::default());
    let input = "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<v@b.test>\r\nRCPT TO:<u@a.test>\r\nRSET\r\n\
                 MAIL FROM:<x@remote.test>\r\nRCPT TO:<v@b.test>\r\nQUIT\r\n";
    let seen = drive(&mut session_with(TWO_TENANTS, "192.0.2.7", gates.clone()), input.as_bytes(), 4096);
    // b's first transaction this minute takes its one message; the second is over its rate.
    assert_eq!(codes(&seen.sent), [220, 250, 250, 250, 452, 250, 250, 451, 221], "{}", seen.sent);
    let rates = gates.rates.lock().unwrap().clone();
    assert_eq!(rates, [("b".into(), false), ("b".into(), true), ("b".into(), false)]);
}

#[test]
fn auth_plain_login_failure_pause_and_lockout() {
    // AUTH needs users: a snapshot without them refuses it.
    let seen = drive(&mut session(TWO_TENANTS, "127.0.0.1"), b"EHLO c.test\r\nAUTH PLAIN AGEAYg==\r\n", 4096);
    assert_eq!(codes(&seen.sent), [220, 250, 502], "{}", seen.sent);
    let mut conversation = session(TWO_TENANTS, "127.0.0.1");
    conversation.core.offer_auth(true);
    let input = "EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<z@elsewhere.test>\r\nQUIT\r\n";
    let seen = drive(&mut conversation, input.as_bytes(), 4096);
    assert_eq!(codes(&seen.sent), [220, 250, 535, 334, 334, 235, 250, 250, 221], "{}", seen.sent);
    assert_eq!(
        seen.passwords,
        [("alice".to_string(), "wrong".to_string()), ("alice".to_string(), "secret".to_string())]
    );
    assert!(seen.paused, "a failed AUTH pauses");
    let gates = Arc::new(Counting { locked: true, ..Counting::default() });
    let mut conversation = session_with(TWO_TENANTS, "127.0.0.1", gates);
    conversation.core.offer_auth(true);
    let seen = drive(&mut conversation, b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", 4096);
    assert_eq!(codes(&seen.sent), [220, 250, 421], "{}", seen.sent);
    assert!(seen.closed && seen.passwords.is_empty());
}

#[test]
fn starttls_drops_what_was_pipelined_behind_it_and_starts_over() {
    let mut conversation = session(TWO_TENANTS, "192.0.2.7");
    conversation.core.offer_tls();
    let mut sent = String::new();
    let mut inputs = [
        &b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<smuggled@x.test>\r\n"[..],
        b"MAIL FROM:<a@x.test>\r\nEHLO c.test\r\nQUIT\r\n",
    ]
    .into_iter();
    let mut buffer = Vec::new();
    loop {
        match conversation.next_action() {
            Action::Send(bytes) => sent.push_str(&String::from_utf8_lossy(&bytes)),
            Action::Read { .. } => {
                if buffer.is_empty() {
                    buffer.extend_from_slice(inputs.next().expect("input left"));
                }
                let used = conversation.receive(&buffer);
                buffer.drain(..used);
            }
            Action::StartTls => {
                assert!(buffer.is_empty(), "what followed STARTTLS was dropped");
                conversation.tls_started(TlsInfo::default());
            }
            Action::Close => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The smuggled MAIL never reached the session; after TLS, MAIL needs a new EHLO.
    assert_eq!(codes(&sent), [220, 250, 220, 503, 250, 221], "{sent}");
    assert!(!sent.contains("STARTTLS\r\n250 "), "STARTTLS is not offered again: {sent}");
}

#[test]
fn the_relay_owns_its_headers_and_refuses_loops() {
    let forged = "X-Spam-Flag: NO\r\nX-Spam-Score: -50\r\nAuthentication-Results: relay.test; dkim=pass\r\n\
                  Authentication-Results: inside.test; spf=pass\r\nSubject: hi\r\n\r\nbody\r\n.\r\n";
    let looping = format!("{}Subject: loop\r\n\r\nbody\r\n.\r\n", "Received: x\r\n".repeat(51));
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\n{forged}\
         MAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\n{looping}QUIT\r\n"
    );
    let mut conversation = session(TWO_TENANTS, "[2001:db8::7]");
    let seen = drive(&mut conversation, input.as_bytes(), 4096);
    assert_eq!(codes(&seen.sent), [220, 250, 250, 250, 354, 250, 250, 250, 354, 554, 221], "{}", seen.sent);
    assert!(seen.sent.contains("554 5.4.6 "), "{}", seen.sent);
    assert_eq!(seen.stored.len(), 1, "the looping message is not stored");
    let message = String::from_utf8_lossy(&seen.stored[0].message).to_string();
    assert!(message.starts_with("Received: from c.test (unknown [IPv6:2001:db8::7])\r\n"), "{message}");
    assert!(!message.contains("X-Spam-Flag: NO") && !message.contains("-50"), "{message}");
    assert!(!message.contains("relay.test; dkim=pass"), "{message}");
    assert!(message.contains("Authentication-Results: inside.test; spf=pass\r\n"), "{message}");
    // Exactly the limit is no loop.
    let fifty = format!("{}\r\nbody\r\n.\r\n", "Received: x\r\n".repeat(50));
    let input =
        format!("EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\n{fifty}QUIT\r\n");
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), input.as_bytes(), 4096);
    assert_eq!(seen.stored.len(), 1, "{}", seen.sent);
}

#[test]
fn unknown_recipients_are_refused_before_any_stage() {
    let dir = std::env::temp_dir().join(format!("sluice-recipients-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users");
    std::fs::write(&users, "u@a.test\nkarl@bücher.test\nbad line\n").unwrap();
    let config = format!(
        "[relay]\ntrusted_networks = []\n\
         [[tenant]]\nname = \"a\"\ndomains = [\"a.test\", \"bücher.test\"]\nnext_hop = \"maildir:m\"\nrecipients = \"file:{}\"\n\
         [[tenant]]\nname = \"b\"\ndomains = [\"b.test\"]\nnext_hop = \"smtp:127.0.0.1:1\"\nrecipients = \"verify\"\n",
        users.display()
    );
    let input = "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nRCPT TO:<nobody@a.test>\r\n\
                 RCPT TO:<karl@xn--bcher-kva.test>\r\nRSET\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@b.test>\r\n\
                 RCPT TO:<unknown@b.test>\r\nRCPT TO:<down@b.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n";
    let mut conversation = session(&config, "192.0.2.7");
    let seen = drive(&mut conversation, input.as_bytes(), 4096);
    assert_eq!(
        codes(&seen.sent),
        [220, 250, 250, 250, 550, 250, 250, 250, 250, 550, 450, 354, 250, 221],
        "{}",
        seen.sent
    );
    assert!(seen.sent.contains("550 5.1.1 ") && seen.sent.contains("450 4.1.1 "), "{}", seen.sent);
    let stored = &seen.stored[0];
    let recipients: Vec<&str> = stored.envelope.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(recipients, ["u@b.test"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn senders_from_the_internet_are_checked_once_and_only_when_needed() {
    let message = "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    // The defaults: checked once, labelled, and the envelope says the sender is authenticated.
    let seen = drive(&mut session(TWO_TENANTS, "192.0.2.7"), message.as_bytes(), 4096);
    assert_eq!(seen.checked.len(), 1);
    assert_eq!(
        (seen.checked[0].helo.as_str(), seen.checked[0].mail_from.as_str()),
        ("c.test", "x@remote.test")
    );
    assert_eq!(&*seen.checked[0].message, b"Subject: hi\r\n\r\nbody\r\n");
    let stored = String::from_utf8_lossy(&seen.stored[0].message).to_string();
    let received_end = stored
        .find("\r\nAuthentication-Results: relay.test;\r\n\tspf=pass smtp.mailfrom=remote.test;")
        .expect(&stored);
    assert!(stored[..received_end].starts_with("Received: "), "{stored}");
    assert!(seen.stored[0].envelope.sender_authenticated);
    // Nothing needs the checks: no header, no bounce decided by them, no policy reading them.
    let quiet = TWO_TENANTS.replace(
        "next_hop = \"maildir:m\"\n[[tenant]]",
        "next_hop = \"maildir:m\"\nauthentication_results = false\nbounce_inbound = \"never\"\n[[tenant]]",
    );
    let seen = drive(&mut session(&quiet, "192.0.2.7"), message.as_bytes(), 4096);
    assert!(seen.checked.is_empty() && seen.stored.len() == 1);
    assert!(!String::from_utf8_lossy(&seen.stored[0].message).contains("Authentication-Results"));
    // A client that may relay is not checked (its mail is signed, when its tenant has a key).
    let trusted = TWO_TENANTS.replace("trusted_networks = []", "trusted_networks = [\"192.0.2.0/24\"]");
    let seen = drive(&mut session(&trusted, "192.0.2.7"), message.as_bytes(), 4096);
    assert!(seen.checked.is_empty() && seen.stored.len() == 1, "{}", seen.sent);
}
