//! DNS lookups for policies and the relay. The relay resolves through hickory (the system's
//! configuration or configured name servers); `sluice policy test` answers from a fixture
//! file so that results are reproducible. Either way the policy host bounds each lookup in
//! time and each hook call in number of lookups.
//!
//! Fixture format, one record per line (`#` starts a comment):
//!
//! ```text
//! 2.0.2.192.zen.example   A      127.0.0.2
//! example.com             MX     10 mx.example.com
//! example.com             TXT    v=spf1 -all
//! 192.0.2.1               PTR    client.example.net
//! gone.example            NXDOMAIN
//! slow.example            TIMEOUT
//! www.example.com         CNAME  example.com
//! ```
//!
//! Names are case-insensitive and a trailing dot is ignored. A name with no line is NXDOMAIN.
//! A value may be quoted; names and values take zone-file escapes (`\032` for a space, `\013`
//! for a carriage return).

mod fixture_server;

use std::collections::HashMap;
use std::path::Path;

pub use fixture_server::FixtureServer;

/// Record types a policy may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Text.
    Txt,
    /// Mail exchanger.
    Mx,
    /// Reverse pointer (the name is an IP address).
    Ptr,
}

impl RecordType {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            "TXT" => Some(RecordType::Txt),
            "MX" => Some(RecordType::Mx),
            "PTR" => Some(RecordType::Ptr),
            _ => None,
        }
    }
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (or has no record of that type).
    #[error("no such name")]
    NxDomain,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Other failure.
    #[error("lookup failed: {0}")]
    Failed(String),
}

/// Something that answers DNS questions.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    /// Answer `name`/`kind` as text.
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<String>, DnsError>;
}

#[derive(Debug, Clone)]
enum FixtureAnswer {
    Records(Vec<String>),
    NxDomain,
    Timeout,
}

/// Answers from a fixture file.
#[derive(Debug, Default)]
pub struct FixtureResolver {
    records: HashMap<(String, Option<RecordType>), FixtureAnswer>,
    /// `NAME CNAME TARGET`: NAME's records are TARGET's.
    aliases: HashMap<String, String>,
}

/// A fixture line that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct FixtureError {
    file: String,
    line: usize,
    message: String,
}

fn normalise(name: &str) -> String {
    unescape(name).trim_end_matches('.').to_ascii_lowercase()
}

