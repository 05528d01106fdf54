//! The checks of one message's sender, within a time bound, through the relay's resolver and
//! the caches of parsed answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::dmarc::{Alignment, Policy};
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, Parameters, SpfResult,
    common::crypto::Algorithm, dmarc::verify::DmarcParameters,
};
use tokio::time::Instant;

use super::cache::{Caches, TtlCache};
use super::spf;
use super::{DkimCheck, DmarcCheck, DmarcPolicy, SenderChecks, SpfCheck, Verdict};
use crate::dns::{DnsResolver, FixtureResolver, FixtureServer, Patience, RecordType, Resolver};

/// How the checks run.
#[derive(Debug, Clone, Copy)]
pub struct CheckerSettings {
    /// Parsed answers kept per kind (TXT, MX, A, AAAA, PTR).
    pub cache_entries: usize,
}

impl Default for CheckerSettings {
    fn default() -> Self {
        Self { cache_entries: 10_000 }
    }
}

/// Who a message says it is from, as the session saw it.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// Its HELO name (empty when it gave none).
    pub helo: &'a str,
    /// MAIL FROM (empty for the null sender).
    pub mail_from: &'a str,
    /// The relay's own host name (SPF's `%{r}`).
    pub hostname: &'a str,
}

/// Checks senders; one per relay (its caches are shared by every session).
pub struct Checker {
    auth: MessageAuthenticator,
    /// SPF asks through this (the same hickory resolver).
    dns: Arc<DnsResolver>,
    caches: Caches,
    /// The fixture's name server, when the answers come from one.
    _fixture: Option<FixtureServer>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").field("fixture", &self._fixture).finish_non_exhaustive()
    }
}

impl Checker {
    /// Checks through `resolver` (the relay's).
    pub fn new(resolver: Arc<DnsResolver>, settings: CheckerSettings) -> Self {
        Self {
            auth: MessageAuthenticator(resolver.hickory()),
            dns: resolver,
            caches: Caches::new(settings.cache_entries),
            _fixture: None,
        }
    }

    /// Checks answered by `fixture` (through a name server on loopback serving it), for
    /// `sluice policy test` and the tests: reproducible and offline. A `TIMEOUT` name costs
    /// a quarter of a second.
    pub async fn from_fixture(
        fixture: Arc<FixtureResolver>,
        settings: CheckerSettings,
    ) -> Result<Self, String> {
        let server = FixtureServer::start(fixture).await.map_err(|e| format!("fixture name server: {e}"))?;
        let patience = Patience { timeout: Duration::from_millis(250), attempts: 1 };
        let resolver = Arc::new(DnsResolver::with_patience(&[server.address()], patience)?);
        let mut checker = Self::new(resolver, settings);
        checker._fixture = Some(server);
        Ok(checker)
    }

    /// Check `message` from `sender` within `timeout` (all checks together). Never fails:
    /// what cannot be decided in time or at all gets the RFCs' `temperror` or `permerror`.
    pub async fn check(&self, sender: &Sender<'_>, message: &[u8], timeout: Duration) -> SenderChecks {
        let deadline = Instant::now() + timeout;
        let parsed = AuthenticatedMessage::parse(message);
        let mut checks = SenderChecks { null_sender: sender.mail_from.is_empty(), ..SenderChecks::default() };

        // SPF: the HELO name, then the MAIL FROM domain (or the HELO name again for <>).
        // Unicode domains are checked in their ASCII (IDNA) form, as DNS holds them.
        let ascii = |domain: &str| {
            let domain = domain.trim_end_matches('.');
            idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase())
        };
        let helo = ascii(sender.helo);
        let helo_sender = format!("postmaster@{helo}");
        let helo_check = spf::check_host(&*self.dns, sender.ip, &helo, &helo_sender, &helo);
        let helo_result = step(deadline, helo_check).await.unwrap_or_else(stopped);
        checks.helo = SpfCheck { result: helo_result, domain: helo.clone() };
        let (mail_from, mail_from_domain) = match sender.mail_from.rsplit_once('@') {
            Some((local, domain)) => {
                let domain = ascii(domain);
                (format!("{local}@{domain}"), domain)
            }
            None => (sender.mail_from.to_string(), String::new()),
        };
        checks.spf = if sender.mail_from.is_empty() {
            checks.helo.clone()
        } else {
            let check = spf::check_host(&*self.dns, sender.ip, &mail_from_domain, &mail_from, &helo);
            SpfCheck {
                result: step(deadline, check).await.unwrap_or_else(stopped),
                domain: mail_from_domain.clone(),
            }
        };
        let spf_output =
            mail_auth::SpfOutput::new(checks.spf.domain.clone()).with_result(spf_result(checks.spf.result));
        let Some(parsed) = parsed else {
            // Not even headers to read: nothing signed, no From to align with.
            checks.dmarc.result = Verdict::None;
            return checks;
        };

