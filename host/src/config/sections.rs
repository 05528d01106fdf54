//! The sections of the configuration besides the tenants: `[server]`, `[spool]`, `[state]`,
//! `[relay]`, `[dns]`, `[admin]`, `[tls]`, `[delivery]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::values::{Backend, Cidr, NextHop, TlsMode};

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
    /// Seconds sessions in progress get to finish when the relay is asked to stop (SIGTERM,
    /// Ctrl-C); the relay stops accepting at once.
    pub shutdown_timeout_secs: u64,
    /// Seconds into a shutdown after which a session waiting for a command gets `421 4.3.2`
    /// and is closed; a session receiving or storing a message still finishes (up to
    /// `shutdown_timeout_secs` in all).
    pub shutdown_grace_secs: u64,
    /// Clients whose connections come through a proxy or load balancer (CIDR): each of their
    /// connections must begin with a PROXY protocol header (v1 or v2), whose source address
    /// then stands for the client everywhere. Empty (the default): no PROXY headers.
    pub proxy_trusted_networks: Vec<Cidr>,
    /// Seconds a proxy gets to send its PROXY header.
    pub proxy_header_timeout_secs: u64,
    /// The name in this relay's `Authentication-Results` headers (RFC 8601): client-supplied
    /// ones with this name are removed. Default: `hostname`.
    pub authserv_id: Option<String>,
    /// A message with more `Received` headers is refused as a mail loop (`554 5.4.6`).
    pub max_received_headers: usize,
    /// Fresh policy instances made ahead of sessions, all tenants' policies together (each
    /// policy keeps what its recent demand needs, at most 16); 0 (the default): every session
    /// makes its own instances as its stages come. Ahead-made instances shorten a session's
    /// own work but cost more CPU in all (measured in bench/README.md).
    pub prepared_instances: usize,
}

impl ServerConfig {
    /// The authserv-id of this relay's `Authentication-Results` headers.
    pub fn authserv_id(&self) -> &str {
        self.authserv_id.as_deref().unwrap_or(&self.hostname)
    }
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
            shutdown_timeout_secs: 30,
            shutdown_grace_secs: 10,
            proxy_trusted_networks: Vec::new(),
            proxy_header_timeout_secs: 10,
            authserv_id: None,
            max_received_headers: 50,
            prepared_instances: 0,
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `embedded` (a persistent file, the default), `memory` (lost at exit), or a Redis or
    /// Valkey URL (`redis://host:port/db`, `rediss://` for TLS) shared by several relays.
    pub backend: Backend,
    /// File of the embedded store.
    pub path: PathBuf,
    /// Most keys the store holds (all tenants together); writes of new keys beyond fail.
    /// Embedded and memory stores only.
    pub max_keys: usize,
    /// Prefix of every key on a Redis server (relays sharing state use the same one).
    pub prefix: String,
    /// Redis TLS (`rediss://`): the CA certificates (PEM) the server's certificate is checked
    /// against, instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Redis Sentinel: the sentinels' addresses (`host:port`). The backend URL then gives the
    /// scheme (`rediss://` for TLS to the servers), the database and the credentials; its
    /// host is not used: the sentinels say which server is the master, again after a failover.
    pub sentinels: Vec<String>,
    /// Redis Sentinel: the name of the master the sentinels monitor.
    pub sentinel_master: Option<String>,
    /// Redis Cluster: some of its nodes (`host:port`). The backend URL then gives the scheme
    /// and the credentials; keys carry their tenant as a hash tag.
    pub cluster: Vec<String>,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            path: PathBuf::from("var/state/kv.redb"),
            max_keys: 1_000_000,
            prefix: "sluice:".into(),
            tls_ca_file: None,
            sentinels: Vec::new(),
            sentinel_master: None,
            cluster: Vec::new(),
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
    /// How many delivered messages' files are kept in `free/` and written over by new
    /// messages instead of being unlinked and created anew (0: unlink).
    pub recycle_files: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("var/spool"),
            sync: crate::spool::SyncMode::default(),
            min_free_bytes: None,
            recycle_files: crate::spool::RECYCLE_FILES,
        }
    }
}

/// `[relay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Networks whose clients may relay to any domain (CIDR).
    pub trusted_networks: Vec<Cidr>,
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
    /// Time the sender checks of one message (SPF, DKIM, DMARC, ARC) may take together,
    /// seconds; what is not done by then is `temperror`.
    pub sender_checks_timeout_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            trusted_networks: ["127.0.0.0/8", "::1/128"].into_iter().filter_map(Cidr::parse).collect(),
            auth_users_file: None,
            allow_plaintext_auth_on_loopback: false,
            auth_failures_per_ip: 5,
            auth_lockout_secs: 600,
            sender_checks_timeout_secs: 10,
        }
    }
}

