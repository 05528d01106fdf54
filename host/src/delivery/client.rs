//! The SMTP client that takes queued mail to next hops, and the pool of its connections.
//!
//! The client is our own: delivery needs every recipient's own reply to retry or bounce just
//! that recipient, and it sends the spooled bytes verbatim with dot stuffing; the client
//! crates in the ecosystem are made for message submission and answer per message, not per
//! recipient, and none keeps a per-destination connection cache.
//!
//! What it does, as a production MTA's client would:
//! - opportunistic STARTTLS (RFC 3207, RFC 7435: encrypt, do not authenticate), with a
//!   plaintext retry when the handshake fails;
//! - PIPELINING (RFC 2920): MAIL, every RCPT and DATA go in one write when the server
//!   offers it, so a transaction costs two round trips instead of one per command;
//! - SIZE, 8BITMIME and SMTPUTF8 parameters when the server offers them;
//! - connection reuse: after a transaction the connection waits in a cache for the next
//!   message to the same host (`delivery.connection_cache_secs`, at most
//!   `delivery.connection_reuse_limit` transactions); a cached connection the server has
//!   meanwhile closed is noticed before any message byte is sent and replaced by a new one;
//! - per-destination concurrency: at most `delivery.destination_concurrency` deliveries (and
//!   so connections, cached ones included) per destination at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RcptResult;

/// Recipients per transaction; more are sent in further transactions on the same
/// connection (RFC 5321 §4.5.3.1.8: servers need accept no more than 100).
const RECIPIENTS_PER_TRANSACTION: usize = 100;

/// How the pool behaves.
#[derive(Clone)]
pub struct Settings {
    /// Our EHLO name.
    pub helo: String,
    /// Timeout for connecting and for each command's reply.
    pub timeout: Duration,
    /// TLS client for opportunistic STARTTLS (None: plaintext only).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// How long an idle connection stays cached (zero: no reuse).
    pub idle: Duration,
    /// Transactions per connection before it is closed.
    pub reuse_limit: u32,
    /// Concurrent deliveries per destination.
    pub per_destination: usize,
}

/// One message to deliver.
#[derive(Clone, Copy)]
pub struct Transaction<'a> {
    /// MAIL FROM (empty for the null sender).
    pub mail_from: &'a str,
    /// RCPT TO, in order.
    pub recipients: &'a [String],
    /// The message, CRLF line endings.
    pub message: &'a [u8],
}

impl Transaction<'_> {
    fn all(&self, r: RcptResult) -> Vec<RcptResult> {
        self.recipients.iter().map(|_| r.clone()).collect()
    }
}

/// Connections to next hops: the cache of idle ones and the per-destination limits.
pub struct Pool {
    settings: Settings,
    idle: Mutex<HashMap<(String, u16), Vec<Connection>>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(settings: Settings) -> Self {
        Self { settings, idle: Mutex::new(HashMap::new()), limits: Mutex::new(HashMap::new()) }
    }

