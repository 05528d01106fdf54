//! What the relay runs on, and how it changes without a restart.
//!
//! [`Live`] is one immutable snapshot: the configuration, every tenant with its loaded chain,
//! the relay rules, the TLS certificate and the users file. A session takes the snapshot at
//! connect and keeps it to the end, so it sees one generation of everything; the relay
//! swaps in a new snapshot atomically (`ArcSwap`) and new sessions get it.
//!
//! A reload (file watcher, SIGHUP, `POST /api/reload`) re-reads the configuration and every
//! policy file, rebuilds only the tenants whose configuration or files changed (unchanged
//! policies are reused as loaded, not recompiled), validates each new policy (compile, link,
//! `describe`, `init` with its configuration) off the async runtime, and swaps. A tenant whose
//! new policies fail keeps its running generation; when the configuration file itself changed,
//! any failure keeps the whole running snapshot. Each tenant's previous generation is kept for
//! rollback.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::auth::{self, Users};
use crate::config::{Cidr, Config, NextHop, TenantConfig};
use crate::domains::DomainMap;
use crate::policy::chain::Chain;
use crate::policy::{CodeTier, HostServices, LoadedPolicy, PolicyEngine};
use crate::server::Relay;

/// A tenant at run time: one generation of its chain and routes.
pub struct Tenant {
    /// Name.
    pub name: String,
    /// Its loaded chain.
    pub chain: Arc<Chain>,
    /// Where its inbound mail goes.
    pub next_hop: NextHop,
    /// Its domains.
    pub domains: Vec<String>,
    /// Generation number (unique across the process, increasing).
    pub generation: u64,
    /// When this generation was made.
    pub loaded_at: SystemTime,
    /// Its limits besides the per-call ones of its policies.
    pub limits: TenantLimits,
    /// Its configuration and policy files' hashes: equal fingerprints, same tenant.
    fingerprint: String,
}

/// A tenant's own limits.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TenantLimits {
    /// Largest message for its recipients (None: the server's).
    pub max_message_bytes: Option<usize>,
    /// Transactions per minute it accepts recipients for (None: no limit).
    pub max_messages_per_minute: Option<u32>,
    /// Its share of the key-value store.
    pub kv_quota: crate::state::kv::Quota,
}

impl Tenant {
    /// The same generation with `old` replaced by `new` (the same file and settings with
    /// other code), or `None` when `old` is not in its chain.
    fn with_policy_replaced(&self, old: &Arc<LoadedPolicy>, new: &Arc<LoadedPolicy>) -> Option<Arc<Tenant>> {
        if !self.chain.policies.iter().any(|p| Arc::ptr_eq(p, old)) {
            return None;
        }
        let policies = self
            .chain
            .policies
            .iter()
            .map(|p| if Arc::ptr_eq(p, old) { new.clone() } else { p.clone() })
            .collect();
        let mut chain = Chain::new(self.chain.tenant.clone(), policies, self.chain.settings.clone());
        chain.shadow = self.chain.shadow.clone();
        Some(Arc::new(Tenant {
            name: self.name.clone(),
            chain: Arc::new(chain),
            next_hop: self.next_hop.clone(),
            domains: self.domains.clone(),
            generation: self.generation,
            loaded_at: self.loaded_at,
            limits: self.limits,
            fingerprint: self.fingerprint.clone(),
        }))
    }
}

/// One snapshot of everything a session runs on.
pub struct Live {
    /// The configuration.
    pub config: Arc<Config>,
    /// Tenants, the first being the default.
    pub tenants: Vec<Arc<Tenant>>,
    /// Local domain → index in `tenants`.
    pub local_domains: Arc<DomainMap>,
    /// Networks that may relay.
    pub trusted: Vec<Cidr>,
    /// Outbound networks → tenant index, most specific first.
    outbound_networks: Vec<(Cidr, usize)>,
    /// Outbound authenticated users → tenant index.
    outbound_users: HashMap<String, usize>,
    /// STARTTLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// AUTH users, when configured.
    pub users: Option<Arc<Users>>,
}

