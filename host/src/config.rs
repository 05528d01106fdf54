//! The relay's configuration: TOML read with serde, checked as a whole, every error naming
//! the key (and, for syntax and type errors, the line and column).
//!
//! Without a file the relay runs on [`DEFAULT_CONFIG`]: it listens on 127.0.0.1:2525, serves
//! one tenant for `localhost` with the shipped Rust policies and delivers into a Maildir under
//! `./var/mail`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::chain::{ChainSettings, FailureMode, Thresholds};
use crate::policy::decision::Reply;
use crate::policy::{PolicyLimits, PolicySpec};

/// The embedded default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A configuration error, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or "embedded default").
    pub source_name: String,
    /// What is wrong, with the key and line when known.
    pub message: String,
}

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
    /// DNS.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Delivery.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The key-value store behind the policies' `kv-*` imports.
    #[serde(default)]
    pub state: StateConfig,
    /// Tenants, the first being the default one.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// Where relative paths are resolved from (the config file's directory, or the current
    /// directory for the embedded default).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// SHA-256 of the text it was parsed from, hex (a reload skips an unchanged file).
    #[serde(skip)]
    pub text_hash: String,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name announced in the greeting, EHLO and Received headers.
    pub hostname: String,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Connections at once.
    pub max_connections: usize,
    /// Connections at once from one client IP.
    pub max_connections_per_ip: usize,
    /// Largest message accepted, bytes (announced in SIZE).
    pub max_message_bytes: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Longest command line, bytes including CRLF (RFC 5321: at least 512).
    pub max_line_bytes: usize,
    /// Protocol errors per session before the relay hangs up.
    pub max_errors: u32,
    /// Seconds to wait for a command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds to wait for each chunk of message data (RFC 5321 §4.5.3.2: 3 minutes).
    pub data_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            max_connections: 1000,
            max_connections_per_ip: 20,
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_bytes: 2048,
            max_errors: 10,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `embedded` (a persistent file, the default), `memory` (lost at exit), or a Redis or
    /// Valkey URL (`redis://host:port/db`; no TLS) shared by several relays.
    pub backend: String,
    /// File of the embedded store.
    pub path: PathBuf,
    /// Most keys the store holds (all tenants together); writes of new keys beyond fail.
    /// Embedded and memory stores only.
    pub max_keys: usize,
    /// Prefix of every key on a Redis server (relays sharing state use the same one).
    pub prefix: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            path: PathBuf::from("var/state/kv.redb"),
            max_keys: 1_000_000,
            prefix: "sluice:".into(),
        }
    }
}

/// `[spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the queue and the quarantine.
    pub dir: PathBuf,
    /// How an accepted message reaches the disk before its 250: `group` (one `syncfs` for
    /// every session waiting at that moment) or `file` (an fsync per file).
    pub sync: crate::spool::SyncMode,
    /// Free space the spool's file system must keep: below it (plus the size a client
    /// declares), MAIL gets `452 4.3.1` until space returns. Default: twice
    /// `server.max_message_bytes`.
    pub min_free_bytes: Option<u64>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("var/spool"),
            sync: crate::spool::SyncMode::default(),
            min_free_bytes: None,
        }
    }
}

/// `[relay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Networks whose clients may relay to any domain (CIDR).
    pub trusted_networks: Vec<String>,
    /// Users who may authenticate (SMTP AUTH) and then relay: lines of `user:hash`, the hash
    /// in SHA-512 crypt form (`$6$…`, as made by `openssl passwd -6` or `mkpasswd`).
    pub auth_users_file: Option<PathBuf>,
    /// Offer AUTH without TLS to loopback clients (never to others).
    pub allow_plaintext_auth_on_loopback: bool,
    /// Failed AUTH attempts from one client IP before AUTH from it is refused (`421 4.7.0`,
    /// and the connection closes) for `auth_lockout_secs`.
    pub auth_failures_per_ip: u32,
    /// How long failures are remembered and a locked-out IP stays locked out, seconds.
    pub auth_lockout_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            auth_users_file: None,
            allow_plaintext_auth_on_loopback: false,
            auth_failures_per_ip: 5,
            auth_lockout_secs: 600,
        }
    }
}

/// `[dns]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers to ask (`ip:port`); empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTP listener serving `GET /metrics`.
    pub listen: SocketAddr,
}

