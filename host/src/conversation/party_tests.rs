//! Whose stages run when, with the verdicts given by the test instead of policies (the
//! conversation asks for every stage): the edge at connect and helo, each tenant's early
//! stages replayed at its first recipient, a claimed session's tenant as it goes, the edge for
//! relayed mail.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::policy::{Stage, StageResult, Verdict};

const CONFIG: &str = "[server]\nhostname = \"relay.test\"\n\
    [relay]\ntrusted_networks = [\"192.0.2.200/32\"]\n\
    [[tenant]]\nname = \"a\"\ndomains = [\"a.test\"]\nnext_hop = \"maildir:m\"\n\
    [[tenant]]\nname = \"b\"\ndomains = [\"b.test\"]\nnext_hop = \"maildir:m\"\n\
    [[tenant]]\nname = \"c\"\ndomains = [\"c.test\"]\nnext_hop = \"maildir:m\"\noutbound_networks = [\"10.1.0.0/16\"]\n";

/// A stage asked for: whose, which, and the context's HELO and MAIL FROM.
type Asked = (String, Stage, Option<String>, Option<String>);

/// Run `input` from `client`; `verdict(party, stage)` answers each stage. Returns the stages
/// asked for, the replies' codes, the records.
fn run(
    client: &str,
    input: &str,
    verdict: impl Fn(&str, Stage) -> Verdict,
) -> (Vec<Asked>, Vec<u16>, Vec<TransactionRecord>) {
    let config = Config::parse(CONFIG, "test", std::path::PathBuf::new()).expect("config");
    let snapshot = Arc::new(Snapshot::unloaded(config, None, None));
    let address: SocketAddr = format!("{client}:40000").parse().expect("address");
    let client = Client::new(address, "l");
    let mut conversation = Conversation::new(snapshot.clone(), Arc::new(Open), client).ask_every_stage();
    let (mut asked, mut sent, mut records) = (Vec::new(), String::new(), Vec::new());
    let mut input = input.as_bytes().to_vec();
    loop {
        match conversation.next_action() {
            Action::Send(bytes) => sent.push_str(&String::from_utf8_lossy(&bytes)),
            Action::Read { .. } if input.is_empty() => conversation.client_closed(),
            Action::Read { .. } => {
                let used = conversation.receive(&input);
                input.drain(..used);
            }
            Action::Stage(request) => {
                let name = snapshot.party(request.party).name.clone();
                assert_eq!(request.context.tenant, name);
                let from = request.context.mail_from.as_ref().map(|m| m.address.clone());
                asked.push((name.clone(), request.stage, request.context.helo.clone(), from));
                let mut result = StageResult::passed(request.stage);
                result.verdict = verdict(&name, request.stage);
                result.decided_by = Some(format!("{name}-policy"));
                conversation.stage_done(result);
            }
            Action::Store(_) => conversation.stored(Ok(())),
            Action::CheckSender(_) => conversation.sender_checked(crate::sender::SenderChecks::default()),
            Action::Finished(record) => records.push(*record),
            Action::Close => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let codes = sent
        .split("\r\n")
        .filter(|l| l.len() > 3 && l.as_bytes()[3] == b' ')
        .filter_map(|l| l[..3].parse().ok())
        .collect();
    (asked, codes, records)
}

fn pass(_: &str, _: Stage) -> Verdict {
    Verdict::Continue
}

fn reject() -> Verdict {
    Verdict::Reject(crate::smtp::Reply::new(550, "5.7.1", "no"))
}

fn names(asked: &[Asked]) -> Vec<(String, Stage)> {
    asked.iter().map(|(n, s, _, _)| (n.clone(), *s)).collect()
}

fn steps(list: &[(&str, Stage)]) -> Vec<(String, Stage)> {
    list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

const TWO_TRANSACTIONS: &str = "EHLO c.example\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<u@a.test>\r\nRCPT TO:<v@a.test>\r\n\
    RCPT TO:<w@b.test>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<w@b.test>\r\n\
    DATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n";

#[test]
fn each_tenant_runs_its_early_stages_at_its_first_recipient() {
    use Stage::*;
    let (asked, codes, records) = run("192.0.2.9", TWO_TRANSACTIONS, pass);
    assert_eq!(
        names(&asked),
        steps(&[
            ("edge", Connect),
            ("edge", Helo),
            ("a", Connect),
            ("a", Helo),
            ("a", Mail),
            ("a", Rcpt),
            ("a", Rcpt),
            ("a", Data),
            ("b", Connect),
            ("b", Helo),
            ("b", Mail),
            ("b", Rcpt),
            ("b", Data),
        ])
    );
    // The replayed stages got the context they would have had.
    assert_eq!((asked[2].2.as_deref(), asked[2].3.as_deref()), (None, None), "connect: no HELO yet");
    assert_eq!(asked[3].2.as_deref(), Some("c.example"), "helo");
    assert_eq!(asked[4].3.as_deref(), Some("x@remote.test"), "mail");
    assert_eq!(codes, [220, 250, 250, 250, 250, 452, 354, 250, 250, 250, 354, 250, 221]);
    let tenants: Vec<&str> = records.iter().map(|r| r.tenant.as_str()).collect();
    assert_eq!(tenants, ["a", "b"]);
}

#[test]
fn a_tenant_s_early_refusal_refuses_its_own_recipients_only() {
    use Stage::*;
    for stage in [Connect, Helo, Mail] {
        let verdict =
            |name: &str, at: Stage| if name == "b" && at == stage { reject() } else { Verdict::Continue };
        let input = "EHLO c.example\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<w@b.test>\r\nRCPT TO:<u@a.test>\r\n\
                     RCPT TO:<w2@b.test>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let (asked, codes, records) = run("192.0.2.9", input, verdict);
        // b refused at its first recipient; a's recipient accepted; b's second recipient is in
        // a's transaction (452), its refusal is not asked again.
        assert_eq!(codes, [220, 250, 250, 550, 250, 452, 354, 250, 221], "{stage}");
        let b_stages = names(&asked).into_iter().filter(|(n, _)| n == "b").count();
        assert_eq!(b_stages, [Connect, Helo, Mail].iter().position(|s| *s == stage).unwrap() + 1, "{stage}");
        let b = records.iter().find(|r| r.tenant == "b").expect("b's refusal is recorded");
        assert_eq!((b.judgement.stage, b.judgement.outcome), (stage, crate::policy::Outcome::Reject));
        assert!(
            records.iter().any(|r| r.tenant == "a" && r.judgement.outcome == crate::policy::Outcome::Accept)
        );
    }
    // A sticky connect refusal: b's every recipient in the session gets it, asked once.
    let verdict =
        |name: &str, at: Stage| if name == "b" && at == Connect { reject() } else { Verdict::Continue };
    let input = "EHLO c.example\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<w@b.test>\r\nRSET\r\n\
                 MAIL FROM:<x@remote.test>\r\nRCPT TO:<w@b.test>\r\nQUIT\r\n";
    let (asked, codes, records) = run("192.0.2.9", input, verdict);
    assert_eq!(codes, [220, 250, 250, 550, 250, 250, 550, 221]);
    assert_eq!(names(&asked).iter().filter(|(n, _)| n == "b").count(), 1);
    assert_eq!(records.len(), 2, "each refused transaction is recorded");
}

#[test]
fn the_edge_refuses_for_everyone() {
    use Stage::*;
    let verdict =
        |name: &str, at: Stage| if name == "edge" && at == Connect { reject() } else { Verdict::Continue };
    let (asked, codes, records) = run("192.0.2.9", TWO_TRANSACTIONS, verdict);
    assert_eq!(names(&asked), steps(&[("edge", Connect)]));
    assert_eq!(codes, [550]);
    assert_eq!(records[0].judgement.stage, Connect);
    let verdict =
        |name: &str, at: Stage| if name == "edge" && at == Helo { reject() } else { Verdict::Continue };
    let (_, codes, _) = run("192.0.2.9", "EHLO c.example\r\nMAIL FROM:<x@remote.test>\r\nQUIT\r\n", verdict);
    // Not greeted: MAIL is out of sequence.
    assert_eq!(codes, [220, 550, 503, 221]);
}

#[test]
fn a_claimed_session_runs_its_tenant_as_it_goes() {
    use Stage::*;
    let input = "EHLO host.c.test\r\nMAIL FROM:<x@c.test>\r\nRCPT TO:<z@elsewhere.test>\r\nDATA\r\nSubject: s\r\n\r\nb\r\n.\r\n\
                 MAIL FROM:<x@c.test>\r\nRCPT TO:<u@a.test>\r\nQUIT\r\n";
    let (asked, codes, records) = run("10.1.2.3", input, pass);
    assert_eq!(
        names(&asked),
        steps(&[
            ("edge", Connect),
            ("c", Connect),
            ("edge", Helo),
            ("c", Helo),
            ("c", Mail),
            ("c", Rcpt),
            ("c", Data),
            ("c", Mail),
            ("a", Connect),
            ("a", Helo),
            ("a", Mail),
            ("a", Rcpt),
        ])
    );
    assert_eq!(codes, [220, 250, 250, 250, 354, 250, 250, 250, 221]);
    assert_eq!(records[0].tenant, "c");
    // Its tenant refuses at MAIL: the sender is refused.
    let verdict =
        |name: &str, at: Stage| if name == "c" && at == Mail { reject() } else { Verdict::Continue };
    let (_, codes, records) = run("10.1.2.3", "EHLO h\r\nMAIL FROM:<x@c.test>\r\nQUIT\r\n", verdict);
    assert_eq!(codes, [220, 250, 550, 221]);
    assert_eq!((records[0].tenant.as_str(), records[0].judgement.stage), ("c", Mail));
}

#[test]
fn relayed_mail_of_an_unclaimed_trusted_client_is_the_edge_s() {
    use Stage::*;
    let input = "EHLO h\r\nMAIL FROM:<x@inside.test>\r\nRCPT TO:<z@elsewhere.test>\r\nRCPT TO:<u@a.test>\r\n\
                 DATA\r\nSubject: s\r\n\r\nb\r\n.\r\nQUIT\r\n";
    let (asked, codes, records) = run("192.0.2.200", input, pass);
    assert_eq!(
        names(&asked),
        steps(&[("edge", Connect), ("edge", Helo), ("edge", Mail), ("edge", Rcpt), ("edge", Data)])
    );
    assert_eq!(codes, [220, 250, 250, 250, 452, 354, 250, 221]);
    assert_eq!(records[0].tenant, "edge");
}

#[test]
fn a_new_greeting_is_told_to_every_party_again() {
    use Stage::*;
    let input = "EHLO one\r\nMAIL FROM:<x@r.test>\r\nRCPT TO:<u@a.test>\r\nRSET\r\nEHLO two\r\n\
                 MAIL FROM:<x@r.test>\r\nRCPT TO:<u@a.test>\r\nQUIT\r\n";
    let (asked, _, _) = run("192.0.2.9", input, pass);
    let a: Vec<(Stage, Option<String>)> =
        asked.iter().filter(|(n, ..)| n == "a").map(|(_, s, helo, _)| (*s, helo.clone())).collect();
    let two = Some("two".to_string());
    assert_eq!(
        a,
        [
            (Connect, None),
            (Helo, Some("one".into())),
            (Mail, Some("one".into())),
            (Rcpt, Some("one".into())),
            (Helo, two.clone()),
            (Mail, two.clone()),
            (Rcpt, two)
        ]
    );
}

#[test]
fn a_tenant_that_claims_the_session_after_auth_catches_up() {
    use Stage::*;
    let text = CONFIG.replace("outbound_networks = [\"10.1.0.0/16\"]", "outbound_users = [\"alice\"]");
    let parsed = Config::parse(&text, "test", std::path::PathBuf::new()).expect("config");
    let snapshot = Arc::new(Snapshot::unloaded(parsed, None, None));
    let address: SocketAddr = "192.0.2.9:40000".parse().expect("address");
    let client = Client::new(address, "l");
    let mut conversation = Conversation::new(snapshot.clone(), Arc::new(Open), client).ask_every_stage();
    let mut asked = Vec::new();
    // The greeting; then the state a successful AUTH as alice (c's user) leaves (the exchange
    // itself is in the conversation's own tests); then the rest.
    let phases: [&[u8]; 2] = [
        b"EHLO one\r\n",
        b"MAIL FROM:<x@c.test>\r\nRCPT TO:<z@elsewhere.test>\r\nRSET\r\nEHLO two\r\nQUIT\r\n",
    ];
    let mut phases = phases.into_iter();
    let mut input: Vec<u8> = Vec::new();
    loop {
        match conversation.next_action() {
            Action::Read { .. } if input.is_empty() => match phases.next() {
                Some(next) => {
                    if next.starts_with(b"MAIL") {
                        conversation.assume_authenticated("alice");
                    }
                    input.extend_from_slice(next);
                }
                None => conversation.client_closed(),
            },
            Action::Read { .. } => {
                let used = conversation.receive(&input);
                input.drain(..used);
            }
            Action::Stage(request) => {
                asked.push((snapshot.party(request.party).name.clone(), request.stage));
                conversation.stage_done(StageResult::passed(request.stage));
            }
            Action::Close => break,
            _ => {}
        }
    }
    assert_eq!(
        asked,
        steps(&[
            ("edge", Connect),
            ("edge", Helo),
            ("c", Connect),
            ("c", Helo),
            ("c", Mail),
            ("c", Rcpt),
            ("edge", Helo),
            ("c", Helo),
        ])
    );
}