impl Live {
    fn assemble(
        config: Arc<Config>,
        tenants: Vec<Arc<Tenant>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        users: Option<Arc<Users>>,
    ) -> Self {
        let mut local_domains = DomainMap::default();
        let mut outbound_networks = Vec::new();
        let mut outbound_users = HashMap::new();
        for (index, tenant) in tenants.iter().enumerate() {
            for domain in &tenant.domains {
                local_domains.insert(domain, index);
            }
            if let Some(t) = config.tenants.iter().find(|t| t.name == tenant.name) {
                outbound_networks
                    .extend(t.outbound_networks.iter().filter_map(|n| Cidr::parse(n)).map(|c| (c, index)));
                outbound_users.extend(t.outbound_users.iter().map(|u| (u.clone(), index)));
            }
        }
        outbound_networks.sort_by_key(|(cidr, _)| std::cmp::Reverse(cidr.prefix()));
        Self {
            trusted: config.trusted_networks(),
            config,
            tenants,
            local_domains: Arc::new(local_domains),
            outbound_networks,
            outbound_users,
            tls,
            users,
        }
    }

    /// The tenant whose sessions come from `ip` (its most specific `outbound_networks`
    /// entry), else the first (default) tenant.
    pub fn tenant_of_client(&self, ip: std::net::IpAddr) -> usize {
        self.outbound_networks.iter().find(|(net, _)| net.contains(ip)).map_or(0, |(_, t)| *t)
    }

    /// The tenant an authenticated user sends for, if one lists it in `outbound_users`.
    pub fn tenant_of_user(&self, user: &str) -> Option<usize> {
        self.outbound_users.get(user).copied()
    }

    /// The tenant a domain belongs to.
    pub fn tenant_of_domain(&self, domain: &str) -> Option<&Arc<Tenant>> {
        self.local_domains.tenant_of(domain).and_then(|i| self.tenants.get(i))
    }
}

/// Builds tenants: the engine, the services policies get, the generation counter.
pub struct Loader {
    engine: PolicyEngine,
    services: HostServices,
    generations: AtomicU64,
    /// Baseline-compiled policies whose optimised code is being made (by address).
    optimizing: std::sync::Mutex<HashSet<usize>>,
}

impl Loader {
    /// A loader over `engine`.
    pub fn new(engine: PolicyEngine, services: HostServices) -> Self {
        Self { engine, services, generations: AtomicU64::new(0), optimizing: Default::default() }
    }

    /// The key-value store behind the policies.
    pub fn kv(&self) -> &Arc<dyn crate::state::kv::KvStore> {
        &self.services.kv
    }

    /// The tenant `t` describes: `current` itself when nothing changed, else a new generation
    /// that reuses every policy of `current` whose file and settings are the same. `quickly`:
    /// new policies may be compiled by the baseline compiler (see
    /// [`PolicyEngine::load_quickly`]).
    pub async fn tenant(
        &self,
        config: &Config,
        t: &TenantConfig,
        current: Option<&Arc<Tenant>>,
        quickly: bool,
    ) -> Result<Arc<Tenant>, String> {
        let mut hashes = Vec::with_capacity(t.policies.len());
        for p in &t.policies {
            let path = config.resolve(&p.path);
            let hash = file_hash(&path).await.map_err(|e| {
                format!(
                    "tenant {}: policy {}: {}: {e}",
                    t.name,
                    p.name.as_deref().unwrap_or("?"),
                    path.display()
                )
            })?;
            hashes.push(hash);
        }
        let fingerprint = format!("{t:?}|{}", hashes.join(","));
        if let Some(current) = current.filter(|c| c.fingerprint == fingerprint) {
            return Ok(current.clone());
        }
        let mut policies = Vec::with_capacity(t.policies.len());
        for (p, hash) in t.policies.iter().zip(&hashes) {
            let spec = p.spec(config, t);
            let reused = current.and_then(|c| {
                c.chain.policies.iter().find(|loaded| loaded.spec == spec && loaded.hash == *hash).cloned()
            });
            let loaded = match reused {
                Some(loaded) => Ok(loaded),
                None if quickly => self.engine.load_quickly(&spec, &t.name, self.services.clone()).await,
                None => self.engine.load(&spec, &t.name, self.services.clone()).await,
            };
            let loaded = loaded.map_err(|e| format!("tenant {}: {e}", t.name))?;
            if loaded.code == CodeTier::Baseline {
                tracing::info!(
                    tenant = %t.name,
                    policy = %loaded.name,
                    file = %loaded.file.display(),
                    "policy compiled by the baseline compiler; optimised code follows"
                );
            }
            policies.push(loaded);
        }
        // The hashes of what was actually loaded (a file may have changed meanwhile; the
        // next reload sees the difference).
        let loaded_hashes: Vec<&str> = policies.iter().map(|p| p.hash.as_str()).collect();
        let fingerprint = format!("{t:?}|{}", loaded_hashes.join(","));
        let mut chain = Chain::new(t.name.clone(), policies, t.chain_settings());
        chain.shadow = t.policies.iter().map(|p| p.is_shadow()).collect();
        let next_hop = NextHop::parse(&t.next_hop).map_err(|e| format!("tenant {}: {e}", t.name))?;
        let domains = t.domains.iter().map(|d| crate::domains::normalise(d)).collect();
        Ok(Arc::new(Tenant {
            name: t.name.clone(),
            chain: Arc::new(chain),
            next_hop,
            domains,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            loaded_at: SystemTime::now(),
            limits: TenantLimits {
                max_message_bytes: t.max_message_bytes,
                max_messages_per_minute: t.max_messages_per_minute,
                kv_quota: t.kv_quota(),
            },
            fingerprint,
        }))
    }
}

