//! Address helpers policies need again and again: CIDR networks and domain matching.

use std::net::IpAddr;

/// An IP network such as `192.0.2.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `addr/prefix` or a bare address (a host network).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("invalid network {text:?}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix in {text:?}"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }

    /// Parse a comma- or space-separated list.
    pub fn parse_list(items: &[String]) -> Result<Vec<Self>, String> {
        items.iter().map(|s| Self::parse(s)).collect()
    }

    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Loopback, private, link-local, unspecified or documentation-free local space: addresses
/// that no public block list lists.
pub fn is_non_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified() || a.octets()[0] == 0
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether `domain` matches `pattern`: equal (case-insensitive, trailing dot ignored), or a
/// subdomain when the pattern is `*.example.com` or `.example.com`.
pub fn domain_matches(domain: &str, pattern: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some(parent) = pattern.strip_prefix("*.").or_else(|| pattern.strip_prefix('.')) {
        return domain.len() > parent.len()
            && domain.ends_with(parent)
            && domain[..domain.len() - parent.len()].ends_with('.');
    }
    domain == pattern
}

/// The registrable-looking part of a host name: its last two labels, or three under a
/// two-letter country domain with a short second level (`example.co.uk`). A heuristic without
/// the public suffix list, good enough to tell `bank.com` from `bank.com.evil.example`.
pub fn base_domain(host: &str) -> String {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').filter(|l| !l.is_empty()).collect();
    let n = labels.len();
    let keep = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 { 3 } else { 2 };
    labels[n.saturating_sub(keep)..].join(".").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }

    #[test]
    fn base_domains() {
        assert_eq!(base_domain("www.Example.com."), "example.com");
        assert_eq!(base_domain("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(base_domain("localhost"), "localhost");
    }

    #[test]
    fn domains() {
        assert!(domain_matches("Example.COM.", "example.com"));
        assert!(domain_matches("a.example.com", "*.example.com"));
        assert!(!domain_matches("badexample.com", "*.example.com"));
        assert!(!domain_matches("example.com", "*.example.com"));
    }
}
