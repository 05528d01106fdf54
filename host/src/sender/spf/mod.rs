//! SPF (RFC 7208): `check_host()` over the relay's resolver, with the RFC's limits — 10
//! mechanisms and modifiers that cost DNS lookups, 2 void lookups, 10 MX and PTR names — and
//! its errors: a record with a syntax error anywhere, more than one record, a limit passed
//! are `permerror`; a DNS timeout or failure is `temperror`.

mod macros;
mod record;

use macros::MacroString;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use record::{Mechanism, Qualifier};

use super::Verdict;
use crate::dns::{DnsError, RecordType, Resolver, leads_back};

/// See [`super::spf_record_is_valid`].
pub(super) fn record_is_valid(text: &str) -> bool {
    if !record::is_spf(text) {
        return false;
    }
    let Some(parsed) = record::parse(text) else { return false };
    let values = macros::Values {
        sender: "strong-bad@email.example.com",
        domain: "email.example.com",
        ip: IpAddr::from([192, 0, 2, 3]),
        helo: "mx.example.org",
        validated: "unknown",
    };
    let specs = parsed.directives.iter().filter_map(|(_, m)| match m {
        Mechanism::Include(s) | Mechanism::Exists(s) => Some(s),
        Mechanism::A { domain, .. } | Mechanism::Mx { domain, .. } | Mechanism::Ptr(domain) => {
            domain.as_ref()
        }
        Mechanism::All | Mechanism::Ip4(..) | Mechanism::Ip6(..) => None,
    });
    specs.chain(parsed.redirect.as_ref()).all(|spec| spec.expand(&values).len() <= 253)
}

/// Mechanisms and modifiers that cost DNS lookups, at most (§4.6.4).
const MAX_LOOKUPS: u32 = 10;
/// Lookups that find no records, at most (§4.6.4).
const MAX_VOID_LOOKUPS: u32 = 2;
/// MX or PTR names one mechanism looks at, at most.
const MAX_NAMES: usize = 10;

/// Whether `domain` can be checked at all (§4.3): labels of 1 to 63 bytes of letters, digits,
/// hyphens and underscores, at least two of them, 253 bytes at most.
fn checkable(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `name` (an expanded domain-spec, which may hold any visible character but `%`)
/// can be asked for: labels of 1 to 63 bytes, 253 bytes in all.
fn lookable(name: &str) -> bool {
    name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| (0x20..0x7f).contains(&b)))
}