/// SHA-256 of a file, hex, read off the async runtime.
async fn file_hash(path: &Path) -> Result<String, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read: {e}"))?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    })
    .await
    .map_err(|e| format!("cannot read: {e}"))?
}

/// The first snapshot, at start: every failure is fatal.
pub async fn initial(loader: &Loader, config: Config) -> anyhow::Result<Live> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut tenants = Vec::new();
    for t in &config.tenants {
        tenants.push(loader.tenant(&config, t, None, false).await.map_err(anyhow::Error::msg)?);
    }
    let (tls, users) = tls_and_users(&config).map_err(anyhow::Error::msg)?;
    Ok(Live::assemble(Arc::new(config), tenants, tls, users))
}

type TlsAndUsers = (Option<tokio_rustls::TlsAcceptor>, Option<Arc<Users>>);

/// The TLS acceptor and the users file, read again (certificates and passwords change).
fn tls_and_users(config: &Config) -> Result<TlsAndUsers, String> {
    let tls = match &config.tls {
        Some(t) => Some(
            auth::tls_acceptor(&config.resolve(&t.cert), &config.resolve(&t.key))
                .map_err(|e| format!("tls: {e}"))?,
        ),
        None => None,
    };
    let users = match &config.relay.auth_users_file {
        Some(path) => Some(Arc::new(
            Users::load(&config.resolve(path)).map_err(|e| format!("relay.auth_users_file: {e}"))?,
        )),
        None => None,
    };
    Ok((tls, users))
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// `applied` (something changed), `unchanged`, or `failed` (something could not be
    /// loaded: those tenants, or with a changed configuration everything, kept running as
    /// they were).
    pub result: &'static str,
    /// Tenants now on a new generation: (name, generation).
    pub changed: Vec<(String, u64)>,
    /// What failed, with file and cause.
    pub errors: Vec<String>,
}

