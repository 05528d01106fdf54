//! The conversation driver: any bytes from a client, cut anywhere, with any stage verdicts,
//! spool outcomes and password checks the driver asks about. It must never panic, must answer
//! in well-formed reply lines, must end when it closes, and must never ask for a message to be
//! stored that a reply of its did not announce with 354 or a BDAT chunk.
//!
//! The first input bytes steer: how the input is cut, which client connects (a tenant's
//! outbound network, a trusted one, the internet), and the answers to the driver's questions
//! (cycled); the rest is what the client sends.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use sluice::auth::Users;
use sluice::config::Config;
use sluice::conversation::{Action, Client, Conversation, Open, StoreFailure};
use sluice::policy::{Reply, StageResult, TlsInfo, Verdict};
use sluice::tenants::Snapshot;

const CONFIG: &str = "[server]\nhostname = \"relay.test\"\nmax_message_bytes = 4096\nmax_recipients = 4\n\
    max_line_bytes = 512\nmax_errors = 20\n\
    [relay]\ntrusted_networks = [\"192.0.2.200/32\"]\nallow_plaintext_auth_on_loopback = true\n\
    [[tenant]]\nname = \"a\"\ndomains = [\"a.test\", \"*.a.test\"]\nnext_hop = \"maildir:m\"\n\
    [[tenant]]\nname = \"b\"\ndomains = [\"b.test\"]\nnext_hop = \"maildir:m\"\nmax_message_bytes = 1000\n\
    [[tenant]]\nname = \"c\"\ndomains = [\"c.test\"]\nnext_hop = \"maildir:m\"\noutbound_networks = [\"10.1.0.0/16\"]\n\
    outbound_users = [\"alice\"]\n";

/// `openssl passwd -6 -salt saltsalt secret`.
const USERS: &str = "alice:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n";

static SNAPSHOT: LazyLock<Arc<Snapshot>> = LazyLock::new(|| {
    let config = Config::parse(CONFIG, "fuzz", std::path::PathBuf::new()).expect("the fuzz configuration is valid");
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support");
    let tls = sluice::auth::tls_acceptor(&support.join("relay-cert.pem"), &support.join("relay-key.pem")).ok();
    let users = Users::parse(USERS).ok().map(Arc::new);
    Arc::new(Snapshot::unloaded(config, tls, users))
});

fn verdict(byte: u8) -> Verdict {
    match byte % 8 {
        0 | 1 | 2 => Verdict::Continue,
        3 => Verdict::Accept,
        4 => Verdict::Reject(Reply::new(550, "5.7.1", "fuzz rejects")),
        5 => Verdict::Tempfail(Reply::new(451, "4.7.1", "fuzz tempfails")),
        6 => Verdict::Discard,
        _ => Verdict::Quarantine("fuzz".into()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&steer, rest)) = data.split_first() else { return };
    let (answers, input) = rest.split_at(rest.len().min(6));
    let answers: Vec<u8> = if answers.is_empty() { vec![0] } else { answers.to_vec() };
    let piece = usize::from(steer & 0x1f) + 1;
    let client = match steer >> 5 {
        0 | 1 => "10.1.2.3",
        2 => "192.0.2.200",
        3 => "127.0.0.1",
        _ => "203.0.113.9",
    };
    let address: SocketAddr = format!("{client}:40000").parse().expect("address");
    let client = Client::new(address, "fuzz");
    let mut conversation = Conversation::new(SNAPSHOT.clone(), Arc::new(Open), client).ask_every_stage();
    let mut next_answer = answers.iter().copied().cycle();
    let mut pieces = input.chunks(piece);
    let mut buffer: Vec<u8> = Vec::new();
    let mut sent: Vec<u8> = Vec::new();
    let mut closed = false;
    // Every action answers a question or takes input: a bound on them is a bound on the work.
    for _ in 0..(input.len() * 4 + 1000) {
        match conversation.next_action() {
            Action::Send(bytes) => {
                assert!(bytes.ends_with(b"\r\n"), "a reply ends its line");
                sent.extend_from_slice(&bytes);
            }
            Action::Read { .. } => {
                if buffer.is_empty() {
                    match pieces.next() {
                        Some(chunk) => buffer.extend_from_slice(chunk),
                        None => {
                            conversation.client_closed();
                            continue;
                        }
                    }
                }
                let used = conversation.receive(&buffer);
                assert!(used <= buffer.len());
                buffer.drain(..used);
            }
            Action::Stage(request) => {
                let byte = next_answer.next().unwrap_or(0);
                let result = StageResult {
                    stage: request.stage,
                    verdict: verdict(byte),
                    decided_by: Some("fuzz".into()),
                    disconnect: byte == 0xff,
                    runs: Vec::new(),
                    shadow: Vec::new(),
                };
                conversation.stage_done(result);
            }
            Action::Store(request) => {
                assert!(!request.message.is_empty(), "a stored message has at least our Received field");
                let outcome = match next_answer.next().unwrap_or(0) % 5 {
                    0 => Err(StoreFailure::Full),
                    1 => Err(StoreFailure::Failed),
                    _ => Ok(()),
                };
                conversation.stored(outcome);
            }
            Action::CheckPassword { password, .. } => conversation.password_checked(password == "secret"),
            Action::Pause(_) => {}
            Action::CheckRate { .. } => conversation.rate_checked(true),
            Action::CheckAuthLock { .. } => conversation.auth_lock_checked(false),
            Action::CheckSender(_) => conversation.sender_checked(sluice::sender::SenderChecks::default()),
            Action::VerifyRecipient { .. } => {
                use sluice::recipients::verify::Answer;
                conversation.recipient_verified(match next_answer.next().unwrap_or(0) % 3 {
                    0 => Answer::Unknown("550 5.1.1 no".into()),
                    1 => Answer::Unavailable("down".into()),
                    _ => Answer::Exists,
                });
            }
            Action::StartTls => {
                buffer.clear();
                conversation.tls_started(TlsInfo::default());
            }
            Action::Finished(record) => {
                assert!(record.reply.code >= 200 && record.reply.code < 600);
            }
            Action::Close => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the session ends once its input does");
    assert!(matches!(conversation.next_action(), Action::Close), "a closed conversation stays closed");
    // Every line sent is a reply line: three digits, then a space or a dash.
    for line in sent.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit), "{:?}", String::from_utf8_lossy(line));
        assert!(line[3] == b' ' || line[3] == b'-');
    }
});
