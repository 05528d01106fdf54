//! `recipients = "verify"`: ask the tenant's next hop whether a recipient exists, as
//! Postfix's `reject_unverified_recipient` does — `MAIL FROM:<>`, `RCPT TO:<address>`, `RSET`
//! on a connection kept for the next probe — and remember the answer (a positive and a
//! negative time to live, a bounded number of answers per tenant). A next hop that cannot
//! answer (down, slow, a 4xx, garbage) gives no answer, which is never cached.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use std::path::PathBuf;

use crate::config::{Config, Endpoint, TenantConfig, TlsMode};
use crate::sync::lock;

/// What the next hop said of a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It exists (2xx to RCPT).
    Exists,
    /// It does not (5xx to RCPT): the next hop's reply.
    Unknown(String),
    /// No answer, and why.
    Unavailable(String),
}

/// What a remembered "does not exist" says (the next hop's own words are not kept).
pub const CACHED_REFUSAL: &str = "no such recipient (an earlier answer, cached)";

/// A tenant's probe settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the next hop listens.
    pub endpoint: Endpoint,
    /// Speak LMTP (LHLO) instead of SMTP.
    pub lmtp: bool,
    /// Our EHLO name.
    pub helo: String,
    /// TLS towards it (the tenant's `next_hop_tls`).
    pub tls: TlsMode,
    /// CA file for `verify` (None: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// For connecting and the whole probe.
    pub timeout: Duration,
    /// How long answers are remembered.
    pub positive_ttl: Duration,
    /// How long "does not exist" is remembered.
    pub negative_ttl: Duration,
    /// Answers remembered.
    pub entries: usize,
}

impl Settings {
    /// The settings of tenant `t` of `config` (None when its next hop is not SMTP or LMTP).
    pub fn of(config: &Config, t: &TenantConfig) -> Option<Self> {
        let (endpoint, lmtp) = t.next_hop.as_ref()?.server().ok()?;
        Some(Settings {
            endpoint,
            lmtp,
            helo: config.server.hostname.clone(),
            tls: t.next_hop_tls,
            ca_file: t.next_hop_ca_file.as_ref().map(|f| config.resolve(f)),
            timeout: Duration::from_secs(t.verify_timeout_secs.max(1)),
            positive_ttl: Duration::from_secs(t.verify_positive_ttl_secs),
            negative_ttl: Duration::from_secs(t.verify_negative_ttl_secs),
            entries: t.verify_cache_entries.max(1),
        })
    }
}

/// Remembered answers of one tenant, oldest first.
#[derive(Default)]
struct Cache {
    answers: HashMap<String, (bool, Instant)>,
    order: VecDeque<String>,
}

/// Idle connections kept per next hop.
const IDLE_PER_HOP: usize = 4;
/// How long an idle probe connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// Connections are kept per next hop and TLS mode.
type HopKey = (Endpoint, TlsMode, Option<PathBuf>);

/// A kept connection and since when it is idle.
type Idle = (Probe, Instant);

/// The probes of every tenant: their caches and idle connections.
#[derive(Default)]
pub struct Verifier {
    caches: Mutex<HashMap<String, Cache>>,
    idle: Mutex<HashMap<HopKey, Vec<Idle>>>,
    /// TLS clients by mode and CA file.
    connectors: Mutex<HashMap<(TlsMode, Option<PathBuf>), tokio_rustls::TlsConnector>>,
}

impl Verifier {
    /// Whether `address` exists for `tenant`: from the cache, else by asking its next hop.
    pub async fn check(&self, tenant: &str, settings: &Settings, address: &str) -> Answer {
        let key = address.to_lowercase();
        if let Some(answer) = self.cached(tenant, &key) {
            return answer;
        }
        let answer = match tokio::time::timeout(settings.timeout, self.probe(settings, address)).await {
            Ok(answer) => answer,
            Err(_) => Answer::Unavailable(format!("no answer within {} s", settings.timeout.as_secs())),
        };
        match &answer {
            Answer::Exists => self.remember(tenant, settings, key, true),
            Answer::Unknown(_) => self.remember(tenant, settings, key, false),
            Answer::Unavailable(_) => {}
        }
        answer
    }

    fn cached(&self, tenant: &str, key: &str) -> Option<Answer> {
        let caches = lock(&self.caches);
        let (exists, until) = caches.get(tenant)?.answers.get(key)?;
        if Instant::now() >= *until {
            return None;
        }
        Some(if *exists { Answer::Exists } else { Answer::Unknown(CACHED_REFUSAL.into()) })
    }

    fn remember(&self, tenant: &str, settings: &Settings, key: String, exists: bool) {
        let ttl = if exists { settings.positive_ttl } else { settings.negative_ttl };
        if ttl.is_zero() {
            return;
        }
        let mut caches = lock(&self.caches);
        let cache = caches.entry(tenant.to_string()).or_default();
        if cache.answers.insert(key.clone(), (exists, Instant::now() + ttl)).is_none() {
            cache.order.push_back(key);
        }
        while cache.answers.len() > settings.entries {
            let Some(oldest) = cache.order.pop_front() else { break };
            cache.answers.remove(&oldest);
        }
    }

