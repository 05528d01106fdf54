//! The SMTP server: accepts connections, drives the protocol core ([`crate::smtp`]) over the
//! socket, runs each stage through the tenant's policy chain, and puts accepted messages in
//! the spool before answering 250.
//!
//! Relay authorization happens in the protocol core, before any policy runs: a recipient
//! outside the tenants' domains needs a trusted or authenticated client whatever the
//! policies say, and a policy `accept` only ends its own stage.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use std::path::PathBuf;

use arc_swap::ArcSwap;

use crate::auth;
use crate::config::Config;
use crate::dns::DnsResolver;
use crate::input::Input;
use crate::live::{Live, Loader, Tenant};
use crate::policy::chain::{ChainSession, Judgement, Outcome, StageInput, StageResult, Transaction};
use crate::policy::{
    EngineOptions, HostServices, ParsedMessage, PolicyEngine, SessionInfo, Stage, TlsInfo, Verdict,
};
use crate::smtp::command;
use crate::smtp::data::{DataDecoder, DataEvent};
use crate::smtp::reply::{render, reply};
use crate::smtp::session::{Destination, Session, SessionLimits, Step};
use crate::spool::{self, QueuedMessage, QueuedRecipient, RecipientStatus, Spool, Store};
use crate::state::kv::MemoryKv;
use crate::state::redb_kv::RedbKv;
use crate::state::redis_kv::RedisKv;

/// The running relay: the live snapshot of configuration and tenants (swapped on reload),
/// the spool, delivery, counters.
pub struct Relay {
    pub(crate) live: ArcSwap<Live>,
    pub(crate) loader: Loader,
    /// The configuration file (None: the embedded default, which is never re-read).
    pub(crate) config_path: Option<PathBuf>,
    /// Each tenant's previous generation, for rollback.
    pub(crate) previous: Mutex<HashMap<String, Arc<Tenant>>>,
    pub(crate) reloading: tokio::sync::Mutex<()>,
    pub(crate) listeners: Mutex<HashMap<SocketAddr, tokio::task::AbortHandle>>,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// DNS, for policies, client names and MX resolution.
    pub dns: Arc<DnsResolver>,
    /// TLS client for STARTTLS towards next hops (None: delivery stays in plaintext).
    tls_client: Option<tokio_rustls::TlsConnector>,
    delivery: mpsc::UnboundedSender<crate::delivery::Queued>,
    connections: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Tenant → (minute since the epoch, transactions accepted in it).
    rates: Mutex<HashMap<String, (u64, u32)>>,
    /// Client IP → (failed AUTH attempts, when the first of them was).
    auth_failures: Mutex<HashMap<IpAddr, (u32, std::time::Instant)>>,
}

