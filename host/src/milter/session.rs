//! One milter connection: each SMTP session the MTA reports on it is a [`Conversation`],
//! driven with the SMTP commands the MTA's events stand for (connect → the connect stages,
//! HELO → `EHLO`, MAIL and RCPT → the same commands, the headers and body → `DATA` and the
//! message). The conversation decides as it does for the relay's own sessions — the same
//! parties, chains, judge, shadow mode, records and metrics — and its replies become the
//! milter's: a 2xx or 3xx goes on, a 4xx or 5xx is the reply the MTA gives. At the end of the
//! message, the message the relay would have queued is compared with the one the MTA holds:
//! header fields the relay added, removed (the policies' changes, `X-Spam-*`,
//! `Authentication-Results`) and recipients added or removed become modifications;
//! quarantine and discard become the milter's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::codec::{Command, Response, action, protocol};
use crate::conversation::{Action, Client, Conversation, Stages, StoreRequest};
use crate::listener::connection::work;
use crate::policy::{Outcome, TlsInfo};
use crate::relay::Relay;
use crate::spool::Store;

/// The actions asked for: headers, recipients, quarantine.
const ACTIONS: u32 =
    action::ADD_HEADERS | action::CHANGE_HEADERS | action::ADD_RCPT | action::DEL_RCPT | action::QUARANTINE;

/// The steps left out when the MTA can: no reply per header, body chunk or end of headers
/// (nothing is decided there), no unknown commands, header values with their leading space.
const PROTOCOL: u32 = protocol::NO_REPLY_HEADER
    | protocol::NO_REPLY_BODY
    | protocol::NO_REPLY_EOH
    | protocol::NO_UNKNOWN
    | protocol::HEADER_LEADING_SPACE;

/// The SMTP session the MTA reports on.
struct Smtp {
    conversation: Conversation,
    stages: Stages,
    /// The message's header fields as the MTA holds them.
    headers: Vec<(String, Vec<u8>)>,
    /// The recipients accepted in this transaction, as the MTA gave them.
    recipients: Vec<String>,
    /// `DATA` was given to the conversation.
    in_data: bool,
    /// The message so far ends at the start of a line.
    line_start: bool,
    /// The transaction was refused before the end of the message: nothing more to judge.
    refused: bool,
}

/// What the conversation did with some input.
#[derive(Default)]
pub(crate) struct Exchange {
    /// Its replies.
    pub sent: Vec<u8>,
    /// The message it would have queued.
    pub stored: Option<StoreRequest>,
    /// How the transaction was judged, when one ended.
    pub outcome: Option<Outcome>,
    /// It ended the session.
    pub closed: bool,
}

/// One milter connection.
pub struct MilterSession {
    relay: Arc<Relay>,
    listener: String,
    leading_space: bool,
    /// Macros the MTA sent, by name, for the session so far.
    macros: HashMap<String, String>,
    smtp: Option<Smtp>,
    /// The conversation ended the session (a refusal with disconnect, too many errors): what
    /// every later event of it gets.
    ended: Option<Response>,
}

impl MilterSession {
    /// A connection from the MTA to the milter listener `listener`.
    pub fn new(relay: Arc<Relay>, listener: String) -> Self {
        Self { relay, listener, leading_space: false, macros: HashMap::new(), smtp: None, ended: None }
    }