/// `[tls]`: the certificate STARTTLS presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Next hop for domains that are not local: `host:port`, `smtp:host:port` or
    /// `maildir:PATH`. Without one, mail for other domains goes to their MX hosts.
    pub smarthost: Option<String>,
    /// Named next hops a policy may route to.
    pub next_hops: BTreeMap<String, String>,
    /// First retry after this many seconds; each later one waits twice as long.
    pub retry_base_secs: u64,
    /// Longest wait between retries.
    pub retry_max_secs: u64,
    /// Give up (and bounce) after this many seconds in the queue (default 5 days).
    pub max_age_secs: u64,
    /// Seconds to wait for the next hop to connect and to answer each command.
    pub timeout_secs: u64,
    /// Port of the mail exchangers found by MX resolution (25).
    pub mx_port: u16,
    /// Use STARTTLS towards next hops that offer it (opportunistic; default on).
    pub starttls: bool,
    /// Deliveries at a time to one destination (a next hop, or a domain's MX hosts); the
    /// cached connections to it count too (20).
    pub destination_concurrency: usize,
    /// Deliveries at a time across all destinations (100).
    pub max_deliveries: usize,
    /// Seconds an idle connection to a next hop is kept for the next message (5; 0: no reuse).
    pub connection_cache_secs: u64,
    /// Transactions on one connection before it is closed (100).
    pub connection_reuse_limit: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            smarthost: None,
            next_hops: BTreeMap::new(),
            retry_base_secs: 300,
            retry_max_secs: 4 * 3600,
            max_age_secs: 5 * 86_400,
            timeout_secs: 60,
            mx_port: 25,
            starttls: true,
            destination_concurrency: 20,
            max_deliveries: 100,
            connection_cache_secs: 5,
            connection_reuse_limit: 100,
        }
    }
}

/// `[[tenant]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Name.
    pub name: String,
    /// Domains whose mail this tenant receives.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Where its inbound mail goes: `host:port`, `smtp:host:port` or `maildir:PATH`.
    pub next_hop: String,
    /// `tempfail` (default) or `continue` when a policy faults.
    #[serde(default = "default_failure_mode")]
    pub failure_mode: String,
    /// Score at which `X-Spam-Flag: YES` is added (default 5.0).
    #[serde(default = "default_add_header")]
    pub add_header_score: Option<f64>,
    /// Score at which the message is quarantined (default: off).
    #[serde(default)]
    pub quarantine_score: Option<f64>,
    /// Score at which the message is rejected (default 15.0).
    #[serde(default = "default_reject")]
    pub reject_score: Option<f64>,
    /// The chain, in order.
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    /// Outbound: clients in these networks (CIDR) may relay, and their sessions are this
    /// tenant's (the most specific network wins).
    #[serde(default)]
    pub outbound_networks: Vec<String>,
    /// Outbound: sessions of these authenticated users are this tenant's.
    #[serde(default)]
    pub outbound_users: Vec<String>,
    /// CPU deadline per hook call of its policies, milliseconds (default 50; a policy's own
    /// `cpu_ms` wins).
    pub cpu_ms: Option<u64>,
    /// Memory cap of its policies' instances, MiB (default 64; a policy's own `memory_mib`
    /// wins).
    pub memory_mib: Option<usize>,
    /// Largest message for its recipients, bytes (default and ceiling: `server.max_message_bytes`).
    pub max_message_bytes: Option<usize>,
    /// Transactions per minute it accepts recipients for, on this relay (default: no limit).
    pub max_messages_per_minute: Option<u32>,
    /// Keys its policies may hold in the key-value store (default 100 000).
    pub kv_max_keys: Option<u64>,
    /// Bytes of keys and values its policies may hold (default 64 MiB).
    pub kv_max_bytes: Option<u64>,
}

fn default_failure_mode() -> String {
    "tempfail".into()
}

fn default_add_header() -> Option<f64> {
    Some(5.0)
}

fn default_reject() -> Option<f64> {
    Some(15.0)
}

/// `[[tenant.policy]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name to log it under (default: the name from `describe`).
    pub name: Option<String>,
    /// The component.
    pub path: PathBuf,
    /// Its configuration.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// CPU deadline per hook call, milliseconds (default 50).
    pub cpu_ms: Option<u64>,
    /// Memory cap, MiB (default 64).
    pub memory_mib: Option<usize>,
    /// Sessions one warm instance may serve (default 1: a fresh instance per session). For
    /// policies whose instantiation is costly (JavaScript, Python); what the policy keeps in
    /// memory then carries over between sessions of its tenant.
    pub sessions_per_instance: Option<u32>,
    /// `enforce` (default) or `shadow`: run on live traffic, log and count the decisions,
    /// never apply them.
    #[serde(default)]
    pub mode: Option<String>,
}

