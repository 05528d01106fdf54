//! # sender-guard
//!
//! Relay rule: a client that relays through us — authenticated, or connecting from a trusted
//! network — may only use MAIL FROM addresses in the tenant's own domains (or the null sender
//! for bounces). Clients from outside may not claim those domains either: that is spoofing.
//! Addresses that hide a second destination (`%` hack, `!` paths, source routes, quoted local
//! parts holding `@`, double `@`) are refused from everyone.
//!
//! Configuration:
//! - `domains` (required): the tenant's domains, comma separated; `*.example.com` covers
//!   subdomains.
//! - `trusted_networks`: CIDRs of internal clients (default none).
//! - `allow_null_sender`: let internal clients send `MAIL FROM:<>` (default true).
//! - `auth_match`: for authenticated clients, `domain` (the default: MAIL FROM must be in the
//!   user's domain when the user name is an address), `address` (MAIL FROM must equal the user
//!   name) or `off`.
//! - `external_spoof`: what to do when an outside client uses our domain in MAIL FROM:
//!   `reject` (default), `score` (symbol `SENDER_SPOOFS_LOCAL_DOMAIN`, 4.0) or `off`.
//! - `check_header_from`: at data, internal senders' `From:` must be in our domains too
//!   (default true).

use sluice_policy::net::{Cidr, domain_matches};
use sluice_policy::{Config, Context, Decision, Message, Policy, Stage, export_policy};

#[derive(Debug, Clone, Copy, PartialEq)]
enum AuthMatch {
    Domain,
    Address,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Spoof {
    Reject,
    Score,
    Off,
}

/// The policy.
pub struct SenderGuard {
    domains: Vec<String>,
    trusted: Vec<Cidr>,
    allow_null_sender: bool,
    auth_match: AuthMatch,
    external_spoof: Spoof,
    check_header_from: bool,
}

/// Why an address is refused outright.
pub fn address_trick(address: &str) -> Option<&'static str> {
    if address.starts_with('@') || address.contains(':') {
        return Some("source route");
    }
    if address.matches('@').count() > 1 {
        return Some("more than one @");
    }
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    if local.contains('%') {
        return Some("% relay hack");
    }
    if local.contains('!') {
        return Some("bang path");
    }
    if local.contains('"') {
        return Some("quoted local part");
    }
    if address.ends_with('.') {
        return Some("trailing dot");
    }
    if address.contains('[') {
        return Some("address literal");
    }
    None
}

fn domain_of(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
}

impl SenderGuard {
    fn owns(&self, domain: &str) -> bool {
        self.domains.iter().any(|pattern| domain_matches(domain, pattern))
    }

    fn is_internal(&self, ctx: &Context) -> bool {
        ctx.client.authenticated_user.is_some()
            || ctx.client.ip_addr().is_some_and(|ip| self.trusted.iter().any(|net| net.contains(ip)))
    }
}

impl Policy for SenderGuard {
    const STAGES: &'static [Stage] = &[Stage::Mail, Stage::Data];

    fn init(config: &Config) -> Result<Self, String> {
        let domains = config.list("domains");
        if domains.is_empty() {
            return Err("`domains` is required: the tenant's own mail domains".into());
        }
        let auth_match = match config.get("auth_match").unwrap_or("domain") {
            "domain" => AuthMatch::Domain,
            "address" => AuthMatch::Address,
            "off" => AuthMatch::Off,
            other => return Err(format!("`auth_match` must be domain, address or off, not {other:?}")),
        };
        let external_spoof = match config.get("external_spoof").unwrap_or("reject") {
            "reject" => Spoof::Reject,
            "score" => Spoof::Score,
            "off" => Spoof::Off,
            other => return Err(format!("`external_spoof` must be reject, score or off, not {other:?}")),
        };
        Ok(Self {
            domains,
            trusted: Cidr::parse_list(&config.list("trusted_networks"))?,
            allow_null_sender: config.bool_or("allow_null_sender", true)?,
            auth_match,
            external_spoof,
            check_header_from: config.bool_or("check_header_from", true)?,
        })
    }