impl Relay {
    /// Re-read the configuration and the policy files and swap in what changed.
    pub async fn reload(self: &Arc<Self>, reason: &str) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock().await;
        let started = std::time::Instant::now();
        let report = self.reload_locked().await;
        let millis = started.elapsed().as_millis() as u64;
        self.optimize_in_background();
        self.metrics.reload(report.result);
        match report.result {
            "failed" => {
                for error in &report.errors {
                    tracing::error!(reason, millis, error = %error, "reload failed; the running generation stays");
                }
            }
            result => tracing::info!(
                reason,
                result,
                millis,
                changed = %report.changed.iter().map(|(t, g)| format!("{t}@{g}")).collect::<Vec<_>>().join(","),
                "reload"
            ),
        }
        report
    }

    async fn reload_locked(self: &Arc<Self>) -> ReloadReport {
        let failed = |errors: Vec<String>| ReloadReport { result: "failed", changed: Vec::new(), errors };
        let current = self.live();
        let config = match &self.config_path {
            None => current.config.clone(),
            Some(path) => {
                let text = match std::fs::read_to_string(path) {
                    Ok(text) => text,
                    Err(e) => return failed(vec![format!("{}: cannot read: {e}", path.display())]),
                };
                if crate::config::text_hash(&text) == current.config.text_hash {
                    current.config.clone()
                } else {
                    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    match Config::parse(&text, &path.display().to_string(), base) {
                        Ok(config) => {
                            for warning in config.warnings() {
                                tracing::warn!("{warning}");
                            }
                            Arc::new(config)
                        }
                        Err(e) => return failed(vec![e.to_string()]),
                    }
                }
            }
        };
        let config_changed = !Arc::ptr_eq(&config, &current.config);

        let mut tenants = Vec::with_capacity(config.tenants.len());
        let mut errors = Vec::new();
        for t in &config.tenants {
            let running = current.tenants.iter().find(|r| r.name == t.name);
            match self.loader.tenant(&config, t, running, true).await {
                Ok(tenant) => tenants.push(tenant),
                Err(e) => {
                    errors.push(e);
                    // Only the policy files changed: this tenant keeps running as it was.
                    if let Some(running) = running.filter(|_| !config_changed) {
                        tenants.push(running.clone());
                    }
                }
            }
        }
        let (tls, users) = match tls_and_users(&config) {
            Ok(pair) => pair,
            Err(e) => {
                errors.push(e);
                (current.tls.clone(), current.users.clone())
            }
        };
        if config_changed && !errors.is_empty() {
            return failed(errors);
        }

        let mut changed = Vec::new();
        {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            for tenant in &tenants {
                match current.tenants.iter().find(|r| r.name == tenant.name) {
                    Some(running) if Arc::ptr_eq(running, tenant) => {}
                    Some(running) => {
                        previous.insert(tenant.name.clone(), running.clone());
                        changed.push((tenant.name.clone(), tenant.generation));
                    }
                    None => changed.push((tenant.name.clone(), tenant.generation)),
                }
            }
            for running in &current.tenants {
                if !tenants.iter().any(|t| t.name == running.name) {
                    tracing::info!(tenant = %running.name, "tenant removed");
                    previous.remove(&running.name);
                }
            }
        }
        let next = Live::assemble(config.clone(), tenants, tls, users);
        self.swap(next);
        if config_changed {
            self.apply_listeners(&config.server.listen).await;
            for key in restart_only_changes(&current.config, &config) {
                tracing::warn!(key, "this setting changed but takes effect only after a restart");
            }
        }
        let result = if !errors.is_empty() {
            "failed"
        } else if changed.is_empty() && !config_changed {
            "unchanged"
        } else {
            "applied"
        };
        ReloadReport { result, changed, errors }
    }

    /// Put tenant `name`'s previous generation back (the current one becomes the previous).
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<u64, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.live();
        let index = current
            .tenants
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| format!("no tenant named {name:?}"))?;
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let back =
            previous.remove(name).ok_or_else(|| format!("tenant {name} has no previous generation"))?;
        previous.insert(name.to_string(), current.tenants[index].clone());
        drop(previous);
        let mut tenants = current.tenants.clone();
        tenants[index] = back.clone();
        let next =
            Live::assemble(current.config.clone(), tenants, current.tls.clone(), current.users.clone());
        self.swap(next);
        self.metrics.reload("rollback");
        self.optimize_in_background();
        tracing::info!(tenant = name, generation = back.generation, "rolled back to the previous generation");
        Ok(back.generation)
    }

    /// Compile, off the request path, the optimised code of every running policy that runs on
    /// baseline code, and put it in place of the baseline code (same file, same settings,
    /// same generation: sessions that started on the baseline code finish on it).
    fn optimize_in_background(self: &Arc<Self>) {
        let live = self.live();
        for policy in live.tenants.iter().flat_map(|t| t.chain.policies.iter()) {
            if policy.code != CodeTier::Baseline {
                continue;
            }
            let key = Arc::as_ptr(policy) as usize;
            if !self.loader.optimizing.lock().unwrap_or_else(|p| p.into_inner()).insert(key) {
                continue;
            }
            let relay = self.clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let tenant = policy.io.tenant.clone();
                match relay.loader.engine.load(&policy.spec, &tenant, relay.loader.services.clone()).await {
                    Ok(optimized) if optimized.hash == policy.hash => {
                        relay.replace_policy(&policy, &optimized).await;
                        tracing::info!(
                            tenant = %tenant,
                            policy = %policy.name,
                            millis = started.elapsed().as_millis() as u64,
                            "policy now runs on optimised code"
                        );
                    }
                    // The file changed meanwhile: the reload that follows takes it.
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        tenant = %tenant,
                        policy = %policy.name,
                        error = %e,
                        "cannot compile optimised code; the policy stays on baseline code"
                    ),
                }
                relay.loader.optimizing.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            });
        }
    }

    /// Put `new` in place of `old` wherever a running or previous generation has it.
    async fn replace_policy(self: &Arc<Self>, old: &Arc<LoadedPolicy>, new: &Arc<LoadedPolicy>) {
        let _one_at_a_time = self.reloading.lock().await;
        {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            for tenant in previous.values_mut() {
                if let Some(replaced) = tenant.with_policy_replaced(old, new) {
                    *tenant = replaced;
                }
            }
        }
        let current = self.live();
        let mut replaced = false;
        let tenants = current
            .tenants
            .iter()
            .map(|t| {
                t.with_policy_replaced(old, new).inspect(|_| replaced = true).unwrap_or_else(|| t.clone())
            })
            .collect();
        if replaced {
            self.swap(Live::assemble(
                current.config.clone(),
                tenants,
                current.tls.clone(),
                current.users.clone(),
            ));
        }
    }

    /// The previous generation of a tenant, if one is kept.
    pub fn previous_generation(&self, name: &str) -> Option<u64> {
        self.previous.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|t| t.generation)
    }

    fn swap(&self, next: Live) {
        for tenant in &next.tenants {
            self.metrics.set_generation(&tenant.name, tenant.generation);
        }
        self.live.store(Arc::new(next));
    }

    /// Listen on `addrs`: new addresses are bound (a failure is logged), addresses no longer
    /// listed stop accepting (their open sessions go on). Returns the bind errors.
    pub async fn apply_listeners(self: &Arc<Self>, addrs: &[SocketAddr]) -> Vec<String> {
        let mut errors = Vec::new();
        let wanted: HashSet<SocketAddr> = addrs.iter().copied().collect();
        let running: Vec<SocketAddr> =
            self.listeners.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        for addr in &running {
            if !wanted.contains(addr)
                && let Some(task) = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).remove(addr)
            {
                task.abort();
                tracing::info!(%addr, "stopped listening");
            }
        }
        for addr in addrs {
            if running.contains(addr) {
                continue;
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let task = tokio::spawn(self.clone().serve(listener)).abort_handle();
                    self.listeners.lock().unwrap_or_else(|p| p.into_inner()).insert(*addr, task);
                    tracing::info!(%addr, "listening");
                }
                Err(e) => {
                    let error = format!("server.listen: cannot listen on {addr}: {e}");
                    tracing::error!(error = %error);
                    errors.push(error);
                }
            }
        }
        errors
    }

    /// Watch the configuration file, every policy file, the TLS certificate and key and the
    /// users file, and reload when one changes.
    /// Directories are watched, not files (a watch on a file is lost when it is renamed
    /// over); a burst of events is taken as one once the files have been quiet for
    /// [`QUIET`] (10 ms after a rename into place or a close after writing), so a file being
    /// written is not taken half-way (and if a writer pauses
    /// longer, the half file fails validation and the running generation stays until the
    /// complete file arrives).
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<notify::Event>();
        let relay = self.clone();
        let files = relay.watched_files();
        // Events are sorted on the watcher's own thread: the watched directories may hold
        // busy files (a log the relay writes, say), whose events never reach the runtime.
        let shared = Arc::new(std::sync::Mutex::new(files.clone()));
        let filter = shared.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && filter.lock().is_ok_and(|files| relevant(&event, &files))
            {
                let _ = tx.send(event);
            }
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
        // The watches are in place when this returns, not when the task first runs.
        let mut watched: HashSet<PathBuf> = HashSet::new();
        sync_watches(&mut watcher, &mut watched, &files);
        tokio::spawn(async move {
            // Only relevant events arrive (the watcher's thread sorted them out).
            while let Some(event) = rx.recv().await {
                // Quiet period: more events for these files restart it (other files in the
                // same directories, such as a log being written, never get here).
                let mut quiet_until = tokio::time::Instant::now() + quiet_after(&event);
                loop {
                    match tokio::time::timeout_at(quiet_until, rx.recv()).await {
                        Ok(Some(event)) => {
                            quiet_until = tokio::time::Instant::now() + quiet_after(&event);
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                relay.reload("file change").await;
                let files = relay.watched_files();
                if let Ok(mut current) = shared.lock() {
                    current.clone_from(&files);
                }
                sync_watches(&mut watcher, &mut watched, &files);
            }
        });
        Ok(())
    }

    /// The configuration file, every policy file, the TLS certificate and key and the users
    /// file, absolute.
    fn watched_files(&self) -> HashSet<PathBuf> {
        let live = self.live();
        let config = &live.config;
        let mut files: HashSet<PathBuf> =
            config.tenants.iter().flat_map(|t| t.policies.iter().map(|p| config.resolve(&p.path))).collect();
        if let Some(tls) = &config.tls {
            files.insert(config.resolve(&tls.cert));
            files.insert(config.resolve(&tls.key));
        }
        files.extend(config.relay.auth_users_file.iter().map(|f| config.resolve(f)));
        files.extend(self.config_path.iter().cloned());
        files.into_iter().filter_map(|f| std::path::absolute(f).ok()).collect()
    }
}

/// How long files must be quiet before a change is taken.
pub const QUIET: Duration = Duration::from_millis(50);

/// The quiet period after `event`: short when the event says a file is complete (renamed
/// into place, or closed after writing), [`QUIET`] while a file is still being written.
fn quiet_after(event: &notify::Event) -> Duration {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => Duration::from_millis(10),
        _ => QUIET,
    }
}

