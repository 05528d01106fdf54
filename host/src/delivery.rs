//! Delivery: takes queued messages to their next hop, retries with exponential backoff,
//! bounces with an RFC 3464 delivery status notification.
//!
//! Routes, in order: a next hop a policy named (`[delivery.next_hops]`); the tenant's
//! `next_hop` for its own domains; `[delivery.smarthost]` for every other domain. MX
//! resolution is not built yet: without a smarthost, mail for other domains waits in the
//! queue and is retried (then bounced when it expires).
//!
//! The SMTP client is our own (about 150 lines): delivery needs every recipient's own reply
//! to retry or bounce just that recipient, and it sends the spooled bytes verbatim with dot
//! stuffing; the client crates in the ecosystem are made for message submission and answer
//! per message, not per recipient.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::config::NextHop;
use crate::dns::MxAnswer;
use crate::server::{Relay, rfc5322_date};
use crate::spool::{self, QueuedMessage, QueuedRecipient, RecipientStatus, Store};

/// What a next hop said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// Delivered.
    Delivered(String),
    /// Try again later.
    Transient(String),
    /// Failed for good.
    Permanent(String),
}

/// Run delivery until the process ends: everything in the spool at start, then each new id
/// from `new_ids`, and a rescan of the spool every few seconds (which picks up `sluice queue
/// flush` and messages released from quarantine).
pub async fn run(relay: Arc<Relay>, mut new_ids: mpsc::UnboundedReceiver<String>) {
    let mut due: BTreeMap<(u64, String), ()> = BTreeMap::new();
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Option<u64>)>();
    let slots = Arc::new(Semaphore::new(32));
    let mut rescan = tokio::time::interval(Duration::from_secs(5));
    loop {
        let now = spool::now_secs();
        let next_due = due.keys().next().map(|(t, _)| *t);
        let sleep = next_due.map(|t| t.saturating_sub(now)).unwrap_or(3600);
        tokio::select! {
            Some(id) = new_ids.recv() => { due.insert((now, id), ()); }
            Some((id, next)) = done_rx.recv() => {
                in_flight.remove(&id);
                if let Some(at) = next { due.insert((at, id), ()); }
            }
            _ = rescan.tick() => {
                let spool = relay.spool.clone();
                if let Ok(Ok(all)) = tokio::task::spawn_blocking(move || spool.recover(Store::Queue)).await {
                    relay.metrics.set_queue(all.len());
                    due.clear();
                    for m in all {
                        if !in_flight.contains(&m.id) { due.insert((m.next_attempt, m.id), ()); }
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(sleep)) => {}
        }
        let now = spool::now_secs();
        while let Some(((at, id), ())) = due.first_key_value() {
            if *at > now {
                break;
            }
            let id = id.clone();
            due.pop_first();
            if !in_flight.insert(id.clone()) {
                continue;
            }
            let relay = relay.clone();
            let done = done_tx.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await;
                let next = attempt(&relay, &id).await;
                let _ = done.send((id, next));
            });
        }
    }
}

