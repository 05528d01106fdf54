//! Sender authentication: SPF (RFC 7208) for the HELO name and the MAIL FROM domain, DKIM
//! signatures (RFC 6376), DMARC (RFC 7489) and the ARC chain (RFC 8617), checked once per
//! message ([`Checker`]) and kept as [`SenderChecks`] — what policies read, what the
//! `Authentication-Results` field (RFC 8601) says, and what decides whether an inbound
//! message may be bounced. Outbound mail is signed instead ([`DkimKey`]).
//!
//! The checks themselves are the `mail-auth` crate's, over the relay's own resolver; in
//! `sluice policy test` the same resolver asks a name server serving the `--dns` fixture.

mod cache;
mod checker;
mod header;
mod keys;
mod sign;
mod spf;

pub use checker::{Checker, CheckerSettings, Sender};
pub use sign::{DkimAlgorithm, DkimKey, KeyError, generate_key};

use serde::Serialize;

/// The value of tag `name` in a `tag=value; …` list (a `DKIM-Signature` field, a DKIM key
/// record, a DMARC record), trimmed; the first one when the list repeats it.
fn tag<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.split(';').filter_map(|t| t.split_once('=')).find(|(k, _)| k.trim() == name).map(|(_, v)| v.trim())
}

/// Whether `text` is an SPF record `check_host` reads (RFC 7208 §4.6, §5, §6, §7: no syntax
/// error anywhere) rather than answering `permerror`; its macros are expanded once, with
/// example values, as an evaluation would.
pub fn spf_record_is_valid(text: &str) -> bool {
    spf::record_is_valid(text)
}

/// The result of one check, in RFC 8601's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to check (no record, no signature).
    #[default]
    None,
    /// Passed.
    Pass,
    /// Failed.
    Fail,
    /// SPF's "probably not": `~all`.
    Softfail,
    /// No assertion (SPF `?all`, a DKIM signature that cannot be checked).
    Neutral,
    /// A transient failure (DNS timeout or SERVFAIL, the time per message ran out).
    Temperror,
    /// A permanent error (a malformed record or signature, too many lookups).
    Permerror,
}

impl Verdict {
    /// The word RFC 8601 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::None => "none",
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Softfail => "softfail",
            Verdict::Neutral => "neutral",
            Verdict::Temperror => "temperror",
            Verdict::Permerror => "permerror",
        }
    }
}

/// An SPF check of one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SpfCheck {
    /// Result.
    pub result: Verdict,
    /// The domain checked (the MAIL FROM domain, or the HELO name).
    pub domain: String,
}

/// One DKIM signature's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimCheck {
    /// Result.
    pub result: Verdict,
    /// Signing domain (`d=`).
    pub domain: String,
    /// Selector (`s=`).
    pub selector: String,
    /// Algorithm (`rsa-sha256`, `ed25519-sha256`, `rsa-sha1`).
    pub algorithm: String,
    /// Why it did not pass, when it did not.
    pub reason: Option<String>,
}

/// A domain owner's DMARC policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    /// Monitor only.
    None,
    /// Treat failing mail as suspicious.
    Quarantine,
    /// Refuse failing mail.
    Reject,
}

impl DmarcPolicy {
    /// The record's word.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// The DMARC evaluation of the message's From domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct DmarcCheck {
    /// Result: pass when SPF or DKIM passed aligned; none when the domain has no record.
    pub result: Verdict,
    /// The RFC 5322 From domain.
    pub domain: String,
    /// The policy that applies to the domain (`p`, or `sp` for a subdomain), when it has one.
    pub policy: Option<DmarcPolicy>,
    /// Percentage of failing mail the policy applies to (`pct`, 100 when not given).
    pub pct: u8,
    /// SPF passed for a domain aligned with From.
    pub spf_aligned: bool,
    /// A DKIM signature passed for a domain aligned with From.
    pub dkim_aligned: bool,
    /// SPF alignment asks for the exact domain (`aspf=s`).
    pub spf_strict: bool,
    /// DKIM alignment asks for the exact domain (`adkim=s`).
    pub dkim_strict: bool,
}

/// The ARC chain's validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ArcCheck {
    /// Result: none (no chain), pass or fail.
    pub result: Verdict,
    /// The sealing domains (`d=` of each ARC-Seal), first hop first.
    pub sealers: Vec<String>,
}

/// Everything checked of one message's sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SenderChecks {
    /// SPF of the MAIL FROM domain (of the HELO name for the null sender).
    pub spf: SpfCheck,
    /// SPF of the HELO name.
    pub helo: SpfCheck,
    /// Each DKIM signature, in message order.
    pub dkim: Vec<DkimCheck>,
    /// DMARC.
    pub dmarc: DmarcCheck,
    /// ARC.
    pub arc: ArcCheck,
    /// MAIL FROM was `<>`: [`Self::spf`] is the HELO name's.
    pub null_sender: bool,
}

impl SenderChecks {
    /// The sender is who it says: SPF or DKIM passed for a domain aligned with From (what
    /// DMARC's pass means, whether or not the domain publishes a record). Only such mail is
    /// bounced under `bounce_inbound = "authenticated"`.
    pub fn sender_authenticated(&self) -> bool {
        self.dmarc.spf_aligned || self.dmarc.dkim_aligned
    }

    /// The value of the `Authentication-Results` field (RFC 8601) these checks make, with
    /// `authserv_id` naming the relay; folded, without the field name.
    pub fn header_value(&self, authserv_id: &str) -> String {
        header::value(self, authserv_id)
    }
}
