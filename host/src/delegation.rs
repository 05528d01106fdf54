//! Postfix's SMTP access policy delegation (`check_policy_service inet:ADDR:PORT`,
//! `[policy_delegation] listen`): for Postfix sites that want only the early stages —
//! greylisting, rates, sender rules — without a milter.
//!
//! A request is `name=value` lines and an empty line; the answer is `action=…` and an empty
//! line, over one connection for many requests. Each transaction (Postfix's `instance`) is a
//! conversation, driven with the SMTP commands its attributes stand for (the connect stages,
//! `EHLO`, `MAIL FROM`, `RCPT TO`) up to the request's `protocol_state`; its reply becomes
//! the action (`DUNNO` for a 2xx, the reply itself for a 4xx or 5xx). A transaction's
//! recipients of different tenants are judged by separate conversations, so that each is
//! judged by its own tenant's chain, never deferred for sharing a message with another's.
//! The data stages have no message here: `DATA` and `END-OF-MESSAGE` are answered `DUNNO`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::config::MtaServerConfig;
use crate::conversation::{Client, Conversation, Stages};
use crate::milter::codec::Response;
use crate::milter::session::{self, Exchange, drive};
use crate::policy::TlsInfo;
use crate::relay::Relay;

/// Largest request taken (Postfix's are a few hundred bytes).
const MAX_REQUEST: usize = 64 * 1024;

/// Accept Postfix's connections on `listener` until the process ends.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener, settings: MtaServerConfig) {
    crate::milter::accept(relay, listener, settings, "policy_delegation", connection).await;
}

/// One transaction's conversation for one tenant (or the edge).
struct Transaction {
    conversation: Conversation,
    stages: Stages,
    /// How far it was driven: 0 connected, 1 greeted, 2 MAIL given.
    reached: u8,
    /// The reply that refused it, if one did (every later request gets it).
    refusal: Option<String>,
}

async fn connection(
    relay: Arc<Relay>,
    stream: TcpStream,
    name: String,
    idle: Duration,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // The current transaction's conversations, by party (None: the edge).
    let mut instance = String::new();
    let mut transactions: HashMap<Option<usize>, Transaction> = HashMap::new();
    loop {
        let mut attributes = HashMap::new();
        let mut size = 0;
        loop {
            let mut line = String::new();
            let read = match tokio::time::timeout(idle, reader.read_line(&mut line)).await {
                Ok(read) => read?,
                Err(_) => return Ok(()),
            };
            if read == 0 {
                return Ok(());
            }
            size += read;
            if size > MAX_REQUEST {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a request over 64 KiB"));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once('=') {
                attributes.insert(key.to_string(), value.to_string());
            }
        }
        if attributes.is_empty() {
            continue;
        }
        let id = attributes.get("instance").cloned().unwrap_or_default();
        if id != instance || id.is_empty() {
            instance = id;
            transactions.clear();
        }
        let action = decide(&relay, &name, &attributes, &mut transactions).await;
        write.write_all(format!("action={action}\n\n").as_bytes()).await?;
    }
}

/// The action for one request.
async fn decide(
    relay: &Arc<Relay>,
    listener: &str,
    attributes: &HashMap<String, String>,
    transactions: &mut HashMap<Option<usize>, Transaction>,
) -> String {
    let get = |key: &str| attributes.get(key).map(String::as_str).unwrap_or("");
    let goal: u8 = match get("protocol_state").to_ascii_uppercase().as_str() {
        "CONNECT" => 0,
        "EHLO" | "HELO" => 1,
        "MAIL" => 2,
        "RCPT" => 3,
        // No message here; VRFY and ETRN are not judged.
        _ => return "DUNNO".into(),
    };
    let recipient = get("recipient");
    let snapshot = relay.snapshot();
    let party = recipient.rsplit_once('@').and_then(|(_, domain)| snapshot.domains.tenant_of(domain));
    let key = if goal == 3 { party } else { None };
    if let std::collections::hash_map::Entry::Vacant(slot) = transactions.entry(key) {
        let ip: IpAddr = get("client_address").parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let port = get("client_port").parse().unwrap_or(0);
        let name = get("client_name");
        let reverse_dns = (!name.is_empty() && name != "unknown").then(|| name.to_string());
        let client = Client {
            address: SocketAddr::new(ip, port),
            reverse_dns,
            listener: listener.to_string(),
            anonymous: false,
        };
        let mut conversation = Conversation::new(snapshot.clone(), relay.clone(), client).behind_mta();
        if !get("encryption_protocol").is_empty() {
            conversation.tls_in_front(TlsInfo {
                version: get("encryption_protocol").to_string(),
                cipher: get("encryption_cipher").to_string(),
                sni: None,
            });
        }
        let mut stages = Stages::new(snapshot.clone());
        let exchange = drive(relay, &mut conversation, &mut stages, b"").await;
        let refusal = refusal(&exchange);
        slot.insert(Transaction { conversation, stages, reached: 0, refusal });
    }
    let Some(transaction) = transactions.get_mut(&key) else { return "DUNNO".into() };
    let mut steps = Vec::new();
    if goal >= 1 && transaction.reached < 1 {
        let helo = if get("helo_name").is_empty() { "unknown" } else { get("helo_name") };
        steps.push((1, format!("EHLO {helo}\r\n")));
    }
    if goal >= 2 && transaction.reached < 2 {
        let size = get("size");
        let size = if size.is_empty() || size == "0" { String::new() } else { format!(" SIZE={size}") };
        steps.push((2, format!("MAIL FROM:<{}>{size}\r\n", get("sender"))));
    }
    if goal == 3 {
        steps.push((3, format!("RCPT TO:<{recipient}>\r\n")));
    }
    let user = get("sasl_username");
    for (step, line) in steps {
        if transaction.refusal.is_some() {
            break;
        }
        if step == 2 && !user.is_empty() {
            transaction.conversation.assume_authenticated(user);
        }
        let exchange =
            drive(relay, &mut transaction.conversation, &mut transaction.stages, line.as_bytes()).await;
        transaction.reached = transaction.reached.max(step.min(2));
        if let Some(reply) = refusal(&exchange) {
            // A refused recipient refuses only itself; anything earlier, the transaction.
            if step == 3 {
                return reply;
            }
            transaction.refusal = Some(reply);
        }
    }
    transaction.refusal.clone().unwrap_or_else(|| "DUNNO".into())
}

/// A 4xx or 5xx reply, as Postfix's action (`550 5.7.1 text`); a session the conversation
/// ended without one, a tempfail.
fn refusal(exchange: &Exchange) -> Option<String> {
    session::refusal(exchange).or_else(|| {
        (session::response(exchange) == Response::Tempfail).then(|| "451 4.3.0 Session ended".into())
    })
}
