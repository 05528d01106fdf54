//! The relay's configuration: TOML read once into typed values (next hops, networks, failure
//! modes, the key-value backend are parsed as the file is read, never again), checked as a
//! whole, every error naming the key and its line (and, for syntax and type errors, the
//! column): [`ConfigError`].
//!
//! Without a file the relay runs on [`DEFAULT_CONFIG`]: it listens on 127.0.0.1:2525, serves
//! one tenant for `localhost` with the shipped Rust policies and delivers into a Maildir under
//! `./var/mail`.
//!
//! Inside: [`sections`] (`[server]`, `[spool]`, `[state]`, `[relay]`, `[dns]`, `[admin]`,
//! `[tls]`, `[delivery]`), [`tenant`] (`[[tenant]]`, `[edge]` and their policies), [`values`]
//! (the typed values), [`error`].

pub mod error;
pub mod sections;
pub mod tenant;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use error::ConfigError;
pub use sections::{
    AdminConfig, DeliveryConfig, DnsConfig, FleetConfig, MtaServerConfig, OciConfig, RelayConfig,
    ServerConfig, SpoolConfig, StateConfig, TlsConfig,
};
pub use tenant::{DkimConfig, EDGE, PolicyConfig, TenantConfig};
pub use values::{
    Backend, BounceInbound, Cidr, Endpoint, NextHop, OnFault, PolicyMode, RecipientCheck, TlsMode,
    WhenUnverified,
};

/// The embedded default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SMTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// The spool.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Relay authorization.
    #[serde(default)]
    pub relay: RelayConfig,
    /// STARTTLS certificate.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The admin listener (Prometheus `/metrics`).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Policies from OCI registries (`path = "oci://…"`).
    #[serde(default)]
    pub oci: OciConfig,
    /// This relay as a node of a fleet (over the `[state]` Redis).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// A milter server for an MTA in front (Postfix `smtpd_milters`, Sendmail `INPUT_MAIL_FILTER`).
    #[serde(default)]
    pub milter: Option<MtaServerConfig>,
    /// A Postfix SMTP access policy delegation server (`check_policy_service`).
    #[serde(default)]
    pub policy_delegation: Option<MtaServerConfig>,
    /// DNS.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Delivery.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The key-value store behind the policies' `kv-*` imports.
    #[serde(default)]
    pub state: StateConfig,
    /// The edge: the provider's own chain, run at connect and helo for every client (and at
    /// every stage for mail a trusted client relays out that no tenant claims). Always set
    /// once parsed (empty without an `[edge]`); read it with [`Config::edge`].
    #[serde(default)]
    edge: Option<TenantConfig>,
    /// Tenants, in order (the first one's domain takes mail for a bare `postmaster`).
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// Where relative paths are resolved from (the config file's directory, or the current
    /// directory for the embedded default).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// SHA-256 of the text it was parsed from, hex (a reload skips an unchanged file).
    #[serde(skip)]
    pub text_hash: String,
    /// Its name and text, to say where a later check's key is.
    #[serde(skip)]
    source: (String, Arc<str>),
}

