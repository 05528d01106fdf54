//! # dmarc
//!
//! Enforces the From domain's DMARC policy (RFC 7489) with the results the relay checked
//! once per message (`Message::sender_checks`, interface 0.2.0), and scores SPF and DKIM
//! on SpamAssassin's scale.
//!
//! What it does with a message whose DMARC result is `fail`:
//! - the domain says `p=reject`: `550 5.7.1` refusal; `p=quarantine`: quarantine; `p=none`:
//!   the symbol only. `pct` is honoured: a message outside the sampled share is treated one
//!   step more leniently (reject → quarantine → none), the share picked by a hash of the
//!   Message-ID so the same message always gets the same answer.
//! - the message came through a listed forwarder whose ARC seal validates (a mailing list, a
//!   forwarding service): scored, never refused — forwarding is what broke SPF and DKIM.
//! - the From domain is in `never_reject`: at most quarantined.
//! - `monitor_only = true`: symbols only, for a tenant watching before it enforces.
//!
//! `temperror` (DNS trouble, the relay's time bound) never refuses: the symbol says so.
//!
//! Configuration:
//! - `monitor_only` (default false).
//! - `never_reject`: From domains never refused, comma separated (`*.example.com` covers
//!   subdomains).
//! - `trusted_forwarders`: ARC sealing domains trusted to have checked the mail before
//!   forwarding it, comma separated.
//! - `honour_pct` (default true).
//! - scores: `spf_fail_score` (1.0), `spf_softfail_score` (0.5), `spf_error_score` (0.3),
//!   `dkim_fail_score` (1.0), `dkim_error_score` (0.3), `dmarc_fail_score` (2.0: added for a
//!   failing message that is not refused), `dmarc_pass_score` (-0.5).
//!
//! Symbols: `SPF_PASS`, `SPF_FAIL`, `SPF_SOFTFAIL`, `SPF_PERMERROR`, `SPF_TEMPERROR`,
//! `DKIM_VALID`, `DKIM_INVALID`, `DKIM_PERMERROR`, `DKIM_TEMPERROR`, `DMARC_PASS`,
//! `DMARC_FAIL_REJECT`, `DMARC_FAIL_QUARANTINE`, `DMARC_FAIL_NONE`, `DMARC_TEMPERROR`,
//! `DMARC_PERMERROR`, `ARC_TRUSTED_FORWARDER`.

use sluice_policy::net::domain_matches;
use sluice_policy::{
    CheckResult, Config, Context, Decision, DmarcPolicy, Message, Policy, SenderChecks, Stage, export_policy,
};

/// The policy.
pub struct Dmarc {
    monitor_only: bool,
    never_reject: Vec<String>,
    trusted_forwarders: Vec<String>,
    honour_pct: bool,
    scores: Scores,
}

/// Scores of the symbols.
#[derive(Debug, Clone, Copy)]
pub struct Scores {
    spf_fail: f64,
    spf_softfail: f64,
    spf_error: f64,
    dkim_fail: f64,
    dkim_error: f64,
    dmarc_fail: f64,
    dmarc_pass: f64,
}

/// What the DMARC result asks for, after the overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Refuse.
    Reject,
    /// Hold in quarantine.
    Quarantine,
    /// Score only.
    Score,
}