    /// Wait for a delivery slot towards `destination` (a next hop or a recipient domain);
    /// the slot is held until the permit is dropped.
    pub async fn permit(&self, destination: &str) -> Option<OwnedSemaphorePermit> {
        let limit = {
            let mut limits = self.limits.lock().ok()?;
            limits
                .entry(destination.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_destination.max(1))))
                .clone()
        };
        limit.acquire_owned().await.ok()
    }

    /// Deliver to `host:port`: each recipient's outcome, or why no server there gave one
    /// (could not connect, the connection broke), which the caller treats as transient.
    pub async fn deliver(
        &self,
        host: &str,
        port: u16,
        tx: &Transaction<'_>,
    ) -> Result<Vec<RcptResult>, String> {
        let mut results = Vec::with_capacity(tx.recipients.len());
        for (n, chunk) in tx.recipients.chunks(RECIPIENTS_PER_TRANSACTION).enumerate() {
            let part = Transaction { recipients: chunk, ..*tx };
            match self.one(host, port, &part).await {
                Ok(r) => results.extend(r),
                Err(e) if n == 0 => return Err(e),
                Err(e) => results.extend(part.all(RcptResult::Transient(format!("{host}:{port}: {e}")))),
            }
        }
        Ok(results)
    }

    async fn one(&self, host: &str, port: u16, tx: &Transaction<'_>) -> Result<Vec<RcptResult>, String> {
        let key = (host.to_string(), port);
        while let Some(mut connection) = self.checkout(&key) {
            match connection.send(tx, self.settings.timeout).await {
                Ok(results) => {
                    self.checkin(connection).await;
                    return Ok(results);
                }
                // The server closed the cached connection meanwhile; nothing was delivered.
                Err(e) if !e.data_sent => {
                    tracing::debug!(host, port, error = %e.message, "a cached connection was stale");
                }
                Err(e) => return Err(e.message),
            }
        }
        let mut connection = match self.open(host, port).await? {
            Ok(connection) => connection,
            Err(refused) => return Ok(tx.all(refused)),
        };
        match connection.send(tx, self.settings.timeout).await {
            Ok(results) => {
                self.checkin(connection).await;
                Ok(results)
            }
            Err(e) => Err(e.message),
        }
    }

    /// A new connection, ready for MAIL; `Ok(Err(_))` when the server refused us (greeting
    /// or EHLO), which applies to every recipient.
    async fn open(&self, host: &str, port: u16) -> Result<Result<Connection, RcptResult>, String> {
        let s = &self.settings;
        match Connection::open(host, port, s, s.tls.as_ref()).await {
            Err(OpenError::Tls(e)) => {
                tracing::info!(host, port, error = %e, "TLS with the next hop failed; delivering in plaintext");
                match Connection::open(host, port, s, None).await {
                    Ok(c) => Ok(Ok(c)),
                    Err(OpenError::Refused(r)) => Ok(Err(r)),
                    Err(OpenError::Tls(e) | OpenError::Io(e)) => Err(e),
                }
            }
            Err(OpenError::Refused(r)) => Ok(Err(r)),
            Err(OpenError::Io(e)) => Err(e),
            Ok(c) => Ok(Ok(c)),
        }
    }

    /// The most recently used cached connection to `key` that is still fresh.
    fn checkout(&self, key: &(String, u16)) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        let found = loop {
            match list.pop() {
                Some(c) if c.last_used.elapsed() < self.settings.idle => break Some(c),
                // Expired: dropping it closes the socket.
                Some(_) => continue,
                None => break None,
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Back into the cache after a transaction, or closed when it may not be reused.
    async fn checkin(&self, mut connection: Connection) {
        connection.transactions += 1;
        connection.last_used = Instant::now();
        let reusable = !connection.closing
            && connection.transactions < self.settings.reuse_limit
            && !self.settings.idle.is_zero();
        if reusable && let Ok(mut idle) = self.idle.lock() {
            idle.entry((connection.host.clone(), connection.port)).or_default().push(connection);
            return;
        }
        connection.quit(self.settings.timeout).await;
    }

    /// Close cached connections idle for too long (with QUIT, politely) and forget the
    /// limits of destinations nothing is delivering to.
    pub async fn close_idle(&self) {
        let mut expired = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            for list in idle.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|c| c.last_used.elapsed() < self.settings.idle);
                *list = keep;
                expired.extend(old);
            }
            idle.retain(|_, list| !list.is_empty());
        }
        if let Ok(mut limits) = self.limits.lock() {
            let per = self.settings.per_destination.max(1);
            limits.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < per);
        }
        for connection in expired {
            connection.quit(Duration::from_secs(2)).await;
        }
    }
}

/// A reply from an SMTP server.
struct ServerReply {
    code: u16,
    /// Every line, without the code.
    lines: Vec<String>,
}

impl ServerReply {
    /// The reply as one line of text, codes included, for logs and DSNs.
    fn text(&self) -> String {
        let mut text = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&format!(
                "{}{}{line}",
                self.code,
                if i + 1 < self.lines.len() { '-' } else { ' ' }
            ));
        }
        text.trim_end().to_string()
    }

    fn result(&self) -> RcptResult {
        match self.code {
            200..=399 => RcptResult::Delivered(self.text()),
            400..=499 => RcptResult::Transient(self.text()),
            _ => RcptResult::Permanent(self.text()),
        }
    }

    /// A failure for the recipients it applies to (an odd success code counts as transient).
    fn failure(&self) -> RcptResult {
        match self.result() {
            RcptResult::Delivered(text) => RcptResult::Transient(format!("unexpected reply: {text}")),
            other => other,
        }
    }
}

