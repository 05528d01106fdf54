//! `[[tenant]]`, `[edge]` and their `policy` entries: who a tenant is (domains, networks,
//! users, next hop), its chain, thresholds and limits. The edge takes the same keys as a
//! tenant but those that say who it is: it has no domains, next hop, networks or users.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Config;
use super::values::{
    BounceInbound, Cidr, NextHop, OnFault, PolicyMode, RecipientCheck, TlsMode, WhenUnverified,
};
use crate::policy::chain::{ChainSettings, FailureMode};
use crate::policy::judge::Thresholds;
use crate::policy::{Autolearn, PolicyLimits, PolicySpec};

/// The name the edge goes by in logs, metrics, the key-value store and the admin API; no
/// tenant may take it.
pub const EDGE: &str = "edge";

/// `[[tenant]]`, or `[edge]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Name (`edge` for the edge).
    #[serde(default)]
    pub name: String,
    /// Domains whose mail this tenant receives.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Where its inbound mail goes: `host:port`, `smtp:host:port` or `maildir:PATH` (required
    /// for a tenant; the edge has none).
    #[serde(default)]
    pub next_hop: Option<NextHop>,
    /// TLS towards its next hop: `none`, `opportunistic` (default), `required` or `verify`.
    #[serde(default)]
    pub next_hop_tls: TlsMode,
    /// CA certificates (PEM) its next hop's certificate is verified against under `verify`
    /// (default: the system's roots).
    #[serde(default)]
    pub next_hop_ca_file: Option<PathBuf>,
    /// `tempfail` (default) or `continue` when a policy faults.
    #[serde(default)]
    pub failure_mode: OnFault,
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
    pub outbound_networks: Vec<Cidr>,
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
    /// Which recipients of its domains exist: `any` (default), `file:PATH` (an address or
    /// `@domain` catch-all per line, `#` comments) or `verify` (ask the next hop). Unknown
    /// ones get `550 5.1.1` at RCPT, before any policy runs.
    #[serde(default)]
    pub recipients: RecipientCheck,
    /// Seconds a `verify` answer that a recipient exists is cached (default 3600).
    #[serde(default = "default_verify_positive")]
    pub verify_positive_ttl_secs: u64,
    /// Seconds a `verify` answer that a recipient does not exist is cached (default 600).
    #[serde(default = "default_verify_negative")]
    pub verify_negative_ttl_secs: u64,
    /// Answers the `verify` cache holds for this tenant (default 100 000).
    #[serde(default = "default_verify_entries")]
    pub verify_cache_entries: usize,
    /// Seconds the next hop gets to answer a `verify` probe, connecting included (default 10).
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout_secs: u64,
    /// When the next hop cannot answer a probe: `tempfail` (default, `450 4.1.1`) or `accept`.
    #[serde(default)]
    pub verify_unavailable: WhenUnverified,
    /// Whether mail from the internet that the inside later refuses for good is bounced to
    /// its (often forged) sender: `authenticated` (default: only when SPF or DKIM passed for a
    /// domain aligned with From), `never` (logged and counted only) or `always`.
    #[serde(default)]
    pub bounce_inbound: BounceInbound,
    /// Add `Authentication-Results` (SPF, DKIM, DMARC, ARC) to accepted mail from the
    /// internet (default true).
    #[serde(default = "yes")]
    pub authentication_results: bool,
    /// DKIM signing of the mail this tenant sends out.
    #[serde(default)]
    pub dkim: Option<DkimConfig>,
    /// Teach the chain's learning policies (those exporting `sluice:policy/learner`, such as
    /// bayes) the messages the other policies are sure of (default false).
    #[serde(default)]
    pub autolearn: bool,
    /// With `autolearn`: a message the other policies score at or above this is learned as
    /// spam (default 12.0).
    #[serde(default = "default_autolearn_spam")]
    pub autolearn_spam_score: f64,
    /// With `autolearn`: a message the other policies score at or below this is learned as
    /// ham (default 0.1).
    #[serde(default = "default_autolearn_ham")]
    pub autolearn_ham_score: f64,
}

fn default_autolearn_spam() -> f64 {
    12.0
}

fn default_autolearn_ham() -> f64 {
    0.1
}

/// `[tenant.dkim]`: the key outbound mail is signed with.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// Signing domain (`d=`).
    pub domain: String,
    /// Selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
    pub key: PathBuf,
    /// Header fields to sign (default: From, Reply-To, Sender, Subject, Date, To, Cc,
    /// Message-ID, In-Reply-To, References, MIME-Version, Content-Type,
    /// Content-Transfer-Encoding, List-Id, List-Unsubscribe, List-Unsubscribe-Post). From is
    /// always signed, and signed once more than it occurs.
    #[serde(default)]
    pub headers: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_verify_positive() -> u64 {
    3600
}

fn default_verify_negative() -> u64 {
    600
}

fn default_verify_entries() -> usize {
    100_000
}

fn default_verify_timeout() -> u64 {
    10
}

fn default_add_header() -> Option<f64> {
    Some(5.0)
}

fn default_reject() -> Option<f64> {
    Some(15.0)
}

impl TenantConfig {
    /// The edge when the configuration has no `[edge]`: no policies, the defaults.
    pub fn empty_edge() -> Self {
        Self {
            name: EDGE.into(),
            domains: Vec::new(),
            next_hop: None,
            next_hop_tls: TlsMode::default(),
            next_hop_ca_file: None,
            failure_mode: OnFault::default(),
            add_header_score: default_add_header(),
            quarantine_score: None,
            reject_score: default_reject(),
            policies: Vec::new(),
            outbound_networks: Vec::new(),
            outbound_users: Vec::new(),
            cpu_ms: None,
            memory_mib: None,
            max_message_bytes: None,
            max_messages_per_minute: None,
            kv_max_keys: None,
            kv_max_bytes: None,
            recipients: RecipientCheck::Any,
            verify_positive_ttl_secs: default_verify_positive(),
            verify_negative_ttl_secs: default_verify_negative(),
            verify_cache_entries: default_verify_entries(),
            verify_timeout_secs: default_verify_timeout(),
            verify_unavailable: WhenUnverified::default(),
            bounce_inbound: BounceInbound::default(),
            authentication_results: true,
            dkim: None,
            autolearn: false,
            autolearn_spam_score: default_autolearn_spam(),
            autolearn_ham_score: default_autolearn_ham(),
        }
    }

    /// Its autolearning thresholds, when it autolearns.
    pub fn autolearn(&self) -> Option<Autolearn> {
        self.autolearn.then_some(Autolearn {
            spam_score: self.autolearn_spam_score,
            ham_score: self.autolearn_ham_score,
        })
    }

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
            failure_mode: match self.failure_mode {
                OnFault::Continue => FailureMode::Continue,
                OnFault::Tempfail => FailureMode::default(),
            },
            thresholds: Thresholds {
                add_header: self.add_header_score,
                quarantine: self.quarantine_score,
                reject: self.reject_score,
            },
        }
    }
}

/// `[[tenant.policy]]`, `[[edge.policy]]`.
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
    pub mode: PolicyMode,
    /// The path as written when it named no file (`builtin:NAME`, `oci://…`): `path` is then
    /// the file that holds the component.
    #[serde(skip)]
    pub origin: Option<String>,
}

impl PolicyConfig {
    /// Whether the policy runs in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.mode == PolicyMode::Shadow
    }

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