/// Whether a message falls inside the `pct` share: a stable hash of its Message-ID (FNV-1a)
/// taken modulo 100.
pub fn sampled(message_id: &str, pct: u8) -> bool {
    if pct >= 100 {
        return true;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in message_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % 100 < u32::from(pct)
}

fn lenient(step: Enforcement) -> Enforcement {
    match step {
        Enforcement::Reject => Enforcement::Quarantine,
        _ => Enforcement::Score,
    }
}

impl Dmarc {
    /// What a failing message gets: the domain's policy, then `pct`, the forwarders, the
    /// domains never refused and monitor mode.
    pub fn enforcement(&self, checks: &SenderChecks, message_id: &str) -> Enforcement {
        let dmarc = &checks.dmarc;
        let mut step = match dmarc.policy {
            Some(DmarcPolicy::Reject) => Enforcement::Reject,
            Some(DmarcPolicy::Quarantine) => Enforcement::Quarantine,
            Some(DmarcPolicy::None) | None => Enforcement::Score,
        };
        if self.honour_pct && !sampled(message_id, dmarc.pct) {
            step = lenient(step);
        }
        if self.forwarded_by_trusted(checks) || self.monitor_only {
            step = Enforcement::Score;
        }
        if step == Enforcement::Reject && self.never_reject.iter().any(|p| domain_matches(&dmarc.domain, p)) {
            step = Enforcement::Quarantine;
        }
        step
    }

    /// The ARC chain validates and one of its sealers is a listed forwarder.
    fn forwarded_by_trusted(&self, checks: &SenderChecks) -> bool {
        checks.arc.result == CheckResult::Pass
            && checks.arc.sealers.iter().any(|s| self.trusted_forwarders.iter().any(|p| domain_matches(s, p)))
    }

    /// The SPF and DKIM symbols.
    fn score(&self, checks: &SenderChecks, mut decision: Decision) -> Decision {
        let s = &self.scores;
        let spf = &checks.spf;
        decision = match spf.result {
            CheckResult::Pass => decision.symbol("SPF_PASS", 0.0, Some(&spf.domain)),
            CheckResult::Fail => decision.symbol("SPF_FAIL", s.spf_fail, Some(&spf.domain)),
            CheckResult::Softfail => decision.symbol("SPF_SOFTFAIL", s.spf_softfail, Some(&spf.domain)),
            CheckResult::Permerror => decision.symbol("SPF_PERMERROR", s.spf_error, Some(&spf.domain)),
            CheckResult::Temperror => decision.symbol("SPF_TEMPERROR", 0.0, Some(&spf.domain)),
            CheckResult::None | CheckResult::Neutral => decision,
        };
        for dkim in &checks.dkim {
            let detail = format!("{} {}", dkim.domain, dkim.reason.as_deref().unwrap_or(""));
            decision = match dkim.result {
                CheckResult::Pass => decision.symbol("DKIM_VALID", 0.0, Some(&dkim.domain)),
                CheckResult::Fail => decision.symbol("DKIM_INVALID", s.dkim_fail, Some(detail.trim())),
                CheckResult::Permerror | CheckResult::Neutral => {
                    decision.symbol("DKIM_PERMERROR", s.dkim_error, Some(detail.trim()))
                }
                CheckResult::Temperror => decision.symbol("DKIM_TEMPERROR", 0.0, Some(detail.trim())),
                CheckResult::None | CheckResult::Softfail => decision,
            };
        }
        decision
    }
}

fn score(config: &Config, key: &str, default: f64) -> Result<f64, String> {
    let value = config.parse_or(key, default)?;
    if value.is_finite() { Ok(value) } else { Err(format!("`{key}` must be a finite number")) }
}

impl Policy for Dmarc {
    const STAGES: &'static [Stage] = &[Stage::Data];

    fn init(config: &Config) -> Result<Self, String> {
        Ok(Self {
            monitor_only: config.bool_or("monitor_only", false)?,
            never_reject: config.list("never_reject").into_iter().map(|d| d.to_ascii_lowercase()).collect(),
            trusted_forwarders: config
                .list("trusted_forwarders")
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            honour_pct: config.bool_or("honour_pct", true)?,
            scores: Scores {
                spf_fail: score(config, "spf_fail_score", 1.0)?,
                spf_softfail: score(config, "spf_softfail_score", 0.5)?,
                spf_error: score(config, "spf_error_score", 0.3)?,
                dkim_fail: score(config, "dkim_fail_score", 1.0)?,
                dkim_error: score(config, "dkim_error_score", 0.3)?,
                dmarc_fail: score(config, "dmarc_fail_score", 2.0)?,
                dmarc_pass: score(config, "dmarc_pass_score", -0.5)?,
            },
        })
    }

    fn on_data(&mut self, _ctx: &Context, message: &Message) -> Decision {
        // Mail the tenant sends out is signed, not checked: nothing to enforce.
        let Some(checks) = message.sender_checks() else { return Decision::no_opinion() };
        let dmarc = &checks.dmarc;
        let domain = dmarc.domain.as_str();
        let decision = match dmarc.result {
            CheckResult::Pass => {
                Decision::no_opinion().symbol("DMARC_PASS", self.scores.dmarc_pass, Some(domain))
            }
            CheckResult::Temperror => Decision::no_opinion().symbol("DMARC_TEMPERROR", 0.0, Some(domain)),
            CheckResult::Permerror => Decision::no_opinion().symbol("DMARC_PERMERROR", 0.0, Some(domain)),
            CheckResult::Fail => {
                let message_id = message.message_id().unwrap_or_default();
                let (symbol, score) = match dmarc.policy {
                    Some(DmarcPolicy::Reject) => ("DMARC_FAIL_REJECT", self.scores.dmarc_fail),
                    Some(DmarcPolicy::Quarantine) => ("DMARC_FAIL_QUARANTINE", self.scores.dmarc_fail),
                    _ => ("DMARC_FAIL_NONE", self.scores.dmarc_fail / 2.0),
                };
                let decision = match self.enforcement(&checks, &message_id) {
                    Enforcement::Reject => Decision::reject_with(
                        550,
                        Some("5.7.1"),
                        &format!("Unauthenticated mail from {domain} is refused by its DMARC policy"),
                    )
                    .unwrap_or_else(|_| {
                        Decision::reject("5.7.1 Refused by the sender domain's DMARC policy")
                    }),
                    Enforcement::Quarantine => Decision::quarantine(&format!("DMARC policy of {domain}")),
                    Enforcement::Score => Decision::no_opinion(),
                };
                let decision = decision.symbol(symbol, score, Some(domain));
                if self.forwarded_by_trusted(&checks) {
                    decision.symbol(
                        "ARC_TRUSTED_FORWARDER",
                        0.0,
                        checks.arc.sealers.last().map(String::as_str),
                    )
                } else {
                    decision
                }
            }
            CheckResult::None | CheckResult::Softfail | CheckResult::Neutral => Decision::no_opinion(),
        };
        self.score(&checks, decision)
    }
}

export_policy!(Dmarc);

#[cfg(test)]
mod tests {
    use super::sampled;

    #[test]
    fn pct_sampling_is_stable_and_proportional() {
        assert!(sampled("anything", 100));
        assert!(!sampled("anything", 0));
        assert_eq!(sampled("<a@b>", 50), sampled("<a@b>", 50));
        let inside = (0..1000).filter(|i| sampled(&format!("<{i}@example.org>"), 30)).count();
        assert!((200..400).contains(&inside), "{inside}");
    }
}
