//! DNS lookups through the host, which applies a timeout and a per-call budget. In `sluice
//! policy test` the answers come from a fixture file, so results are reproducible.

use crate::__bindings::sluice::policy::host::{self, DnsError as RawError, DnsType};

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsError {
    /// The name does not exist.
    NxDomain,
    /// No answer in time.
    Timeout,
    /// This hook call has used its lookup budget.
    BudgetExceeded,
    /// Any other failure.
    Failed(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("no such domain"),
            DnsError::Timeout => f.write_str("DNS timeout"),
            DnsError::BudgetExceeded => f.write_str("DNS lookup budget exceeded"),
            DnsError::Failed(why) => write!(f, "DNS failure: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

fn lookup(name: &str, kind: DnsType) -> Result<Vec<String>, DnsError> {
    host::dns_lookup(name, kind).map_err(|e| match e {
        RawError::Nxdomain => DnsError::NxDomain,
        RawError::Timeout => DnsError::Timeout,
        RawError::BudgetExceeded => DnsError::BudgetExceeded,
        RawError::Failed(why) => DnsError::Failed(why),
    })
}

/// IPv4 addresses of `name`.
pub fn a(name: &str) -> Result<Vec<String>, DnsError> {
    lookup(name, DnsType::A)
}

/// IPv6 addresses of `name`.
pub fn aaaa(name: &str) -> Result<Vec<String>, DnsError> {
    lookup(name, DnsType::Aaaa)
}

/// TXT records of `name`, each record's strings joined.
pub fn txt(name: &str) -> Result<Vec<String>, DnsError> {
    lookup(name, DnsType::Txt)
}

/// MX records of `name` as `"PREFERENCE HOST"`.
pub fn mx(name: &str) -> Result<Vec<String>, DnsError> {
    lookup(name, DnsType::Mx)
}

/// Reverse lookup of an IP address.
pub fn ptr(ip: &str) -> Result<Vec<String>, DnsError> {
    lookup(ip, DnsType::Ptr)
}

/// The DNSBL query name for `ip` under `zone`: `1.2.0.192.zone` for `192.0.2.1`, nibbles for
/// IPv6. `None` when `ip` is not an address.
pub fn reversed_query(ip: &str, zone: &str) -> Option<String> {
    let zone = zone.trim_end_matches('.');
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0]))
        }
        std::net::IpAddr::V6(v6) => {
            let mut name = String::new();
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            Some(format!("{name}{zone}"))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reversed_names() {
        assert_eq!(super::reversed_query("192.0.2.1", "zen.example."), Some("1.2.0.192.zen.example".into()));
        let v6 = super::reversed_query("2001:db8::1", "bl.test").unwrap_or_default();
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.bl.test"), "{v6}");
        assert_eq!(super::reversed_query("nope", "bl.test"), None);
    }
}