impl Relay {
    /// Whether `ip` has failed AUTH `limit` times within `window` (and so may not try now).
    fn auth_locked(&self, ip: IpAddr, limit: u32, window: Duration) -> bool {
        let mut failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((_, first)) if first.elapsed() >= window => {
                failures.remove(&ip);
                false
            }
            Some((count, _)) => *count >= limit,
            None => false,
        }
    }

    /// Count a failed AUTH from `ip`.
    fn auth_failed(&self, ip: IpAddr, window: Duration) {
        let mut failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= 100_000 {
            failures.retain(|_, (_, first)| first.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 += 1;
    }

    /// Open the spool and load every tenant's policies. Returns the relay and the receiver
    /// of new queue ids for the delivery task. `config_path` is the file a reload re-reads.
    pub async fn build(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<crate::delivery::Queued>)> {
        let spool_dir = config.resolve(&config.spool.dir);
        let spool = Spool::open_with(&spool_dir, config.spool.sync)
            .map_err(|e| anyhow::anyhow!("spool {}: cannot open: {e}", spool_dir.display()))?;
        let dns =
            Arc::new(DnsResolver::new(&config.dns.nameservers).map_err(|e| anyhow::anyhow!("dns: {e}"))?);
        let engine = PolicyEngine::new(EngineOptions {
            // Sessions of two generations may overlap during a reload.
            max_instances: u32::try_from(config.server.max_connections.saturating_mul(2).clamp(16, 10_000))
                .unwrap_or(1000),
            // Reloads take effect on baseline code at once; optimised code follows.
            baseline_tier: true,
            ..EngineOptions::default()
        })?;
        let services =
            HostServices {
                kv: match config.state.backend.as_str() {
                    "memory" => Arc::new(MemoryKv::new(config.state.max_keys)),
                    url if url.starts_with("redis://") => Arc::new(
                        RedisKv::new(url, &config.state.prefix)
                            .map_err(|e| anyhow::anyhow!("state.backend: {e}"))?,
                    ),
                    _ => {
                        let path = config.resolve(&config.state.path);
                        Arc::new(RedbKv::open(&path, config.state.max_keys).map_err(|e| {
                            anyhow::anyhow!("state.path: cannot open the key-value store: {e}")
                        })?)
                    }
                },
                resolver: dns.clone(),
                clock: crate::policy::Clock::System,
            };
        let loader = Loader::new(engine, services);
        let (tx, rx) = mpsc::unbounded_channel();
        let tls_client = if config.delivery.starttls {
            Some(crate::delivery::client::tls_connector().map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        let connections = Arc::new(Semaphore::new(config.server.max_connections));
        let live = crate::live::initial(&loader, config).await?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        for tenant in &live.tenants {
            metrics.set_generation(&tenant.name, tenant.generation);
        }
        let relay = Relay {
            live: ArcSwap::from_pointee(live),
            loader,
            config_path,
            previous: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            listeners: Mutex::new(HashMap::new()),
            tls_client,
            dns,
            metrics,
            connections,
            spool: Arc::new(spool),
            delivery: tx,
            per_ip: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            auth_failures: Mutex::new(HashMap::new()),
        };
        Ok((Arc::new(relay), rx))
    }

    /// Whether `tenant` may start one more transaction this minute under `per_minute`;
    /// `take`: count it.
    fn message_rate(&self, tenant: &str, per_minute: u32, take: bool) -> bool {
        let minute = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60);
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let (at, count) = rates.entry(tenant.to_string()).or_insert((minute, 0));
        if *at != minute {
            *at = minute;
            *count = 0;
        }
        if *count >= per_minute {
            return false;
        }
        if take {
            *count += 1;
        }
        true
    }

    /// The current snapshot of configuration and tenants.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The TLS client for next hops, when STARTTLS towards them is on.
    pub fn tls_client(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.tls_client.as_ref()
    }

    /// Tell the delivery task about a newly queued message.
    pub fn notify(&self, id: String) {
        let _ = self.delivery.send(crate::delivery::Queued { id, loaded: None });
    }

    /// Accept connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let relay = self.clone();
            tokio::spawn(async move { relay.connection(stream, peer).await });
        }
    }

    async fn connection(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let Ok(_permit) = self.connections.clone().try_acquire_owned() else {
            let _ = stream
                .write_all(&render(&reply(421, "4.7.0", "Too many connections, try again later")))
                .await;
            return;
        };
        // One snapshot for the whole session; its tenant (by client network) labels it.
        let live = self.live();
        let session_tenant = live.tenant_of_client(peer.ip());
        let tenant = live.tenants[session_tenant].name.clone();
        let _active = self.metrics.connection(&tenant);
        let ip = peer.ip();
        let admitted = {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.live().config.server.max_connections_per_ip {
                false
            } else {
                *count += 1;
                true
            }
        };
        if !admitted {
            let r = reply(421, "4.7.0", "Too many connections from your address, try again later");
            let _ = stream.write_all(&render(&r)).await;
            return;
        }
        let mut conn = Connection::new(self.clone(), live, session_tenant, peer, local);
        if let Err(e) = conn.serve(stream).await {
            tracing::debug!(tenant = %tenant, client = %peer, error = %e, "connection ended with an error");
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// A command line as read.
enum Line {
    Command(Vec<u8>),
    TooLong,
    /// Far over the limit and still no line end: not a client that merely overshot.
    Runaway,
    BareLineEnding,
    Eof,
}

/// Bytes of one over-long line read (and dropped) while waiting for its end before the
/// session is closed: a client that sent a slightly long line gets its error and goes on, a
/// stream of megabytes without a line end does not hold the session.
const RUNAWAY_LINE_BYTES: usize = 64 * 1024;

/// Read one CRLF-terminated line of at most `max` bytes.
async fn read_line<R: AsyncRead + Unpin>(reader: &mut Input<R>, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut read = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if !too_long {
            line.extend_from_slice(chunk);
            if line.len() > max {
                too_long = true;
                line = Vec::new();
            }
        }
        reader.consume(n);
        read += n;
        if done {
            break;
        }
        if too_long && read > RUNAWAY_LINE_BYTES.max(max) {
            return Ok(Line::Runaway);
        }
    }
    if too_long {
        return Ok(Line::TooLong);
    }
    let Some(body) = line.strip_suffix(b"\r\n") else { return Ok(Line::BareLineEnding) };
    if body.contains(&b'\r') || body.contains(&b'\n') {
        return Ok(Line::BareLineEnding);
    }
    Ok(Line::Command(body.to_vec()))
}

/// How a step leaves the session.
enum Flow {
    Continue,
    Close,
    StartTls,
}

/// Read exactly `size` bytes, appending them to `into` (or dropping them when None). False
/// when the client went away first. Reads in large chunks meanwhile.
async fn read_chunk<R: AsyncRead + Unpin>(
    reader: &mut Input<R>,
    size: u64,
    into: Option<&mut Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<bool> {
    reader.set_bulk(true);
    let result = read_exactly(reader, size, into, timeout).await;
    reader.set_bulk(false);
    result
}

async fn read_exactly<R: AsyncRead + Unpin>(
    reader: &mut Input<R>,
    size: u64,
    mut into: Option<&mut Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<bool> {
    let mut remaining = size;
    while remaining > 0 {
        let buf = match tokio::time::timeout(timeout, reader.fill_buf()).await {
            Ok(buf) => buf?,
            Err(_) => return Ok(false),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let take = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if let Some(into) = into.as_deref_mut() {
            into.extend_from_slice(&buf[..take]);
        }
        reader.consume(take);
        remaining -= take as u64;
    }
    Ok(true)
}

/// What became of the DATA section.
enum DataRead {
    Message(Vec<u8>),
    TooBig,
    BareLineEnding,
    Eof,
}

struct Connection {
    relay: Arc<Relay>,
    /// The snapshot this session started on, kept to its end.
    live: Arc<Live>,
    peer: SocketAddr,
    core: Session,
    info: SessionInfo,
    chains: HashMap<usize, ChainSession>,
    /// Connect and helo results, taken into every transaction of the session.
    session_results: Vec<StageResult>,
    transaction: Transaction,
    /// Tenant whose chain judges the message (that of the first accepted recipient).
    tenant: Option<usize>,
    /// The session's own tenant: by client network, then by authenticated user. Its chain
    /// runs connect, helo and mail, and judges relayed (outbound) recipients.
    session_tenant: usize,
    /// The message so far, under BDAT.
    chunks: Vec<u8>,
    /// A BDAT chunk went over the size limit.
    chunks_too_big: bool,
}

impl Connection {
    fn new(
        relay: Arc<Relay>,
        live: Arc<Live>,
        session_tenant: usize,
        peer: SocketAddr,
        listener: String,
    ) -> Self {
        let server = &live.config.server;
        let relay_allowed = live.trusted.iter().any(|net| net.contains(peer.ip()));
        let mut core = Session::new(
            SessionLimits {
                hostname: server.hostname.clone(),
                max_message_bytes: server.max_message_bytes,
                max_recipients: server.max_recipients,
                max_errors: server.max_errors,
            },
            live.local_domains.clone(),
            relay_allowed,
        );
        if live.tls.is_some() {
            core.offer_tls();
        }
        if live.users.is_some() {
            core.offer_auth(live.config.relay.allow_plaintext_auth_on_loopback && peer.ip().is_loopback());
        }
        let info = SessionInfo {
            tenant: live.tenants[session_tenant].name.clone(),
            transaction_id: spool::new_id(),
            client_ip: peer.ip(),
            client_port: peer.port(),
            reverse_dns: None,
            helo: None,
            tls: None,
            authenticated_user: None,
            listener,
            hostname: server.hostname.clone(),
            mail_from: None,
            recipients: Vec::new(),
        };
        Self {
            relay,
            live,
            peer,
            core,
            info,
            chains: HashMap::new(),
            session_results: Vec::new(),
            transaction: Transaction::new(),
            tenant: None,
            session_tenant,
            chunks: Vec::new(),
            chunks_too_big: false,
        }
    }

    async fn stage(&mut self, tenant: usize, stage: Stage, input: StageInput<'_>) -> StageResult {
        self.info.tenant = self.live.tenants[tenant].name.clone();
        let chain = self.live.tenants[tenant].chain.clone();
        let session = self.chains.entry(tenant).or_insert_with(|| ChainSession::new(chain));
        let result = session.run(stage, &self.info, input).await;
        self.relay.metrics.stage(&self.live.tenants[tenant].name, &result);
        result
    }

    async fn serve(&mut self, stream: TcpStream) -> std::io::Result<()> {
        let (read, write) = stream.into_split();
        let mut reader = Input::new(read);
        let mut writer = BufWriter::new(write);

        // The client's name, confirmed forward (never for loopback, which has none worth
        // asking about).
        let ip = self.peer.ip();
        if !ip.is_loopback() {
            let lookup = self.relay.dns.verified_reverse(ip);
            self.info.reverse_dns = tokio::time::timeout(Duration::from_secs(5), lookup).await.ok().flatten();
        }

        let connect = self.stage(self.session_tenant, Stage::Connect, StageInput::Session).await;
        if let Verdict::Reject(r) | Verdict::Tempfail(r) = &connect.verdict {
            tracing::info!(tenant = %self.info.tenant, client = %self.peer, stage = "connect", reply = %r, "connection refused by policy");
            writer.write_all(&render(r)).await?;
            writer.flush().await?;
            return Ok(());
        }
        self.session_results.push(connect);
        writer.write_all(&render(&self.core.banner())).await?;
        writer.flush().await?;

        if !matches!(self.session(&mut reader, &mut writer).await?, Flow::StartTls) {
            return writer.shutdown().await;
        }
        let Some(acceptor) = self.live.tls.clone() else { return Ok(()) };
        // Whatever the client sent after STARTTLS and before the handshake is dropped with
        // the buffer: plaintext must never be read as if it came over TLS (CVE-2011-0411).
        let tcp = reader.into_inner().reunite(writer.into_inner()).map_err(std::io::Error::other)?;
        let handshake = Duration::from_secs(self.live.config.server.command_timeout_secs.min(60));
        let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(tenant = %self.info.tenant, client = %self.peer, error = %e, "TLS handshake failed");
                return Ok(());
            }
            Err(_) => {
                tracing::info!(tenant = %self.info.tenant, client = %self.peer, "TLS handshake timed out");
                return Ok(());
            }
        };
        {
            let (_, conn) = tls.get_ref();
            self.info.tls = Some(TlsInfo {
                version: conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
                cipher: conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default(),
                sni: conn.server_name().map(str::to_string),
            });
        }
        // RFC 3207 §4.2: the session starts over.
        self.end_transaction();
        self.core.tls_started();
        self.info.helo = None;
        self.session_results.retain(|r| r.stage == Stage::Connect);
        let (read, write) = tokio::io::split(tls);
        let mut reader = Input::new(read);
        let mut writer = BufWriter::new(write);
        self.session(&mut reader, &mut writer).await?;
        writer.shutdown().await
    }

    async fn session<R, W>(
        &mut self,
        reader: &mut Input<R>,
        writer: &mut BufWriter<W>,
    ) -> std::io::Result<Flow>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let server = self.live.config.server.clone();
        let command_timeout = Duration::from_secs(server.command_timeout_secs);
        loop {
            if reader.buffer().is_empty() {
                writer.flush().await?;
            }
            let line = match tokio::time::timeout(command_timeout, read_line(reader, server.max_line_bytes))
                .await
            {
                Ok(line) => line?,
                Err(_) => {
                    writer
                        .write_all(&render(&reply(421, "4.4.2", "Timeout waiting for a command, closing")))
                        .await?;
                    writer.flush().await?;
                    return Ok(Flow::Close);
                }
            };
            let step = match line {
                Line::Eof => return Ok(Flow::Close),
                Line::TooLong => self.core.error(reply(500, "5.5.6", "Line too long")),
                Line::Runaway => Step::Close(reply(500, "5.5.6", "Line too long, closing connection")),
                Line::BareLineEnding => self.core.error(reply(
                    500,
                    "5.5.2",
                    "Commands must end with CRLF; bare CR or LF is not allowed",
                )),
                Line::Command(bytes) => match command::parse(&bytes) {
                    Ok(cmd) => self.core.command(cmd),
                    Err(e) => self.core.bad_command(&e),
                },
            };
            match self.step(step, reader, writer).await? {
                Flow::Continue => {}
                flow => {
                    writer.flush().await?;
                    return Ok(flow);
                }
            }
        }
    }

    /// Carry out one step.
    async fn step<R, W>(
        &mut self,
        step: Step,
        reader: &mut Input<R>,
        writer: &mut BufWriter<W>,
    ) -> std::io::Result<Flow>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let flow = |open: bool| if open { Flow::Continue } else { Flow::Close };
        match step {
            Step::Reply(r) => {
                writer.write_all(&render(&r)).await?;
                Ok(Flow::Continue)
            }
            Step::Close(r) => {
                writer.write_all(&render(&r)).await?;
                Ok(Flow::Close)
            }
            Step::Helo { name, extended } => {
                self.end_transaction();
                self.info.helo = Some(name.clone());
                // A new EHLO replaces what the previous one told the policies.
                self.session_results.retain(|r| r.stage != Stage::Helo);
                let result = self.stage(self.session_tenant, Stage::Helo, StageInput::Session).await;
                let disconnect = result.disconnect;
                if let Verdict::Reject(r) | Verdict::Tempfail(r) = &result.verdict {
                    writer.write_all(&render(r)).await?;
                    return Ok(flow(!disconnect));
                }
                self.session_results.push(result);
                self.core.greeted(name.clone(), extended);
                writer.write_all(&self.core.greeting_reply(&name)).await?;
                Ok(flow(!disconnect))
            }
            Step::Mail(from) => {
                let declared = self.core.declared_size();
                self.end_transaction();
                if let Some(refusal) = self.storage_refusal(declared) {
                    writer.write_all(&render(&refusal)).await?;
                    return Ok(Flow::Continue);
                }
                for r in &self.session_results {
                    let _ = self.transaction.absorb(r);
                }
                self.info.mail_from = Some(from.clone());
                let result = self.stage(self.session_tenant, Stage::Mail, StageInput::Session).await;
                if let Some(judgement) = self.transaction.absorb(&result) {
                    self.log_refusal(&judgement);
                    self.info.mail_from = None;
                    writer.write_all(&render(&judgement.reply)).await?;
                    return Ok(flow(!judgement.disconnect));
                }
                self.core.mail_accepted(from);
                writer.write_all(&render(&reply(250, "2.1.0", "Ok"))).await?;
                Ok(flow(!result.disconnect))
            }
            Step::Rcpt(to, destination) => {
                let tenant = match destination {
                    Destination::Local(t) => t,
                    Destination::Relay => self.session_tenant,
                };
                // One tenant per transaction: its chain judges the message and its copy is
                // queued with its changes. Recipients of another tenant are deferred with 452
                // (RFC 5321 §4.5.3.1.10): the client sends them in a new transaction.
                if self.tenant.is_some_and(|current| current != tenant) {
                    let deferred = reply(
                        452,
                        "4.5.3",
                        "Too many recipients: this one belongs elsewhere, send it in another transaction",
                    );
                    writer.write_all(&render(&deferred)).await?;
                    return Ok(Flow::Continue);
                }
                let limits = self.live.tenants[tenant].limits;
                if let (Some(max), Some(declared)) = (limits.max_message_bytes, self.core.declared_size())
                    && declared > max
                {
                    // RFC 1870 §6.1: the declared size is over this recipient's limit.
                    let r = reply(552, "5.3.4", "Message size exceeds the fixed maximum for this recipient");
                    writer.write_all(&render(&r)).await?;
                    return Ok(Flow::Continue);
                }
                let first = self.tenant.is_none();
                if first
                    && let Some(per_minute) = limits.max_messages_per_minute
                    && !self.relay.message_rate(&self.live.tenants[tenant].name, per_minute, false)
                {
                    tracing::info!(
                        tenant = %self.live.tenants[tenant].name,
                        client = %self.peer,
                        "recipient deferred: the tenant's message rate is used up for this minute"
                    );
                    let r = reply(451, "4.7.1", "Message rate exceeded for this domain, try again later");
                    writer.write_all(&render(&r)).await?;
                    return Ok(Flow::Continue);
                }
                let result = self.stage(tenant, Stage::Rcpt, StageInput::Recipient(&to)).await;
                let _ = self.transaction.absorb(&result);
                let disconnect = result.disconnect;
                match &result.verdict {
                    Verdict::Reject(r) | Verdict::Tempfail(r) => {
                        writer.write_all(&render(r)).await?;
                    }
                    _ => {
                        if first && let Some(per_minute) = limits.max_messages_per_minute {
                            self.relay.message_rate(&self.live.tenants[tenant].name, per_minute, true);
                        }
                        self.tenant.get_or_insert(tenant);
                        self.info.recipients.push(to.clone());
                        self.core.rcpt_accepted(to, destination);
                        writer.write_all(&render(&reply(250, "2.1.5", "Ok"))).await?;
                    }
                }
                Ok(flow(!disconnect))
            }
            Step::SkipChunk { size, reply: refusal } => {
                let timeout = Duration::from_secs(self.live.config.server.data_timeout_secs);
                if !read_chunk(reader, size, None, timeout).await? {
                    return Ok(Flow::Close);
                }
                writer.write_all(&render(&refusal)).await?;
                Ok(Flow::Continue)
            }
            Step::Chunk { size, last } => {
                let timeout = Duration::from_secs(self.live.config.server.data_timeout_secs);
                let limit = self.message_limit() as u64;
                // The size is declared up front: a chunk that would go over the limit is read
                // and dropped, never kept.
                if self.chunks_too_big || (self.chunks.len() as u64).saturating_add(size) > limit {
                    self.chunks_too_big = true;
                    self.chunks = Vec::new();
                }
                let keep = (!self.chunks_too_big).then_some(&mut self.chunks);
                if !read_chunk(reader, size, keep, timeout).await? {
                    return Ok(Flow::Close);
                }
                if !last {
                    writer
                        .write_all(&render(&reply(250, "2.0.0", &format!("{size} octets received"))))
                        .await?;
                    return Ok(Flow::Continue);
                }
                if self.chunks_too_big {
                    self.end_transaction();
                    writer
                        .write_all(&render(&reply(552, "5.3.4", "Message size exceeds the fixed maximum")))
                        .await?;
                    return Ok(Flow::Continue);
                }
                let body = std::mem::take(&mut self.chunks);
                if has_bare_line_ending(&body) {
                    self.end_transaction();
                    let r = reply(550, "5.6.11", "Bare CR or LF in message data is not allowed");
                    writer.write_all(&render(&r)).await?;
                    return Ok(Flow::Continue);
                }
                let (answer, keep_open) = self.accept_message(body).await;
                writer.write_all(&render(&answer)).await?;
                Ok(flow(keep_open))
            }
            Step::StartTls => {
                writer.write_all(&render(&reply(220, "2.0.0", "Ready to start TLS"))).await?;
                Ok(Flow::StartTls)
            }
            Step::Auth { mechanism, initial } => {
                let relay = &self.live.config.relay;
                let window = Duration::from_secs(relay.auth_lockout_secs);
                if self.relay.auth_locked(self.peer.ip(), relay.auth_failures_per_ip, window) {
                    tracing::warn!(client = %self.peer, "AUTH refused: too many failures from this address");
                    let r = reply(421, "4.7.0", "Too many failed authentication attempts, try again later");
                    writer.write_all(&render(&r)).await?;
                    return Ok(Flow::Close);
                }
                match self.authenticate(&mechanism, initial, reader, writer).await? {
                    Some(r) => {
                        writer.write_all(&render(&r)).await?;
                        Ok(Flow::Continue)
                    }
                    None => Ok(Flow::Close),
                }
            }
            Step::Data => {
                let go_ahead = crate::policy::Reply {
                    code: 354,
                    enhanced: None,
                    text: "End data with <CR><LF>.<CR><LF>".into(),
                };
                writer.write_all(&render(&go_ahead)).await?;
                writer.flush().await?;
                let data = self.read_data(reader).await?;
                let keep_open = match data {
                    DataRead::Eof => return Ok(Flow::Close),
                    DataRead::BareLineEnding => {
                        self.end_transaction();
                        let r = reply(
                            521,
                            "5.5.2",
                            "Bare CR or LF in message data is not allowed (RFC 5321 §2.3.8), closing",
                        );
                        writer.write_all(&render(&r)).await?;
                        return Ok(Flow::Close);
                    }
                    DataRead::TooBig => {
                        self.end_transaction();
                        writer
                            .write_all(&render(&reply(
                                552,
                                "5.3.4",
                                "Message size exceeds the fixed maximum",
                            )))
                            .await?;
                        true
                    }
                    DataRead::Message(body) => {
                        let (answer, keep_open) = self.accept_message(body).await;
                        writer.write_all(&render(&answer)).await?;
                        keep_open
                    }
                };
                Ok(flow(keep_open))
            }
        }
    }

    /// The AUTH exchange. Returns the final reply, or None when the client went away.
    async fn authenticate<R, W>(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
        reader: &mut Input<R>,
        writer: &mut BufWriter<W>,
    ) -> std::io::Result<Option<crate::policy::Reply>>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let cancelled = reply(501, "5.7.0", "Authentication cancelled");
        let (first_prompt, plain) = if mechanism == "PLAIN" { ("", true) } else { ("VXNlcm5hbWU6", false) };
        let Some(first) = self.response(initial, first_prompt, reader, writer).await? else {
            return Ok(None);
        };
        if first.trim() == "*" {
            return Ok(Some(self.core_error(cancelled)));
        }
        let credentials = if plain {
            auth::decode_plain(&first)
        } else {
            let Some(password) = self.response(None, "UGFzc3dvcmQ6", reader, writer).await? else {
                return Ok(None);
            };
            if password.trim() == "*" {
                return Ok(Some(self.core_error(cancelled)));
            }
            auth::decode_line(&first).zip(auth::decode_line(&password))
        };
        let Some((user, password)) = credentials else {
            return Ok(Some(self.core_error(reply(501, "5.5.2", "Cannot decode the response"))));
        };
        let users = self.live.users.clone();
        let check_user = user.clone();
        let ok = tokio::task::spawn_blocking(move || users.is_some_and(|u| u.verify(&check_user, &password)))
            .await
            .unwrap_or(false);
        if ok {
            tracing::info!(tenant = %self.info.tenant, client = %self.peer, user = %user, "authenticated");
            self.core.authenticated(user.clone());
            if let Some(tenant) = self.live.tenant_of_user(&user) {
                self.session_tenant = tenant;
                self.info.tenant = self.live.tenants[tenant].name.clone();
            }
            self.info.authenticated_user = Some(user);
            Ok(Some(reply(235, "2.7.0", "Authentication successful")))
        } else {
            tracing::info!(tenant = %self.info.tenant, client = %self.peer, user = %user, "authentication failed");
            let window = Duration::from_secs(self.live.config.relay.auth_lockout_secs);
            self.relay.auth_failed(self.peer.ip(), window);
            // Slow down guessing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Some(self.core_error(reply(535, "5.7.8", "Authentication credentials invalid"))))
        }
    }

    /// The client's response: its initial response if it gave one (`=` meaning empty), else
    /// its answer to a 334 challenge (None: the client went away).
    async fn response<R, W>(
        &mut self,
        initial: Option<String>,
        prompt: &str,
        reader: &mut Input<R>,
        writer: &mut BufWriter<W>,
    ) -> std::io::Result<Option<String>>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        match initial {
            Some(r) if r == "=" => return Ok(Some(String::new())),
            Some(r) => return Ok(Some(r)),
            None => {}
        }
        let timeout = Duration::from_secs(self.live.config.server.command_timeout_secs);
        // RFC 4954 §4: AUTH lines may be up to 12288 octets.
        let max = self.live.config.server.max_line_bytes.max(12_288);
        writer.write_all(format!("334 {prompt}\r\n").as_bytes()).await?;
        writer.flush().await?;
        match tokio::time::timeout(timeout, read_line(reader, max)).await {
            Ok(Ok(Line::Command(bytes))) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Ok(Ok(Line::Eof | Line::Runaway)) | Err(_) => Ok(None),
            Ok(Ok(_)) => Ok(Some(String::new())),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Count an error in the core and give its reply.
    fn core_error(&mut self, r: crate::policy::Reply) -> crate::policy::Reply {
        match self.core.error(r) {
            Step::Reply(r) | Step::Close(r) => r,
            _ => reply(421, "4.7.0", "Closing connection"),
        }
    }

    /// The largest message this transaction may carry: the server's limit, or its tenant's
    /// when lower.
    fn message_limit(&self) -> usize {
        let server = self.core.max_message_bytes();
        let tenant =
            self.tenant.and_then(|t| self.live.tenants.get(t)).and_then(|t| t.limits.max_message_bytes);
        tenant.map_or(server, |t| t.min(server))
    }

    /// Read the DATA section, in large chunks.
    async fn read_data<R: AsyncRead + Unpin>(&mut self, reader: &mut Input<R>) -> std::io::Result<DataRead> {
        reader.set_bulk(true);
        let result = self.read_data_section(reader).await;
        reader.set_bulk(false);
        result
    }

    async fn read_data_section<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut Input<R>,
    ) -> std::io::Result<DataRead> {
        let timeout = Duration::from_secs(self.live.config.server.data_timeout_secs);
        let mut decoder = DataDecoder::new(self.message_limit());
        loop {
            let buf = match tokio::time::timeout(timeout, reader.fill_buf()).await {
                Ok(buf) => buf?,
                Err(_) => return Ok(DataRead::Eof),
            };
            if buf.is_empty() {
                return Ok(DataRead::Eof);
            }
            let n = buf.len();
            match decoder.feed(buf) {
                DataEvent::More => reader.consume(n),
                DataEvent::End(used) => {
                    reader.consume(used);
                    break;
                }
                DataEvent::BareLineEnding => return Ok(DataRead::BareLineEnding),
            }
        }
        if decoder.too_big() {
            return Ok(DataRead::TooBig);
        }
        Ok(DataRead::Message(decoder.into_body()))
    }

    /// Judge a complete message (under DATA or BDAT) and queue it; one with a NUL byte is
    /// refused first. Returns the reply and whether to stay open.
    async fn accept_message(&mut self, body: Vec<u8>) -> (crate::policy::Reply, bool) {
        if memchr::memchr(0, &body).is_some() {
            self.end_transaction();
            return (nul_refused(), true);
        }
        let tenant = self.tenant.unwrap_or(0);
        // The parse keeps the raw bytes; the spool writes them from there (no second copy).
        let parsed = Arc::new(ParsedMessage::parse(body));
        let result = self.stage(tenant, Stage::Data, StageInput::Message(&parsed)).await;
        let thresholds = self.live.tenants[tenant].chain.settings.thresholds.clone();
        let transaction = std::mem::take(&mut self.transaction);
        let judgement = transaction.finish(&result, &thresholds);
        let id = self.info.transaction_id.clone();
        let answer = match judgement.outcome {
            Outcome::Reject | Outcome::Tempfail => judgement.reply.clone(),
            Outcome::Discard => reply(250, "2.0.0", &format!("Ok: queued as {id}")),
            Outcome::Accept | Outcome::Quarantine => {
                let store =
                    if judgement.outcome == Outcome::Quarantine { Store::Quarantine } else { Store::Queue };
                match self.store(&judgement, parsed.raw(), tenant, store).await {
                    Ok(()) => reply(250, "2.0.0", &format!("Ok: queued as {id}")),
                    Err(e) if spool::is_storage_full(&e) => {
                        tracing::error!(tenant = %self.info.tenant, id, error = %e, "spool full: message not accepted");
                        insufficient_storage()
                    }
                    Err(e) => {
                        tracing::error!(tenant = %self.info.tenant, id, error = %e, "cannot store the message in the spool");
                        reply(451, "4.3.0", "Temporary local problem, please try again later")
                    }
                }
            }
        };
        self.log_transaction(&judgement, &answer);
        let keep_open = !judgement.disconnect;
        self.end_transaction();
        (answer, keep_open)
    }

    /// `452 4.3.1` when the spool's file system has less free space than it must keep plus
    /// the size the client declared (RFC 1870 §6.1); `None` when there is room (or the space
    /// cannot be told, when the store itself will tell).
    fn storage_refusal(&self, declared: Option<usize>) -> Option<crate::policy::Reply> {
        let config = &self.live.config;
        let keep = config.spool.min_free_bytes.unwrap_or(2 * config.server.max_message_bytes as u64);
        let declared = declared.unwrap_or(0) as u64;
        let free = self.relay.spool.free_bytes().ok()?;
        if free >= keep.saturating_add(declared) {
            return None;
        }
        tracing::warn!(free, keep, declared, "spool file system short of space: MAIL deferred");
        Some(insufficient_storage())
    }

    async fn store(
        &mut self,
        judgement: &Judgement,
        body: &[u8],
        tenant: usize,
        store: Store,
    ) -> std::io::Result<()> {
        let id = self.info.transaction_id.clone();
        let mut recipients: Vec<String> =
            self.core.recipients().iter().map(|r| r.address.address.clone()).collect();
        recipients.retain(|r| !judgement.removed_recipients.iter().any(|x| x.eq_ignore_ascii_case(r)));
        for added in &judgement.added_recipients {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(added)) {
                recipients.push(added.clone());
            }
        }
        let now = spool::now_secs();
        let envelope = QueuedMessage {
            id: id.clone(),
            tenant: self.live.tenants[tenant].name.clone(),
            mail_from: self.core.mail_from().map(|m| m.address.clone()).unwrap_or_default(),
            recipients: recipients
                .into_iter()
                .map(|address| QueuedRecipient {
                    address,
                    status: RecipientStatus::Pending,
                    last_reply: None,
                })
                .collect(),
            received_at: now,
            attempts: 0,
            next_attempt: now,
            route: judgement.route.clone(),
            quarantine_reason: judgement.quarantine_reason.clone(),
        };
        let message = Arc::new(self.final_message(judgement, body, now));
        self.relay.spool.store_async(store, &envelope, &message).await?;
        if store == Store::Queue {
            self.relay.metrics.queue(&self.live.tenants[tenant].name, 1);
            // The first attempt takes the message from here, not from the disk.
            let _ =
                self.relay.delivery.send(crate::delivery::Queued { id, loaded: Some((envelope, message)) });
        }
        Ok(())
    }

    /// The message as it will be delivered: our Received header and the policies' header
    /// changes on top of what the client sent.
    fn final_message(&self, judgement: &Judgement, body: &[u8], now: u64) -> Vec<u8> {
        let server = &self.live.config.server;
        let helo = self.info.helo.clone().unwrap_or_else(|| "unknown".into());
        let rdns = self.info.reverse_dns.clone().unwrap_or_else(|| "unknown".into());
        let with = if self.core.extended() { "ESMTP" } else { "SMTP" };
        let recipients = self.core.recipients();
        let for_clause = match recipients {
            [only] => format!("\r\n\tfor <{}>", only.address.address),
            _ => String::new(),
        };
        let mut out = format!(
            "Received: from {helo} ({rdns} [{}])\r\n\tby {} (Sluice) with {with} id {}{for_clause};\r\n\t{}\r\n",
            self.peer.ip(),
            server.hostname,
            self.info.transaction_id,
            rfc5322_date(now)
        )
        .into_bytes();
        for (name, value) in &judgement.added_headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(&remove_headers(body, &judgement.removed_headers));
        out
    }

    fn log_refusal(&self, judgement: &Judgement) {
        self.relay.metrics.transaction(&self.info.tenant, judgement.outcome.as_str());
        tracing::info!(
            client = %self.peer,
            helo = self.info.helo.as_deref().unwrap_or(""),
            tenant = %self.info.tenant,
            generation = self.generation(),
            from = self.info.mail_from.as_ref().map(|m| m.address.as_str()).unwrap_or(""),
            stage = %judgement.stage,
            decided_by = judgement.decided_by.as_deref().unwrap_or(""),
            reply = %judgement.reply,
            "transaction refused"
        );
    }

    fn log_transaction(&self, judgement: &Judgement, answer: &crate::policy::Reply) {
        let outcome = if answer.code >= 400 { "error" } else { judgement.outcome.as_str() };
        self.relay.metrics.transaction(&self.info.tenant, outcome);
        let to: Vec<&str> = self.core.recipients().iter().map(|r| r.address.address.as_str()).collect();
        tracing::info!(
            id = %self.info.transaction_id,
            client = %self.peer,
            helo = self.info.helo.as_deref().unwrap_or(""),
            tenant = %self.info.tenant,
            generation = self.generation(),
            user = self.info.authenticated_user.as_deref().unwrap_or(""),
            from = self.core.mail_from().map(|m| m.address.as_str()).unwrap_or(""),
            to = to.join(",").as_str(),
            outcome = judgement.outcome.as_str(),
            score = judgement.score,
            decided_by = judgement.decided_by.as_deref().unwrap_or(""),
            reply = %answer,
            "transaction"
        );
    }

    /// The generation of the tenant judging the transaction.
    fn generation(&self) -> u64 {
        self.live.tenants.get(self.tenant.unwrap_or(0)).map_or(0, |t| t.generation)
    }

    fn end_transaction(&mut self) {
        self.core.reset();
        self.info.mail_from = None;
        self.info.recipients.clear();
        self.info.transaction_id = spool::new_id();
        self.transaction = Transaction::new();
        self.tenant = None;
        self.chunks = Vec::new();
        self.chunks_too_big = false;
    }
}

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_line_ending(message: &[u8]) -> bool {
    message.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || message[i - 1] != b'\r',
        _ => false,
    })
}

