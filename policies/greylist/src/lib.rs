//! # greylist
//!
//! Greylisting: the first delivery attempt of an unknown (client network, sender, recipient)
//! triplet is answered `451 4.7.1`; a retry after `delay_seconds` (and before
//! `retry_window_seconds`) passes and the triplet is remembered for `pass_ttl_seconds`. Real
//! MTAs retry; most spam software does not. The client network is the /24 (IPv4) or /64
//! (IPv6), so server farms that retry from a neighbouring address pass.
//!
//! Configuration:
//! - `delay_seconds` (default 300), `retry_window_seconds` (default 14400),
//!   `pass_ttl_seconds` (default 3110400, 36 days).
//! - `exempt_networks`: CIDRs never greylisted; authenticated clients never are.
//!
//! If the store refuses an operation (the tenant's key quota is full), mail passes (and that
//! is logged); an unreachable store is the tenant's failure mode (the host ends the call).

use std::net::IpAddr;

use sluice_policy::net::{Cidr, canonical};
use sluice_policy::{Config, Context, Decision, Policy, Recipient, Stage, export_policy, kv, log};

/// The policy.
pub struct Greylist {
    delay: i64,
    retry_window: u32,
    pass_ttl: u32,
    exempt: Vec<Cidr>,
}

/// The network part of a client address used in the triplet.
pub fn client_network(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Policy for Greylist {
    const STAGES: &'static [Stage] = &[Stage::Rcpt];

    fn init(config: &Config) -> Result<Self, String> {
        let delay: i64 = config.parse_or("delay_seconds", 300)?;
        let retry_window: u32 = config.parse_or("retry_window_seconds", 14_400)?;
        if delay < 0 || i64::from(retry_window) <= delay {
            return Err("`retry_window_seconds` must be longer than `delay_seconds`".into());
        }
        Ok(Self {
            delay,
            retry_window,
            pass_ttl: config.parse_or("pass_ttl_seconds", 3_110_400)?,
            exempt: Cidr::parse_list(&config.list("exempt_networks"))?,
        })
    }

    fn on_rcpt(&mut self, ctx: &Context, rcpt: &Recipient) -> Decision {
        if ctx.client.authenticated_user.is_some() {
            return Decision::no_opinion();
        }
        let Some(ip) = ctx.client.ip_addr() else { return Decision::no_opinion() };
        if self.exempt.iter().any(|net| net.contains(ip)) {
            return Decision::no_opinion();
        }
        let sender = ctx.mail_from.as_ref().map(|m| m.address.to_ascii_lowercase()).unwrap_or_default();
        let key = format!("{}|{}|{}", client_network(ip), sender, rcpt.address.to_ascii_lowercase());
        let now = sluice_policy::now_millis() / 1000;
        let seen = match kv::get(&key) {
            Ok(value) => value,
            Err(e) => {
                log::warn("greylist store refused the operation; passing", &[("error", &e.to_string())]);
                return Decision::no_opinion();
            }
        };
        let first_seen = seen.as_deref().and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
        match first_seen.as_deref() {
            Some("pass") => Decision::no_opinion(),
            Some(stamp) => {
                let first: i64 = stamp.parse().unwrap_or(now);
                let waited = now - first;
                if waited >= self.delay {
                    if let Err(e) = kv::set(&key, b"pass", Some(self.pass_ttl)) {
                        log::warn("greylist store refused the operation", &[("error", &e.to_string())]);
                    }
                    Decision::no_opinion().symbol("GREYLIST_PASSED", 0.0, Some(&format!("after {waited}s")))
                } else {
                    Decision::tempfail(&format!(
                        "4.7.1 Greylisted, please try again in {} seconds",
                        self.delay - waited
                    ))
                }
            }
            None => {
                if let Err(e) = kv::set(&key, now.to_string().as_bytes(), Some(self.retry_window)) {
                    log::warn("greylist store refused the operation; passing", &[("error", &e.to_string())]);
                    return Decision::no_opinion();
                }
                Decision::tempfail(&format!("4.7.1 Greylisted, please try again in {} seconds", self.delay))
            }
        }
    }
}

export_policy!(Greylist);

#[cfg(test)]
mod tests {
    #[test]
    fn networks() {
        assert_eq!(super::client_network("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(super::client_network("2001:db8:1:2:3::4".parse().unwrap()), "2001:db8:1:2::/64");
    }
}