    /// Ask the next hop, on a kept connection if one is idle (once more on a new one when
    /// the kept one turns out closed).
    async fn probe(&self, settings: &Settings, address: &str) -> Answer {
        let hop = (settings.endpoint.clone(), settings.tls, settings.ca_file.clone());
        let kept = {
            let mut idle = lock(&self.idle);
            let list = idle.entry(hop.clone()).or_default();
            list.retain(|(_, since)| since.elapsed() < IDLE_FOR);
            list.pop().map(|(p, _)| p)
        };
        if let Some(mut probe) = kept
            && let Ok(answer) = probe.ask(address).await
        {
            self.keep(hop, probe);
            return answer;
        }
        let connector = match self.connector(settings) {
            Ok(c) => c,
            Err(why) => return Answer::Unavailable(why),
        };
        let opened = match Probe::open(settings, connector.as_ref()).await {
            // Opportunistic TLS that fails: plaintext, as delivery does.
            Err(_) if connector.is_some() && !settings.tls.required() => Probe::open(settings, None).await,
            other => other,
        };
        let mut probe = match opened {
            Ok(p) => p,
            Err(why) => return Answer::Unavailable(why),
        };
        match probe.ask(address).await {
            Ok(answer) => {
                self.keep(hop, probe);
                answer
            }
            Err(why) => Answer::Unavailable(why),
        }
    }

    /// The TLS client for the settings' mode (None: plaintext).
    fn connector(&self, settings: &Settings) -> Result<Option<tokio_rustls::TlsConnector>, String> {
        let key = (settings.tls, settings.ca_file.clone());
        if settings.tls == TlsMode::None {
            return Ok(None);
        }
        if let Some(c) = lock(&self.connectors).get(&key) {
            return Ok(Some(c.clone()));
        }
        let made = match settings.tls {
            TlsMode::Verify => crate::tls::verifying_connector(settings.ca_file.as_deref())?,
            _ => crate::tls::tls_connector()?,
        };
        lock(&self.connectors).insert(key, made.clone());
        Ok(Some(made))
    }

    fn keep(&self, hop: HopKey, probe: Probe) {
        let mut idle = lock(&self.idle);
        let list = idle.entry(hop).or_default();
        if list.len() < IDLE_PER_HOP {
            list.push((probe, Instant::now()));
        }
    }
}

/// Streams a probe speaks over: TCP, or a Unix socket.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// A connection to a next hop, greeted.
struct Probe {
    stream: BufReader<Box<dyn Wire>>,
    smtputf8: bool,
}

impl Probe {
    /// Connect, read the greeting, say EHLO (LHLO), and start TLS with `tls` when the next
    /// hop offers it (and fail if its mode requires TLS and there is none).
    async fn open(settings: &Settings, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Probe, String> {
        let wire: Box<dyn Wire> = match &settings.endpoint {
            Endpoint::Tcp { host, port } => {
                let tcp = crate::net::connect_tcp(host, *port)
                    .await
                    .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                Box::new(tcp)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?,
            ),
        };
        let mut probe = Probe { stream: BufReader::new(wire), smtputf8: false };
        let (code, _) = probe.reply().await?;
        if code != 220 {
            return Err(format!("greeting {code}"));
        }
        let mut lines = probe.hello(settings).await?;
        let starttls = lines.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS"));
        let mut secure = false;
        if let Some(connector) = tls.filter(|_| starttls) {
            let (code, _) = probe.command("STARTTLS").await?;
            if code == 220 {
                let name = match &settings.endpoint {
                    Endpoint::Tcp { host, .. } => host.clone(),
                    Endpoint::Unix(_) => "localhost".into(),
                };
                let name =
                    rustls::pki_types::ServerName::try_from(name).map_err(|e| format!("server name: {e}"))?;
                let secured = connector
                    .connect(name, probe.stream.into_inner())
                    .await
                    .map_err(|e| format!("TLS with the next hop failed: {e}"))?;
                probe = Probe { stream: BufReader::new(Box::new(secured)), smtputf8: false };
                lines = probe.hello(settings).await?;
                secure = true;
            }
        }
        if !secure && settings.tls.required() {
            return Err(format!("TLS is required ({:?}) but the next hop does not start it", settings.tls));
        }
        probe.smtputf8 = lines.iter().any(|l| l.eq_ignore_ascii_case("SMTPUTF8"));
        Ok(probe)
    }

    /// EHLO (LHLO for LMTP): the lines of the reply.
    async fn hello(&mut self, settings: &Settings) -> Result<Vec<String>, String> {
        let hello = if settings.lmtp { "LHLO" } else { "EHLO" };
        let (code, lines) = self.command(&format!("{hello} {}", settings.helo)).await?;
        if code != 250 {
            return Err(format!("{hello} answered {code}"));
        }
        Ok(lines)
    }

    /// One probe: MAIL FROM:<>, RCPT TO, RSET. `Err`: the connection is no good.
    async fn ask(&mut self, address: &str) -> Result<Answer, String> {
        let utf8 = !address.is_ascii();
        if utf8 && !self.smtputf8 {
            return Ok(Answer::Unavailable("the next hop does not take SMTPUTF8 addresses".into()));
        }
        let mail = if utf8 { "MAIL FROM:<> SMTPUTF8" } else { "MAIL FROM:<>" };
        let (code, _) = self.command(mail).await?;
        if code != 250 {
            return Err(format!("MAIL answered {code}"));
        }
        let (code, lines) = self.command(&format!("RCPT TO:<{address}>")).await?;
        let text = format!("{code} {}", lines.join(" "));
        let (reset, _) = self.command("RSET").await?;
        if reset != 250 {
            return Err(format!("RSET answered {reset}"));
        }
        Ok(match code {
            200..=299 => Answer::Exists,
            500..=599 => Answer::Unknown(text),
            _ => Answer::Unavailable(text),
        })
    }

    async fn command(&mut self, line: &str) -> Result<(u16, Vec<String>), String> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.reply().await
    }