        // DKIM: every signature.
        let dkim = step(deadline, self.auth.verify_dkim(self.with_caches(&parsed))).await;
        checks.dkim = match &dkim {
            Ok(outputs) => outputs.iter().map(dkim_check).collect(),
            Err(stop) => parsed
                .dkim_headers
                .iter()
                .map(|h| DkimCheck {
                    result: stopped(*stop),
                    domain: h.header.d.clone(),
                    selector: h.header.s.clone(),
                    algorithm: algorithm_name(h.header.a).to_string(),
                    reason: Some(match stop {
                        Stop::Timeout => "time for the checks ran out".into(),
                        Stop::Panic => "signature or key could not be processed".into(),
                    }),
                })
                .collect(),
        };

        // A signature made with an RSA key of absurd size does not count (RFC 8301).
        for check in
            checks.dkim.iter_mut().filter(|d| d.result == Verdict::Pass && d.algorithm.starts_with("rsa"))
        {
            let bits =
                step(deadline, super::keys::rsa_bits(&*self.dns, &check.domain, &check.selector)).await;
            if let Some(why) = bits.ok().flatten().and_then(super::keys::refused) {
                check.result = Verdict::Permerror;
                check.reason = Some(why);
            }
        }

        // Signatures too malformed to check are permanent errors (RFC 6376 §6.1.1), named by
        // the domain they claim when it can be read.
        if dkim.is_ok() {
            for error in parsed.errors.iter().filter(|e| e.name.eq_ignore_ascii_case(b"DKIM-Signature")) {
                let value = String::from_utf8_lossy(error.value);
                let tag =
                    |name: &str| super::tag(&value, name).map(|v| v.split_whitespace().collect::<String>());
                checks.dkim.push(DkimCheck {
                    result: Verdict::Permerror,
                    domain: tag("d").unwrap_or_default().to_ascii_lowercase(),
                    selector: tag("s").unwrap_or_default(),
                    algorithm: tag("a").unwrap_or_default(),
                    reason: Some(format!("malformed signature: {}", error.header)),
                });
            }
        }

        // ARC: the chain and who sealed it.
        let mut seals: Vec<(u32, String)> =
            parsed.as_headers.iter().map(|h| (h.header.i, h.header.d.clone())).collect();
        seals.sort();
        checks.arc.sealers = seals.into_iter().map(|(_, d)| d).collect();
        checks.arc.result = match step(deadline, self.auth.verify_arc(self.with_caches(&parsed))).await {
            Ok(output) => match output.result() {
                DkimResult::Pass => Verdict::Pass,
                DkimResult::None => Verdict::None,
                DkimResult::TempError(_) => Verdict::Temperror,
                _ => Verdict::Fail,
            },
            Err(_) if checks.arc.sealers.is_empty() => Verdict::None,
            Err(Stop::Timeout) => Verdict::Temperror,
            Err(Stop::Panic) => Verdict::Fail,
        };