/// Streams the client speaks SMTP over: TCP, then perhaps TLS.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// Why no connection ready for MAIL could be made.
enum OpenError {
    /// The server refused us in its greeting or to EHLO and HELO.
    Refused(RcptResult),
    /// The TLS handshake after STARTTLS failed: try again in plaintext.
    Tls(String),
    /// Could not connect, or the connection broke.
    Io(String),
}

impl From<String> for OpenError {
    fn from(e: String) -> Self {
        OpenError::Io(e)
    }
}

/// Why a transaction ended without per-recipient answers. The connection is unusable.
struct SendError {
    message: String,
    /// Whether message bytes were sent (if not, a new connection may try again at once).
    data_sent: bool,
}

impl SendError {
    fn before_data(message: String) -> Self {
        Self { message, data_sent: false }
    }
}

/// What the server announced in its EHLO reply.
#[derive(Default, Debug)]
struct Extensions {
    pipelining: bool,
    /// SIZE, with its limit (0: none announced).
    size: Option<u64>,
    eight_bit: bool,
    smtputf8: bool,
    starttls: bool,
}

impl Extensions {
    fn parse(ehlo: &ServerReply) -> Self {
        let mut ext = Extensions::default();
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                _ => {}
            }
        }
        ext
    }
}

/// An SMTP connection to a next hop, greeted and ready for MAIL.
struct Connection {
    stream: BufReader<Box<dyn Wire>>,
    host: String,
    port: u16,
    ext: Extensions,
    /// Transactions completed on it.
    transactions: u32,
    last_used: Instant,
    /// The server said 421: it is closing the connection.
    closing: bool,
}