/// One delivery attempt of a queued message. Returns when to try again, if ever.
pub async fn attempt(relay: &Relay, id: &str) -> Option<u64> {
    let spool = relay.spool.clone();
    let owned = id.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let envelope = spool.envelope(Store::Queue, &owned)?;
        let message = spool.message(Store::Queue, &owned)?;
        Ok::<_, std::io::Error>((envelope, message))
    })
    .await;
    let (mut envelope, message) = match loaded {
        Ok(Ok(pair)) => pair,
        // Deleted meanwhile (delivered, or removed by an operator).
        _ => return None,
    };
    let now = spool::now_secs();
    if envelope.next_attempt > now {
        return Some(envelope.next_attempt);
    }
    let config = &relay.config.delivery;

    // Group pending recipients by next hop.
    let mut groups: HashMap<Target, Vec<usize>> = HashMap::new();
    for (i, r) in envelope.recipients.iter().enumerate() {
        if r.status == RecipientStatus::Pending {
            groups.entry(route(relay, &envelope, &r.address)).or_default().push(i);
        }
    }
    let timeout = Duration::from_secs(config.timeout_secs);
    for (hop, indices) in groups {
        let addresses: Vec<String> =
            indices.iter().map(|i| envelope.recipients[*i].address.clone()).collect();
        let results = match &hop {
            Target::Mx(domain) => {
                let message = &message;
                mx_deliver(relay, domain, &envelope.mail_from, &addresses, message, timeout).await
            }
            Target::Hop(NextHop::Maildir(path)) => {
                let dir = relay.config.resolve(path);
                let message = message.clone();
                let envelope_from = envelope.mail_from.clone();
                let addrs = addresses.clone();
                tokio::task::spawn_blocking(move || maildir_deliver(&dir, &envelope_from, &addrs, &message))
                    .await
                    .unwrap_or_else(|e| {
                        addresses
                            .iter()
                            .map(|_| RcptResult::Transient(format!("delivery task failed: {e}")))
                            .collect()
                    })
            }
            Target::Hop(NextHop::Smtp { host, port }) => {
                let attempt = Attempt {
                    host,
                    port: *port,
                    helo: &relay.config.server.hostname,
                    mail_from: &envelope.mail_from,
                    recipients: &addresses,
                    message: &message,
                    timeout,
                };
                match attempt.deliver(relay.tls_client()).await {
                    Ok(results) => results,
                    Err(e) => addresses
                        .iter()
                        .map(|_| RcptResult::Transient(format!("{host}:{port}: {e}")))
                        .collect(),
                }
            }
        };
        for (i, result) in indices.iter().zip(results) {
            let r = &mut envelope.recipients[*i];
            match result {
                RcptResult::Delivered(reply) => {
                    relay.metrics.delivery("delivered");
                    tracing::info!(id = %envelope.id, to = %r.address, hop = ?hop, reply = %reply, "delivered");
                    r.status = RecipientStatus::Delivered;
                    r.last_reply = Some(reply);
                }
                RcptResult::Permanent(reply) => {
                    relay.metrics.delivery("failed");
                    tracing::info!(id = %envelope.id, to = %r.address, hop = ?hop, reply = %reply, "delivery failed");
                    r.status = RecipientStatus::Failed;
                    r.last_reply = Some(reply);
                }
                RcptResult::Transient(reply) => {
                    relay.metrics.delivery("deferred");
                    tracing::info!(id = %envelope.id, to = %r.address, hop = ?hop, reply = %reply, "delivery deferred");
                    r.last_reply = Some(reply);
                }
            }
        }
    }
    envelope.attempts += 1;

    // Expired: every recipient still pending fails.
    let expired = now.saturating_sub(envelope.received_at) >= config.max_age_secs;
    let mut newly_failed: Vec<QueuedRecipient> = Vec::new();
    for r in envelope.recipients.iter_mut() {
        if r.status == RecipientStatus::Pending && expired {
            r.status = RecipientStatus::Failed;
            let last = r.last_reply.clone().unwrap_or_default();
            r.last_reply = Some(format!("4.4.7 message expired in the queue; last error: {last}"));
        }
    }
    for r in &envelope.recipients {
        if r.status == RecipientStatus::Failed
            && !r.last_reply.as_deref().unwrap_or("").starts_with("[bounced]")
        {
            newly_failed.push(r.clone());
        }
    }
    for r in envelope.recipients.iter_mut() {
        if r.status == RecipientStatus::Failed
            && !r.last_reply.as_deref().unwrap_or("").starts_with("[bounced]")
        {
            r.last_reply = Some(format!("[bounced] {}", r.last_reply.clone().unwrap_or_default()));
        }
    }
    if !newly_failed.is_empty()
        && !envelope.mail_from.is_empty()
        && let Err(e) = queue_bounce(relay, &envelope, &newly_failed, &message).await
    {
        tracing::error!(id = %envelope.id, error = %e, "cannot queue the delivery status notification");
    }

    let spool = relay.spool.clone();
    if envelope.pending().next().is_none() {
        let id = envelope.id.clone();
        let _ = tokio::task::spawn_blocking(move || spool.remove(Store::Queue, &id)).await;
        tracing::info!(id = %envelope.id, attempts = envelope.attempts, "done");
        relay.metrics.queue(-1);
        return None;
    }
    let backoff = config
        .retry_base_secs
        .saturating_mul(1u64 << (envelope.attempts.saturating_sub(1)).min(30))
        .min(config.retry_max_secs);
    envelope.next_attempt = now + backoff;
    let next = envelope.next_attempt;
    let updated = envelope.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || spool.update(Store::Queue, &updated)).await {
        tracing::error!(id = %envelope.id, error = %e, "cannot update the envelope");
    }
    Some(next)
}

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A configured next hop.
    Hop(NextHop),
    /// The MX hosts of this domain.
    Mx(String),
}