    /// A reply: its code and the text of each line. Anything else (a line without a code,
    /// lines without end, codes that change) is garbage, and an error.
    async fn reply(&mut self) -> Result<(u16, Vec<String>), String> {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            (&mut self.stream)
                .take(1024)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if line.is_empty() {
                return Err("the next hop closed the connection".into());
            }
            if !line.ends_with(b"\n") || line.len() < 4 || lines.len() > 100 {
                return Err("garbage from the next hop".into());
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            let code: u16 = text
                .get(..3)
                .and_then(|c| c.parse().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or("garbage from the next hop")?;
            let last = match text.as_bytes().get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                _ => return Err("garbage from the next hop".into()),
            };
            lines.push(text.get(4..).unwrap_or_default().to_string());
            if last {
                return Ok((code, lines));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A next hop on loopback that answers each connection with `script(line)` per line
    /// read, after `greeting`.
    async fn next_hop(greeting: &'static [u8], script: fn(&str) -> Vec<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let _ = stream.get_mut().write_all(greeting).await;
                    let mut line = String::new();
                    while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                        let answer = script(line.trim_end());
                        let _ = stream.get_mut().write_all(&answer).await;
                        line.clear();
                    }
                });
            }
        });
        port
    }

    fn settings(port: u16) -> Settings {
        Settings {
            endpoint: Endpoint::Tcp { host: "127.0.0.1".into(), port },
            lmtp: false,
            helo: "relay.test".into(),
            tls: TlsMode::Opportunistic,
            ca_file: None,
            timeout: Duration::from_millis(500),
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            entries: 2,
        }
    }

    #[tokio::test]
    async fn answers_are_cached_and_bad_next_hops_give_none() {
        let port = next_hop(b"220 inside\r\n", |line| {
            if line.starts_with("RCPT TO:<gone") {
                b"550 5.1.1 no such user\r\n".to_vec()
            } else if line.starts_with("EHLO") {
                b"250-inside\r\n250 PIPELINING\r\n".to_vec()
            } else {
                b"250 ok\r\n".to_vec()
            }
        })
        .await;
        let verifier = Verifier::default();
        let s = settings(port);
        assert_eq!(verifier.check("t", &s, "alice@x.test").await, Answer::Exists);
        assert!(
            matches!(verifier.check("t", &s, "gone@x.test").await, Answer::Unknown(t) if t.contains("5.1.1"))
        );
        assert_eq!(verifier.check("t", &s, "Gone@X.test").await, Answer::Unknown(CACHED_REFUSAL.into()));
        // Two answers at most: the oldest goes.
        assert_eq!(verifier.check("t", &s, "carol@x.test").await, Answer::Exists);
        assert_eq!(lock(&verifier.caches)["t"].answers.len(), 2);
        assert!(!lock(&verifier.caches)["t"].answers.contains_key("alice@x.test"));

        // Garbage, silence, a refusal to talk, nobody listening: no answer, within the timeout.
        let garbage = next_hop(b"hello there\r\n", |_| b"what?\r\n".to_vec()).await;
        let silent = next_hop(b"", |_| Vec::new()).await;
        let busy = next_hop(b"421 4.3.2 busy\r\n", |_| Vec::new()).await;
        let tempfail = next_hop(b"220 inside\r\n", |line| {
            if line.starts_with("RCPT") { b"451 4.3.0 later\r\n".to_vec() } else { b"250 ok\r\n".to_vec() }
        })
        .await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        for port in [garbage, silent, busy, tempfail, closed] {
            let started = Instant::now();
            let answer = verifier.check("u", &settings(port), "alice@x.test").await;
            assert!(matches!(answer, Answer::Unavailable(_)), "port {port}: {answer:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        assert!(!lock(&verifier.caches).contains_key("u"), "no answer is never cached");
    }
}
