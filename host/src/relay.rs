//! The running relay: what every session shares — the generations of tenants and chains, the
//! spool, the counters, DNS, the queue into delivery — and what sessions ask of it: to store a
//! message, to record a transaction, the [`Gates`] (spool room, message rates, AUTH lockouts).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{Backend, Config};
use crate::conversation::{Gates, LearnRequest, StoreFailure, StoreRequest, TransactionRecord};
use crate::delivery::{Delivery, Queued};
use crate::dns::DnsResolver;
use crate::metrics::Metrics;
use crate::policy::{Clock, EngineOptions, HostServices, Learner, Outcome, PolicyEngine, Stage};
use crate::recipients::verify::{Answer, Settings, Verifier};
use crate::reload::{Generations, Loader};
use crate::sender::{Checker, CheckerSettings, Sender, SenderChecks};
use crate::smtp::reply::{self, Reply};
use crate::spool::{self, Spool, Store};
use crate::state::kv::{KvStore, MemoryKv};
use crate::state::redb_kv::RedbKv;
use crate::state::redis_kv::{RedisKv, RedisOptions};
use crate::tenants::Snapshot;
use crate::tenants::rates::Counters;

/// The running relay.
pub struct Relay {
    /// The generations of the edge and the tenants, and the snapshot in force.
    pub generations: Arc<Generations>,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// DNS, for policies, client names and MX resolution.
    pub dns: Arc<DnsResolver>,
    /// The queue into delivery.
    pub delivery: mpsc::UnboundedSender<Queued>,
    /// Set when a shutdown's grace period is over: sessions waiting for a command are closed
    /// with `421 4.3.2` (see [`crate::listener::Listeners::shutdown`]).
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Operators' orders to delivery (flush, delete).
    pub orders: mpsc::UnboundedSender<crate::delivery::orders::Order>,
    /// The `verify` probes of tenants' recipients, and their answers.
    pub verifier: Verifier,
    /// The sender checks (SPF, DKIM, DMARC, ARC) and their cache of parsed answers.
    pub sender_checker: Checker,
    /// The last transactions and mail per minute, for the console.
    pub recent: crate::recent::Recent,
    /// This node's part in a fleet (`[fleet] node`), once `serve` has started it.
    pub fleet: std::sync::OnceLock<Arc<crate::fleet::Fleet>>,
    /// The Redis `[state]` names, where tenants' message rates are counted for every relay
    /// sharing it (set by `serve`); without it they are counted here alone.
    pub shared_limits: std::sync::OnceLock<Arc<RedisKv>>,
    counters: Counters,
    /// Lessons of autolearning under way, at most [`AUTOLEARN_AT_ONCE`].
    autolearning: Arc<tokio::sync::Semaphore>,
}

/// Autolearning lessons that may run at once.
pub const AUTOLEARN_AT_ONCE: usize = 8;

