//! # spam-heuristics
//!
//! Header and body rules scored like SpamAssassin's: each rule that fires adds a symbol with
//! a score, and the relay's thresholds (5.0 flags, 15.0 rejects by default) act on the total
//! of the whole chain. The rules look at how a message is built — dates, identifiers, sender
//! display names, subject shouting, HTML tricks, link disguises, dangerous attachments — and
//! at a small set of phrases spam has used for decades. See [`rules`] for the list.
//!
//! Configuration:
//! - `disable`: symbol names to switch off, comma separated.
//! - `score.NAME`: override the score of symbol NAME (e.g. `score.HTML_ONLY = 0.5`).
//! - `max_body_bytes`: how much of each body is examined (default 262144).

pub mod ascii;
pub mod rules;
pub mod text;

use std::collections::BTreeMap;

use sluice_policy::{Config, Context, Decision, Message, Policy, Stage, export_policy};

/// The policy.
pub struct SpamHeuristics {
    disabled: Vec<String>,
    overrides: BTreeMap<String, f64>,
    max_body_bytes: u32,
}

impl Policy for SpamHeuristics {
    const STAGES: &'static [Stage] = &[Stage::Data];

    fn init(config: &Config) -> Result<Self, String> {
        let mut overrides = BTreeMap::new();
        for (key, value) in config.pairs() {
            if let Some(name) = key.strip_prefix("score.") {
                let score: f64 =
                    value.trim().parse().map_err(|_| format!("`{key}`: not a number: {value:?}"))?;
                if !rules::SYMBOLS.contains(&name) {
                    return Err(format!("`{key}`: unknown symbol {name}"));
                }
                overrides.insert(name.to_string(), score);
            }
        }
        let disabled = config.list("disable");
        if let Some(unknown) = disabled.iter().find(|d| !rules::SYMBOLS.contains(&d.as_str())) {
            return Err(format!("`disable`: unknown symbol {unknown}"));
        }
        Ok(Self { disabled, overrides, max_body_bytes: config.parse_or("max_body_bytes", 256 * 1024)? })
    }

    fn on_data(&mut self, ctx: &Context, message: &Message) -> Decision {
        let input = rules::Input::from_message(message, ctx.client.reverse_dns.clone(), self.max_body_bytes);
        let mut decision = Decision::no_opinion();
        for hit in rules::evaluate(&input) {
            if self.disabled.iter().any(|d| d == hit.name) {
                continue;
            }
            let score = self.overrides.get(hit.name).copied().unwrap_or(hit.score);
            decision = decision.symbol(hit.name, score, hit.detail.as_deref());
        }
        decision
    }
}

export_policy!(SpamHeuristics);