        // DMARC: From's domain, aligned with a passing SPF or DKIM domain — only signatures
        // that still pass here count (a refused key's do not).
        let counted: Vec<mail_auth::DkimOutput<'_>> = dkim
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .zip(&checks.dkim)
            .filter(|(output, check)| *output.result() != DkimResult::Pass || check.result == Verdict::Pass)
            .map(|(output, _)| output.clone())
            .collect();
        checks.dmarc = self.dmarc(&parsed, &counted, &mail_from_domain, &spf_output, &checks, deadline).await;
        checks
    }

    async fn dmarc(
        &self,
        parsed: &AuthenticatedMessage<'_>,
        dkim: &[mail_auth::DkimOutput<'_>],
        mail_from_domain: &str,
        spf: &mail_auth::SpfOutput,
        checks: &SenderChecks,
        deadline: Instant,
    ) -> DmarcCheck {
        let from_domain = parsed.from().rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
        let mut dmarc = DmarcCheck { domain: from_domain.clone(), pct: 100, ..DmarcCheck::default() };
        if from_domain.is_empty() {
            return dmarc;
        }
        // Without a record, alignment is still worth knowing (it decides bounces): a passing
        // domain equal to From's, or one being a subdomain of the other.
        let aligned = |d: &str| same_organisation(d, &from_domain);
        dmarc.spf_aligned =
            checks.spf.result == Verdict::Pass && !checks.null_sender && aligned(mail_from_domain);
        dmarc.dkim_aligned =
            checks.dkim.iter().any(|d| d.result == Verdict::Pass && aligned(&d.domain.to_ascii_lowercase()));
        let params = DmarcParameters::new(parsed, dkim, mail_from_domain, spf);
        let output = match step(deadline, self.auth.verify_dmarc(self.with_caches(params))).await {
            Ok(output) => output,
            Err(stop) => {
                dmarc.result = stopped(stop);
                return dmarc;
            }
        };
        let Some(record) = output.dmarc_record() else {
            dmarc.result = match (output.spf_result(), output.dkim_result()) {
                (DmarcResult::TempError(_), _) | (_, DmarcResult::TempError(_)) => Verdict::Temperror,
                (DmarcResult::PermError(_), _) | (_, DmarcResult::PermError(_)) => Verdict::Permerror,
                _ => Verdict::None,
            };
            return dmarc;
        };
        dmarc.spf_strict = record.aspf == Alignment::Strict;
        dmarc.dkim_strict = record.adkim == Alignment::Strict;
        dmarc.spf_aligned = *output.spf_result() == DmarcResult::Pass;
        dmarc.dkim_aligned = *output.dkim_result() == DmarcResult::Pass;
        dmarc.policy = match output.policy() {
            Policy::Reject => Some(DmarcPolicy::Reject),
            Policy::Quarantine => Some(DmarcPolicy::Quarantine),
            Policy::None | Policy::Unspecified => Some(DmarcPolicy::None),
        };
        dmarc.result = if dmarc.spf_aligned || dmarc.dkim_aligned {
            Verdict::Pass
        } else if matches!(output.spf_result(), DmarcResult::TempError(_))
            || matches!(output.dkim_result(), DmarcResult::TempError(_))
            || checks.spf.result == Verdict::Temperror
            || checks.dkim.iter().any(|d| d.result == Verdict::Temperror)
        {
            Verdict::Temperror
        } else {
            Verdict::Fail
        };
        if let Ok(pct) = step(deadline, self.pct(&from_domain)).await {
            dmarc.pct = pct;
        }
        dmarc
    }

    /// The `pct` of the DMARC record that applies to `domain`: its own, else the nearest
    /// parent's (100 when not given or not a number).
    async fn pct(&self, domain: &str) -> u8 {
        let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
        for start in 0..labels.len().saturating_sub(1).min(8) {
            let name = format!("_dmarc.{}", labels[start..].join("."));
            let records = self.dns.lookup(&name, RecordType::Txt).await.unwrap_or_default();
            if let Some(record) =
                records.iter().find(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
            {
                return dmarc_pct(record);
            }
        }
        100
    }

    fn with_caches<'x, P>(&'x self, params: P) -> Cached<'x, P> {
        Parameters::new(params)
            .with_txt_cache(&self.caches.txt)
            .with_mx_cache(&self.caches.mx)
            .with_ipv4_cache(&self.caches.ipv4)
            .with_ipv6_cache(&self.caches.ipv6)
            .with_ptr_cache(&self.caches.ptr)
    }
}

