//! # bayes
//!
//! A Bayesian spam filter that learns each tenant's mail. Every message is cut into tokens
//! ([`tokens`]: header fields and their words, body words, URL hosts, MIME structure and
//! attachment types); the model ([`model`]) keeps, per token, in how many learned spam and ham
//! messages it appeared, in the relay's key-value store — so each tenant has its own model,
//! and relays sharing a Redis share it. A message's probability of being spam combines its
//! strongest tokens' probabilities with Fisher's method (Robinson, as SpamBayes does), and
//! comes out as one symbol of a SpamAssassin-like band, `BAYES_00` (surely ham, −1.9) to
//! `BAYES_999` (surely spam, +5.0), which adds to the other policies' scores.
//!
//! It learns through the `learner` export: `sluice learn`, `POST /api/learn`, a release from
//! quarantine, autolearning. Learning a message twice counts once; learning it as the other
//! class moves it; `forget` takes it out.
//!
//! Configuration (all optional):
//! - `min_spam`, `min_ham`: messages of each class learned before it scores at all (200, 200).
//! - `max_tokens`: distinct tokens read of one message, headers first (1000; at most 4096).
//! - `max_body_bytes`: how much of each body is read (100000).
//! - `token_ttl_days`: a token not learned again for this long expires (180; 0: never).
//! - `rare_token_ttl_days`: a token seen in one message only expires after this (30; 0:
//!   never), so the model stays within the tenant's key quota.
//! - `score.BAYES_xx`: the score of a band (e.g. `score.BAYES_999 = 4.0`).
//! - `explain`: name the N most hammy and N most spammy tokens in the symbol's detail (0).
//! - `unknown_word_strength` (0.2), `minimum_prob_strength` (0.1), `max_discriminators` (150):
//!   the classifier's knobs (see [`model::Classifier`]); `bigrams` (false): pairs of adjacent
//!   body words as tokens too.

pub mod model;
pub mod tokens;

use std::collections::BTreeMap;

use sluice_policy::{Class, Config, Context, Decision, Learned, Learner, Message, Policy, Stage, kv, log};
use sluice_policy_learning::export_learning_policy;

use model::{BANDS, Classifier, TOTALS_KEY, delta, message_key, parse_counter, token_key, unpack};

/// The policy.
pub struct Bayes {
    min_spam: u64,
    min_ham: u64,
    max_tokens: usize,
    max_body_bytes: u32,
    token_ttl: Option<u32>,
    rare_token_ttl: Option<u32>,
    scores: BTreeMap<&'static str, f64>,
    classifier: Classifier,
    bigrams: bool,
    explain: usize,
}

/// A lifetime given in days (fractions allowed), in seconds; 0 is none.
fn ttl_days(config: &Config, key: &str, default: f64) -> Result<Option<u32>, String> {
    let days: f64 = config.parse_or(key, default)?;
    if !(0.0..=10_000.0).contains(&days) {
        return Err(format!("`{key}`: 0 to 10000 days"));
    }
    Ok((days > 0.0).then(|| ((days * 86_400.0).round() as u32).max(1)))
}

impl Policy for Bayes {
    const STAGES: &'static [Stage] = &[Stage::Data];

    fn init(config: &Config) -> Result<Self, String> {
        let mut scores: BTreeMap<&'static str, f64> =
            BANDS.iter().map(|(name, _, score)| (*name, *score)).collect();
        for (key, value) in config.pairs() {
            if let Some(name) = key.strip_prefix("score.") {
                let Some((known, _, _)) = BANDS.iter().find(|(band, _, _)| *band == name) else {
                    return Err(format!(
                        "`{key}`: unknown symbol {name} (the bands are BAYES_00 … BAYES_999)"
                    ));
                };
                let score: f64 =
                    value.trim().parse().map_err(|_| format!("`{key}`: not a number: {value:?}"))?;
                scores.insert(known, score);
            }
        }
        let max_tokens: usize = config.parse_or("max_tokens", 1000)?;
        if !(1..=kv::MAX_BATCH_KEYS).contains(&max_tokens) {
            return Err(format!("`max_tokens`: 1 to {}", kv::MAX_BATCH_KEYS));
        }
        Ok(Self {
            min_spam: config.parse_or("min_spam", 200)?,
            min_ham: config.parse_or("min_ham", 200)?,
            max_tokens,
            max_body_bytes: config.parse_or("max_body_bytes", 100_000)?,
            token_ttl: ttl_days(config, "token_ttl_days", 180.0)?,
            rare_token_ttl: ttl_days(config, "rare_token_ttl_days", 30.0)?,
            scores,
            classifier: Classifier {
                unknown_word_strength: config.parse_or("unknown_word_strength", 0.2)?,
                minimum_prob_strength: config.parse_or("minimum_prob_strength", 0.1)?,
                max_discriminators: config.parse_or("max_discriminators", 150)?,
                ..Classifier::default()
            },
            bigrams: config.bool_or("bigrams", false)?,
            explain: config.parse_or("explain", 0)?,
        })
    }

