//! One SMTP connection to a next hop: the greeting, EHLO and STARTTLS, a transaction with
//! PIPELINING and a reply per recipient, RSET and QUIT.

use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};

use super::wire::{ServerReply, Wire, command, read_reply, write_all};
use super::{Endpoint, Peer, Settings, Transaction};
use crate::delivery::RcptResult;
use crate::smtp::data::dot_stuffed;

/// Why no connection ready for MAIL could be made.
pub(super) enum OpenError {
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
pub(super) struct SendError {
    pub message: String,
    /// Whether message bytes were sent (if not, a new connection may try again at once).
    pub data_sent: bool,
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
    /// AUTH mechanisms offered, upper case.
    auth: Vec<String>,
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
                "AUTH" => ext.auth.extend(words.by_ref().map(str::to_ascii_uppercase)),
                _ => {}
            }
        }
        ext
    }
}

/// An SMTP or LMTP connection to a next hop, greeted (and authenticated) and ready for MAIL.
pub(super) struct Connection {
    stream: BufReader<Box<dyn Wire>>,
    pub peer: Peer,
    ext: Extensions,
    /// Transactions completed on it.
    pub transactions: u32,
    pub last_used: Instant,
    /// The server said 421: it is closing the connection.
    pub closing: bool,
}

impl Connection {
    /// Connect to `peer`, read its greeting, say EHLO (LHLO for LMTP), start TLS as its
    /// mode says (`tls`: the connector for it; None: plaintext), and authenticate when it has
    /// credentials.
    pub(super) async fn open(
        peer: &Peer,
        settings: &Settings,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Connection, OpenError> {
        let timeout = settings.timeout;
        let wire: Box<dyn Wire> = match &peer.endpoint {
            Endpoint::Tcp { host, port } => {
                let tcp = tokio::time::timeout(timeout, crate::net::connect_tcp(host, *port))
                    .await
                    .map_err(|_| "timed out connecting".to_string())?
                    .map_err(|e| format!("cannot connect: {e}"))?;
                Box::new(tcp)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| "timed out connecting".to_string())?
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?,
            ),
        };
        let mut stream = BufReader::new(wire);
        let greeting = read_reply(&mut stream, timeout).await?;
        if greeting.code != 220 {
            return Err(OpenError::Refused(greeting.failure()));
        }
        let mut ext = hello(&mut stream, &settings.helo, peer.lmtp, timeout).await?;
        let mut secure = false;
        if let Some(connector) = tls.filter(|_| ext.starttls) {
            let answer = command(&mut stream, "STARTTLS", timeout).await?;
            // Refused: carry on in plaintext if the mode allows it (checked below).
            if answer.code == 220 {
                let name = rustls::pki_types::ServerName::try_from(peer.tls_name())
                    .map_err(|e| OpenError::Tls(format!("server name: {e}")))?;
                // Anything the server sent after its 220 is dropped with the buffer (RFC 3207 §4.2).
                let handshake = connector.connect(name, stream.into_inner());
                let tls_stream = match tokio::time::timeout(timeout, handshake).await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(e)) => return Err(OpenError::Tls(e.to_string())),
                    Err(_) => return Err(OpenError::Tls("handshake timed out".into())),
                };
                stream = BufReader::new(Box::new(tls_stream));
                ext = hello(&mut stream, &settings.helo, peer.lmtp, timeout).await?;
                secure = true;
            }
        }
        if !secure && peer.tls.required() {
            let why = if ext.starttls { "refused STARTTLS" } else { "does not offer STARTTLS" };
            return Err(OpenError::Refused(RcptResult::Transient(format!(
                "450 4.7.5 TLS is required ({:?}) but {peer} {why}",
                peer.tls
            ))));
        }
        if let Some(file) = &peer.auth_file {
            // The configuration allows credentials only with `required` or `verify`.
            if !secure {
                return Err(OpenError::Refused(RcptResult::Transient(format!(
                    "450 4.7.5 AUTH to {peer} needs TLS"
                ))));
            }
            super::auth::authenticate(&mut stream, file, &ext.auth, timeout)
                .await
                .map_err(OpenError::Refused)?;
        }
        Ok(Connection {
            stream,
            peer: peer.clone(),
            ext,
            transactions: 0,
            last_used: Instant::now(),
            closing: false,
        })
    }

    /// One transaction. On `Ok` the connection is ready for the next one (unless `closing`).
    pub(super) async fn send(
        &mut self,
        tx: &Transaction<'_>,
        timeout: Duration,
    ) -> Result<Vec<RcptResult>, SendError> {
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
        self.write(&dot_stuffed(tx.message), timeout.max(Duration::from_secs(60)))
            .await
            .map_err(|message| SendError { message, data_sent: true })?;
        // RFC 5321 §4.5.3.2.6: up to ten minutes for the reply to the final dot; LMTP gives
        // one reply per accepted recipient, in order (RFC 2033 §4.2).
        let replies = if self.peer.lmtp { accepted.iter().filter(|a| **a).count() } else { 1 };
        let mut ends = Vec::with_capacity(replies);
        for _ in 0..replies {
            let end = read_reply(&mut self.stream, timeout.max(Duration::from_secs(600)))
                .await
                .map_err(|message| SendError { message, data_sent: true })?;
            self.closing |= end.code == 421;
            ends.push(end.result());
        }
        let mut ends = ends.into_iter();
        let mut last = None;
        Ok(rcpt_replies
            .iter()
            .zip(&accepted)
            .map(|(r, ok)| {
                if !*ok {
                    return r.failure();
                }
                // SMTP: the one reply for every accepted recipient.
                let outcome = if self.peer.lmtp { ends.next() } else { last.clone().or_else(|| ends.next()) };
                let outcome = outcome.unwrap_or_else(|| RcptResult::Transient("no reply".into()));
                last = Some(outcome.clone());
                outcome
            })
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

    pub(super) async fn quit(mut self, timeout: Duration) {
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

/// EHLO, falling back to HELO (then with no extensions); LHLO for LMTP (RFC 2033 §4.1).
async fn hello(
    stream: &mut BufReader<Box<dyn Wire>>,
    helo: &str,
    lmtp: bool,
    timeout: Duration,
) -> Result<Extensions, OpenError> {
    let verb = if lmtp { "LHLO" } else { "EHLO" };
    let ehlo = command(stream, &format!("{verb} {helo}"), timeout).await?;
    if ehlo.code == 250 {
        let mut ext = Extensions::parse(&ehlo);
        // RFC 2033 §4.2: LMTP servers support PIPELINING.
        ext.pipelining |= lmtp;
        return Ok(ext);
    }
    if lmtp {
        return Err(OpenError::Refused(ehlo.failure()));
    }
    let reply = command(stream, &format!("HELO {helo}"), timeout).await?;
    if reply.code == 250 { Ok(Extensions::default()) } else { Err(OpenError::Refused(reply.failure())) }
}

#[cfg(test)]
mod tests {
    use super::*;

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