impl Config {
    /// Read and check `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(&name, format!("cannot read: {e}")))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &name, base)
    }

    /// The embedded default, relative paths taken from the current directory.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::parse(DEFAULT_CONFIG, "embedded default configuration", PathBuf::from("."))
    }

    /// Parse and check configuration text.
    pub fn parse(text: &str, source_name: &str, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::toml(source_name, text, &e))?;
        config.base_dir = base_dir;
        config.text_hash = text_hash(text);
        config.source = (source_name.to_string(), Arc::from(text));
        let mut edge = config.edge.take().unwrap_or_else(TenantConfig::empty_edge);
        edge.name = EDGE.into();
        config.edge = Some(edge);
        if let Some(fleet) = &mut config.fleet {
            fleet.resolve().map_err(|m| ConfigError::at_key(source_name, text, "fleet.node".into(), m))?;
        }
        config.check().map_err(|(key, message)| ConfigError::at_key(source_name, text, key, message))?;
        config.builtins().map_err(|(key, message)| ConfigError::at_key(source_name, text, key, message))?;
        Ok(config)
    }

    /// Each policy given as `builtin:NAME`, its path made the file that holds it
    /// ([`crate::builtin`]).
    fn builtins(&mut self) -> Result<(), (String, String)> {
        for (key, policy) in self.policies_mut() {
            let Some(name) = policy.path.to_str().and_then(|p| p.strip_prefix(crate::builtin::SCHEME)) else {
                continue;
            };
            let file = crate::builtin::materialize(name).map_err(|e| (key, e))?;
            policy.origin = Some(policy.path.display().to_string());
            policy.path = file;
        }
        Ok(())
    }

    /// Every policy of the edge and the tenants, with its key (`tenant[0] (example).policy[1].path`).
    pub fn policies_mut(&mut self) -> Vec<(String, &mut PolicyConfig)> {
        let mut all = Vec::new();
        for (j, policy) in self.edge.iter_mut().flat_map(|t| t.policies.iter_mut()).enumerate() {
            all.push((format!("edge.policy[{j}].path"), policy));
        }
        for (i, tenant) in self.tenants.iter_mut().enumerate() {
            for (j, policy) in tenant.policies.iter_mut().enumerate() {
                all.push((format!("tenant[{i}] ({}).policy[{j}].path", tenant.name), policy));
            }
        }
        all
    }

    /// An error about `key` (such as `tenant[0] (example).policy[1].path`), located in the
    /// file this configuration came from.
    pub fn error_at(&self, key: String, message: String) -> ConfigError {
        ConfigError::at_key(&self.source.0, &self.source.1, key, message)
    }

    /// Where it came from: the file's name, or `embedded default configuration`.
    pub fn source_name(&self) -> &str {
        &self.source.0
    }

    /// The key of policy `index` of `tenant` (the edge or one of the tenants), for messages.
    pub fn policy_key(&self, tenant: &TenantConfig, index: usize) -> String {
        match self.tenants.iter().position(|t| t.name == tenant.name) {
            Some(i) if tenant.name != EDGE => format!("tenant[{i}] ({}).policy[{index}].path", tenant.name),
            _ => format!("edge.policy[{index}].path"),
        }
    }

    /// Every policy file the configuration names can be read and is a WebAssembly component:
    /// checked before the relay creates anything on disk, each problem named with its line.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        for tenant in std::iter::once(self.edge()).chain(&self.tenants) {
            for (index, policy) in tenant.policies.iter().enumerate() {
                let path = self.resolve(&policy.path);
                if let Err(problem) = component_file(&path) {
                    let key = self.policy_key(tenant, index);
                    return Err(self.error_at(key, format!("{}: {problem}", path.display())));
                }
            }
        }
        Ok(())
    }

    /// The servers for an MTA in front, by their section's name (`milter`,
    /// `policy_delegation`): the settings of those configured.
    pub fn mta_servers(&self) -> [(&'static str, Option<&MtaServerConfig>); 2] {
        [("milter", self.milter.as_ref()), ("policy_delegation", self.policy_delegation.as_ref())]
    }

    /// The edge's chain, settings and limits (an empty chain when there is no `[edge]`).
    pub fn edge(&self) -> &TenantConfig {
        static EMPTY: std::sync::OnceLock<TenantConfig> = std::sync::OnceLock::new();
        self.edge.as_ref().unwrap_or_else(|| EMPTY.get_or_init(TenantConfig::empty_edge))
    }

    /// Every problem the types cannot express, as (key, what is wrong).
    fn check(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, message: &str| Err((key.to_string(), message.to_string()));
        let s = &self.server;
        if s.hostname.trim().is_empty() || s.hostname.contains(char::is_whitespace) {
            return fail("server.hostname", "must be a host name without spaces");
        }
        if s.listen.is_empty() && self.milter.is_none() && self.policy_delegation.is_none() {
            return fail(
                "server.listen",
                "at least one address is required (or a [milter] or [policy_delegation] listener)",
            );
        }
        if s.max_line_bytes < 512 {
            return fail("server.max_line_bytes", "must be at least 512 (RFC 5321 §4.5.3.1.4)");
        }
        if s.max_recipients < 1 {
            return fail("server.max_recipients", "must be at least 1");
        }
        if let Some(admin) = &self.admin
            && admin.read_token_file.is_some()
            && admin.token_file.is_none()
        {
            return fail(
                "admin.read_token_file",
                "needs admin.token_file (without it the API is open to all)",
            );
        }
        let state = &self.state;
        if state.sentinels.is_empty() != state.sentinel_master.is_none() {
            return fail("state.sentinels / state.sentinel_master", "give both, or neither");
        }
        if !state.sentinels.is_empty() && !matches!(state.backend, Backend::Redis(_)) {
            return fail(
                "state.sentinels",
                "needs a redis:// or rediss:// backend (its scheme, database and credentials)",
            );
        }
        if !state.cluster.is_empty()
            && (!state.sentinels.is_empty() || !matches!(state.backend, Backend::Redis(_)))
        {
            return fail("state.cluster", "needs a redis:// or rediss:// backend, and no sentinels");
        }
        if let Some(fleet) = &self.fleet
            && (fleet.node.trim().is_empty() || !matches!(state.backend, Backend::Redis(_)))
        {
            return fail("fleet.node", "needs a name, and a Redis [state] backend the nodes share");
        }
        if let Some(admin) = &self.admin
            && admin.token_file.is_none()
            && !admin.listen.ip().is_loopback()
        {
            return fail(
                "admin.token_file",
                "is required when admin.listen is not a loopback address (the API would be open to the network); \
                 e.g. `openssl rand -hex 32 > /etc/sluice/admin.token`",
            );
        }
        if let Some(admin) = &self.admin
            && admin.tls_cert.is_some() != admin.tls_key.is_some()
        {
            return fail("admin.tls_cert / admin.tls_key", "give both, or neither");
        }
        if let Some(admin) = &self.admin
            && (admin.max_connections < 1 || admin.request_timeout_secs < 1)
        {
            return fail("admin.max_connections / admin.request_timeout_secs", "must be at least 1");
        }
        if self.relay.auth_failures_per_ip < 1 {
            return fail("relay.auth_failures_per_ip", "must be at least 1");
        }
        if s.max_connections < 1 || s.max_connections_per_ip < 1 {
            return fail("server.max_connections / max_connections_per_ip", "must be at least 1");
        }
        if s.prepared_instances > s.max_connections {
            return fail(
                "server.prepared_instances",
                "at most server.max_connections (the instances of live sessions need the rest of the pool)",
            );
        }
        if self.delivery.destination_concurrency == 0 {
            return fail("delivery.destination_concurrency", "must be at least 1");
        }
        if self.delivery.max_deliveries == 0 {
            return fail("delivery.max_deliveries", "must be at least 1");
        }
        if self.delivery.retry_base_secs == 0 || self.delivery.retry_max_secs < self.delivery.retry_base_secs
        {
            return fail("delivery.retry_base_secs / retry_max_secs", "need 0 < base <= max");
        }
        if self.tenants.is_empty() {
            return fail("tenant", "at least one [[tenant]] is required");
        }
        let d = &self.delivery;
        if d.smarthost_auth_file.is_some() {
            if !d.smarthost.as_ref().is_some_and(NextHop::is_server) {
                return fail("delivery.smarthost_auth_file", "needs an SMTP or LMTP delivery.smarthost");
            }
            if !d.smarthost_tls.required() {
                return fail(
                    "delivery.smarthost_auth_file",
                    "AUTH goes only over TLS: set delivery.smarthost_tls to `required` or `verify`",
                );
            }
        }
        if self.state.max_keys == 0 {
            return fail("state.max_keys", "must be at least 1");
        }
        let edge = self.edge();
        for (key, set) in [
            ("domains", !edge.domains.is_empty()),
            ("next_hop", edge.next_hop.is_some()),
            ("outbound_networks", !edge.outbound_networks.is_empty()),
            ("outbound_users", !edge.outbound_users.is_empty()),
            ("recipients", edge.recipients != RecipientCheck::Any),
            ("next_hop_tls", edge.next_hop_tls != TlsMode::default() || edge.next_hop_ca_file.is_some()),
            ("dkim", edge.dkim.is_some()),
        ] {
            if set {
                return fail(
                    &format!("edge.{key}"),
                    "the edge screens every client and belongs to no tenant: put this in a [[tenant]]",
                );
            }
        }
        check_chain("edge", edge)?;
        let mut seen_domains = BTreeMap::new();
        let mut seen_networks = HashMap::new();
        let mut seen_users = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = format!("tenant[{i}] ({})", t.name);
            if t.name.trim().is_empty() {
                return fail(&format!("tenant[{i}].name"), "must not be empty");
            }
            if t.name == EDGE {
                return fail(
                    &format!("{key}.name"),
                    "`edge` is the name of the provider's own chain ([edge])",
                );
            }
            if t.next_hop.is_none() {
                return fail(&format!("{key}.next_hop"), "required: where the tenant's mail goes");
            }
            if t.recipients == RecipientCheck::Verify && !t.next_hop.as_ref().is_some_and(NextHop::is_server)
            {
                return fail(
                    &format!("{key}.recipients"),
                    "`verify` asks the next hop, which must be an SMTP or LMTP server",
                );
            }
            if t.recipients == RecipientCheck::Verify
                && (t.verify_cache_entries == 0 || t.verify_timeout_secs == 0)
            {
                return fail(
                    &format!("{key}.verify_cache_entries / verify_timeout_secs"),
                    "must be at least 1",
                );
            }
            for d in &t.domains {
                values::check_domain_entry(d).map_err(|e| (format!("{key}.domains"), e))?;
                let domain = values::normalise_domain(d);
                if let Some(other) = seen_domains.insert(domain.clone(), t.name.clone()) {
                    return fail(
                        &format!("{key}.domains"),
                        &format!("{domain} already belongs to tenant {other}"),
                    );
                }
            }
            for net in &t.outbound_networks {
                if let Some(other) = seen_networks.insert(*net, t.name.clone()) {
                    return fail(
                        &format!("{key}.outbound_networks"),
                        &format!("{net} already belongs to tenant {other}"),
                    );
                }
            }
            for user in &t.outbound_users {
                if let Some(other) = seen_users.insert(user.clone(), t.name.clone()) {
                    return fail(
                        &format!("{key}.outbound_users"),
                        &format!("{user} already belongs to tenant {other}"),
                    );
                }
            }
            check_chain(&key, t)?;
        }
        Ok(())
    }

    /// What is valid but probably not meant: printed by `sluice check`, logged at start and
    /// on reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, server) in self.mta_servers() {
            if let Some(server) = server.filter(|s| !s.listen.ip().is_loopback()) {
                warnings.push(format!(
                    "{key}.listen: {} is not a loopback address, and the protocol has no authentication: \
                     let only the MTA reach it (firewall)",
                    server.listen
                ));
            }
        }
        if let Some(hop) = self.delivery.smarthost.as_ref().filter(|h| h.is_server())
            && self.delivery.smarthost_tls != TlsMode::Verify
        {
            warnings.push(format!(
                "delivery.smarthost_tls: {hop} is used without a verified certificate ({:?}); \
                 set smarthost_tls = \"verify\" unless it is on a trusted network",
                self.delivery.smarthost_tls
            ));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            let key = format!("tenant[{i}] ({})", t.name);
            if t.policies.is_empty() {
                warnings.push(format!(
                    "{key}: no policies: its mail is accepted without any check (add a [[tenant.policy]])"
                ));
            }
            if i > 0 && t.domains.is_empty() && t.outbound_networks.is_empty() && t.outbound_users.is_empty()
            {
                warnings.push(format!(
                    "{key}: no domains, outbound_networks or outbound_users: no mail can reach it"
                ));
            }
            if let Some(max) = t.max_message_bytes
                && max > self.server.max_message_bytes
            {
                warnings.push(format!(
                    "{key}.max_message_bytes: {max} is above server.max_message_bytes ({}), which applies",
                    self.server.max_message_bytes
                ));
            }
        }
        warnings
    }

    /// The `[[tenant]]` named `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// A path from the configuration, resolved against its base directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// Networks whose clients may relay: `relay.trusted_networks` and every tenant's
    /// `outbound_networks`.
    pub fn trusted_networks(&self) -> Vec<Cidr> {
        let outbound = self.tenants.iter().flat_map(|t| t.outbound_networks.iter());
        self.relay.trusted_networks.iter().chain(outbound).copied().collect()
    }
}