    fn on_mail(&mut self, ctx: &Context) -> Decision {
        let Some(mail_from) = &ctx.mail_from else { return Decision::no_opinion() };
        let address = mail_from.address.trim();
        if address.is_empty() {
            if self.is_internal(ctx) && !self.allow_null_sender {
                return Decision::reject("5.7.1 Null sender not allowed from this client");
            }
            return Decision::no_opinion();
        }
        if let Some(trick) = address_trick(address) {
            return Decision::reject_with(553, Some("5.1.7"), &format!("Invalid sender address ({trick})"))
                .unwrap_or_else(|_| Decision::reject("5.1.7 Invalid sender address"));
        }
        let Some(domain) = domain_of(address) else {
            return Decision::reject_with(553, Some("5.1.7"), "Sender address must include a domain")
                .unwrap_or_else(|_| Decision::reject("5.1.7 Invalid sender address"));
        };
        if self.is_internal(ctx) {
            if !self.owns(&domain) {
                return Decision::reject_with(
                    553,
                    Some("5.7.1"),
                    &format!("Sender domain {domain} is not yours to use"),
                )
                .unwrap_or_else(|_| Decision::reject("5.7.1 Sender domain not allowed"));
            }
            if let Some(user) = &ctx.client.authenticated_user {
                let user = user.to_ascii_lowercase();
                let refused = match self.auth_match {
                    AuthMatch::Off => false,
                    AuthMatch::Address => user != address.to_ascii_lowercase(),
                    AuthMatch::Domain => domain_of(&user).is_some_and(|d| d != domain),
                };
                if refused {
                    return Decision::reject_with(
                        553,
                        Some("5.7.1"),
                        &format!("Sender address not owned by user {user}"),
                    )
                    .unwrap_or_else(|_| Decision::reject("5.7.1 Sender not owned by user"));
                }
            }
            return Decision::no_opinion();
        }
        if self.owns(&domain) {
            return match self.external_spoof {
                Spoof::Reject => {
                    Decision::reject(&format!("5.7.1 Mail from {domain} must come from its own servers"))
                }
                Spoof::Score => {
                    Decision::no_opinion().symbol("SENDER_SPOOFS_LOCAL_DOMAIN", 4.0, Some(&domain))
                }
                Spoof::Off => Decision::no_opinion(),
            };
        }
        Decision::no_opinion()
    }

    fn on_data(&mut self, ctx: &Context, message: &Message) -> Decision {
        if !self.check_header_from || !self.is_internal(ctx) {
            return Decision::no_opinion();
        }
        for mailbox in message.from() {
            match mailbox.domain() {
                Some(domain) if self.owns(&domain) => {}
                Some(domain) => {
                    return Decision::reject(&format!(
                        "5.7.1 From: header domain {domain} is not yours to use"
                    ));
                }
                None => return Decision::reject("5.7.1 From: header has no usable address"),
            }
        }
        Decision::no_opinion()
    }
}

export_policy!(SenderGuard);

#[cfg(test)]
mod tests {
    use super::address_trick;

    #[test]
    fn tricks_are_recognised() {
        assert_eq!(address_trick("user%evil.com@example.com"), Some("% relay hack"));
        assert_eq!(address_trick("evil.com!user@example.com"), Some("bang path"));
        assert_eq!(address_trick("@relay.example:user@evil.com"), Some("source route"));
        assert_eq!(address_trick("\"user@evil.com\"@example.com"), Some("more than one @"));
        assert_eq!(address_trick("\"user\"@example.com"), Some("quoted local part"));
        assert_eq!(address_trick("user@example.com."), Some("trailing dot"));
        assert_eq!(address_trick("user@[192.0.2.1]"), Some("address literal"));
        assert_eq!(address_trick("user.name+tag@example.com"), None);
    }
}
