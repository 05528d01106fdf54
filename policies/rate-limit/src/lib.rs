//! # rate-limit
//!
//! Counts messages (at MAIL FROM) and recipients (at each RCPT TO) per client IP address,
//! per sender address and per authenticated user in fixed windows, in the host's key-value
//! store, and answers `451 4.7.1` once a limit is passed. Several relay nodes that share one
//! store share the counters.
//!
//! Configuration:
//! - `window_seconds`: length of a window (default 3600).
//! - `messages`: messages per window and key (default 200).
//! - `recipients`: recipients per window and key (default 1000).
//! - `by`: which keys to count, any of `ip`, `sender`, `user` (default `ip, user`).
//! - `exempt_networks`: CIDRs never limited (default none).
//!
//! If the store refuses a counter (the tenant's key quota is full), the policy lets mail
//! through and logs it: a rate limiter must not stop all mail because it cannot count. A
//! store that cannot be reached never gets here: the host ends the call and the tenant's
//! failure mode decides.

use sluice_policy::net::Cidr;
use sluice_policy::{Config, Context, Decision, Policy, Recipient, Stage, export_policy, kv, log};

/// The policy.
pub struct RateLimit {
    window: u32,
    messages: i64,
    recipients: i64,
    by_ip: bool,
    by_sender: bool,
    by_user: bool,
    exempt: Vec<Cidr>,
}

impl RateLimit {
    fn keys(&self, ctx: &Context) -> Vec<String> {
        let mut keys = Vec::new();
        if self.by_ip {
            keys.push(format!("ip:{}", ctx.client.ip));
        }
        if self.by_sender
            && let Some(from) = ctx.mail_from.as_ref().filter(|m| !m.is_null())
        {
            keys.push(format!("sender:{}", from.address.to_ascii_lowercase()));
        }
        if self.by_user
            && let Some(user) = &ctx.client.authenticated_user
        {
            keys.push(format!("user:{}", user.to_ascii_lowercase()));
        }
        keys
    }

    fn count(&self, ctx: &Context, what: &str, limit: i64) -> Decision {
        if ctx.client.ip_addr().is_some_and(|ip| self.exempt.iter().any(|net| net.contains(ip))) {
            return Decision::no_opinion();
        }
        let window_index = sluice_policy::now_millis() / 1000 / i64::from(self.window);
        for key in self.keys(ctx) {
            let counter = format!("{what}:{window_index}:{key}");
            match kv::incr(&counter, 1, Some(self.window)) {
                Ok(n) if n > limit => {
                    return Decision::tempfail(&format!(
                        "4.7.1 Rate limit exceeded for {key} ({what}), try again later"
                    ))
                    .symbol("RATE_LIMITED", 0.0, Some(&key));
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn("rate counter not counted", &[("key", &counter), ("error", &e.to_string())])
                }
            }
        }
        Decision::no_opinion()
    }
}

impl Policy for RateLimit {
    const STAGES: &'static [Stage] = &[Stage::Mail, Stage::Rcpt];

    fn init(config: &Config) -> Result<Self, String> {
        let window: u32 = config.parse_or("window_seconds", 3600)?;
        if window == 0 {
            return Err("`window_seconds` must be positive".into());
        }
        let by =
            if config.get("by").is_some() { config.list("by") } else { vec!["ip".into(), "user".into()] };
        for item in &by {
            if !matches!(item.as_str(), "ip" | "sender" | "user") {
                return Err(format!("`by` items must be ip, sender or user, not {item:?}"));
            }
        }
        Ok(Self {
            window,
            messages: config.parse_or("messages", 200)?,
            recipients: config.parse_or("recipients", 1000)?,
            by_ip: by.iter().any(|b| b == "ip"),
            by_sender: by.iter().any(|b| b == "sender"),
            by_user: by.iter().any(|b| b == "user"),
            exempt: Cidr::parse_list(&config.list("exempt_networks"))?,
        })
    }

    fn on_mail(&mut self, ctx: &Context) -> Decision {
        self.count(ctx, "msg", self.messages)
    }

    fn on_rcpt(&mut self, ctx: &Context, _rcpt: &Recipient) -> Decision {
        self.count(ctx, "rcpt", self.recipients)
    }
}

export_policy!(RateLimit);