impl Connection {
    async fn open(
        host: &str,
        port: u16,
        settings: &Settings,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Connection, OpenError> {
        let timeout = settings.timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| "timed out connecting".to_string())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: BufReader<Box<dyn Wire>> = BufReader::new(Box::new(tcp));
        let greeting = read_reply(&mut stream, timeout).await?;
        if greeting.code != 220 {
            return Err(OpenError::Refused(greeting.failure()));
        }
        let mut ext = hello(&mut stream, &settings.helo, timeout).await?;
        if let Some(connector) = tls.filter(|_| ext.starttls) {
            let answer = command(&mut stream, "STARTTLS", timeout).await?;
            // Refused: carry on in plaintext, as opportunistic TLS does.
            if answer.code == 220 {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| OpenError::Tls(format!("server name: {e}")))?;
                // Anything the server sent after its 220 is dropped with the buffer (RFC 3207 §4.2).
                let handshake = connector.connect(name, stream.into_inner());
                let secure = match tokio::time::timeout(timeout, handshake).await {
                    Ok(Ok(secure)) => secure,
                    Ok(Err(e)) => return Err(OpenError::Tls(e.to_string())),
                    Err(_) => return Err(OpenError::Tls("handshake timed out".into())),
                };
                stream = BufReader::new(Box::new(secure));
                ext = hello(&mut stream, &settings.helo, timeout).await?;
            }
        }
        Ok(Connection {
            stream,
            host: host.to_string(),
            port,
            ext,
            transactions: 0,
            last_used: Instant::now(),
            closing: false,
        })
    }

    /// One transaction. On `Ok` the connection is ready for the next one (unless `closing`).
    async fn send(&mut self, tx: &Transaction<'_>, timeout: Duration) -> Result<Vec<RcptResult>, SendError> {
        let utf8 = !tx.mail_from.is_ascii() || tx.recipients.iter().any(|r| !r.is_ascii());
        if utf8 && !self.ext.smtputf8 {
            return Ok(tx.all(RcptResult::Permanent(
                "553 5.6.7 the next hop does not support SMTPUTF8, which these addresses need".into(),
            )));
        }
        if let Some(limit) = self.ext.size.filter(|l| *l > 0 && tx.message.len() as u64 > *l) {
            return Ok(tx.all(RcptResult::Permanent(format!(
                "552 5.3.4 message of {} bytes exceeds the next hop's limit of {limit} bytes",
                tx.message.len()
            ))));
        }
        let mut mail = format!("MAIL FROM:<{}>", tx.mail_from);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", tx.message.len()));
        }
        if self.ext.eight_bit && !tx.message.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        let rcpts: Vec<String> = tx.recipients.iter().map(|r| format!("RCPT TO:<{r}>")).collect();

        // Replies to MAIL, each RCPT and DATA: in one write with PIPELINING, else one by one.
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        let data_reply;
        if self.ext.pipelining {
            let mut batch = String::with_capacity(mail.len() + rcpts.len() * 40 + 8);
            for line in std::iter::once(&mail).chain(&rcpts) {
                batch.push_str(line);
                batch.push_str("\r\n");
            }
            batch.push_str("DATA\r\n");
            self.write(batch.as_bytes(), timeout).await.map_err(SendError::before_data)?;
            let mail_reply = self.reply(timeout).await?;
            for _ in &rcpts {
                rcpt_replies.push(self.reply(timeout).await?);
            }
            data_reply = self.reply(timeout).await?;
            if mail_reply.code != 250 {
                return self.refused(tx, &mail_reply, data_reply.code == 354, timeout).await;
            }
        } else {
            let mail_reply = self.command(&mail, timeout).await?;
            if mail_reply.code != 250 {
                return self.refused(tx, &mail_reply, false, timeout).await;
            }
            for line in &rcpts {
                let reply = self.command(line, timeout).await?;
                let accepted = matches!(reply.code, 250 | 251);
                rcpt_replies.push(reply);
                if !accepted && self.closing {
                    break;
                }
            }
            if rcpt_replies.len() < rcpts.len() || !rcpt_replies.iter().any(|r| matches!(r.code, 250 | 251)) {
                // Nobody to send to: no DATA.
                let mut results: Vec<RcptResult> = rcpt_replies.iter().map(ServerReply::failure).collect();
                let last = results.last().cloned().unwrap_or(RcptResult::Transient("no reply".into()));
                results.resize(rcpts.len(), last);
                self.reset(timeout).await;
                return Ok(results);
            }
            data_reply = self.command("DATA", timeout).await?;
        }

        let accepted: Vec<bool> = rcpt_replies.iter().map(|r| matches!(r.code, 250 | 251)).collect();
        if data_reply.code != 354 {
            let failure = data_reply.failure();
            let results = rcpt_replies
                .iter()
                .zip(&accepted)
                .map(|(r, ok)| if *ok { failure.clone() } else { r.failure() })
                .collect();
            self.reset(timeout).await;
            return Ok(results);
        }
        if !accepted.iter().any(|a| *a) {
            // RFC 2920 §3.1: DATA went through with no recipient; end it with an empty message.
            self.write(b".\r\n", timeout).await.map_err(SendError::before_data)?;
            let _ = self.reply(timeout).await;
            return Ok(rcpt_replies.iter().map(ServerReply::failure).collect());
        }
        self.write(&stuffed(tx.message), timeout.max(Duration::from_secs(60)))
            .await
            .map_err(|message| SendError { message, data_sent: true })?;
        // RFC 5321 §4.5.3.2.6: up to ten minutes for the reply to the final dot.
        let end = read_reply(&mut self.stream, timeout.max(Duration::from_secs(600)))
            .await
            .map_err(|message| SendError { message, data_sent: true })?;
        self.closing |= end.code == 421;
        let outcome = end.result();
        Ok(rcpt_replies
            .iter()
            .zip(&accepted)
            .map(|(r, ok)| if *ok { outcome.clone() } else { r.failure() })
            .collect())
    }

    /// MAIL was refused: the same failure for every recipient.
    async fn refused(
        &mut self,
        tx: &Transaction<'_>,
        mail: &ServerReply,
        data_accepted: bool,
        timeout: Duration,
    ) -> Result<Vec<RcptResult>, SendError> {
        if mail.code == 421 {
            // The server is closing (a cached connection that timed out): nothing was sent.
            return Err(SendError::before_data(mail.text()));
        }
        if data_accepted {
            self.write(b".\r\n", timeout).await.map_err(SendError::before_data)?;
            let _ = self.reply(timeout).await;
        }
        self.reset(timeout).await;
        Ok(tx.all(mail.failure()))
    }

    /// RSET after a transaction that did not complete, so the connection can be reused.
    async fn reset(&mut self, timeout: Duration) {
        if self.closing {
            return;
        }
        match command(&mut self.stream, "RSET", timeout).await {
            Ok(r) if r.code == 250 => {}
            _ => self.closing = true,
        }
    }

    async fn quit(mut self, timeout: Duration) {
        if !self.closing {
            let _ = command(&mut self.stream, "QUIT", timeout).await;
        }
        let _ = self.stream.get_mut().shutdown().await;
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), String> {
        write_all(&mut self.stream, bytes, timeout).await
    }

    async fn reply(&mut self, timeout: Duration) -> Result<ServerReply, SendError> {
        let reply = read_reply(&mut self.stream, timeout).await.map_err(SendError::before_data)?;
        self.closing |= reply.code == 421;
        Ok(reply)
    }

    async fn command(&mut self, line: &str, timeout: Duration) -> Result<ServerReply, SendError> {
        self.write(format!("{line}\r\n").as_bytes(), timeout).await.map_err(SendError::before_data)?;
        self.reply(timeout).await
    }
}

