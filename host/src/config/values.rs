//! The configuration's values that are more than strings, parsed once when the file is read:
//! next hops, networks, what a fault means, a policy's mode, the key-value backend. Each is
//! read from its string form with `serde(try_from)`, so a bad value is an error that names
//! its key and line like any other.

use std::net::IpAddr;
use std::path::PathBuf;

/// Where mail goes next.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum NextHop {
    /// An SMTP server.
    Smtp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// An LMTP server (RFC 2033) over TCP: one reply per recipient after the message.
    Lmtp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// An LMTP server on a Unix socket.
    LmtpUnix(PathBuf),
    /// A local Maildir tree: `PATH/<recipient>/{tmp,new,cur}`.
    Maildir(PathBuf),
}

impl NextHop {
    /// Parse `host:port`, `smtp:host:port`, `[v6addr]:port`, `lmtp:host:port`,
    /// `lmtp:unix:/PATH` or `maildir:PATH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("maildir:") {
            if path.is_empty() {
                return Err("maildir: needs a path".into());
            }
            return Ok(NextHop::Maildir(PathBuf::from(path)));
        }
        if let Some(path) = text.strip_prefix("lmtp:unix:") {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: lmtp:unix: needs an absolute socket path"));
            }
            return Ok(NextHop::LmtpUnix(PathBuf::from(path)));
        }
        let (lmtp, target) = match text.strip_prefix("lmtp:") {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix("smtp:").unwrap_or(text)),
        };
        let (host, port) = target.rsplit_once(':').ok_or_else(|| {
            format!("{text:?}: expected host:port, smtp:host:port, lmtp:host:port, lmtp:unix:/PATH or maildir:PATH")
        })?;
        let port: u16 = port.parse().map_err(|_| format!("{text:?}: invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{text:?}: invalid host"));
        }
        let host = host.to_string();
        Ok(if lmtp { NextHop::Lmtp { host, port } } else { NextHop::Smtp { host, port } })
    }

    /// Where its server listens and whether it speaks LMTP; for a Maildir, its path.
    pub fn server(&self) -> Result<(Endpoint, bool), &PathBuf> {
        match self {
            NextHop::Smtp { host, port } => Ok((Endpoint::Tcp { host: host.clone(), port: *port }, false)),
            NextHop::Lmtp { host, port } => Ok((Endpoint::Tcp { host: host.clone(), port: *port }, true)),
            NextHop::LmtpUnix(path) => Ok((Endpoint::Unix(path.clone()), true)),
            NextHop::Maildir(path) => Err(path),
        }
    }

    /// Whether it is a server that can be asked about recipients (SMTP or LMTP).
    pub fn is_server(&self) -> bool {
        !matches!(self, NextHop::Maildir(_))
    }
}

impl TryFrom<String> for NextHop {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bracket = |host: &str| if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        match self {
            NextHop::Smtp { host, port } => write!(f, "smtp:{}:{port}", bracket(host)),
            NextHop::Lmtp { host, port } => write!(f, "lmtp:{}:{port}", bracket(host)),
            NextHop::LmtpUnix(path) => write!(f, "lmtp:unix:{}", path.display()),
            NextHop::Maildir(path) => write!(f, "maildir:{}", path.display()),
        }
    }
}

/// Where a next hop listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A host name or address, and port.
    Tcp {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

/// How delivery to a next hop uses TLS (`smarthost_tls`, `next_hop_tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum TlsMode {
    /// Plaintext, even when STARTTLS is offered.
    None,
    /// STARTTLS when offered, any certificate; plaintext otherwise (RFC 7435).
    #[default]
    Opportunistic,
    /// STARTTLS always, any certificate: no plaintext delivery.
    Required,
    /// STARTTLS always, the certificate verified against the system's roots (or the CA
    /// file) and the next hop's name.
    Verify,
}

impl TryFrom<String> for TlsMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "none" => Ok(Self::None),
            "opportunistic" => Ok(Self::Opportunistic),
            "required" => Ok(Self::Required),
            "verify" => Ok(Self::Verify),
            _ => Err(format!("`none`, `opportunistic`, `required` or `verify`, not {text:?}")),
        }
    }
}

impl TlsMode {
    /// Whether delivery without TLS is refused.
    pub fn required(self) -> bool {
        matches!(self, Self::Required | Self::Verify)
    }
}

/// An IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
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

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).ok_or_else(|| format!("not a CIDR block: {text:?}"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a policy fault means for its tenant's mail (`failure_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum OnFault {
    /// `451 4.3.0`: the client tries again later.
    #[default]
    Tempfail,
    /// The faulty policy is skipped and the chain goes on.
    Continue,
}

impl TryFrom<String> for OnFault {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "tempfail" => Ok(Self::Tempfail),
            "continue" => Ok(Self::Continue),
            _ => Err(format!("`tempfail` or `continue`, not {text:?}")),
        }
    }
}

impl OnFault {
    /// `tempfail` or `continue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tempfail => "tempfail",
            Self::Continue => "continue",
        }
    }
}

/// Whether a policy's decisions are applied (`mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum PolicyMode {
    /// Applied.
    #[default]
    Enforce,
    /// Run on live traffic, logged and counted, never applied.
    Shadow,
}

