//! Building tenants (and the edge) from the configuration: hash the policy files, reuse what
//! is unchanged, load what is new, and number the result as a new generation.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::auth::{self, Users};
use crate::config::{Config, RecipientCheck, TenantConfig};
use crate::policy::{Chain, CodeTier, HostServices, PolicyEngine};
use crate::recipients::{self, Rule};
use crate::tenants::{Snapshot, Tenant, TenantLimits};

/// Builds tenants: the engine, the services policies get, the generation counter.
pub struct Loader {
    pub(crate) engine: PolicyEngine,
    pub(crate) services: HostServices,
    generations: AtomicU64,
    /// Baseline-compiled policies whose optimised code is being made (by address).
    pub(crate) optimizing: std::sync::Mutex<HashSet<usize>>,
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
        for (index, p) in t.policies.iter().enumerate() {
            let path = config.resolve(&p.path);
            let hash = file_hash(&path).await.map_err(|e| {
                let key = config.policy_key(t, index);
                config.error_at(key, format!("{}: cannot read: {e}", path.display())).to_string()
            })?;
            hashes.push(hash);
        }
        let recipients = recipient_rule(config, t, current).await?;
        if let Rule::List(list) = &recipients {
            hashes.push(list.hash.clone());
        }
        // A new key in the same file is a new generation too.
        let key_hash = match &t.dkim {
            Some(d) => {
                let path = config.resolve(&d.key);
                let hash = file_hash(&path)
                    .await
                    .map_err(|e| format!("tenant {}: DKIM key {}: {e}", t.name, path.display()))?;
                hashes.push(hash.clone());
                Some(hash)
            }
            None => None,
        };
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
        let mut loaded_hashes: Vec<&str> = policies.iter().map(|p| p.hash.as_str()).collect();
        if let Rule::List(list) = &recipients {
            loaded_hashes.push(&list.hash);
        }
        if let Some(hash) = &key_hash {
            loaded_hashes.push(hash);
        }
        let fingerprint = format!("{t:?}|{}", loaded_hashes.join(","));
        let mut chain = Chain::new(t.name.clone(), policies, t.chain_settings());
        chain.shadow = t.policies.iter().map(|p| p.is_shadow()).collect();
        let domains = t.domains.iter().map(|d| crate::tenants::domains::normalise(d)).collect();
        let dkim = match &t.dkim {
            Some(d) => {
                Some(crate::tenants::load_dkim(config, d).map_err(|e| format!("tenant {}: {e}", t.name))?)
            }
            None => None,
        };
        Ok(Arc::new(Tenant {
            name: t.name.clone(),
            chain: Arc::new(chain),
            next_hop: t.next_hop.clone(),
            domains,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            loaded_at: SystemTime::now(),
            limits: TenantLimits {
                max_message_bytes: t.max_message_bytes,
                max_messages_per_minute: t.max_messages_per_minute,
                kv_quota: t.kv_quota(),
            },
            recipients,
            authentication_results: t.authentication_results,
            dkim,
            autolearn: t.autolearn(),
            fingerprint,
        }))
    }

    /// The first snapshot of `config`: every failure is an error.
    pub async fn snapshot(&self, config: Config) -> Result<Snapshot, String> {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let mut tenants = Vec::new();
        for t in &config.tenants {
            tenants.push(self.tenant(&config, t, None, false).await?);
        }
        let edge = self.tenant(&config, config.edge(), None, false).await?;
        let (tls, users) = tls_and_users(&config)?;
        Ok(Snapshot::assemble(Arc::new(config), edge, tenants, tls, users))
    }
}

/// Tenant `t`'s recipient rule: its list read from its file, or, when the file cannot be
/// read and the tenant had a list from the same file, that last good list (logged).
async fn recipient_rule(
    config: &Config,
    t: &TenantConfig,
    current: Option<&Arc<Tenant>>,
) -> Result<Rule, String> {
    let path = match &t.recipients {
        RecipientCheck::Any => return Ok(Rule::Any),
        RecipientCheck::Verify => return Ok(Rule::Verify),
        RecipientCheck::File(path) => config.resolve(path),
    };
    match recipients::read(path.clone()).await {
        Ok(list) => {
            for problem in &list.problems {
                tracing::warn!(tenant = %t.name, file = %path.display(), "recipients file: {problem} (line skipped)");
            }
            Ok(Rule::List(Arc::new(list)))
        }
        Err(e) => match current.map(|c| &c.recipients) {
            Some(Rule::List(last)) if last.path == path => {
                tracing::error!(tenant = %t.name, error = %e, entries = last.len(), "cannot read the recipients file: the last good list stays in force");
                Ok(Rule::List(last.clone()))
            }
            _ => Err(format!("tenant {}: recipients: cannot read {e}", t.name)),
        },
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

/// The STARTTLS certificate and the AUTH users of a configuration.
pub(crate) type TlsAndUsers = (Option<tokio_rustls::TlsAcceptor>, Option<Arc<Users>>);

/// The TLS acceptor and the users file, read again (certificates and passwords change).
pub(crate) fn tls_and_users(config: &Config) -> Result<TlsAndUsers, String> {
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