fn route(relay: &Relay, envelope: &QueuedMessage, address: &str) -> Target {
    let config = &relay.config.delivery;
    if let Some(name) = &envelope.route {
        if let Some(hop) = config.next_hops.get(name).and_then(|h| NextHop::parse(h).ok()) {
            return Target::Hop(hop);
        }
        tracing::warn!(id = %envelope.id, route = %name, "a policy routed to an unknown next hop; using the normal route");
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default();
    if let Some(tenant) = relay.tenant_of_domain(&domain) {
        return Target::Hop(tenant.next_hop.clone());
    }
    match config.smarthost.as_deref().and_then(|h| NextHop::parse(h).ok()) {
        Some(hop) => Target::Hop(hop),
        None => Target::Mx(domain),
    }
}

/// Deliver to a domain's mail exchangers, most preferred first (RFC 5321 §5.1): a null MX
/// or a domain that does not exist fails for good; a DNS failure or no exchanger answering
/// is transient.
async fn mx_deliver(
    relay: &Relay,
    domain: &str,
    mail_from: &str,
    recipients: &[String],
    message: &[u8],
    timeout: Duration,
) -> Vec<RcptResult> {
    let all = |r: RcptResult| recipients.iter().map(|_| r.clone()).collect::<Vec<_>>();
    let hosts = match relay.dns.mx(domain).await {
        Ok(MxAnswer::Hosts(hosts)) => hosts,
        Ok(MxAnswer::Implicit) => vec![domain.to_string()],
        Ok(MxAnswer::NullMx) => {
            return all(RcptResult::Permanent(format!("556 5.1.10 {domain} does not accept mail (null MX)")));
        }
        Ok(MxAnswer::NoSuchDomain) => {
            return all(RcptResult::Permanent(format!("550 5.1.2 domain {domain} does not exist")));
        }
        Err(e) => return all(RcptResult::Transient(format!("451 4.4.3 MX lookup for {domain} failed: {e}"))),
    };
    let helo = &relay.config.server.hostname;
    let port = relay.config.delivery.mx_port;
    let mut last = format!("451 4.4.1 no mail exchanger of {domain} answered");
    for host in hosts.iter().take(5) {
        // Addresses from the relay's own resolver (the one that gave the MX records).
        let mut addresses = Vec::new();
        for kind in [crate::dns::RecordType::A, crate::dns::RecordType::Aaaa] {
            if let Ok(found) = crate::dns::Resolver::lookup(relay.dns.as_ref(), host, kind).await {
                addresses.extend(found);
            }
        }
        if addresses.is_empty() {
            last = format!("451 4.4.4 {host} has no address");
        }
        for address in addresses.iter().take(3) {
            let attempt = Attempt { host: address, port, helo, mail_from, recipients, message, timeout };
            match attempt.deliver(relay.tls_client()).await {
                Ok(results) => return results,
                Err(e) => last = format!("451 4.4.1 {host} [{address}]:{port}: {e}"),
            }
        }
    }
    all(RcptResult::Transient(last))
}

/// Deliver into `root/<recipient>/{tmp,new,cur}` (Maildir): write in `tmp`, fsync, rename into
/// `new`, fsync the directory.
pub fn maildir_deliver(
    root: &Path,
    mail_from: &str,
    recipients: &[String],
    message: &[u8],
) -> Vec<RcptResult> {
    recipients
        .iter()
        .map(|rcpt| match maildir_one(root, mail_from, rcpt, message) {
            Ok(path) => RcptResult::Delivered(format!("250 2.0.0 delivered to {}", path.display())),
            Err(e) => RcptResult::Transient(format!("451 4.3.0 maildir: {e}")),
        })
        .collect()
}

fn maildir_one(root: &Path, mail_from: &str, rcpt: &str, message: &[u8]) -> std::io::Result<PathBuf> {
    let mailbox: String = rcpt
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '@') { c } else { '_' })
        .collect();
    let mailbox = if mailbox.starts_with('.') { format!("_{mailbox}") } else { mailbox };
    let dir = root.join(mailbox);
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let name = format!("{}.{}.sluice", spool::now_secs(), spool::new_id());
    let tmp = dir.join("tmp").join(&name);
    let mut content = format!("Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
    content.extend_from_slice(message);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&content)?;
        file.sync_all()?;
    }
    let target = dir.join("new").join(&name);
    std::fs::rename(&tmp, &target)?;
    spool::sync_dir(&dir.join("new"))?;
    Ok(target)
}