impl Relay {
    /// Open the spool (locking it: one spool, one relay — [`crate::spool::lock`]) and load the
    /// edge's and every tenant's policies. Returns the relay and what delivery needs to run
    /// (see [`crate::delivery::run`]). `config_path` is the file a reload re-reads.
    pub async fn build(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> anyhow::Result<(Arc<Self>, Delivery)> {
        Self::build_with(config, config_path, true).await
    }

    /// [`Self::build`] for `sluice check`, beside a relay that may be running on the same
    /// spool: the spool is opened without its lock, and nothing may be delivered from it.
    pub async fn build_to_check(config: Config) -> anyhow::Result<(Arc<Self>, Delivery)> {
        Self::build_with(config, None, false).await
    }

    async fn build_with(
        config: Config,
        config_path: Option<PathBuf>,
        own_spool: bool,
    ) -> anyhow::Result<(Arc<Self>, Delivery)> {
        // Before anything is created on disk: the files the configuration names.
        config.check_files()?;
        let spool_dir = config.resolve(&config.spool.dir);
        let opened = match own_spool {
            true => Spool::open_recycling(&spool_dir, config.spool.sync, config.spool.recycle_files),
            false => Spool::open(&spool_dir, config.spool.sync),
        };
        let spool = opened.map_err(|e| {
            match e.get_ref().and_then(|inner| inner.downcast_ref::<crate::spool::lock::LockError>()) {
                Some(locked) => anyhow::anyhow!("{locked}"),
                None => anyhow::anyhow!("spool {}: cannot open: {e}", spool_dir.display()),
            }
        })?;
        let dns =
            Arc::new(DnsResolver::new(&config.dns.nameservers).map_err(|e| anyhow::anyhow!("dns: {e}"))?);
        let engine = PolicyEngine::new(EngineOptions {
            // Sessions of two generations may overlap during a reload.
            // Plus, where instances are made ahead, those and the ones on their way out.
            max_instances: u32::try_from(
                config.server.max_connections.saturating_mul(2).clamp(16, 10_000)
                    + match config.server.prepared_instances {
                        0 => 0,
                        n => n + crate::policy::prepared::REAPER_QUEUE,
                    },
            )
            .unwrap_or(1000),
            // Reloads take effect on baseline code at once; optimised code follows.
            baseline_tier: true,
            prepared_instances: config.server.prepared_instances,
            ..EngineOptions::default()
        })?;
        // A check beside a running relay cannot open its embedded store (the relay holds it),
        // and needs none: the policies' `init` gets one in memory.
        let kv = match (own_spool, &config.state.backend) {
            (false, Backend::Embedded) => Arc::new(MemoryKv::new(config.state.max_keys)),
            _ => open_state(&config)?,
        };
        let services = HostServices { kv, resolver: dns.clone(), clock: Clock::System };
        let tls_client = if config.delivery.starttls {
            Some(crate::delivery::client::tls_connector().map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        let sender_checker = Checker::new(
            dns.clone(),
            CheckerSettings { cache_entries: config.dns.cache_entries.unwrap_or(10_000) },
        );
        let metrics = Arc::new(Metrics::default());
        let generations = Arc::new(
            Generations::start(Loader::new(engine, services), config, config_path, metrics.clone()).await?,
        );
        let spool = Arc::new(spool);
        let (delivery, queue, orders) =
            Delivery::new(generations.current(), spool.clone(), metrics.clone(), dns.clone(), tls_client);
        let relay = Relay {
            generations,
            spool,
            metrics,
            dns,
            delivery: queue,
            closing: tokio::sync::watch::Sender::new(false),
            orders,
            verifier: Verifier::default(),
            sender_checker,
            recent: crate::recent::Recent::default(),
            fleet: std::sync::OnceLock::new(),
            shared_limits: std::sync::OnceLock::new(),
            counters: Counters::default(),
            autolearning: Arc::new(tokio::sync::Semaphore::new(AUTOLEARN_AT_ONCE)),
        };
        Ok((Arc::new(relay), delivery))
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.generations.snapshot()
    }

    /// Check the sender of a message from the internet, within `snapshot`'s time bound.
    pub async fn check_sender(
        &self,
        snapshot: &Snapshot,
        request: &crate::conversation::SenderRequest,
    ) -> SenderChecks {
        let sender = Sender {
            ip: request.ip,
            helo: &request.helo,
            mail_from: &request.mail_from,
            hostname: &snapshot.config.server.hostname,
        };
        let timeout = Duration::from_secs(snapshot.config.relay.sender_checks_timeout_secs.max(1));
        let checks = self.sender_checker.check(&sender, &request.message, timeout).await;
        tracing::debug!(
            spf = checks.spf.result.as_str(),
            dmarc = checks.dmarc.result.as_str(),
            dkim = checks.dkim.len(),
            "sender checked"
        );
        checks
    }

    /// Whether `address` exists, by `snapshot`'s tenant `tenant`'s next hop (`recipients =
    /// "verify"`).
    pub async fn verify_recipient(&self, snapshot: &Snapshot, tenant: usize, address: &str) -> Answer {
        let config = &snapshot.config;
        let Some(settings) = config.tenants.get(tenant).and_then(|t| Settings::of(config, t)) else {
            return Answer::Unavailable("the tenant's next hop cannot be asked".into());
        };
        let name = &config.tenants[tenant].name;
        self.verifier.check(name, &settings, address).await
    }

    /// Store an accepted message; a queued one goes to delivery, which takes it from memory
    /// for its first attempt.
    pub async fn store(&self, request: StoreRequest) -> Result<(), StoreFailure> {
        let StoreRequest { store, envelope, message } = request;
        match self.spool.store_async(store, &envelope, &message).await {
            Ok(()) => {
                if store == Store::Queue {
                    self.metrics.queue(&envelope.tenant, 1);
                    let id = envelope.id.clone();
                    let _ = self.delivery.send(Queued { id, loaded: Some((envelope, message)) });
                }
                Ok(())
            }
            Err(e) if spool::is_storage_full(&e) => {
                tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "spool full: message not accepted");
                Err(StoreFailure::Full)
            }
            Err(e) => {
                tracing::error!(tenant = %envelope.tenant, id = %envelope.id, error = %e, "cannot store the message in the spool");
                Err(StoreFailure::Failed)
            }
        }
    }

    /// Move a quarantined message into the queue and hand it to delivery now.
    pub fn release(&self, id: &str) -> std::io::Result<()> {
        self.spool.release(id)?;
        let _ = self.delivery.send(Queued { id: id.to_string(), loaded: None });
        Ok(())
    }

    /// Teach a message to the tenant's learning policies, in the background (autolearning).
    /// At most [`AUTOLEARN_AT_ONCE`] lessons run at a time; beyond that a lesson is dropped
    /// (logged): a model misses a message, the mail flow never waits for it.
    pub fn autolearn(&self, request: LearnRequest) {
        let Ok(permit) = self.autolearning.clone().try_acquire_owned() else {
            tracing::debug!(tenant = %request.tenant.name, "autolearn: too many lessons under way; skipped");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            for policy in request.tenant.chain.learners() {
                let Ok(mut learner) = Learner::new(policy.clone()) else { continue };
                match learner.learn(request.message.clone(), request.lesson, None).await {
                    Ok(learned) => tracing::debug!(
                        tenant = %request.tenant.name,
                        policy = %policy.name,
                        lesson = request.lesson.as_str(),
                        learned = learned.as_str(),
                        "autolearn"
                    ),
                    Err(e) => tracing::warn!(tenant = %request.tenant.name, error = %e, "autolearn failed"),
                }
            }
        });
    }

    /// Log and count what a session's transaction came to.
    pub fn record(&self, record: &TransactionRecord) {
        let j = &record.judgement;
        let helo = record.helo.as_deref().unwrap_or("");
        if record.session_refused {
            tracing::info!(
                tenant = %record.tenant,
                client = %record.client,
                stage = %j.stage,
                decided_by = j.decided_by.as_deref().unwrap_or(""),
                reply = %record.reply,
                "connection refused by policy"
            );
            self.recent.add(record, j.outcome.as_str());
            return;
        }
        match j.stage {
            // Its recipients were each logged as refused when they were.
            Stage::Rcpt => tracing::debug!(
                id = %record.id,
                client = %record.client,
                tenant = %record.tenant,
                from = %record.from,
                decided_by = j.decided_by.as_deref().unwrap_or(""),
                reply = %record.reply,
                "transaction refused: no recipient accepted"
            ),
            Stage::Connect | Stage::Helo | Stage::Mail => {
                tracing::info!(
                    id = %record.id,
                    client = %record.client,
                    helo,
                    tenant = %record.tenant,
                    generation = record.generation,
                    from = %record.from,
                    stage = %j.stage,
                    decided_by = j.decided_by.as_deref().unwrap_or(""),
                    reply = %record.reply,
                    "transaction refused"
                );
            }
            Stage::Data => tracing::info!(
                id = %record.id,
                client = %record.client,
                helo,
                tenant = %record.tenant,
                generation = record.generation,
                user = record.user.as_deref().unwrap_or(""),
                from = %record.from,
                to = %record.recipients.join(","),
                outcome = j.outcome.as_str(),
                score = j.score,
                decided_by = j.decided_by.as_deref().unwrap_or(""),
                reply = %record.reply,
                "transaction"
            ),
        }
        // An accepting judgement the spool could not carry out is an error, not an outcome.
        let accepted = matches!(j.outcome, Outcome::Accept | Outcome::Quarantine | Outcome::Discard);
        let outcome = if accepted && record.reply.code >= 400 { "error" } else { j.outcome.as_str() };
        self.metrics.transaction(&record.tenant, outcome);
        self.recent.add(record, outcome);
    }
}

impl Gates for Relay {
    /// `452 4.3.1` when the spool's file system has less free space than it must keep plus
    /// the size the client declared (RFC 1870 §6.1); none when there is room (or the space
    /// cannot be told, when the store itself will tell).
    fn storage_refusal(&self, declared: Option<usize>) -> Option<Reply> {
        let snapshot = self.snapshot();
        let config = &snapshot.config;
        let keep = config.spool.min_free_bytes.unwrap_or(2 * config.server.max_message_bytes as u64);
        let declared = declared.unwrap_or(0) as u64;
        let free = self.spool.free_bytes().ok()?;
        if free >= keep.saturating_add(declared) {
            return None;
        }
        tracing::warn!(free, keep, declared, "spool file system short of space: MAIL deferred");
        Some(reply::INSUFFICIENT_STORAGE)
    }