/// Zone-file escapes: `\DDD` (a byte in decimal) and `\X` (X itself).
fn unescape(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let (mut out, mut i) = (Vec::with_capacity(bytes.len()), 0);
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 4)) {
            (b'\\', Some(d)) if d.iter().all(u8::is_ascii_digit) => {
                let n = d.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
                out.push(u8::try_from(n).unwrap_or(b'?'));
                i += 4;
            }
            (b'\\', _) if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FixtureResolver {
    /// Read a fixture file.
    pub fn from_file(path: &Path) -> Result<Self, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|e| FixtureError {
            file: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse fixture text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, FixtureError> {
        let mut resolver = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| FixtureError { file: origin.to_string(), line: index + 1, message };
            let mut words = line.split_whitespace();
            let name = normalise(words.next().unwrap_or_default());
            let kind = words.next().ok_or_else(|| err("expected a record type".into()))?;
            let value = line.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
            match kind.to_ascii_uppercase().as_str() {
                "NXDOMAIN" => {
                    resolver.records.insert((name, None), FixtureAnswer::NxDomain);
                }
                "TIMEOUT" => {
                    resolver.records.insert((name, None), FixtureAnswer::Timeout);
                }
                "CNAME" => {
                    if value.is_empty() {
                        return Err(err("expected a target".into()));
                    }
                    let target = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(&value);
                    resolver.aliases.insert(name, normalise(target));
                }
                other => {
                    let kind = RecordType::parse(other)
                        .ok_or_else(|| err(format!("unknown record type {other:?}")))?;
                    if value.is_empty() {
                        return Err(err("expected a value".into()));
                    }
                    let value =
                        unescape(value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(&value));
                    match resolver
                        .records
                        .entry((name, Some(kind)))
                        .or_insert(FixtureAnswer::Records(Vec::new()))
                    {
                        FixtureAnswer::Records(list) => list.push(value),
                        _ => unreachable!("typed entries only hold records"),
                    }
                }
            }
        }
        Ok(resolver)
    }
}

impl FixtureResolver {
    /// The fixture's answer to `name`/`kind`.
    pub fn answer(&self, name: &str, kind: RecordType) -> Result<Vec<String>, DnsError> {
        let mut name = normalise(name);
        // Aliases are followed (a few hops at most), as a resolver does.
        for _ in 0..8 {
            match self.aliases.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        match self.records.get(&(name.clone(), None)) {
            Some(FixtureAnswer::Timeout) => return Err(DnsError::Timeout),
            Some(FixtureAnswer::NxDomain) => return Err(DnsError::NxDomain),
            _ => {}
        }
        match self.records.get(&(name, Some(kind))) {
            Some(FixtureAnswer::Records(list)) => Ok(list.clone()),
            _ => Err(DnsError::NxDomain),
        }
    }

    /// Whether the fixture has a record of any type for `name` (a name that exists answers a
    /// question for another type with no records, not with NXDOMAIN).
    pub fn knows(&self, name: &str) -> bool {
        let name = normalise(name);
        self.aliases.contains_key(&name)
            || self.records.iter().any(|((n, kind), answer)| {
                *n == name && kind.is_some() && matches!(answer, FixtureAnswer::Records(_))
            })
    }
}

#[async_trait::async_trait]
impl Resolver for FixtureResolver {
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<String>, DnsError> {
        self.answer(name, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixture_answers() {
        let r = FixtureResolver::parse(
            "# test\n2.0.2.192.bl.test    A\t 127.0.0.2\nEXAMPLE.com. MX 10 mx.example.com\n\
             example.com TXT \"v=spf1 -all\"\nslow.test TIMEOUT\n",
            "inline",
        )
        .unwrap();
        assert_eq!(r.lookup("2.0.2.192.bl.test", RecordType::A).await, Ok(vec!["127.0.0.2".into()]));
        assert_eq!(r.lookup("example.com", RecordType::Mx).await, Ok(vec!["10 mx.example.com".into()]));
        assert_eq!(r.lookup("example.com.", RecordType::Txt).await, Ok(vec!["v=spf1 -all".into()]));
        assert_eq!(r.lookup("example.com", RecordType::A).await, Err(DnsError::NxDomain));
        assert_eq!(r.lookup("slow.test", RecordType::A).await, Err(DnsError::Timeout));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let e = FixtureResolver::parse("ok A 1.2.3.4\nbad BOGUS x\n", "f.dns").unwrap_err();
        assert_eq!(e.to_string(), "f.dns:2: unknown record type \"BOGUS\"");
    }
}

/// What a domain's MX records say about delivering to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// Mail exchangers, most preferred first.
    Hosts(Vec<String>),
    /// The domain exists but has no MX: deliver to the domain itself (RFC 5321 §5.1).
    Implicit,
    /// A null MX (RFC 7505): the domain accepts no mail.
    NullMx,
    /// The domain does not exist.
    NoSuchDomain,
}

/// DNS through hickory's resolver: the system's configuration (`/etc/resolv.conf`), or the
/// name servers given in the relay's `[dns]` section.
pub struct DnsResolver {
    inner: hickory_resolver::TokioResolver,
}

/// How long one question to a name server may take, and how often it is asked.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Per attempt.
    pub timeout: std::time::Duration,
    /// Attempts.
    pub attempts: usize,
}

impl Default for Patience {
    fn default() -> Self {
        Self { timeout: std::time::Duration::from_secs(2), attempts: 2 }
    }
}

impl DnsResolver {
    /// A resolver using the system's configuration, or `nameservers` when not empty.
    pub fn new(nameservers: &[std::net::SocketAddr]) -> Result<Self, String> {
        Self::with_patience(nameservers, Patience::default())
    }

    /// A resolver as [`Self::new`], asking each question within `patience`.
    pub fn with_patience(nameservers: &[std::net::SocketAddr], patience: Patience) -> Result<Self, String> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        let mut builder = if nameservers.is_empty() {
            hickory_resolver::Resolver::builder_tokio()
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    server.connections = vec![udp, tcp];
                    server
                })
                .collect();
            hickory_resolver::Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = patience.timeout;
        options.attempts = patience.attempts;
        // "No such name" is remembered for at least this long even when the answer carries no
        // SOA to say how long: the sender checks ask the same absent `_dmarc` and SPF names for
        // every message of a domain that publishes none.
        options.negative_min_ttl = Some(std::time::Duration::from_secs(30));
        let inner = builder.build().map_err(|e| format!("cannot start the DNS resolver: {e}"))?;
        Ok(Self { inner })
    }

    /// The hickory resolver underneath (cheap to clone: its cache and connections are shared),
    /// for the sender checks.
    pub fn hickory(&self) -> hickory_resolver::TokioResolver {
        self.inner.clone()
    }

    /// The mail exchangers of `domain`.
    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        use hickory_resolver::proto::rr::RData;
        let name = format!("{}.", domain.trim_end_matches('.'));
        match self.inner.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            mx.exchange.to_string().trim_end_matches('.').to_lowercase(),
                        )),
                        _ => None,
                    })
                    .collect();
                if mxs.iter().any(|(_, host)| host.is_empty()) {
                    return Ok(MxAnswer::NullMx);
                }
                if mxs.is_empty() {
                    return Ok(MxAnswer::Implicit);
                }
                mxs.sort();
                Ok(MxAnswer::Hosts(mxs.into_iter().map(|(_, host)| host).collect()))
            }
            Err(e) if e.is_nx_domain() => Ok(MxAnswer::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Ok(MxAnswer::Implicit),
            Err(e) => Err(DnsError::Failed(e.to_string())),
        }
    }

    /// The forward-confirmed reverse DNS name of `ip`: a PTR name whose A or AAAA records
    /// include `ip` again.
    pub async fn verified_reverse(&self, ip: std::net::IpAddr) -> Option<String> {
        let names = self.lookup(&ip.to_string(), RecordType::Ptr).await.ok()?;
        for name in names.into_iter().take(3) {
            if leads_back(self, &name, ip).await {
                return Some(name);
            }
        }
        None
    }
}