impl PolicyConfig {
    /// Whether the policy runs in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.mode.as_deref() == Some("shadow")
    }
}

impl Config {
    /// Read and check `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { source_name: name.clone(), message: format!("cannot read: {e}") })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &name, base)
    }

    /// The embedded default, relative paths taken from the current directory.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::parse(DEFAULT_CONFIG, "embedded default configuration", PathBuf::from("."))
    }

    /// Parse and check configuration text.
    pub fn parse(text: &str, source_name: &str, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError { source_name: source_name.to_string(), message };
        let mut config: Config = toml::from_str(text).map_err(|e| error(describe_toml_error(text, &e)))?;
        config.base_dir = base_dir;
        config.text_hash = text_hash(text);
        config.check().map_err(|message| match key_line(text, &message) {
            Some(line) => error(format!("line {line}: {message}")),
            None => error(message),
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let s = &self.server;
        if s.hostname.trim().is_empty() || s.hostname.contains(char::is_whitespace) {
            return Err("server.hostname: must be a host name without spaces".into());
        }
        if s.listen.is_empty() {
            return Err("server.listen: at least one address is required".into());
        }
        if s.max_line_bytes < 512 {
            return Err("server.max_line_bytes: must be at least 512 (RFC 5321 §4.5.3.1.4)".into());
        }
        if s.max_recipients < 1 {
            return Err("server.max_recipients: must be at least 1".into());
        }
        if self.relay.auth_failures_per_ip < 1 {
            return Err("relay.auth_failures_per_ip: must be at least 1".into());
        }
        if s.max_connections < 1 || s.max_connections_per_ip < 1 {
            return Err("server.max_connections / max_connections_per_ip: must be at least 1".into());
        }
        for (i, net) in self.relay.trusted_networks.iter().enumerate() {
            Cidr::parse(net)
                .ok_or_else(|| format!("relay.trusted_networks[{i}]: not a CIDR block: {net:?}"))?;
        }
        if let Some(hop) = &self.delivery.smarthost {
            NextHop::parse(hop).map_err(|e| format!("delivery.smarthost: {e}"))?;
        }
        for (name, hop) in &self.delivery.next_hops {
            NextHop::parse(hop).map_err(|e| format!("delivery.next_hops.{name}: {e}"))?;
        }
        if self.delivery.destination_concurrency == 0 {
            return Err("delivery.destination_concurrency: must be at least 1".into());
        }
        if self.delivery.max_deliveries == 0 {
            return Err("delivery.max_deliveries: must be at least 1".into());
        }
        if self.delivery.retry_base_secs == 0 || self.delivery.retry_max_secs < self.delivery.retry_base_secs
        {
            return Err("delivery.retry_base_secs / retry_max_secs: need 0 < base <= max".into());
        }
        if self.tenants.is_empty() {
            return Err("tenant: at least one [[tenant]] is required".into());
        }
        let backend = self.state.backend.as_str();
        if backend.starts_with("redis://") {
            redis::Client::open(backend).map_err(|e| format!("state.backend: {e}"))?;
        } else if !matches!(backend, "embedded" | "memory") {
            return Err(format!(
                "state.backend: `embedded`, `memory` or a redis:// URL, not {:?}",
                self.state.backend
            ));
        }
        if self.state.max_keys == 0 {
            return Err("state.max_keys: must be at least 1".into());
        }
        let mut seen_domains = BTreeMap::new();
        let mut seen_networks = HashMap::new();
        let mut seen_users = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = format!("tenant[{i}] ({})", t.name);
            if t.name.trim().is_empty() {
                return Err(format!("tenant[{i}].name: must not be empty"));
            }
            NextHop::parse(&t.next_hop).map_err(|e| format!("{key}.next_hop: {e}"))?;
            if !matches!(t.failure_mode.as_str(), "tempfail" | "continue") {
                return Err(format!(
                    "{key}.failure_mode: `tempfail` or `continue`, not {:?}",
                    t.failure_mode
                ));
            }
            for d in &t.domains {
                crate::domains::check(d).map_err(|e| format!("{key}.domains: {e}"))?;
                let domain = crate::domains::normalise(d);
                if let Some(other) = seen_domains.insert(domain.clone(), t.name.clone()) {
                    return Err(format!("{key}.domains: {domain} already belongs to tenant {other}"));
                }
            }
            for (j, net) in t.outbound_networks.iter().enumerate() {
                let cidr = Cidr::parse(net)
                    .ok_or_else(|| format!("{key}.outbound_networks[{j}]: not a CIDR block: {net:?}"))?;
                if let Some(other) = seen_networks.insert(cidr, t.name.clone()) {
                    return Err(format!("{key}.outbound_networks: {net} already belongs to tenant {other}"));
                }
            }
            for user in &t.outbound_users {
                if let Some(other) = seen_users.insert(user.clone(), t.name.clone()) {
                    return Err(format!("{key}.outbound_users: {user} already belongs to tenant {other}"));
                }
            }
            for (j, p) in t.policies.iter().enumerate() {
                for (k, v) in &p.config {
                    if matches!(v, toml::Value::Table(_) | toml::Value::Array(_) | toml::Value::Datetime(_)) {
                        return Err(format!(
                            "{key}.policy[{j}].config.{k}: values are strings, numbers or booleans (lists as \"a,b\")"
                        ));
                    }
                }
                if let Some(mode) = &p.mode
                    && !matches!(mode.as_str(), "enforce" | "shadow")
                {
                    return Err(format!("{key}.policy[{j}].mode: `enforce` or `shadow`, not {mode:?}"));
                }
                if p.cpu_ms == Some(0) || p.memory_mib == Some(0) {
                    return Err(format!("{key}.policy[{j}]: cpu_ms and memory_mib must be positive"));
                }
                if p.sessions_per_instance.is_some_and(|n| n == 0 || n > 100_000) {
                    return Err(format!("{key}.policy[{j}].sessions_per_instance: from 1 to 100000"));
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
                    return Err(format!("{key}.{name}: must be positive"));
                }
            }
        }
        Ok(())
    }

    /// What is valid but probably not meant: printed by `sluice check`, logged at start and
    /// on reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
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

    /// A path from the configuration, resolved against its base directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// Trusted networks, parsed.
    /// Networks whose clients may relay: `relay.trusted_networks` and every tenant's
    /// `outbound_networks`.
    pub fn trusted_networks(&self) -> Vec<Cidr> {
        self.relay
            .trusted_networks
            .iter()
            .chain(self.tenants.iter().flat_map(|t| t.outbound_networks.iter()))
            .filter_map(|n| Cidr::parse(n))
            .collect()
    }
}