fn relevant(event: &notify::Event, files: &HashSet<PathBuf>) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    let kind_counts = match event.kind {
        // Our own reads open and close files: only a close after writing counts.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind_counts && event.paths.iter().any(|p| files.contains(p))
}

fn sync_watches(
    watcher: &mut impl notify::Watcher,
    watched: &mut HashSet<PathBuf>,
    files: &HashSet<PathBuf>,
) {
    let dirs: HashSet<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    for dir in watched.difference(&dirs) {
        let _ = watcher.unwatch(dir);
    }
    for dir in dirs.difference(watched) {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this directory; use SIGHUP or sluice reload");
        }
    }
    *watched = dirs;
}

/// Settings read once at start, by name, that differ between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (o, n) = (&old.delivery, &new.delivery);
    let pairs: [(&'static str, bool); 10] = [
        ("spool.dir", old.spool.dir != new.spool.dir),
        ("admin.listen", old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen)),
        ("dns.nameservers", old.dns.nameservers != new.dns.nameservers),
        ("server.max_connections", old.server.max_connections != new.server.max_connections),
        ("delivery.destination_concurrency", o.destination_concurrency != n.destination_concurrency),
        ("delivery.max_deliveries", o.max_deliveries != n.max_deliveries),
        ("delivery.connection_cache_secs", o.connection_cache_secs != n.connection_cache_secs),
        ("delivery.connection_reuse_limit", o.connection_reuse_limit != n.connection_reuse_limit),
        ("delivery.timeout_secs / starttls", o.timeout_secs != n.timeout_secs || o.starttls != n.starttls),
        ("server.hostname (as the delivery client's EHLO name)", old.server.hostname != new.server.hostname),
    ];
    for (key, differs) in pairs {
        if differs {
            keys.push(key);
        }
    }
    keys
}