fn in_network(ip: IpAddr, network: IpAddr, length: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(length.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(length.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// How a check ended early.
type Early = Verdict;

/// One evaluation: the client, the identities and the lookups made so far.
struct Evaluation<'a> {
    dns: &'a dyn Resolver,
    ip: IpAddr,
    sender: String,
    helo: &'a str,
    lookups: u32,
    voids: u32,
    /// The client's validated names, once looked up.
    validated: Option<Vec<String>>,
}

/// `check_host(ip, domain, sender)`; `helo` is the HELO name (`%{h}`).
pub(super) async fn check_host(
    dns: &dyn Resolver,
    ip: IpAddr,
    domain: &str,
    sender: &str,
    helo: &str,
) -> Verdict {
    // An IPv4-mapped IPv6 client is its IPv4 address (§5).
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let sender = match sender.rsplit_once('@') {
        Some(("", domain)) => format!("postmaster@{domain}"),
        Some(_) => sender.to_string(),
        None => format!("postmaster@{domain}"),
    };
    let mut evaluation = Evaluation { dns, ip, sender, helo, lookups: 0, voids: 0, validated: None };
    evaluation.check(domain.to_ascii_lowercase()).await
}

impl Evaluation<'_> {
    fn check(&mut self, domain: String) -> Pin<Box<dyn Future<Output = Verdict> + Send + '_>> {
        Box::pin(async move {
            if !checkable(&domain) {
                return Verdict::None;
            }
            let records = match self.dns.lookup(&domain, RecordType::Txt).await {
                Ok(records) => records,
                Err(DnsError::NxDomain) => return Verdict::None,
                Err(_) => return Verdict::Temperror,
            };
            let spf: Vec<&String> = records.iter().filter(|r| record::is_spf(r)).collect();
            let text = match spf.as_slice() {
                [] => return Verdict::None,
                [one] => one.as_str(),
                _ => return Verdict::Permerror,
            };
            let Some(parsed) = record::parse(text) else { return Verdict::Permerror };
            for (qualifier, mechanism) in &parsed.directives {
                match self.matches(mechanism, &domain).await {
                    Ok(true) => {
                        return match qualifier {
                            Qualifier::Pass => Verdict::Pass,
                            Qualifier::Fail => Verdict::Fail,
                            Qualifier::SoftFail => Verdict::Softfail,
                            Qualifier::Neutral => Verdict::Neutral,
                        };
                    }
                    Ok(false) => {}
                    Err(early) => return early,
                }
            }
            if let Some(redirect) = &parsed.redirect {
                if let Err(early) = self.count() {
                    return early;
                }
                let target = self.expand(redirect, &domain).await;
                return match self.check(target).await {
                    Verdict::None => Verdict::Permerror,
                    other => other,
                };
            }
            Verdict::Neutral
        })
    }

    fn count(&mut self) -> Result<(), Early> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS { Err(Verdict::Permerror) } else { Ok(()) }
    }

    fn void(&mut self) -> Result<(), Early> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS { Err(Verdict::Permerror) } else { Ok(()) }
    }

    async fn expand(&mut self, spec: &MacroString, domain: &str) -> String {
        let validated = match spec.uses_validated_name() {
            true => {
                let names = self.validated_names().await;
                let under = |n: &&String| *n == domain || n.ends_with(&format!(".{domain}"));
                names.iter().find(under).or(names.first()).cloned().unwrap_or_else(|| "unknown".into())
            }
            false => "unknown".into(),
        };
        let values = macros::Values {
            sender: &self.sender,
            domain,
            ip: self.ip,
            helo: self.helo,
            validated: &validated,
        };
        spec.expand(&values).trim_end_matches('.').to_ascii_lowercase()
    }

    /// The domain-spec's name, or the current domain.
    async fn target(&mut self, spec: &Option<MacroString>, domain: &str) -> String {
        match spec {
            Some(spec) => self.expand(spec, domain).await,
            None => domain.to_string(),
        }
    }

    /// The client's names that lead back to it (PTR, then A or AAAA; 10 names at most),
    /// looked up once per evaluation.
    async fn validated_names(&mut self) -> Vec<String> {
        if let Some(names) = &self.validated {
            return names.clone();
        }
        let names = self.dns.lookup(&self.ip.to_string(), RecordType::Ptr).await.unwrap_or_default();
        let mut validated = Vec::new();
        for name in names.into_iter().take(MAX_NAMES) {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if leads_back(self.dns, &name, self.ip).await {
                validated.push(name);
            }
        }
        self.validated = Some(validated.clone());
        validated
    }

    /// The records of `name`, or none (a void lookup, counted).
    async fn lookup(&mut self, name: &str, kind: RecordType) -> Result<Vec<String>, Early> {
        if !lookable(name) {
            self.void()?;
            return Ok(Vec::new());
        }
        match self.dns.lookup(name, kind).await {
            Ok(records) if !records.is_empty() => Ok(records),
            Ok(_) | Err(DnsError::NxDomain) => {
                self.void()?;
                Ok(Vec::new())
            }
            Err(_) => Err(Verdict::Temperror),
        }
    }

    /// The client's family of addresses of `name`.
    async fn addresses(&mut self, name: &str) -> Result<Vec<IpAddr>, Early> {
        let kind = if self.ip.is_ipv4() { RecordType::A } else { RecordType::Aaaa };
        let records = self.lookup(name, kind).await?;
        Ok(records.iter().filter_map(|r| r.parse().ok()).collect())
    }

    fn matches<'m>(
        &'m mut self,
        mechanism: &'m Mechanism,
        domain: &'m str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Early>> + Send + 'm>> {
        Box::pin(async move {
            let v4_client = self.ip.is_ipv4();
            let length = |v4: u8, v6: u8| if v4_client { v4 } else { v6 };
            Ok(match mechanism {
                Mechanism::All => true,
                Mechanism::Ip4(network, len) => in_network(self.ip, IpAddr::V4(*network), *len),
                Mechanism::Ip6(network, len) => in_network(self.ip, IpAddr::V6(*network), *len),
                Mechanism::Include(spec) => {
                    self.count()?;
                    let name = self.expand(spec, domain).await;
                    match self.check(name).await {
                        Verdict::Pass => true,
                        Verdict::Fail | Verdict::Softfail | Verdict::Neutral => false,
                        Verdict::Temperror => return Err(Verdict::Temperror),
                        Verdict::Permerror | Verdict::None => return Err(Verdict::Permerror),
                    }
                }
                Mechanism::A { domain: spec, v4, v6 } => {
                    self.count()?;
                    let (name, len) = (self.target(spec, domain).await, length(*v4, *v6));
                    self.addresses(&name).await?.into_iter().any(|a| in_network(self.ip, a, len))
                }
                Mechanism::Mx { domain: spec, v4, v6 } => {
                    self.count()?;
                    let (name, len) = (self.target(spec, domain).await, length(*v4, *v6));
                    let hosts: Vec<String> = self
                        .lookup(&name, RecordType::Mx)
                        .await?
                        .iter()
                        .filter_map(|r| r.split_whitespace().nth(1).map(str::to_string))
                        .collect();
                    if hosts.len() > MAX_NAMES {
                        return Err(Verdict::Permerror);
                    }
                    let mut found = false;
                    for host in hosts {
                        if self.addresses(&host).await?.into_iter().any(|a| in_network(self.ip, a, len)) {
                            found = true;
                            break;
                        }
                    }
                    found
                }
                Mechanism::Ptr(spec) => {
                    self.count()?;
                    let name = self.target(spec, domain).await;
                    self.validated_names()
                        .await
                        .iter()
                        .any(|n| *n == name || n.ends_with(&format!(".{name}")))
                }
                Mechanism::Exists(spec) => {
                    self.count()?;
                    let name = self.expand(spec, domain).await;
                    // Always an A lookup, whatever the client's family (§5.7).
                    !self.lookup(&name, RecordType::A).await?.is_empty()
                }
            })
        })
    }
}
