//! How what the relay runs on changes without a restart: generations, rollback, the watcher.
//!
//! [`Generations`] holds the snapshot in force ([`crate::tenants::Snapshot`]). A reload (file
//! watcher, SIGHUP, `POST /api/reload`) re-reads the configuration and every policy file,
//! rebuilds only the edge and the tenants whose configuration or files changed (unchanged
//! policies are reused as loaded, not recompiled), validates each new policy (compile, link,
//! `describe`, `init` with its configuration) off the async runtime, and swaps. A tenant whose
//! new policies fail keeps its running generation; when the configuration file itself changed,
//! any failure keeps the whole running snapshot. Each tenant's previous generation is kept for
//! rollback. Sessions keep the snapshot they started on.
//!
//! Inside: [`loader`] (building tenants), [`watch`] (the file watcher).

pub mod loader;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{CodeTier, LoadedPolicy};
use crate::sync::lock;
use crate::tenants::{Current, Snapshot, Tenant};
pub use loader::Loader;

/// What the relay does when a reload changes its listen addresses: implemented by the
/// listener room, which binds and unbinds; a reload waits for it before it reports.
#[async_trait::async_trait]
pub trait Listen: Send + Sync {
    /// Listen as `config` says (`server.listen`, and the servers for an MTA in front);
    /// returns the addresses that could not be bound, as errors.
    async fn listen(&self, config: &Config) -> Vec<String>;
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// `applied` (something changed), `unchanged`, or `failed` (something could not be
    /// loaded: those tenants, or with a changed configuration everything, kept running as
    /// they were).
    pub result: &'static str,
    /// Tenants (and the edge) now on a new generation: (name, generation).
    pub changed: Vec<(String, u64)>,
    /// What failed, with file and cause.
    pub errors: Vec<String>,
}

/// The generations of the edge and the tenants: the snapshot in force, the previous
/// generation of each, and how new ones are made.
pub struct Generations {
    current: Arc<Current>,
    pub(crate) loader: Loader,
    /// The configuration file (None: the embedded default, which is never re-read).
    config_path: Option<PathBuf>,
    /// Each tenant's previous generation, for rollback.
    previous: Mutex<HashMap<String, Arc<Tenant>>>,
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    listen: std::sync::OnceLock<Arc<dyn Listen>>,
}