/// A reply from an SMTP server: code and the full text.
struct ServerReply {
    code: u16,
    text: String,
}

impl ServerReply {
    fn result(self) -> RcptResult {
        match self.code {
            200..=399 => RcptResult::Delivered(self.text),
            400..=499 => RcptResult::Transient(self.text),
            _ => RcptResult::Permanent(self.text),
        }
    }
}

async fn read_reply<S: Wire>(reader: &mut BufReader<S>, timeout: Duration) -> Result<ServerReply, String> {
    let mut text = String::new();
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(timeout, reader.read_until(b'\n', &mut line))
            .await
            .map_err(|_| "timed out waiting for a reply".to_string())?
            .map_err(|e| format!("connection error: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        if line.len() > 4096 {
            return Err("reply line too long".into());
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        let code: u16 =
            line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| format!("malformed reply {line:?}"))?;
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(ServerReply { code, text });
        }
    }
}

async fn command<S: Wire>(
    stream: &mut BufReader<S>,
    line: &str,
    timeout: Duration,
) -> Result<ServerReply, String> {
    tokio::time::timeout(timeout, stream.get_mut().write_all(format!("{line}\r\n").as_bytes()))
        .await
        .map_err(|_| "timed out sending".to_string())?
        .map_err(|e| format!("connection error: {e}"))?;
    read_reply(stream, timeout).await
}

/// Streams the client speaks SMTP over: TCP, then perhaps TLS.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// Why a delivery session ended without per-recipient answers.
enum ClientError {
    /// The TLS handshake after STARTTLS failed: try again in plaintext.
    Tls(String),
    /// Anything else.
    Other(String),
}

impl From<String> for ClientError {
    fn from(e: String) -> Self {
        ClientError::Other(e)
    }
}

/// One delivery session to an SMTP next hop: each recipient's outcome, or why the session
/// failed as a whole. With a TLS client, STARTTLS is used when the server offers it
/// (opportunistic, RFC 3207 and 7435: the certificate is not checked); if the handshake
/// fails the delivery is made again at once in plaintext.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    /// Next hop host (name or address).
    pub host: &'a str,
    /// Its port.
    pub port: u16,
    /// Our EHLO name.
    pub helo: &'a str,
    /// MAIL FROM.
    pub mail_from: &'a str,
    /// RCPT TO, in order.
    pub recipients: &'a [String],
    /// The message, CRLF line endings.
    pub message: &'a [u8],
    /// Per-command timeout.
    pub timeout: Duration,
}

impl Attempt<'_> {
    /// Run the session, falling back to plaintext when the TLS handshake fails.
    pub async fn deliver(&self, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Vec<RcptResult>, String> {
        match self.run(tls).await {
            Ok(results) => Ok(results),
            Err(ClientError::Tls(e)) => {
                tracing::info!(host = self.host, port = self.port, error = %e, "TLS with the next hop failed; delivering in plaintext");
                self.run(None).await.map_err(|e| match e {
                    ClientError::Tls(e) | ClientError::Other(e) => e,
                })
            }
            Err(ClientError::Other(e)) => Err(e),
        }
    }
}