/// Whether `name`'s addresses of `ip`'s family include `ip` (the forward half of a
/// forward-confirmed reverse name).
pub async fn leads_back(dns: &dyn Resolver, name: &str, ip: std::net::IpAddr) -> bool {
    let kind = if ip.is_ipv4() { RecordType::A } else { RecordType::Aaaa };
    let addresses = dns.lookup(name, kind).await.unwrap_or_default();
    addresses.iter().any(|a| a.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip))
}

/// A name's labels joined by dots, unescaped, without the root's dot.
pub(crate) fn plain(name: &hickory_resolver::proto::rr::Name) -> String {
    name.iter().map(String::from_utf8_lossy).collect::<Vec<_>>().join(".")
}

#[async_trait::async_trait]
impl Resolver for DnsResolver {
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<String>, DnsError> {
        use hickory_resolver::proto::rr::{Name, RData};
        // Labels as given: a name may hold any byte but `.` (SPF's domain-specs do, RFC 7208
        // §7.1), which the parser of host names would refuse.
        // A Unicode name is asked in its ASCII (IDNA) form.
        let trimmed = name.trim_end_matches('.');
        let fqdn = if trimmed.is_ascii() {
            Name::from_labels(trimmed.split('.').map(str::as_bytes))
        } else {
            Name::from_utf8(format!("{trimmed}."))
        }
        .map_err(|e| DnsError::Failed(format!("{name:?} is not a domain name: {e}")))?;
        let result = match kind {
            RecordType::A => self.inner.ipv4_lookup(fqdn).await,
            RecordType::Aaaa => self.inner.ipv6_lookup(fqdn).await,
            RecordType::Txt => self.inner.txt_lookup(fqdn).await,
            RecordType::Mx => self.inner.mx_lookup(fqdn).await,
            RecordType::Ptr => {
                let ip: std::net::IpAddr =
                    name.parse().map_err(|_| DnsError::Failed("PTR lookups take an IP address".into()))?;
                self.inner.reverse_lookup(Name::from(ip)).await
            }
        };
        match result {
            Ok(lookup) => {
                let answers: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) if kind == RecordType::A => Some(a.0.to_string()),
                        RData::AAAA(a) if kind == RecordType::Aaaa => Some(a.0.to_string()),
                        RData::TXT(t) if kind == RecordType::Txt => Some(t.to_string()),
                        RData::MX(mx) if kind == RecordType::Mx => {
                            Some(format!("{} {}", mx.preference, plain(&mx.exchange)))
                        }
                        RData::PTR(p) if kind == RecordType::Ptr => Some(plain(&p.0)),
                        _ => None,
                    })
                    .collect();
                if answers.is_empty() { Err(DnsError::NxDomain) } else { Ok(answers) }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(DnsError::NxDomain),
            Err(e) => Err(DnsError::Failed(e.to_string())),
        }
    }
}