impl Generations {
    /// The first generation of everything `config` names (every failure is an error).
    pub async fn start(
        loader: Loader,
        config: Config,
        config_path: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let snapshot = loader.snapshot(config).await.map_err(anyhow::Error::msg)?;
        for party in snapshot.parties() {
            metrics.set_generation(&party.name, party.generation);
        }
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            loader,
            config_path,
            previous: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            metrics,
            listen: std::sync::OnceLock::new(),
        })
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A handle on the snapshot in force, for those who follow it (delivery).
    pub fn current(&self) -> Arc<Current> {
        self.current.clone()
    }

    /// Who binds the listen addresses when a reload changes them.
    pub fn set_listen(&self, listen: Arc<dyn Listen>) {
        let _ = self.listen.set(listen);
    }

    /// The previous generation of a tenant, if one is kept.
    pub fn previous_generation(&self, name: &str) -> Option<u64> {
        lock(&self.previous).get(name).map(|t| t.generation)
    }

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

    /// The configuration to reload: the running one when the file did not change (and names
    /// no policy by an OCI tag, which is resolved again: the registry may have moved it).
    async fn read_config(&self, current: &Snapshot) -> Result<Arc<Config>, String> {
        let Some(path) = &self.config_path else { return Ok(current.config.clone()) };
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if crate::config::text_hash(&text) == current.config.text_hash
            && !crate::oci::has_tags(&current.config)
        {
            return Ok(current.config.clone());
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config =
            Config::parse(&text, &path.display().to_string(), base).map_err(|e| e.to_string())?;
        crate::oci::resolve(&mut config).await.map_err(|e| e.to_string())?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        Ok(Arc::new(config))
    }

    async fn reload_locked(self: &Arc<Self>) -> ReloadReport {
        let failed = |errors: Vec<String>| ReloadReport { result: "failed", changed: Vec::new(), errors };
        let current = self.snapshot();
        let config = match self.read_config(&current).await {
            Ok(config) => config,
            Err(e) => return failed(vec![e]),
        };
        let config_changed = !Arc::ptr_eq(&config, &current.config);

        let mut errors = Vec::new();
        // A tenant whose policies fail to load keeps running as it was when only the policy
        // files changed.
        let mut settle = |built: Result<Arc<Tenant>, String>, running: Option<&Arc<Tenant>>| match built {
            Ok(tenant) => Some(tenant),
            Err(e) => {
                errors.push(e);
                running.filter(|_| !config_changed).cloned()
            }
        };
        let mut tenants = Vec::with_capacity(config.tenants.len());
        for t in &config.tenants {
            let running = current.tenants.iter().find(|r| r.name == t.name);
            tenants.extend(settle(self.loader.tenant(&config, t, running, true).await, running));
        }
        let built = self.loader.tenant(&config, config.edge(), Some(&current.edge), true).await;
        let edge = settle(built, Some(&current.edge));
        let (tls, users) = match loader::tls_and_users(&config) {
            Ok(pair) => pair,
            Err(e) => {
                errors.push(e);
                (current.tls.clone(), current.users.clone())
            }
        };
        let Some(edge) = edge.filter(|_| !config_changed || errors.is_empty()) else {
            return failed(errors);
        };

        let mut changed = Vec::new();
        {
            let mut previous = lock(&self.previous);
            let running: Vec<&Arc<Tenant>> = current.parties().collect();
            for tenant in std::iter::once(&edge).chain(&tenants) {
                match running.iter().find(|r| r.name == tenant.name) {
                    Some(old) if Arc::ptr_eq(old, tenant) => {}
                    Some(old) => {
                        previous.insert(tenant.name.clone(), (*old).clone());
                        changed.push((tenant.name.clone(), tenant.generation));
                    }
                    None => changed.push((tenant.name.clone(), tenant.generation)),
                }
            }
            for old in &current.tenants {
                if !tenants.iter().any(|t| t.name == old.name) {
                    tracing::info!(tenant = %old.name, "tenant removed");
                    previous.remove(&old.name);
                }
            }
        }
        self.swap(Snapshot::assemble(config.clone(), edge, tenants, tls, users));
        if config_changed {
            if let Some(listen) = self.listen.get() {
                listen.listen(&config).await;
            }
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

    /// Put tenant `name`'s (or the edge's) previous generation back; the current one becomes
    /// the previous.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<u64, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.snapshot();
        let running = current
            .parties()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| format!("no tenant named {name:?}"))?;
        let back = {
            let mut previous = lock(&self.previous);
            let back =
                previous.remove(name).ok_or_else(|| format!("tenant {name} has no previous generation"))?;
            previous.insert(name.to_string(), running);
            back
        };
        let put_back = |t: &Arc<Tenant>| if t.name == name { back.clone() } else { t.clone() };
        let tenants = current.tenants.iter().map(put_back).collect();
        self.swap(current.with_tenants(put_back(&current.edge), tenants));
        self.metrics.reload("rollback");
        self.optimize_in_background();
        tracing::info!(tenant = name, generation = back.generation, "rolled back to the previous generation");
        Ok(back.generation)
    }

    /// Compile, off the request path, the optimised code of every running policy that runs on
    /// baseline code, and put it in place of the baseline code (same file, same settings,
    /// same generation: sessions that started on the baseline code finish on it).
    fn optimize_in_background(self: &Arc<Self>) {
        let snapshot = self.snapshot();
        for policy in snapshot.parties().flat_map(|t| t.chain.policies.iter()) {
            if policy.code != CodeTier::Baseline {
                continue;
            }
            let key = Arc::as_ptr(policy) as usize;
            if !lock(&self.loader.optimizing).insert(key) {
                continue;
            }
            let generations = self.clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let tenant = policy.io.tenant.clone();
                let loader = &generations.loader;
                match loader.engine.load(&policy.spec, &tenant, loader.services.clone()).await {
                    Ok(optimized) if optimized.hash == policy.hash => {
                        generations.replace_policy(&policy, &optimized).await;
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
                lock(&loader.optimizing).remove(&key);
            });
        }
    }

    /// Put `new` in place of `old` wherever a running or previous generation has it.
    async fn replace_policy(self: &Arc<Self>, old: &Arc<LoadedPolicy>, new: &Arc<LoadedPolicy>) {
        let _one_at_a_time = self.reloading.lock().await;
        for tenant in lock(&self.previous).values_mut() {
            if let Some(replaced) = tenant.with_policy_replaced(old, new) {
                *tenant = replaced;
            }
        }
        let current = self.snapshot();
        let mut replaced = false;
        let mut replace = |t: &Arc<Tenant>| {
            t.with_policy_replaced(old, new).inspect(|_| replaced = true).unwrap_or_else(|| t.clone())
        };
        let edge = replace(&current.edge);
        let tenants = current.tenants.iter().map(&mut replace).collect();
        if replaced {
            self.swap(current.with_tenants(edge, tenants));
        }
    }

    fn swap(&self, next: Snapshot) {
        for party in next.parties() {
            self.metrics.set_generation(&party.name, party.generation);
        }
        // Policies of the new generation make instances ahead of sessions; those it dropped
        // stop, and their prepared instances go (sessions still on them make their own).
        let mut in_service = std::collections::HashSet::new();
        for policy in next.parties().flat_map(|party| party.chain.policies.iter()) {
            policy.unretire();
            in_service.insert(Arc::as_ptr(policy));
        }
        let previous = self.current.load();
        for policy in previous.parties().flat_map(|party| party.chain.policies.iter()) {
            if !in_service.contains(&Arc::as_ptr(policy)) {
                policy.retire();
            }
        }
        self.current.store(Arc::new(next));
    }
}

/// Settings read once at start, by name, that differ between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.delivery, &new.delivery);
    let pairs: [(&'static str, bool); 11] = [
        ("spool.dir", old.spool.dir != new.spool.dir),
        ("admin.listen", old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen)),
        ("dns.nameservers", old.dns.nameservers != new.dns.nameservers),
        ("server.max_connections", old.server.max_connections != new.server.max_connections),
        ("server.prepared_instances", old.server.prepared_instances != new.server.prepared_instances),
        ("delivery.destination_concurrency", o.destination_concurrency != n.destination_concurrency),
        ("delivery.max_deliveries", o.max_deliveries != n.max_deliveries),
        ("delivery.connection_cache_secs", o.connection_cache_secs != n.connection_cache_secs),
        ("delivery.connection_reuse_limit", o.connection_reuse_limit != n.connection_reuse_limit),
        ("delivery.timeout_secs / starttls", o.timeout_secs != n.timeout_secs || o.starttls != n.starttls),
        ("server.hostname (as the delivery client's EHLO name)", old.server.hostname != new.server.hostname),
    ];
    pairs.into_iter().filter(|(_, differs)| *differs).map(|(key, _)| key).collect()
}
