//! Who is who: the tenants (a provider's customers) and the edge (the provider's own chain),
//! each with its loaded chain, limits and route, and the [`Snapshot`] a session runs on — the
//! configuration with every tenant of one moment, which domain, network and user belongs to
//! which tenant, the relay rules, the certificate and the users file.
//!
//! A session takes the current snapshot when it connects and keeps it to its end; a reload
//! ([`crate::reload`]) makes new snapshots. Inside: [`domains`] (the domain map) and [`rates`]
//! (counters shared by every session: message rates, AUTH failures).

pub mod domains;
pub mod rates;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::Users;
use crate::config::{Cidr, Config, NextHop};
use crate::policy::{Chain, LoadedPolicy};
use domains::DomainMap;

/// The snapshot in force, swapped on reload; sessions load it once.
pub type Current = arc_swap::ArcSwap<Snapshot>;

/// A tenant at run time (or the edge): one generation of its chain and routes.
pub struct Tenant {
    /// Name (`edge` for the edge).
    pub name: String,
    /// Its loaded chain.
    pub chain: Arc<Chain>,
    /// Where its inbound mail goes (none for the edge).
    pub next_hop: Option<NextHop>,
    /// Its domains, normalised.
    pub domains: Vec<String>,
    /// Generation number (unique across the process, increasing).
    pub generation: u64,
    /// When this generation was made.
    pub loaded_at: SystemTime,
    /// Its limits besides the per-call ones of its policies.
    pub limits: TenantLimits,
    /// Which recipients of its domains exist.
    pub recipients: crate::recipients::Rule,
    /// Its accepted inbound mail gets `Authentication-Results`.
    pub authentication_results: bool,
    /// The key its outbound mail is signed with.
    pub dkim: Option<Arc<crate::sender::DkimKey>>,
    /// When its chain's learning policies learn on their own.
    pub autolearn: Option<crate::policy::Autolearn>,
    /// Its configuration and policy files' hashes: equal fingerprints, same tenant.
    pub(crate) fingerprint: String,
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
    pub(crate) fn with_policy_replaced(
        &self,
        old: &Arc<LoadedPolicy>,
        new: &Arc<LoadedPolicy>,
    ) -> Option<Arc<Tenant>> {
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
            recipients: self.recipients.clone(),
            authentication_results: self.authentication_results,
            dkim: self.dkim.clone(),
            autolearn: self.autolearn,
            fingerprint: self.fingerprint.clone(),
        }))
    }
}