impl TryFrom<String> for PolicyMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "enforce" => Ok(Self::Enforce),
            "shadow" => Ok(Self::Shadow),
            _ => Err(format!("`enforce` or `shadow`, not {text:?}")),
        }
    }
}

/// Where the policies' key-value store lives (`[state] backend`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Backend {
    /// In memory with a copy in an embedded redb file (the default).
    #[default]
    Embedded,
    /// In memory only, lost at exit.
    Memory,
    /// A Redis or Valkey server, by URL (`rediss://` for TLS), shared by relays.
    Redis(String),
}

impl TryFrom<String> for Backend {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "embedded" => Ok(Self::Embedded),
            "memory" => Ok(Self::Memory),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                redis::Client::open(url).map_err(|e| e.to_string())?;
                Ok(Self::Redis(url.to_string()))
            }
            _ => Err(format!("`embedded`, `memory` or a redis:// or rediss:// URL, not {text:?}")),
        }
    }
}

/// An entry of a tenant's `domains` (or a recipient's domain), normalised: lower case, no
/// trailing dot, and an internationalised name in its ASCII (`xn--`) form, so that the
/// Unicode and ASCII forms of one domain are one name (RFC 5890; UTS #46 processing).
pub fn normalise_domain(entry: &str) -> String {
    let name = entry.trim().trim_end_matches('.');
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", name),
    };
    match idna::domain_to_ascii(rest) {
        Ok(ascii) => format!("{wildcard}{ascii}"),
        // Not a valid international name: kept as written (it matches nothing else).
        Err(_) => name.to_lowercase(),
    }
}

/// How a tenant's recipients are checked at RCPT (`recipients`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum RecipientCheck {
    /// Every local part of its domains is accepted.
    #[default]
    Any,
    /// Those the file lists (an address or an `@domain` catch-all per line).
    File(PathBuf),
    /// Those its next hop accepts when asked (`MAIL FROM:<>`, `RCPT TO`, `RSET`).
    Verify,
}

impl TryFrom<String> for RecipientCheck {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "any" => Ok(Self::Any),
            "verify" => Ok(Self::Verify),
            _ => match text.strip_prefix("file:") {
                Some(path) if !path.trim().is_empty() => Ok(Self::File(PathBuf::from(path))),
                _ => Err(format!("`any`, `file:PATH` or `verify`, not {text:?}")),
            },
        }
    }
}

/// Whether inbound mail the inside later refuses is bounced to its sender (`bounce_inbound`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum BounceInbound {
    /// Only when SPF or DKIM passed for a domain aligned with the message's From: the
    /// sender is who it says.
    #[default]
    Authenticated,
    /// Never: the sender of mail from the internet is usually forged (backscatter).
    Never,
    /// Always, as for outbound mail.
    Always,
}

impl TryFrom<String> for BounceInbound {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "authenticated" => Ok(Self::Authenticated),
            "never" => Ok(Self::Never),
            "always" => Ok(Self::Always),
            _ => Err(format!("`authenticated`, `never` or `always`, not {text:?}")),
        }
    }
}

/// What a recipient gets when the next hop cannot say whether it exists
/// (`verify_unavailable`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum WhenUnverified {
    /// `450 4.1.1`: the client tries again later.
    #[default]
    Tempfail,
    /// Accepted (the inside decides when the message arrives).
    Accept,
}

impl TryFrom<String> for WhenUnverified {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "tempfail" => Ok(Self::Tempfail),
            "accept" => Ok(Self::Accept),
            _ => Err(format!("`tempfail` or `accept`, not {text:?}")),
        }
    }
}

/// Why `entry` is not a domain or a `*.domain` wildcard, if it is not.
pub fn check_domain_entry(entry: &str) -> Result<(), String> {
    let name = normalise_domain(entry);
    let domain = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        });
    if valid { Ok(()) } else { Err(format!("not a domain or *.domain wildcard: {entry:?}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_and_networks() {
        assert_eq!(
            NextHop::parse("mx.example:25"),
            Ok(NextHop::Smtp { host: "mx.example".into(), port: 25 })
        );
        assert_eq!(NextHop::parse("smtp:[::1]:2526"), Ok(NextHop::Smtp { host: "::1".into(), port: 2526 }));
        assert_eq!(NextHop::parse("smtp:[::1]:2526").map(|h| h.to_string()), Ok("smtp:[::1]:2526".into()));
        assert!(NextHop::parse("mx.example").is_err());
        assert_eq!(
            NextHop::parse("lmtp:127.0.0.1:24"),
            Ok(NextHop::Lmtp { host: "127.0.0.1".into(), port: 24 })
        );
        assert_eq!(
            NextHop::parse("lmtp:unix:/run/dovecot/lmtp"),
            Ok(NextHop::LmtpUnix("/run/dovecot/lmtp".into()))
        );
        assert!(NextHop::parse("lmtp:unix:relative").is_err());
        for text in ["lmtp:[::1]:24", "lmtp:unix:/run/lmtp", "smtp:mx.test:25", "maildir:m"] {
            assert_eq!(NextHop::parse(text).unwrap().to_string(), text);
        }
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn international_domains_have_one_name() {
        assert_eq!(normalise_domain("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(normalise_domain("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(normalise_domain("*.bücher.example"), "*.xn--bcher-kva.example");
        assert!(check_domain_entry("bücher.example").is_ok());
    }
}
