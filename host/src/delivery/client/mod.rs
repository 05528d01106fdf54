//! The SMTP client that takes queued mail to next hops, and the pool of its connections.
//!
//! The client is our own: delivery needs every recipient's own reply to retry or bounce just
//! that recipient, and it sends the spooled bytes verbatim with dot stuffing; the client
//! crates in the ecosystem are made for message submission and answer per message, not per
//! recipient, and none keeps a per-destination connection cache.
//!
//! What it does, as a production MTA's client would:
//! - STARTTLS (RFC 3207) as each next hop's mode says: opportunistic (RFC 7435: encrypt, do
//!   not authenticate, a plaintext retry when the handshake fails), required (no plaintext),
//!   or verified (the certificate chain against the system's roots or a CA file, and the
//!   name); none for next hops set so;
//! - AUTH PLAIN or LOGIN to a smarthost, over TLS only;
//! - LMTP (RFC 2033) next hops, over TCP or a Unix socket: LHLO, and one reply per
//!   recipient after the message;
//! - PIPELINING (RFC 2920): MAIL, every RCPT and DATA go in one write when the server
//!   offers it, so a transaction costs two round trips instead of one per command;
//! - SIZE, 8BITMIME and SMTPUTF8 parameters when the server offers them;
//! - connection reuse: after a transaction the connection waits in a cache for the next
//!   message to the same host (`delivery.connection_cache_secs`, at most
//!   `delivery.connection_reuse_limit` transactions); a cached connection the server has
//!   meanwhile closed is noticed before any message byte is sent and replaced by a new one;
//! - per-destination concurrency: at most `delivery.destination_concurrency` deliveries (and
//!   so connections, cached ones included) per destination at a time;
//! - TCP keepalive ([`crate::net::connect_tcp`]): a connection the server no longer knows is
//!   noticed within half a minute, not at the end of a reply timeout.

mod auth;
mod connection;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RcptResult;
pub use crate::tls::{tls_connector, verifying_connector};
use connection::{Connection, OpenError};

pub use crate::config::Endpoint;
use crate::config::TlsMode;
use std::path::PathBuf;

/// A next hop and how to talk to it: the connection cache is kept per peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Where.
    pub endpoint: Endpoint,
    /// LMTP instead of SMTP.
    pub lmtp: bool,
    /// Its TLS mode.
    pub tls: TlsMode,
    /// CA file for `verify` (None: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Credentials file for AUTH (smarthosts only).
    pub auth_file: Option<PathBuf>,
}

impl Peer {
    /// An SMTP server at `host:port` with opportunistic TLS and no AUTH.
    pub fn smtp(host: &str, port: u16) -> Self {
        Peer {
            endpoint: Endpoint::Tcp { host: host.to_string(), port },
            lmtp: false,
            tls: TlsMode::Opportunistic,
            ca_file: None,
            auth_file: None,
        }
    }

    /// The name its certificate must carry under `verify` (and SNI).
    fn tls_name(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { host, .. } => host.clone(),
            Endpoint::Unix(_) => "localhost".into(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.lmtp { "lmtp" } else { "smtp" };
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "{scheme}:[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{scheme}:{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "{scheme}:unix:{}", path.display()),
        }
    }
}

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
    /// TLS client for opportunistic STARTTLS (None: opportunistic means plaintext).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// TLS client that checks nothing, for `required`.
    pub any_certificate: Option<tokio_rustls::TlsConnector>,
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
    idle: Mutex<HashMap<Peer, Vec<Connection>>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Verifying TLS clients, by CA file (None: the system's roots).
    verifying: Mutex<HashMap<Option<PathBuf>, tokio_rustls::TlsConnector>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            idle: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            verifying: Mutex::new(HashMap::new()),
        }
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

    /// Deliver to `peer`: each recipient's outcome, or why no server there gave one (could
    /// not connect, the connection broke), which the caller treats as transient.
    pub async fn deliver(&self, peer: &Peer, tx: &Transaction<'_>) -> Result<Vec<RcptResult>, String> {
        let mut results = Vec::with_capacity(tx.recipients.len());
        for (n, chunk) in tx.recipients.chunks(RECIPIENTS_PER_TRANSACTION).enumerate() {
            let part = Transaction { recipients: chunk, ..*tx };
            match self.one(peer, &part).await {
                Ok(r) => results.extend(r),
                Err(e) if n == 0 => return Err(e),
                Err(e) => results.extend(part.all(RcptResult::Transient(format!("{peer}: {e}")))),
            }
        }
        Ok(results)
    }

    async fn one(&self, peer: &Peer, tx: &Transaction<'_>) -> Result<Vec<RcptResult>, String> {
        while let Some(mut connection) = self.checkout(peer) {
            match connection.send(tx, self.settings.timeout).await {
                Ok(results) => {
                    self.checkin(connection).await;
                    return Ok(results);
                }
                // The server closed the cached connection meanwhile; nothing was delivered.
                Err(e) if !e.data_sent => {
                    tracing::debug!(peer = %peer, error = %e.message, "a cached connection was stale");
                }
                Err(e) => return Err(e.message),
            }
        }
        let mut connection = match self.open(peer).await? {
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

    /// The TLS client `peer`'s mode needs (None: plaintext).
    fn connector(&self, peer: &Peer) -> Result<Option<tokio_rustls::TlsConnector>, String> {
        Ok(match peer.tls {
            TlsMode::None => None,
            TlsMode::Opportunistic => self.settings.tls.clone(),
            TlsMode::Required => {
                Some(self.settings.any_certificate.clone().ok_or("no TLS client could be made")?)
            }
            TlsMode::Verify => {
                let mut verifying = self.verifying.lock().map_err(|e| e.to_string())?;
                match verifying.get(&peer.ca_file) {
                    Some(c) => Some(c.clone()),
                    None => {
                        let c = verifying_connector(peer.ca_file.as_deref())?;
                        verifying.insert(peer.ca_file.clone(), c.clone());
                        Some(c)
                    }
                }
            }
        })
    }

    /// A new connection, ready for MAIL; `Ok(Err(_))` when the server refused us (greeting,
    /// EHLO, TLS its mode requires, AUTH), which applies to every recipient.
    async fn open(&self, peer: &Peer) -> Result<Result<Connection, RcptResult>, String> {
        let s = &self.settings;
        let connector = match self.connector(peer) {
            Ok(c) => c,
            Err(e) => return Ok(Err(RcptResult::Transient(format!("454 4.7.5 TLS client for {peer}: {e}")))),
        };
        match Connection::open(peer, s, connector.as_ref()).await {
            Err(OpenError::Tls(e)) if peer.tls.required() => {
                tracing::warn!(peer = %peer, error = %e, "TLS with the next hop failed; its mode requires TLS: delivery deferred");
                Ok(Err(RcptResult::Transient(format!("454 4.7.5 TLS with {peer} failed: {e}"))))
            }
            Err(OpenError::Tls(e)) => {
                tracing::info!(peer = %peer, error = %e, "TLS with the next hop failed; delivering in plaintext");
                match Connection::open(peer, s, None).await {
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
    fn checkout(&self, key: &Peer) -> Option<Connection> {
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
            idle.entry(connection.peer.clone()).or_default().push(connection);
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