impl TenantConfig {
    /// Its share of the key-value store.
    pub fn kv_quota(&self) -> crate::state::kv::Quota {
        let default = crate::state::kv::Quota::default();
        crate::state::kv::Quota {
            max_keys: self.kv_max_keys.unwrap_or(default.max_keys),
            max_bytes: self.kv_max_bytes.unwrap_or(default.max_bytes),
        }
    }

    /// The chain settings.
    pub fn chain_settings(&self) -> ChainSettings {
        ChainSettings {
            failure_mode: if self.failure_mode == "continue" {
                FailureMode::Continue
            } else {
                FailureMode::Tempfail(Reply::new(
                    451,
                    "4.3.0",
                    "Temporary policy failure, please try again later",
                ))
            },
            thresholds: Thresholds {
                add_header: self.add_header_score,
                quarantine: self.quarantine_score,
                reject: self.reject_score,
            },
        }
    }
}

impl PolicyConfig {
    /// The spec the engine loads for `tenant`, paths resolved against `config`.
    pub fn spec(&self, config: &Config, tenant: &TenantConfig) -> PolicySpec {
        let mut spec = PolicySpec::new(config.resolve(&self.path));
        spec.name = self.name.clone();
        spec.config = self
            .config
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect();
        let mut limits = PolicyLimits { kv_quota: tenant.kv_quota(), ..PolicyLimits::default() };
        if let Some(ms) = self.cpu_ms.or(tenant.cpu_ms) {
            limits.cpu_deadline = Duration::from_millis(ms);
        }
        if let Some(mib) = self.memory_mib.or(tenant.memory_mib) {
            limits.memory_bytes = mib.saturating_mul(1 << 20);
        }
        if let Some(n) = self.sessions_per_instance {
            limits.sessions_per_instance = n;
        }
        spec.limits = limits;
        spec
    }
}

/// Where mail goes next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// An SMTP server.
    Smtp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A local Maildir tree: `PATH/<recipient>/{tmp,new,cur}`.
    Maildir(PathBuf),
}