/// The signing key of a `[tenant.dkim]` table, its path resolved against the configuration.
pub fn load_dkim(
    config: &Config,
    dkim: &crate::config::DkimConfig,
) -> Result<Arc<crate::sender::DkimKey>, String> {
    crate::sender::DkimKey::load(&config.resolve(&dkim.key), &dkim.domain, &dkim.selector, &dkim.headers)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Whose chain judges: the edge, or a tenant (by index into [`Snapshot::tenants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The provider's own chain.
    Edge,
    /// A tenant.
    Tenant(usize),
}

/// One snapshot of everything a session runs on.
pub struct Snapshot {
    /// The configuration.
    pub config: Arc<Config>,
    /// The edge.
    pub edge: Arc<Tenant>,
    /// Tenants, in configuration order.
    pub tenants: Vec<Arc<Tenant>>,
    /// Local domain → index in `tenants`.
    pub domains: Arc<DomainMap>,
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

impl Snapshot {
    /// Put a snapshot together: the domain, network and user maps from the tenants and their
    /// configuration.
    pub fn assemble(
        config: Arc<Config>,
        edge: Arc<Tenant>,
        tenants: Vec<Arc<Tenant>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        users: Option<Arc<Users>>,
    ) -> Self {
        let mut domains = DomainMap::default();
        let mut outbound_networks = Vec::new();
        let mut outbound_users = HashMap::new();
        for (index, tenant) in tenants.iter().enumerate() {
            for domain in &tenant.domains {
                domains.insert(domain, index);
            }
            if let Some(t) = config.tenant(&tenant.name) {
                outbound_networks.extend(t.outbound_networks.iter().map(|c| (*c, index)));
                outbound_users.extend(t.outbound_users.iter().map(|u| (u.clone(), index)));
            }
        }
        outbound_networks.sort_by_key(|(cidr, _)| std::cmp::Reverse(cidr.prefix()));
        Self {
            trusted: config.trusted_networks(),
            config,
            edge,
            tenants,
            domains: Arc::new(domains),
            outbound_networks,
            outbound_users,
            tls,
            users,
        }
    }

    /// The snapshot of `config` with no policy loaded: every chain empty, each party's
    /// settings and limits as configured. For tests and fuzzing of the conversation, which
    /// need no components.
    pub fn unloaded(
        config: Config,
        tls: Option<tokio_rustls::TlsAcceptor>,
        users: Option<Arc<Users>>,
    ) -> Self {
        let tenant = |t: &crate::config::TenantConfig| {
            Arc::new(Tenant {
                name: t.name.clone(),
                chain: Arc::new(Chain::new(t.name.clone(), Vec::new(), t.chain_settings())),
                next_hop: t.next_hop.clone(),
                domains: t.domains.iter().map(|d| domains::normalise(d)).collect(),
                generation: 0,
                loaded_at: SystemTime::now(),
                limits: TenantLimits {
                    max_message_bytes: t.max_message_bytes,
                    max_messages_per_minute: t.max_messages_per_minute,
                    kv_quota: t.kv_quota(),
                },
                recipients: match &t.recipients {
                    crate::config::RecipientCheck::Any => crate::recipients::Rule::Any,
                    crate::config::RecipientCheck::Verify => crate::recipients::Rule::Verify,
                    crate::config::RecipientCheck::File(path) => {
                        let path = config.resolve(path);
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        crate::recipients::Rule::List(Arc::new(crate::recipients::RecipientList::parse(
                            path, &text,
                        )))
                    }
                },
                authentication_results: t.authentication_results,
                dkim: t.dkim.as_ref().and_then(|d| load_dkim(&config, d).ok()),
                autolearn: t.autolearn(),
                fingerprint: String::new(),
            })
        };
        let edge = tenant(config.edge());
        let tenants = config.tenants.iter().map(tenant).collect();
        Self::assemble(Arc::new(config), edge, tenants, tls, users)
    }

    /// The same configuration, certificate and users with other tenants (a rollback, a
    /// policy moved to optimised code).
    pub fn with_tenants(&self, edge: Arc<Tenant>, tenants: Vec<Arc<Tenant>>) -> Self {
        Self::assemble(self.config.clone(), edge, tenants, self.tls.clone(), self.users.clone())
    }

    /// The edge or a tenant.
    pub fn party(&self, party: Party) -> &Arc<Tenant> {
        match party {
            Party::Edge => &self.edge,
            Party::Tenant(i) => self.tenants.get(i).unwrap_or(&self.edge),
        }
    }

    /// The edge and every tenant.
    pub fn parties(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        std::iter::once(&self.edge).chain(&self.tenants)
    }

    /// The tenant whose sessions come from `ip` (its most specific `outbound_networks`
    /// entry), if one claims it.
    pub fn tenant_of_client(&self, ip: IpAddr) -> Option<usize> {
        self.outbound_networks.iter().find(|(net, _)| net.contains(ip)).map(|(_, t)| *t)
    }

    /// The tenant an authenticated user sends for, if one lists it in `outbound_users`.
    pub fn tenant_of_user(&self, user: &str) -> Option<usize> {
        self.outbound_users.get(user).copied()
    }

    /// The tenant a domain belongs to.
    pub fn tenant_of_domain(&self, domain: &str) -> Option<&Arc<Tenant>> {
        self.domains.tenant_of(domain).and_then(|i| self.tenants.get(i))
    }

    /// Whether `ip` may relay to any domain (a trusted or an outbound network).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }
}