    fn message_rate(&self, tenant: &str, per_minute: u32, take: bool) -> bool {
        if take && let Some(store) = self.shared_limits.get() {
            // Counted in the shared store too, without the session waiting for it.
            let (store, key) = (store.clone(), rate_key(store, tenant));
            tokio::spawn(async move {
                let mut pipe = redis::pipe();
                pipe.cmd("INCR").arg(&key).ignore().cmd("EXPIRE").arg(&key).arg(120).ignore();
                if let Err(e) = store.pipeline(pipe).await {
                    tracing::debug!(error = %e, "shared message rate not counted");
                }
            });
        }
        self.counters.message_rate(tenant, per_minute, take)
    }

    fn shared_limits(&self) -> bool {
        self.shared_limits.get().is_some()
    }

    fn auth_locked(&self, ip: IpAddr, limit: u32, window: Duration) -> bool {
        self.counters.auth_locked(ip, limit, window)
    }

    fn auth_failed(&self, ip: IpAddr, window: Duration) {
        if let Some(store) = self.shared_limits.get() {
            let (store, key) = (store.clone(), auth_key(store, ip));
            let seconds = window.as_secs().max(1);
            tokio::spawn(async move {
                let mut pipe = redis::pipe();
                pipe.cmd("INCR").arg(&key).ignore().cmd("EXPIRE").arg(&key).arg(seconds).ignore();
                if let Err(e) = store.pipeline(pipe).await {
                    tracing::debug!(error = %e, "shared AUTH failure not counted");
                }
            });
        }
        self.counters.auth_failed(ip, window);
    }