    /// Answer one command: the responses to send, in order (none for those the protocol
    /// does not answer).
    pub async fn handle(&mut self, command: Command) -> Vec<Response> {
        match command {
            Command::Negotiate { actions, protocol, .. } => {
                let asked = PROTOCOL & protocol;
                self.leading_space = asked & protocol::HEADER_LEADING_SPACE != 0;
                vec![Response::Negotiate {
                    version: super::codec::VERSION,
                    actions: ACTIONS & actions,
                    protocol: asked,
                }]
            }
            Command::Macros { pairs, .. } => {
                self.macros.extend(
                    pairs.into_iter().map(|(name, value)| (name.trim_matches(['{', '}']).to_string(), value)),
                );
                Vec::new()
            }
            Command::Connect { hostname, family, port, address } => {
                vec![self.connect(&hostname, family, port, &address).await]
            }
            Command::Helo(name) => {
                if let Some(tls) = self.tls()
                    && let Some(smtp) = &mut self.smtp
                {
                    smtp.conversation.tls_in_front(tls);
                }
                vec![self.command(format!("EHLO {}\r\n", one_line(&name))).await]
            }
            Command::Mail(args) => {
                if let Some(smtp) = &mut self.smtp {
                    smtp.recipients.clear();
                    smtp.headers.clear();
                    smtp.in_data = false;
                    smtp.refused = false;
                }
                if let Some(user) = self.macros.get("auth_authen").filter(|u| !u.is_empty()).cloned()
                    && let Some(smtp) = &mut self.smtp
                {
                    smtp.conversation.assume_authenticated(&user);
                }
                vec![self.command(format!("MAIL FROM:{}\r\n", one_line(&args.join(" ")))).await]
            }
            Command::Rcpt(args) => {
                let response = self.command(format!("RCPT TO:{}\r\n", one_line(&args.join(" ")))).await;
                if response == Response::Continue
                    && let (Some(smtp), Some(rcpt)) = (&mut self.smtp, args.first())
                {
                    smtp.recipients.push(rcpt.clone());
                }
                vec![response]
            }
            Command::Data => vec![self.data().await],
            Command::Header { name, value } => {
                self.header(name, value).await;
                Vec::new()
            }
            Command::EndOfHeaders => {
                self.body(b"\r\n").await;
                Vec::new()
            }
            Command::Body(chunk) => {
                self.body(&chunk).await;
                Vec::new()
            }
            Command::EndOfMessage(chunk) => {
                self.body(&chunk).await;
                self.end_of_message().await
            }
            Command::Abort => {
                self.abort().await;
                Vec::new()
            }
            Command::Quit | Command::QuitNewConnection => {
                self.smtp = None;
                self.ended = None;
                self.macros.clear();
                Vec::new()
            }
            Command::Unknown(_) => vec![Response::Continue],
        }
    }

    /// A client connected: a new conversation on the current generation, its connect
    /// stages run.
    async fn connect(&mut self, hostname: &str, family: u8, port: u16, address: &str) -> Response {
        let ip: IpAddr = match family {
            b'4' | b'6' => address
                .trim_matches(['[', ']'])
                .trim_start_matches("IPv6:")
                .parse()
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            // A local socket or an unknown peer: the MTA itself.
            _ => IpAddr::from([127, 0, 0, 1]),
        };
        let snapshot = self.relay.snapshot();
        let reverse_dns = (!hostname.starts_with('[') && hostname != "unknown" && !hostname.is_empty())
            .then(|| hostname.to_string());
        let client = Client {
            address: SocketAddr::new(ip, port),
            reverse_dns,
            listener: self.listener.clone(),
            anonymous: false,
        };
        let conversation = Conversation::new(snapshot.clone(), self.relay.clone(), client).behind_mta();
        self.ended = None;
        self.smtp = Some(Smtp {
            conversation,
            stages: Stages::new(snapshot),
            headers: Vec::new(),
            recipients: Vec::new(),
            in_data: false,
            line_start: true,
            refused: false,
        });
        let exchange = self.exchange(b"").await;
        response(&exchange)
    }

    /// The client's TLS with the MTA, from its macros.
    fn tls(&self) -> Option<TlsInfo> {
        let version = self.macros.get("tls_version").filter(|v| !v.is_empty())?;
        Some(TlsInfo {
            version: version.clone(),
            cipher: self.macros.get("cipher").cloned().unwrap_or_default(),
            sni: None,
        })
    }

    /// One SMTP command line: the conversation's reply as the milter's.
    async fn command(&mut self, line: String) -> Response {
        if self.smtp.is_none() {
            return self.ended.clone().unwrap_or(Response::Continue);
        }
        let exchange = self.exchange(line.as_bytes()).await;
        let answer = response(&exchange);
        if let (Some(smtp), Response::ReplyCode(_)) = (&mut self.smtp, &answer) {
            smtp.refused = smtp.in_data;
        }
        answer
    }

    async fn data(&mut self) -> Response {
        let answer = self.command("DATA\r\n".into()).await;
        if let Some(smtp) = &mut self.smtp {
            smtp.in_data = answer == Response::Continue;
            smtp.refused = !smtp.in_data;
            smtp.line_start = true;
        }
        answer
    }

    async fn header(&mut self, name: String, value: Vec<u8>) {
        let separator: &[u8] = if self.leading_space { b":" } else { b": " };
        let mut field = one_line(&name).replace(' ', "").into_bytes();
        field.extend_from_slice(separator);
        field.extend_from_slice(&crlf(&value));
        field.extend_from_slice(b"\r\n");
        if let Some(smtp) = &mut self.smtp {
            smtp.headers.push((name, value));
        }
        self.body(&field).await;
    }

