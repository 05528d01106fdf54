//! # dnsbl
//!
//! Looks the client's IP address up in DNS block lists when it connects, and refuses its
//! recipients (the way Postfix's `reject_rbl_client` does, so the log shows who was refused)
//! or scores the listing. Optionally looks the domains of links in the message up in domain
//! block lists at data.
//!
//! Configuration:
//! - `zones`: IP block lists, comma separated (default `zen.spamhaus.org`).
//! - `action`: `reject` (default) refuses every recipient with `554 5.7.1`; `score` adds
//!   the symbol `RBL_LISTED` with `score` per listing zone instead.
//! - `score`: score per listing (default 5.0).
//! - `url_zones`: domain block lists for link domains (default none; e.g. `dbl.spamhaus.org`).
//! - `url_score`: score per listed link domain (default 5.0); at most 5 domains are checked.
//! - `check_non_public`: also look up loopback and private addresses (default false).
//!
//! A listing is an A record in 127.0.0.0/8, except 127.255.255.0/24, which block lists use
//! for errors (query refused, rate limited) and which is ignored.

use std::collections::BTreeSet;

use sluice_policy::net::{base_domain, is_non_public};
use sluice_policy::{Config, Context, Decision, Message, Policy, Recipient, Stage, dns, export_policy, log};

/// The policy.
pub struct Dnsbl {
    zones: Vec<String>,
    reject: bool,
    score: f64,
    url_zones: Vec<String>,
    url_score: f64,
    check_non_public: bool,
    /// Zones that list this session's client, found at connect.
    listed_in: Vec<(String, String)>,
}

/// Whether a block list answer means "listed".
pub fn is_listing(answer: &str) -> bool {
    match answer.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => {
            let o = ip.octets();
            o[0] == 127 && !(o[1] == 255 && o[2] == 255)
        }
        Err(_) => false,
    }
}

/// Host names of http(s) links in `text`, lower-cased, without duplicates.
pub fn link_domains(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lower = text.to_ascii_lowercase();
    for scheme in ["http://", "https://"] {
        let mut rest = lower.as_str();
        while let Some(pos) = rest.find(scheme) {
            rest = &rest[pos + scheme.len()..];
            let host: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-').collect();
            let host = host.trim_matches('.').to_string();
            if host.contains('.') && host.parse::<std::net::IpAddr>().is_err() {
                out.insert(host);
            }
        }
    }
    out
}

impl Policy for Dnsbl {
    const STAGES: &'static [Stage] = &[Stage::Connect, Stage::Rcpt, Stage::Data];

    fn init(config: &Config) -> Result<Self, String> {
        let mut zones = config.list("zones");
        if config.get("zones").is_none() {
            zones.push("zen.spamhaus.org".into());
        }
        let reject = match config.get("action").unwrap_or("reject") {
            "reject" => true,
            "score" => false,
            other => return Err(format!("`action` must be reject or score, not {other:?}")),
        };
        Ok(Self {
            zones,
            reject,
            score: config.parse_or("score", 5.0)?,
            url_zones: config.list("url_zones"),
            url_score: config.parse_or("url_score", 5.0)?,
            check_non_public: config.bool_or("check_non_public", false)?,
            listed_in: Vec::new(),
        })
    }

    fn on_connect(&mut self, ctx: &Context) -> Decision {
        self.listed_in.clear();
        let Some(ip) = ctx.client.ip_addr() else { return Decision::no_opinion() };
        if is_non_public(ip) && !self.check_non_public {
            return Decision::no_opinion();
        }
        let mut decision = Decision::no_opinion();
        for zone in &self.zones {
            let Some(query) = dns::reversed_query(&ctx.client.ip, zone) else { continue };
            match dns::a(&query) {
                Ok(answers) => {
                    if let Some(answer) = answers.iter().find(|a| is_listing(a)) {
                        self.listed_in.push((zone.clone(), answer.clone()));
                        if !self.reject {
                            decision =
                                decision.symbol("RBL_LISTED", self.score, Some(&format!("{zone}={answer}")));
                        }
                    }
                }
                Err(dns::DnsError::NxDomain) => {}
                Err(e) => log::warn("block list lookup failed", &[("zone", zone), ("error", &e.to_string())]),
            }
        }
        decision
    }

    fn on_rcpt(&mut self, ctx: &Context, _rcpt: &Recipient) -> Decision {
        match self.listed_in.first() {
            Some((zone, answer)) if self.reject => Decision::reject_with(
                554,
                Some("5.7.1"),
                &format!("Service unavailable; client [{}] blocked using {zone} ({answer})", ctx.client.ip),
            )
            .unwrap_or_else(|_| Decision::reject("5.7.1 Client blocked")),
            _ => Decision::no_opinion(),
        }
    }

    fn on_data(&mut self, _ctx: &Context, message: &Message) -> Decision {
        if self.url_zones.is_empty() {
            return Decision::no_opinion();
        }
        let mut text = message.text_body(256 * 1024).unwrap_or_default();
        text.push_str(&message.html_body(256 * 1024).unwrap_or_default());
        let domains: BTreeSet<String> = link_domains(&text).iter().map(|h| base_domain(h)).collect();
        let mut decision = Decision::no_opinion();
        for domain in domains.iter().take(5) {
            for zone in &self.url_zones {
                let query = format!("{domain}.{}", zone.trim_end_matches('.'));
                if let Ok(answers) = dns::a(&query)
                    && answers.iter().any(|a| is_listing(a))
                {
                    decision =
                        decision.symbol("URIBL_LISTED", self.url_score, Some(&format!("{domain} in {zone}")));
                }
            }
        }
        decision
    }
}

export_policy!(Dnsbl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings() {
        assert!(is_listing("127.0.0.2"));
        assert!(!is_listing("127.255.255.254"));
        assert!(!is_listing("10.0.0.1"));
        assert!(!is_listing("garbage"));
    }

    #[test]
    fn links() {
        let d = link_domains("see HTTP://Www.Example.com/x and https://a.b.co.uk?q, http://192.0.2.1/");
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            vec!["a.b.co.uk".to_string(), "www.example.com".to_string()]
        );
    }
}
