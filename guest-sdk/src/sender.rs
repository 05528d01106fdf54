//! What the relay found of a message's sender — SPF, DKIM, DMARC, ARC — as typed values
//! ([`crate::Message::sender_checks`]). The relay checks once per message, with its own DNS
//! cache and time bound; a policy only reads the results.

use crate::__bindings::sluice::policy::types as raw;

/// The result of one check, in RFC 8601's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// Nothing to check: no record, no signature.
    None,
    /// Passed.
    Pass,
    /// Failed.
    Fail,
    /// SPF's `~all`.
    Softfail,
    /// No assertion.
    Neutral,
    /// A transient failure (DNS, or the time for the checks ran out).
    Temperror,
    /// A permanent error (malformed record or signature, too many lookups).
    Permerror,
}

impl CheckResult {
    /// The RFC 8601 word (`pass`, `fail`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::None => "none",
            CheckResult::Pass => "pass",
            CheckResult::Fail => "fail",
            CheckResult::Softfail => "softfail",
            CheckResult::Neutral => "neutral",
            CheckResult::Temperror => "temperror",
            CheckResult::Permerror => "permerror",
        }
    }
}

/// SPF of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    /// Result.
    pub result: CheckResult,
    /// The domain checked.
    pub domain: String,
}

/// One DKIM signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    /// Result.
    pub result: CheckResult,
    /// Signing domain (`d=`); empty when the signature could not be read.
    pub domain: String,
    /// Selector (`s=`).
    pub selector: String,
    /// `rsa-sha256`, `ed25519-sha256` or `rsa-sha1`.
    pub algorithm: String,
    /// Why it did not pass.
    pub reason: Option<String>,
}

/// A domain owner's DMARC policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// Monitor only.
    None,
    /// Treat failing mail as suspicious.
    Quarantine,
    /// Refuse failing mail.
    Reject,
}

/// DMARC of the From domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    /// pass, fail, none (no record), temperror, permerror.
    pub result: CheckResult,
    /// The From domain.
    pub domain: String,
    /// The policy that applies (`p`, or `sp` for a subdomain), if the domain publishes one.
    pub policy: Option<DmarcPolicy>,
    /// Percentage of failing mail the policy is meant for (`pct`, 100 by default).
    pub pct: u8,
    /// SPF passed aligned with From.
    pub spf_aligned: bool,
    /// DKIM passed aligned with From.
    pub dkim_aligned: bool,
    /// `aspf=s`.
    pub spf_strict: bool,
    /// `adkim=s`.
    pub dkim_strict: bool,
}

/// The ARC chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcCheck {
    /// none (no chain), pass, fail, temperror.
    pub result: CheckResult,
    /// Sealing domains, the first hop first.
    pub sealers: Vec<String>,
}

/// Everything the relay found of the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderChecks {
    /// SPF of the MAIL FROM domain (of the HELO name for the null sender).
    pub spf: SpfCheck,
    /// SPF of the HELO name.
    pub helo: SpfCheck,
    /// Every DKIM signature, in message order.
    pub dkim: Vec<DkimCheck>,
    /// DMARC.
    pub dmarc: DmarcCheck,
    /// ARC.
    pub arc: ArcCheck,
}

impl SenderChecks {
    /// The sender is who it says: SPF or DKIM passed for a domain aligned with From.
    pub fn authenticated(&self) -> bool {
        self.dmarc.spf_aligned || self.dmarc.dkim_aligned
    }
}

fn result(r: raw::CheckResult) -> CheckResult {
    match r {
        raw::CheckResult::None => CheckResult::None,
        raw::CheckResult::Pass => CheckResult::Pass,
        raw::CheckResult::Fail => CheckResult::Fail,
        raw::CheckResult::Softfail => CheckResult::Softfail,
        raw::CheckResult::Neutral => CheckResult::Neutral,
        raw::CheckResult::Temperror => CheckResult::Temperror,
        raw::CheckResult::Permerror => CheckResult::Permerror,
    }
}

fn spf(s: raw::SpfCheck) -> SpfCheck {
    SpfCheck { result: result(s.result), domain: s.domain }
}

impl From<raw::SenderChecks> for SenderChecks {
    fn from(c: raw::SenderChecks) -> Self {
        let d = c.dmarc;
        SenderChecks {
            spf: spf(c.spf),
            helo: spf(c.helo),
            dkim: c
                .dkim
                .into_iter()
                .map(|k| DkimCheck {
                    result: result(k.result),
                    domain: k.domain,
                    selector: k.selector,
                    algorithm: k.algorithm,
                    reason: k.reason,
                })
                .collect(),
            dmarc: DmarcCheck {
                result: result(d.result),
                domain: d.domain,
                policy: d.policy.map(|p| match p {
                    raw::DmarcPolicy::None => DmarcPolicy::None,
                    raw::DmarcPolicy::Quarantine => DmarcPolicy::Quarantine,
                    raw::DmarcPolicy::Reject => DmarcPolicy::Reject,
                }),
                pct: d.pct,
                spf_aligned: d.spf_aligned,
                dkim_aligned: d.dkim_aligned,
                spf_strict: d.spf_strict,
                dkim_strict: d.dkim_strict,
            },
            arc: ArcCheck { result: result(c.arc.result), sealers: c.arc.sealers },
        }
    }
}