    fn on_data(&mut self, _ctx: &Context, message: &Message) -> Decision {
        match self.classify(message) {
            Ok(Some((probability, used, clues))) => {
                let (name, _) = model::band(probability);
                let score = self.scores.get(name).copied().unwrap_or(0.0);
                let mut detail = format!("p={probability:.4} from {used} tokens");
                if !clues.is_empty() {
                    detail.push_str(&format!(": {}", clues.join(", ")));
                }
                Decision::no_opinion().symbol(name, score, Some(&detail))
            }
            Ok(None) => Decision::no_opinion(),
            Err(e) => {
                log::warn("bayes: cannot read the model", &[("error", &e.to_string())]);
                Decision::no_opinion()
            }
        }
    }
}

/// Which class a stored message record says.
fn recorded(value: Option<Vec<u8>>) -> Option<Class> {
    match value.as_deref() {
        Some(b"s") => Some(Class::Spam),
        Some(b"h") => Some(Class::Ham),
        _ => None,
    }
}

fn unit(class: Class) -> (i64, i64) {
    match class {
        Class::Spam => (1, 0),
        Class::Ham => (0, 1),
    }
}

impl Bayes {
    fn input(&self, message: &Message) -> tokens::Input {
        tokens::Input {
            headers: message.headers().into_iter().map(|h| (h.name, h.value)).collect(),
            text: message.text_body(self.max_body_bytes),
            html: message.html_body(self.max_body_bytes),
            attachments: message.attachments().into_iter().map(|a| (a.name, a.content_type)).collect(),
            raw_size: message.raw_size(),
        }
    }

    /// The numbers of spam and ham messages learned.
    fn totals() -> Result<(u64, u64), kv::KvError> {
        Ok(kv::get(TOTALS_KEY)?.as_deref().and_then(parse_counter).map(unpack).unwrap_or((0, 0)))
    }

    /// The spam probability and the tokens it rests on; None before the model has learned
    /// enough of both classes.
    fn classify(&self, message: &Message) -> Result<Option<(f64, usize, Vec<String>)>, kv::KvError> {
        let (nspam, nham) = Self::totals()?;
        if nspam < self.min_spam || nham < self.min_ham {
            return Ok(None);
        }
        let tokens = tokens::tokenize_with(&self.input(message), self.max_tokens, self.bigrams);
        let keys: Vec<String> = tokens.iter().map(|t| token_key(t)).collect();
        let counts = kv::get_many(&keys)?;
        let mut probabilities = Vec::with_capacity(tokens.len());
        let mut clues = Vec::new();
        for (token, value) in tokens.iter().zip(counts) {
            let Some(packed) = value.as_deref().and_then(parse_counter) else { continue };
            let (spam, ham) = unpack(packed);
            let p = self.classifier.token_probability(spam, ham, nspam, nham);
            probabilities.push(p);
            if self.explain > 0 {
                clues.push((p, token));
            }
        }
        let score = self.classifier.combine(probabilities);
        // The strongest clues each way, for an operator asking why (`explain = N`).
        clues.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = self.explain.min(clues.len() / 2);
        let shown: Vec<String> =
            clues[..n].iter().chain(&clues[clues.len() - n..]).map(|(p, t)| format!("{t}={p:.3}")).collect();
        Ok(Some((score.probability, score.tokens_used, shown)))
    }

    /// Which message this is, the same wherever it is learned from (a file, the queue, the
    /// quarantine: the relay's own header fields do not change it).
    fn fingerprint(&self, message: &Message, input: &tokens::Input) -> u64 {
        let subject = message.subject().unwrap_or_default();
        let identity = match message.message_id() {
            Some(id) if !id.trim().is_empty() => format!("id:{}\nsubject:{subject}", id.trim()),
            _ => {
                let mut body = String::new();
                for part in [&input.text, &input.html].into_iter().flatten() {
                    body.extend(part.chars().take(4096));
                }
                format!("date:{:?}\nsubject:{subject}\nbody:{body}", message.date())
            }
        };
        model::hash(identity.as_bytes())
    }