impl Attempt<'_> {
    fn all(&self, r: RcptResult) -> Vec<RcptResult> {
        self.recipients.iter().map(|_| r.clone()).collect()
    }

    async fn run(&self, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Vec<RcptResult>, ClientError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect((self.host, self.port)))
            .await
            .map_err(|_| "timed out connecting".to_string())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut s = BufReader::new(stream);
        let greeting = read_reply(&mut s, self.timeout).await?;
        if greeting.code != 220 {
            return Ok(self.all(greeting.result().into_failure()));
        }
        let ehlo = match self.hello(&mut s).await? {
            Ok(ehlo) => ehlo,
            Err(failure) => return Ok(failure),
        };
        // Reply lines are joined as "250-name 250-PIPELINING 250-STARTTLS 250 SIZE …".
        let offers_tls = ehlo.text.split_whitespace().any(|w| {
            w.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-').eq_ignore_ascii_case("STARTTLS")
        });
        if let Some(connector) = tls.filter(|_| offers_tls) {
            let answer = command(&mut s, "STARTTLS", self.timeout).await?;
            if answer.code == 220 {
                let name = rustls::pki_types::ServerName::try_from(self.host.to_string())
                    .map_err(|e| ClientError::Tls(format!("server name: {e}")))?;
                let handshake = connector.connect(name, s.into_inner());
                let tls = match tokio::time::timeout(self.timeout, handshake).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return Err(ClientError::Tls(e.to_string())),
                    Err(_) => return Err(ClientError::Tls("handshake timed out".into())),
                };
                let mut s = BufReader::new(tls);
                let ehlo = match self.hello(&mut s).await? {
                    Ok(ehlo) => ehlo,
                    Err(failure) => return Ok(failure),
                };
                return Ok(self.transaction(&mut s, &ehlo).await?);
            }
            // Refused: carry on in plaintext, as opportunistic TLS does.
        }
        Ok(self.transaction(&mut s, &ehlo).await?)
    }

    /// EHLO, falling back to HELO; the failure of every recipient when neither works.
    async fn hello<S: Wire>(
        &self,
        s: &mut BufReader<S>,
    ) -> Result<Result<ServerReply, Vec<RcptResult>>, String> {
        let ehlo = command(s, &format!("EHLO {}", self.helo), self.timeout).await?;
        if ehlo.code == 250 {
            return Ok(Ok(ehlo));
        }
        let helo = command(s, &format!("HELO {}", self.helo), self.timeout).await?;
        if helo.code == 250 { Ok(Ok(helo)) } else { Ok(Err(self.all(helo.result().into_failure()))) }
    }

    async fn transaction<S: Wire>(
        &self,
        s: &mut BufReader<S>,
        ehlo: &ServerReply,
    ) -> Result<Vec<RcptResult>, String> {
        let timeout = self.timeout;
        let size = if ehlo.text.to_ascii_uppercase().contains("SIZE") {
            format!(" SIZE={}", self.message.len())
        } else {
            String::new()
        };
        let mail = command(s, &format!("MAIL FROM:<{}>{size}", self.mail_from), timeout).await?;
        if mail.code != 250 {
            let _ = command(s, "QUIT", timeout).await;
            return Ok(self.all(mail.result().into_failure()));
        }
        let mut results: Vec<Option<RcptResult>> = Vec::new();
        for rcpt in self.recipients {
            let r = command(s, &format!("RCPT TO:<{rcpt}>"), timeout).await?;
            results.push(if r.code == 250 || r.code == 251 { None } else { Some(r.result().into_failure()) });
        }
        if results.iter().all(Option::is_some) {
            let _ = command(s, "QUIT", timeout).await;
            return Ok(results.into_iter().flatten().collect());
        }
        let data = command(s, "DATA", timeout).await?;
        if data.code != 354 {
            let failure = data.result().into_failure();
            return Ok(results.into_iter().map(|r| r.unwrap_or_else(|| failure.clone())).collect());
        }
        let mut payload = Vec::with_capacity(self.message.len() + 64);
        for line in self.message.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                payload.push(b'.');
            }
            payload.extend_from_slice(line);
        }
        if !payload.ends_with(b"\r\n") {
            payload.extend_from_slice(b"\r\n");
        }
        payload.extend_from_slice(b".\r\n");
        tokio::time::timeout(timeout.max(Duration::from_secs(60)), s.get_mut().write_all(&payload))
            .await
            .map_err(|_| "timed out sending the message".to_string())?
            .map_err(|e| format!("connection error: {e}"))?;
        let end = read_reply(s, timeout.max(Duration::from_secs(600))).await?;
        let _ = command(s, "QUIT", timeout).await;
        let outcome = end.result();
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| outcome.clone())).collect())
    }
}

