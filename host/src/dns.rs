//! DNS lookups for policies. The relay resolves through the system's resolver; `sluice policy
//! test` answers from a fixture file so that results are reproducible. Either way the policy
//! host bounds each lookup in time and each hook call in number of lookups.
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
//! ```
//!
//! Names are case-insensitive and a trailing dot is ignored. A name with no line is NXDOMAIN.

use std::collections::HashMap;
use std::path::Path;

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
    name.trim_end_matches('.').to_ascii_lowercase()
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
                other => {
                    let kind = RecordType::parse(other)
                        .ok_or_else(|| err(format!("unknown record type {other:?}")))?;
                    if value.is_empty() {
                        return Err(err("expected a value".into()));
                    }
                    let value = value.trim_matches('"').to_string();
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

#[async_trait::async_trait]
impl Resolver for FixtureResolver {
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<String>, DnsError> {
        let name = normalise(name);
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

/// The system's resolver through `getaddrinfo`: A and AAAA only. TXT, MX and PTR need a DNS
/// client, which the relay does not have yet; those lookups fail with a clear error, and
/// policies treat a failed lookup as no evidence.
#[derive(Debug, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<String>, DnsError> {
        let want_v4 = match kind {
            RecordType::A => true,
            RecordType::Aaaa => false,
            other => {
                return Err(DnsError::Failed(format!(
                    "{other:?} lookups are not supported by the system resolver"
                )));
            }
        };
        let name = name.trim_end_matches('.');
        if name.is_empty() || name.len() > 253 || name.contains([' ', '/', ':']) {
            return Err(DnsError::Failed("invalid name".into()));
        }
        match tokio::net::lookup_host((name, 0)).await {
            Ok(addrs) => {
                let answers: Vec<String> = addrs
                    .map(|a| a.ip())
                    .filter(|ip| ip.is_ipv4() == want_v4)
                    .map(|ip| ip.to_string())
                    .collect();
                if answers.is_empty() { Err(DnsError::NxDomain) } else { Ok(answers) }
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("not known") || text.contains("No address") || text.contains("not found") {
                    Err(DnsError::NxDomain)
                } else {
                    Err(DnsError::Failed(text))
                }
            }
        }
    }
}