/// Drop the named header fields (with their continuation lines) from a message.
pub fn remove_headers(message: &[u8], names: &[String]) -> Vec<u8> {
    if names.is_empty() {
        return message.to_vec();
    }
    let header_end =
        message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
    let mut out = Vec::with_capacity(message.len());
    let mut skipping = false;
    for line in message[..header_end].split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            skipping = names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&message[header_end..]);
    out
}

/// `Sat, 28 Nov 2026 00:10:00 +0000`.
pub fn rfc5322_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month_name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [(month - 1) as usize];
    format!("{weekday}, {day} {month_name} {year} {h:02}:{m:02}:{s:02} +0000")
}

/// The reply when the spool has no room (RFC 3463 4.3.1).
fn insufficient_storage() -> crate::policy::Reply {
    reply(452, "4.3.1", "Insufficient system storage, please try again later")
}

/// The reply to a message with a NUL byte: not text (RFC 5321 §2.3.8), and a next hop that
/// drops NULs could see an end of data (`CRLF NUL . CRLF`) where this relay saw none.
fn nul_refused() -> crate::policy::Reply {
    reply(550, "5.6.0", "NUL characters in message data are not allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_767_225_600), "Thu, 1 Jan 2026 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_824_000 + 3661), "Sat, 28 Nov 2026 01:01:01 +0000");
    }

    #[test]
    fn header_removal() {
        let m = b"X-Spam: yes\r\n\tmore\r\nSubject: hi\r\nx-spam: again\r\n\r\nX-Spam: body\r\n";
        assert_eq!(remove_headers(m, &["X-Spam".into()]), b"Subject: hi\r\n\r\nX-Spam: body\r\n");
    }
}