/// The TLS client for STARTTLS towards next hops. Opportunistic: it encrypts but does not
/// authenticate the server (there is no MTA-STS or DANE yet), which still defeats passive
/// eavesdropping.
pub fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl RcptResult {
    /// A success where a failure was expected (an odd code) counts as transient.
    fn into_failure(self) -> RcptResult {
        match self {
            RcptResult::Delivered(text) => RcptResult::Transient(format!("unexpected reply: {text}")),
            other => other,
        }
    }
}

/// Queue an RFC 3464 delivery status notification to the sender of `original` for the
/// recipients that failed.
async fn queue_bounce(
    relay: &Relay,
    original: &QueuedMessage,
    failed: &[QueuedRecipient],
    message: &[u8],
) -> std::io::Result<()> {
    let hostname = &relay.config.server.hostname;
    let id = spool::new_id();
    let now = spool::now_secs();
    let boundary = format!("{id}/{hostname}");
    let headers_end =
        message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
    let original_headers = String::from_utf8_lossy(&message[..headers_end]);
    let mut human = String::new();
    let mut machine = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Sluice-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.id,
        rfc5322_date(original.received_at)
    );
    for r in failed {
        let diagnostic = r.last_reply.clone().unwrap_or_default();
        let diagnostic = diagnostic.trim_start_matches("[bounced] ").to_string();
        let status = diagnostic
            .split_whitespace()
            .find(|w| w.len() >= 5 && w.as_bytes()[1] == b'.' && matches!(w.as_bytes()[0], b'4' | b'5'))
            .map(|s| s.trim_end_matches([',', ';']).to_string())
            .unwrap_or_else(|| "5.0.0".to_string());
        let status = if status.starts_with('4') && !diagnostic.contains("expired") {
            format!("5{}", &status[1..])
        } else {
            status
        };
        human.push_str(&format!("<{}>: {diagnostic}\r\n", r.address));
        machine.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n",
            r.address
        ));
    }
    let text = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
To: <{to}>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Date: {date}\r\n\
Message-ID: <{id}@{hostname}>\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
This is the mail system at {hostname}.\r\n\
\r\n\
Your message (queue id {oid}) could not be delivered to the following recipients:\r\n\
\r\n\
{human}\r\n\
--{boundary}\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
{machine}\r\n\
--{boundary}\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
{original_headers}\r\n\
--{boundary}--\r\n",
        to = original.mail_from,
        date = rfc5322_date(now),
        oid = original.id,
    );
    let envelope = QueuedMessage {
        id: id.clone(),
        tenant: original.tenant.clone(),
        mail_from: String::new(),
        recipients: vec![QueuedRecipient {
            address: original.mail_from.clone(),
            status: RecipientStatus::Pending,
            last_reply: None,
        }],
        received_at: now,
        attempts: 0,
        next_attempt: now,
        route: None,
        quarantine_reason: None,
    };
    let spool = relay.spool.clone();
    tokio::task::spawn_blocking(move || spool.store(Store::Queue, &envelope, text.as_bytes()))
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!(id = %id, original = %original.id, to = %original.mail_from, "queued a delivery status notification");
    relay.metrics.queue(1);
    relay.notify(id);
    Ok(())
}