    fn event(&self, tenant: &str, event: &str) {
        self.metrics.event(tenant, event);
    }
}

/// The key-value store `[state]` names: in memory, the embedded file, or a Redis server.
pub fn open_state(config: &Config) -> anyhow::Result<Arc<dyn KvStore>> {
    Ok(match &config.state.backend {
        Backend::Memory => Arc::new(MemoryKv::new(config.state.max_keys)),
        Backend::Redis(_) => match redis_store(config)? {
            Some(store) => Arc::new(store),
            None => anyhow::bail!("state.backend: not a Redis URL"),
        },
        Backend::Embedded => {
            let path = config.resolve(&config.state.path);
            Arc::new(
                RedbKv::open(&path, config.state.max_keys)
                    .map_err(|e| anyhow::anyhow!("state.path: cannot open the key-value store: {e}"))?,
            )
        }
    })
}

/// The shared store's key counting `tenant`'s transactions this minute.
fn rate_key(store: &RedisKv, tenant: &str) -> String {
    let minute = crate::spool::now_secs() / 60;
    format!("{}limits:{{{tenant}}}:rate:{minute}", store.prefix())
}

/// The shared store's key counting `ip`'s recent AUTH failures (each failure restarts the
/// window, as the node's own count does).
fn auth_key(store: &RedisKv, ip: IpAddr) -> String {
    format!("{}limits:{{auth}}:{ip}", store.prefix())
}

/// The shared store's key counting `ip`'s open sessions on all relays.
fn connections_key(store: &RedisKv, ip: IpAddr) -> String {
    format!("{}limits:{{conn}}:{ip}", store.prefix())
}

/// How long a shared connection count lives without a new connection from its address: a
/// relay killed with sessions open leaves its counts behind at most this long.
const CONNECTIONS_TTL_SECS: u64 = 600;

impl Relay {
    /// Count a session from `ip` across the fleet: whether it stays under `limit` there (true
    /// without a shared store, or while it is away: this relay's own count has admitted it).
    pub async fn shared_connection_opened(&self, ip: IpAddr, limit: usize) -> bool {
        let Some(store) = self.shared_limits.get() else { return true };
        let key = connections_key(store, ip);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&key).cmd("EXPIRE").arg(&key).arg(CONNECTIONS_TTL_SECS).ignore();
        match store.query_pipeline::<(u64,)>(pipe).await {
            Ok((open,)) if open as usize > limit => {
                self.shared_connection_closed(ip);
                tracing::info!(client = %ip, open, limit, "connection refused: too many from this address across the fleet");
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "shared connection count unavailable: this relay's own count applies");
                true
            }
        }
    }

    /// A session from `ip` counted by [`Relay::shared_connection_opened`] ended.
    pub fn shared_connection_closed(&self, ip: IpAddr) {
        let Some(store) = self.shared_limits.get() else { return };
        let (store, key) = (store.clone(), connections_key(store, ip));
        tokio::spawn(async move {
            let _ = store.command::<i64>(redis::cmd("DECR").arg(&key).clone()).await;
        });
    }

    /// Whether `ip` failed AUTH `limit` times within `window` on any relay sharing the store;
    /// while the store is away, this relay's own count decides.
    pub async fn shared_auth_locked(&self, ip: IpAddr, limit: u32, window: Duration) -> bool {
        let Some(store) = self.shared_limits.get() else {
            return self.counters.auth_locked(ip, limit, window);
        };
        match store.command::<Option<u32>>(redis::cmd("GET").arg(auth_key(store, ip)).clone()).await {
            Ok(failures) => failures.unwrap_or(0) >= limit,
            Err(e) => {
                tracing::warn!(error = %e, "shared AUTH failures unavailable: this relay's own count applies");
                self.counters.auth_locked(ip, limit, window)
            }
        }
    }

    /// Whether `tenant` may take one more transaction this minute, counted across every relay
    /// sharing the store; while the store is away, this relay's own count decides.
    pub async fn shared_message_rate(&self, tenant: &str, per_minute: u32) -> bool {
        let Some(store) = self.shared_limits.get() else {
            return self.counters.message_rate(tenant, per_minute, false);
        };
        match store.command::<Option<u32>>(redis::cmd("GET").arg(rate_key(store, tenant)).clone()).await {
            Ok(count) => count.unwrap_or(0) < per_minute,
            Err(e) => {
                tracing::warn!(tenant, error = %e, "shared message rate unavailable: this relay's own count applies");
                self.counters.message_rate(tenant, per_minute, false)
            }
        }
    }
}

/// A client of the Redis `[state]` names (none for the other backends).
pub fn redis_store(config: &Config) -> anyhow::Result<Option<RedisKv>> {
    let Backend::Redis(url) = &config.state.backend else { return Ok(None) };
    let state = &config.state;
    let tls_ca = match &state.tls_ca_file {
        Some(path) => Some(
            std::fs::read(config.resolve(path))
                .map_err(|e| anyhow::anyhow!("state.tls_ca_file: {}: {e}", config.resolve(path).display()))?,
        ),
        None => None,
    };
    let options = RedisOptions {
        tls_ca,
        sentinels: state.sentinels.clone(),
        master: state.sentinel_master.clone(),
        cluster: state.cluster.clone(),
    };
    RedisKv::new(url, &state.prefix, options).map(Some).map_err(|e| anyhow::anyhow!("state.backend: {e}"))
}