/// The checks a tenant and the edge share: their policies and limits.
fn check_chain(key: &str, t: &TenantConfig) -> Result<(), (String, String)> {
    for (j, p) in t.policies.iter().enumerate() {
        for (k, v) in &p.config {
            if matches!(v, toml::Value::Table(_) | toml::Value::Array(_) | toml::Value::Datetime(_)) {
                return Err((
                    format!("{key}.policy[{j}].config.{k}"),
                    "values are strings, numbers or booleans (lists as \"a,b\")".into(),
                ));
            }
        }
        if p.cpu_ms == Some(0) || p.memory_mib == Some(0) {
            return Err((format!("{key}.policy[{j}]"), "cpu_ms and memory_mib must be positive".into()));
        }
        if p.sessions_per_instance.is_some_and(|n| n == 0 || n > 100_000) {
            return Err((format!("{key}.policy[{j}].sessions_per_instance"), "from 1 to 100000".into()));
        }
    }
    for (name, bad) in [
        ("cpu_ms", t.cpu_ms == Some(0)),
        ("memory_mib", t.memory_mib == Some(0)),
        ("max_message_bytes", t.max_message_bytes == Some(0)),
        ("max_messages_per_minute", t.max_messages_per_minute == Some(0)),
        ("kv_max_keys", t.kv_max_keys == Some(0)),
        ("kv_max_bytes", t.kv_max_bytes == Some(0)),
    ] {
        if bad {
            return Err((format!("{key}.{name}"), "must be positive".into()));
        }
    }
    Ok(())
}

/// Whether `path` can be read and starts like a WebAssembly component; what is wrong if not.
pub fn component_file(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let n = file.read(&mut head).map_err(|e| format!("cannot read: {e}"))?;
    if n < 8 || &head[..4] != b"\0asm" {
        return Err("not WebAssembly (no `\\0asm` header)".into());
    }
    crate::policy::cache::core_module(&head).map_or(Ok(()), |advice| Err(advice.into()))
}

/// SHA-256 of configuration text, hex.
pub fn text_hash(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests;