/// EHLO, falling back to HELO (then with no extensions).
async fn hello(
    stream: &mut BufReader<Box<dyn Wire>>,
    helo: &str,
    timeout: Duration,
) -> Result<Extensions, OpenError> {
    let ehlo = command(stream, &format!("EHLO {helo}"), timeout).await?;
    if ehlo.code == 250 {
        return Ok(Extensions::parse(&ehlo));
    }
    let reply = command(stream, &format!("HELO {helo}"), timeout).await?;
    if reply.code == 250 { Ok(Extensions::default()) } else { Err(OpenError::Refused(reply.failure())) }
}

/// The message as DATA sends it: dot-stuffed, CRLF-terminated, then the final dot.
fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(message.len() + 64);
    // A dot that starts a line gets another in front of it; the bytes between are copied whole.
    if message.first() == Some(&b'.') {
        payload.push(b'.');
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(message, b"\n.") {
        payload.extend_from_slice(&message[from..=at]);
        payload.push(b'.');
        from = at + 1;
    }
    payload.extend_from_slice(&message[from..]);
    if !payload.is_empty() && !payload.ends_with(b"\r\n") {
        payload.extend_from_slice(b"\r\n");
    }
    payload.extend_from_slice(b".\r\n");
    payload
}

async fn write_all(
    stream: &mut BufReader<Box<dyn Wire>>,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, async {
        stream.get_mut().write_all(bytes).await?;
        stream.get_mut().flush().await
    })
    .await
    .map_err(|_| "timed out sending".to_string())?
    .map_err(|e| format!("connection error: {e}"))
}

async fn read_reply(stream: &mut BufReader<Box<dyn Wire>>, timeout: Duration) -> Result<ServerReply, String> {
    let mut code = 0;
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(timeout, (&mut *stream).take(4096).read_until(b'\n', &mut line))
            .await
            .map_err(|_| "timed out waiting for a reply".to_string())?
            .map_err(|e| format!("connection error: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        if !line.ends_with(b"\n") {
            return Err("reply line too long".into());
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end();
        let this: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("malformed reply {line:?}"))?;
        if lines.is_empty() {
            code = this;
        } else if this != code {
            return Err(format!("reply lines with different codes: {code} then {this}"));
        }
        lines.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(ServerReply { code, lines });
        }
        if lines.len() > 100 {
            return Err("reply of more than 100 lines".into());
        }
    }
}

async fn command(
    stream: &mut BufReader<Box<dyn Wire>>,
    line: &str,
    timeout: Duration,
) -> Result<ServerReply, String> {
    write_all(stream, format!("{line}\r\n").as_bytes(), timeout).await?;
    read_reply(stream, timeout).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_the_final_dot() {
        assert_eq!(stuffed(b"a\r\n.b\r\n..\r\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(stuffed(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b".a\r\n.\r\n\r\n."), b"..a\r\n..\r\n\r\n..\r\n.\r\n");
    }

    #[test]
    fn extensions_from_the_ehlo_reply() {
        let reply = ServerReply {
            code: 250,
            lines: ["mx.test hello", "PIPELINING", "SIZE 1000", "8BITMIME", "starttls"]
                .map(String::from)
                .to_vec(),
        };
        let ext = Extensions::parse(&reply);
        assert!(ext.pipelining && ext.eight_bit && ext.starttls && !ext.smtputf8);
        assert_eq!(ext.size, Some(1000));
        assert_eq!(reply.text(), "250-mx.test hello 250-PIPELINING 250-SIZE 1000 250-8BITMIME 250 starttls");
    }
}