    /// Message bytes for the conversation, dot-stuffed.
    async fn body(&mut self, chunk: &[u8]) {
        let Some(smtp) = &mut self.smtp else { return };
        if !smtp.in_data && !smtp.refused && !smtp.recipients.is_empty() {
            // The MTA does not send DATA when it was negotiated away: it starts with a header.
            let _ = self.data().await;
        }
        let Some(smtp) = &mut self.smtp else { return };
        if !smtp.in_data || chunk.is_empty() {
            return;
        }
        let stuffed = stuff(chunk, smtp.line_start);
        smtp.line_start = chunk.ends_with(b"\n");
        let exchange = self.exchange(&stuffed).await;
        if !exchange.sent.is_empty()
            && let Some(smtp) = &mut self.smtp
        {
            // The conversation answered before the end: the message was refused (too big).
            smtp.in_data = false;
            smtp.refused = true;
        }
    }

    /// The end of the message: the judgement, and the modifications that make the MTA's
    /// message the relay's.
    async fn end_of_message(&mut self) -> Vec<Response> {
        let Some(smtp) = &mut self.smtp else {
            return vec![self.ended.clone().unwrap_or(Response::Continue)];
        };
        if !smtp.in_data {
            return vec![Response::ReplyCode("554 5.5.1 Error: no valid recipients".into())];
        }
        smtp.in_data = false;
        let end: &[u8] = if smtp.line_start { b".\r\n" } else { b"\r\n.\r\n" };
        let exchange = self.exchange(end).await;
        let Some(smtp) = &mut self.smtp else { return vec![response(&exchange)] };
        let mut responses = Vec::new();
        if let Some(stored) = &exchange.stored {
            responses.extend(super::edits::headers(&smtp.headers, &stored.message, self.leading_space));
            let kept: Vec<&str> = stored.envelope.recipients.iter().map(|r| r.address.as_str()).collect();
            responses.extend(super::edits::recipients(&smtp.recipients, &kept));
            if stored.store == Store::Quarantine {
                let reason =
                    stored.envelope.quarantine_reason.clone().unwrap_or_else(|| "quarantined".into());
                responses.push(Response::Quarantine(reason));
            }
        }
        responses.push(match exchange.outcome {
            Some(Outcome::Discard) => Response::Discard,
            _ => response(&exchange),
        });
        smtp.recipients.clear();
        smtp.headers.clear();
        responses
    }

    /// The MTA abandoned the message: the transaction ends (RSET).
    async fn abort(&mut self) {
        let Some(smtp) = &mut self.smtp else { return };
        if smtp.in_data {
            // A message cut short: end it as the client would have (the conversation judges
            // it, nothing is kept), then reset.
            smtp.in_data = false;
            let _ = self.exchange(b"\r\n.\r\n").await;
        }
        let _ = self.exchange(b"RSET\r\n").await;
        if let Some(smtp) = &mut self.smtp {
            smtp.recipients.clear();
            smtp.headers.clear();
            smtp.refused = false;
        }
    }

    /// Give the conversation `input` and carry out its actions until it waits for more.
    async fn exchange(&mut self, input: &[u8]) -> Exchange {
        let Some(smtp) = &mut self.smtp else {
            return Exchange { closed: true, ..Exchange::default() };
        };
        let exchange = drive(&self.relay, &mut smtp.conversation, &mut smtp.stages, input).await;
        if exchange.closed {
            // Nothing more to drive: every later event of the session gets this refusal.
            self.smtp = None;
            self.ended = Some(match response(&exchange) {
                Response::Continue => Response::ReplyCode("421 4.3.0 Session ended".into()),
                refusal => refusal,
            });
        }
        exchange
    }
}

/// Give `conversation` the client's `input` and carry out its actions until it waits for
/// more (for the servers of an MTA in front: a message it would store is handed back, not
/// spooled — the MTA queues it).
pub(crate) async fn drive(
    relay: &Arc<Relay>,
    conversation: &mut Conversation,
    stages: &mut Stages,
    mut input: &[u8],
) -> Exchange {
    let mut exchange = Exchange::default();
    let mut idle = 0;
    loop {
        let action = conversation.next_action();
        if let Action::Finished(record) = &action {
            exchange.outcome = Some(record.judgement.outcome);
        }
        let Some(action) = work(relay, conversation, stages, action).await else { continue };
        match action {
            Action::Send(bytes) => exchange.sent.extend_from_slice(&bytes),
            Action::Read { .. } => {
                if input.is_empty() {
                    break;
                }
                let used = conversation.receive(input);
                input = &input[used..];
                idle = if used == 0 { idle + 1 } else { 0 };
                if idle > 2 {
                    break;
                }
            }
            Action::Store(request) => {
                exchange.stored = Some(*request);
                conversation.stored(Ok(()));
            }
            Action::Pause(pause) => tokio::time::sleep(pause).await,
            Action::StartTls | Action::Close => {
                exchange.closed = true;
                break;
            }
            _ => {}
        }
    }
    exchange
}