    /// Move `tokens` by `add` of one class and `remove` of the other (a relearn, or a forget
    /// when `add` is zero). Counters a removal would take below zero are left alone (they
    /// expired since); new counters get the rare-token lifetime, the others the full one.
    fn apply(&self, tokens: &[String], add: (i64, i64), remove: (i64, i64)) -> Result<usize, String> {
        let keys: Vec<String> = tokens.iter().map(|t| token_key(t)).collect();
        let current = kv::get_many(&keys).map_err(|e| e.to_string())?;
        let mut known = Vec::new();
        let mut new = Vec::new();
        for (key, value) in keys.into_iter().zip(current) {
            let counts = value.as_deref().and_then(parse_counter).map(unpack);
            match counts {
                Some((spam, ham)) => {
                    let can_remove = (remove.0 == 0 || spam > 0) && (remove.1 == 0 || ham > 0);
                    let change = delta(add.0, add.1) - if can_remove { delta(remove.0, remove.1) } else { 0 };
                    if change != 0 {
                        known.push((key, change));
                    }
                }
                None if add != (0, 0) => new.push((key, delta(add.0, add.1))),
                None => {}
            }
        }
        let mut refused = 0;
        for (batch, ttl) in [(known, self.token_ttl), (new, self.rare_token_ttl)] {
            if batch.is_empty() {
                continue;
            }
            let answers = kv::incr_many(&batch, ttl).map_err(|e| e.to_string())?;
            refused += answers.iter().filter(|a| a.is_none()).count();
        }
        if refused > 0 {
            log::warn(
                "bayes: the tenant's key quota is full; new tokens were not stored",
                &[("tokens", &refused.to_string())],
            );
        }
        Ok(refused)
    }

    fn record(&self, fingerprint: u64, class: Option<Class>) -> Result<(), String> {
        let key = message_key(fingerprint);
        match class {
            Some(class) => {
                let value: &[u8] = if class == Class::Spam { b"s" } else { b"h" };
                kv::set(&key, value, self.token_ttl).map_err(|e| e.to_string())
            }
            None => kv::delete(&key).map_err(|e| e.to_string()),
        }
    }
}

impl Learner for Bayes {
    fn learn(&mut self, _ctx: &Context, message: &Message<'_>, class: Class) -> Result<Learned, String> {
        let input = self.input(message);
        let tokens = tokens::tokenize_with(&input, self.max_tokens, self.bigrams);
        if tokens.is_empty() {
            return Ok(Learned::NothingToLearn);
        }
        let fingerprint = self.fingerprint(message, &input);
        let before = recorded(kv::get(&message_key(fingerprint)).map_err(|e| e.to_string())?);
        let (add, remove, answer) = match before {
            Some(was) if was == class => return Ok(Learned::AlreadyLearned),
            Some(was) => (unit(class), unit(was), Learned::Relearned),
            None => (unit(class), (0, 0), Learned::Learned),
        };
        self.apply(&tokens, add, remove)?;
        let totals = delta(add.0 - remove.0, add.1 - remove.1);
        kv::incr(TOTALS_KEY, totals, None).map_err(|e| e.to_string())?;
        self.record(fingerprint, Some(class))?;
        Ok(answer)
    }

    fn forget(&mut self, _ctx: &Context, message: &Message<'_>) -> Result<Learned, String> {
        let input = self.input(message);
        let fingerprint = self.fingerprint(message, &input);
        let Some(was) = recorded(kv::get(&message_key(fingerprint)).map_err(|e| e.to_string())?) else {
            return Ok(Learned::NotLearned);
        };
        let tokens = tokens::tokenize_with(&input, self.max_tokens, self.bigrams);
        self.apply(&tokens, (0, 0), unit(was))?;
        let (spam, ham) = unit(was);
        kv::incr(TOTALS_KEY, -delta(spam, ham), None).map_err(|e| e.to_string())?;
        self.record(fingerprint, None)?;
        Ok(Learned::Forgotten)
    }
}

export_learning_policy!(Bayes);