/// The parameters of one check, with the caches of parsed answers.
type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, mail_auth::Txt>,
    TtlCache<Box<str>, mail_auth::RecordSet<mail_auth::MX>>,
    TtlCache<Box<str>, mail_auth::RecordSet<std::net::Ipv4Addr>>,
    TtlCache<Box<str>, mail_auth::RecordSet<std::net::Ipv6Addr>>,
    TtlCache<IpAddr, mail_auth::RecordSet<Box<str>>>,
>;

/// Why a check step gave no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The time for the message's checks ran out.
    Timeout,
    /// The checking library panicked on what it was given (a malformed record or signature):
    /// contained here, and a permanent error.
    Panic,
}

/// One step of the checks, bounded by `deadline` and shielded from panics.
async fn step<T>(deadline: Instant, future: impl std::future::Future<Output = T>) -> Result<T, Stop> {
    match tokio::time::timeout_at(deadline, crate::panics::Contained::new(future)).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(why)) => {
            tracing::warn!("a sender check failed on its input ({why}); taken as a permanent error");
            Err(Stop::Panic)
        }
        Err(_) => Err(Stop::Timeout),
    }
}

fn stopped(stop: Stop) -> Verdict {
    match stop {
        Stop::Timeout => Verdict::Temperror,
        Stop::Panic => Verdict::Permerror,
    }
}

/// `pct=` of a DMARC record (RFC 7489 §6.3), 100 when absent or not a number up to 100.
fn dmarc_pct(record: &str) -> u8 {
    // DMARC's tag names are case-insensitive.
    super::tag(&record.to_ascii_lowercase(), "pct")
        .and_then(|value| value.parse::<u8>().ok())
        .filter(|pct| *pct <= 100)
        .unwrap_or(100)
}

/// Two domains are one organisation's when equal or when one is a subdomain of the other.
fn same_organisation(a: &str, b: &str) -> bool {
    let sub =
        |x: &str, y: &str| x.len() > y.len() && x.ends_with(y) && x.as_bytes()[x.len() - y.len() - 1] == b'.';
    !a.is_empty() && (a == b || sub(a, b) || sub(b, a))
}

/// The SPF result as DMARC's evaluation takes it.
fn spf_result(verdict: Verdict) -> SpfResult {
    match verdict {
        Verdict::Pass => SpfResult::Pass,
        Verdict::Fail => SpfResult::Fail,
        Verdict::Softfail => SpfResult::SoftFail,
        Verdict::Neutral => SpfResult::Neutral,
        Verdict::Temperror => SpfResult::TempError,
        Verdict::Permerror => SpfResult::PermError,
        Verdict::None => SpfResult::None,
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

/// One signature's result; a signature too malformed to read names no domain.
fn dkim_check(output: &mail_auth::DkimOutput<'_>) -> DkimCheck {
    let (result, reason) = match output.result() {
        DkimResult::Pass => (Verdict::Pass, None),
        DkimResult::None => (Verdict::None, None),
        // A body that is not what was signed is a failed signature (RFC 6376 §6.3 step 4).
        DkimResult::Neutral(e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)) => {
            (Verdict::Fail, Some(e.to_string()))
        }
        DkimResult::Neutral(e) => (Verdict::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (Verdict::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (Verdict::Permerror, Some(e.to_string())),
        DkimResult::TempError(e) => (Verdict::Temperror, Some(e.to_string())),
    };
    let signature = output.signature();
    DkimCheck {
        result,
        domain: signature.map(|s| s.d.to_ascii_lowercase()).unwrap_or_default(),
        selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
        algorithm: signature.map(|s| algorithm_name(s.a).to_string()).unwrap_or_default(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_and_organisations() {
        assert_eq!(dmarc_pct("v=DMARC1; p=reject; pct=25"), 25);
        assert_eq!(dmarc_pct("v=DMARC1; p=reject; pct=250"), 100);
        assert_eq!(dmarc_pct("v=DMARC1; p=reject"), 100);
        assert!(same_organisation("mail.example.org", "example.org"));
        assert!(!same_organisation("badexample.org", "example.org"));
        assert!(!same_organisation("", ""));
    }
}