impl NextHop {
    /// Parse `host:port`, `smtp:host:port`, `[v6addr]:port` or `maildir:PATH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("maildir:") {
            if path.is_empty() {
                return Err("maildir: needs a path".into());
            }
            return Ok(NextHop::Maildir(PathBuf::from(path)));
        }
        let target = text.strip_prefix("smtp:").unwrap_or(text);
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: expected host:port, smtp:host:port or maildir:PATH"))?;
        let port: u16 = port.parse().map_err(|_| format!("{text:?}: invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{text:?}: invalid host"));
        }
        Ok(NextHop::Smtp { host: host.to_string(), port })
    }
}

/// An IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `addr/prefix` (or a bare address).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim().parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A toml error as "line L, column C: message" with the offending key when toml names it.
/// The line of the key a check error names (its text up to the first `: `, such as
/// `tenant[1] (example).policy[0].config.x`), found in the parsed document's spans.
fn key_line(text: &str, message: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let path = message.split(": ").next()?.split(" /").next()?;
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut value: Option<&DeValue<'_>> = None;
    let mut span = None;
    for part in path.split('.') {
        // `name[2] (label)`: the key, then an index into its array.
        let part = part.split(" (").next().unwrap_or(part);
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if let Some(DeValue::Table(t)) = value {
            table = t;
        }
        let (key, found) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        span = Some(key.span());
        value = Some(found.get_ref());
        if let Some(i) = index {
            let DeValue::Array(items) = found.get_ref() else { break };
            let item = items.get(i)?;
            span = Some(item.span());
            value = Some(item.get_ref());
        }
    }
    let start = span?.start.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

/// SHA-256 of configuration text, hex.
pub fn text_hash(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map(|l| l.chars().count() + 1).unwrap_or(1);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default().unwrap();
        assert_eq!(c.server.listen, vec![SocketAddr::from(([127, 0, 0, 1], 2525))]);
        assert_eq!(c.tenants[0].domains, vec!["localhost".to_string()]);
        assert!(matches!(NextHop::parse(&c.tenants[0].next_hop), Ok(NextHop::Maildir(_))));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = Config::parse("[server]\nhostname = 5\n", "x.toml", PathBuf::new()).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Config::parse("[server]\nhostnme = \"a\"\n", "x.toml", PathBuf::new()).unwrap_err();
        assert!(e.to_string().contains("hostnme"), "{e}");
        // Errors found after parsing name the line too.
        let base = "[server]\nhostname = \"relay.test\"\n[relay]\ntrusted_networks = [\"10.0.0.0/8\",\n  \"nonsense\"]\n";
        let e = Config::parse(base, "x.toml", PathBuf::new()).unwrap_err().to_string();
        assert!(e.contains("line 5: relay.trusted_networks[1]"), "{e}");
        let tenants = "[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:m\"\n\
                       [[tenant]]\nname = \"b\"\nnext_hop = \"maildir:m\"\nfailure_mode = \"explode\"\n";
        let e = Config::parse(tenants, "x.toml", PathBuf::new()).unwrap_err().to_string();
        assert!(e.contains("line 7: tenant[1] (b).failure_mode"), "{e}");
        let e = Config::parse(
            "[delivery]\nmax_deliveries = 0\n[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:m\"\n",
            "x.toml",
            PathBuf::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: delivery.max_deliveries"), "{e}");
        let text = "[[tenant]]\nname = \"a\"\nnext_hop = \"nowhere\"\n";
        let e = Config::parse(text, "x.toml", PathBuf::new()).unwrap_err();
        assert!(e.to_string().contains("tenant[0] (a).next_hop"), "{e}");
        let text = "[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:x\"\n";
        let e = Config::parse(text, "x.toml", PathBuf::new()).unwrap_err();
        assert!(e.to_string().contains("relay.trusted_networks[0]"), "{e}");
    }

    #[test]
    fn the_readme_configurations_are_valid() {
        let readme = include_str!("../../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("[[tenant]]"))
            .collect();
        assert!(blocks.len() >= 2, "the README's configurations were not found");
        for block in blocks {
            if let Err(e) = Config::parse(block, "README.md", PathBuf::new()) {
                panic!("{e}\n{block}");
            }
        }
    }

    #[test]
    fn next_hops_and_networks() {
        assert_eq!(
            NextHop::parse("mx.example:25"),
            Ok(NextHop::Smtp { host: "mx.example".into(), port: 25 })
        );
        assert_eq!(NextHop::parse("smtp:[::1]:2526"), Ok(NextHop::Smtp { host: "::1".into(), port: 2526 }));
        assert!(NextHop::parse("mx.example").is_err());
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
    }
}