/// `chunk` dot-stuffed (a line beginning with `.` gets another), `line_start`: the chunk
/// begins a line.
fn stuff(chunk: &[u8], line_start: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 16);
    if line_start && chunk.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut from = 0;
    let mut at = 0;
    while let Some(offset) = memchr::memchr(b'\n', &chunk[at..]) {
        let end = at + offset + 1;
        if chunk.get(end) == Some(&b'.') {
            out.extend_from_slice(&chunk[from..end]);
            out.push(b'.');
            from = end;
        }
        at = end;
    }
    out.extend_from_slice(&chunk[from..]);
    out
}

/// An argument from the MTA as one command line: line breaks in it would be further
/// commands to the conversation.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Lone LFs as CRLF (folded header values as some MTAs send them).
fn crlf(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    for (i, &byte) in value.iter().enumerate() {
        if byte == b'\n' && (i == 0 || value[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

/// The conversation's last reply as the milter's response: a 2xx or 3xx goes on; a 4xx or
/// 5xx is the reply the MTA gives ([`refusal`], with `%` doubled, which Postfix undoes); a
/// session ended without a reply is a tempfail.
pub(crate) fn response(exchange: &Exchange) -> Response {
    match refusal(exchange) {
        Some(reply) => Response::ReplyCode(reply.replace('%', "%%")),
        None if exchange.closed && last_reply(exchange).is_none() => Response::Tempfail,
        None => Response::Continue,
    }
}

/// The last line the conversation sent, if it sent one.
fn last_reply(exchange: &Exchange) -> Option<String> {
    let text = String::from_utf8_lossy(&exchange.sent);
    text.split("\r\n").filter(|l| l.len() >= 3).last().map(str::to_string)
}

/// The conversation's last reply when it is a 4xx or 5xx, as one line with an enhanced status
/// code (added when missing: Postfix requires one), e.g. `550 5.7.1 text`.
pub(crate) fn refusal(exchange: &Exchange) -> Option<String> {
    let last = last_reply(exchange)?;
    let code = last.get(..3)?;
    if !code.starts_with(['4', '5']) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = last.get(4..).unwrap_or("").trim();
    let class = &code[..1];
    let has_enhanced = rest.split(' ').next().is_some_and(|w| {
        w.starts_with(class)
            && w.split('.').count() == 3
            && w.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    Some(if has_enhanced { format!("{code} {rest}") } else { format!("{code} {class}.0.0 {rest}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replied(text: &str) -> Response {
        response(&Exchange { sent: text.as_bytes().to_vec(), ..Exchange::default() })
    }

    #[test]
    fn replies_as_the_mta_takes_them() {
        assert_eq!(replied("250 2.1.0 Ok\r\n"), Response::Continue);
        assert_eq!(replied("354 End data with <CR><LF>.<CR><LF>\r\n"), Response::Continue);
        assert_eq!(replied("550 5.7.1 GTUBE 100%\r\n"), Response::ReplyCode("550 5.7.1 GTUBE 100%%".into()));
        assert_eq!(replied("451 Try later\r\n"), Response::ReplyCode("451 4.0.0 Try later".into()));
        assert_eq!(replied("250-a\r\n250 b\r\n"), Response::Continue);
        assert_eq!(crlf(b" a\n\tb\r\n\tc"), b" a\r\n\tb\r\n\tc".to_vec());
        assert_eq!(replied("\u{e9}\u{e9}x\r\n"), Response::Continue);
        assert_eq!(stuff(b".a\r\n.b\r\nc.\r\n.", true), b"..a\r\n..b\r\nc.\r\n..".to_vec());
        assert_eq!(stuff(b".a\n", false), b".a\n".to_vec());
        assert_eq!(one_line("<a@b>\r\nRCPT TO:<c@d>"), "<a@b>  RCPT TO:<c@d>");
    }
}