/// `[dns]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers to ask (`ip:port`); empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Parsed answers the sender checks keep per record kind, each until its TTL ends
    /// (default 10 000).
    pub cache_entries: Option<usize>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTP listener serving `GET /metrics`.
    pub listen: SocketAddr,
    /// File holding the admin token (one line): `Authorization: Bearer TOKEN` on every
    /// request. Without it the API is open to whoever reaches the listener.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// File holding a read-only token: the endpoints that only return data (`GET`).
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// Connections served at once; one more gets `503` and is closed (default 64).
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
    /// Largest request body taken, bytes (a message to learn; default 64 MiB): `413` beyond.
    #[serde(default = "default_admin_body")]
    pub max_request_bytes: usize,
    /// Seconds a request's body may take to arrive (default 30): `408` beyond. The request
    /// line and headers get 10 seconds.
    #[serde(default = "default_admin_timeout")]
    pub request_timeout_secs: u64,
    /// Serve HTTPS: certificate chain (PEM), with `tls_key`. `sluice` commands then trust
    /// exactly this certificate when they talk to the relay.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_admin_connections() -> usize {
    64
}

fn default_admin_body() -> usize {
    64 << 20
}

fn default_admin_timeout() -> u64 {
    30
}

/// `[oci]`: policies from OCI registries (`path = "oci://REGISTRY/REPOSITORY:TAG"` or
/// `@sha256:DIGEST`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OciConfig {
    /// Registries (`host:port`) spoken to over plain HTTP: one on this machine or a trusted
    /// network. The others over HTTPS, their certificates checked against the system's roots.
    pub insecure_registries: Vec<String>,
    /// Ed25519 public keys (base64: the 32 bytes, or the SPKI DER `openssl pkey -pubout`
    /// writes). When any is given, every pulled policy must carry a signature by one of them
    /// (`sluice policy push --sign-key`), so that a registry's compromise cannot put code into
    /// the relay.
    pub public_keys: Vec<String>,
    /// Credentials for registries that ask for them: an auth file as `docker login`,
    /// `podman login` or `oras login` writes it (`{"auths": {"REGISTRY": {"auth":
    /// "BASE64(USER:PASSWORD)"}}}`). Without one, registries are read anonymously (with the
    /// anonymous token public registries hand out).
    pub auth_file: Option<PathBuf>,
}

/// `[milter]` and `[policy_delegation]`: servers for an MTA in front (Postfix's
/// `smtpd_milters` and `check_policy_service`) running the tenants' chains.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaServerConfig {
    /// Address to listen on (`127.0.0.1:8891`).
    pub listen: SocketAddr,
    /// Connections served at once (default 512): one more is closed at once (the MTA then
    /// applies its default action, `milter_default_action` or a `451`).
    #[serde(default = "default_mta_connections")]
    pub max_connections: usize,
    /// Seconds a connection may stay silent between commands (default 600).
    #[serde(default = "default_mta_idle")]
    pub idle_timeout_secs: u64,
}

fn default_mta_connections() -> usize {
    512
}

fn default_mta_idle() -> u64 {
    600
}

/// `[fleet]`: this relay as one node of several sharing the `[state]` Redis.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// This node's name, unique in the fleet. `${VAR}` is replaced by the environment
    /// variable (`"${POD_NAME}"`, so that one configuration serves every pod); without a
    /// name, the machine's host name.
    pub node: String,
}

impl FleetConfig {
    /// The node's name made final: environment variables replaced, the host name when none
    /// is given.
    pub fn resolve(&mut self) -> Result<(), String> {
        let mut name = String::new();
        let mut rest = self.node.as_str();
        while let Some(start) = rest.find("${") {
            name.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                return Err("an unclosed ${ in the name".into());
            };
            let var = &rest[start + 2..start + end];
            match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => name.push_str(value.trim()),
                _ => return Err(format!("the environment variable {var} is not set")),
            }
            rest = &rest[start + end + 1..];
        }
        name.push_str(rest);
        if name.trim().is_empty() {
            name = host_name().ok_or("no name given and the host name is unknown")?;
        }
        if name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("{name:?}: a node name has no spaces"));
        }
        self.node = name;
        Ok(())
    }
}

/// The machine's host name (in a Kubernetes pod, the pod's name).
fn host_name() -> Option<String> {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
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
    /// Next hop for domains that are not local: `host:port`, `smtp:host:port`,
    /// `lmtp:host:port`, `lmtp:unix:/PATH` or `maildir:PATH`. Without one, mail for other
    /// domains goes to their MX hosts.
    pub smarthost: Option<NextHop>,
    /// TLS towards the smarthost: `none`, `opportunistic` (default), `required` or `verify`
    /// (the certificate checked against the system's roots or `smarthost_ca_file`, and the
    /// smarthost's name).
    pub smarthost_tls: TlsMode,
    /// CA certificates (PEM) the smarthost's certificate is verified against under `verify`
    /// (default: the system's roots).
    pub smarthost_ca_file: Option<PathBuf>,
    /// AUTH to the smarthost (PLAIN, else LOGIN), only over TLS: a file whose first line is
    /// `user:password` (read at each new connection).
    pub smarthost_auth_file: Option<PathBuf>,
    /// Named next hops a policy may route to.
    pub next_hops: BTreeMap<String, NextHop>,
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
            smarthost_tls: TlsMode::default(),
            smarthost_ca_file: None,
            smarthost_auth_file: None,
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
