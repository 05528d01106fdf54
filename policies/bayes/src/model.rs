//! The model: per-token spam and ham counts, and Robinson's combining of the token
//! probabilities with Fisher's chi-squared method, as SpamBayes does it.
//!
//! In the store each token is one counter under `t` + 16 hex digits of a 64-bit hash of the
//! token: spam count × 2³² + ham count, so that one atomic `kv-incr` moves either count and
//! relays sharing a store never lose an update. `n` holds the numbers of messages learned,
//! packed the same way; `m` + a hash of a message records which class it was learned as.

/// Counts packed into one counter: spam × 2³² + ham.
pub const SPAM_UNIT: i64 = 1 << 32;

/// Spam and ham counts of a packed counter (negative parts, from a race, read as 0).
pub fn unpack(value: i64) -> (u64, u64) {
    let spam = value >> 32;
    let ham = value & 0xffff_ffff;
    (spam.max(0) as u64, ham as u64)
}

/// The delta that adds `spam` and `ham` to a packed counter.
pub fn delta(spam: i64, ham: i64) -> i64 {
    spam * SPAM_UNIT + ham
}

/// A packed counter stored as decimal text (how the host keeps counters).
pub fn parse_counter(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// FNV-1a, 64 bits: stable across builds and platforms, which the stored keys rely on.
pub fn hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The store key of a token.
pub fn token_key(token: &str) -> String {
    format!("t{:016x}", hash(token.as_bytes()))
}

/// The store key of the numbers of messages learned.
pub const TOTALS_KEY: &str = "n";

/// The store key recording how a message was learned.
pub fn message_key(fingerprint: u64) -> String {
    format!("m{fingerprint:016x}")
}

/// How token probabilities are made and combined: SpamBayes' defaults, but for Robinson's s,
/// 0.2 rather than 0.45 (on `../shared/corpus` it flags 2 points more spam at the same ham:
/// with a model of a few thousand messages, rare tokens deserve more trust).
#[derive(Debug, Clone, Copy)]
pub struct Classifier {
    /// Robinson's s: how much weight the prior has against a token's own evidence.
    pub unknown_word_strength: f64,
    /// Robinson's x: the probability of a token never seen.
    pub unknown_word_prob: f64,
    /// Tokens whose probability is within this of 0.5 are not used.
    pub minimum_prob_strength: f64,
    /// At most this many tokens, the strongest, are combined.
    pub max_discriminators: usize,
}

impl Default for Classifier {
    fn default() -> Self {
        Self {
            unknown_word_strength: 0.2,
            unknown_word_prob: 0.5,
            minimum_prob_strength: 0.1,
            max_discriminators: 150,
        }
    }
}

/// What the classifier made of a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Spam probability, 0 to 1.
    pub probability: f64,
    /// Tokens that took part.
    pub tokens_used: usize,
}

impl Classifier {
    /// Robinson's f(w) of a token seen in `spam` spam and `ham` ham messages, out of
    /// `nspam` and `nham` learned.
    pub fn token_probability(&self, spam: u64, ham: u64, nspam: u64, nham: u64) -> f64 {
        let spam_ratio = spam as f64 / nspam.max(1) as f64;
        let ham_ratio = ham as f64 / nham.max(1) as f64;
        let p = if spam_ratio + ham_ratio > 0.0 { spam_ratio / (spam_ratio + ham_ratio) } else { 0.5 };
        let n = (spam + ham) as f64;
        let (s, x) = (self.unknown_word_strength, self.unknown_word_prob);
        (s * x + n * p) / (s + n)
    }

    /// Combine the probabilities of a message's known tokens (Fisher's method on both tails,
    /// the "chi-squared" combining of SpamBayes): near 1 spam, near 0 ham, around 0.5 unsure.
    pub fn combine(&self, probabilities: impl IntoIterator<Item = f64>) -> Score {
        let mut clues: Vec<f64> = probabilities
            .into_iter()
            .filter(|p| p.is_finite() && (p - 0.5).abs() >= self.minimum_prob_strength)
            .collect();
        clues.sort_by(|a, b| (b - 0.5).abs().total_cmp(&(a - 0.5).abs()));
        clues.truncate(self.max_discriminators);
        if clues.is_empty() {
            return Score { probability: 0.5, tokens_used: 0 };
        }
        let (mut ln_spam, mut ln_ham) = (0.0f64, 0.0f64);
        for p in &clues {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            ln_ham += (1.0 - p).ln();
            ln_spam += p.ln();
        }
        let n = clues.len();
        let s = 1.0 - chi2q(-2.0 * ln_ham, 2 * n);
        let h = 1.0 - chi2q(-2.0 * ln_spam, 2 * n);
        Score { probability: ((s - h + 1.0) / 2.0).clamp(0.0, 1.0), tokens_used: n }
    }
}

/// The probability that a chi-squared variable with `dof` (even) degrees of freedom is at
/// least `x2`.
pub fn chi2q(x2: f64, dof: usize) -> f64 {
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..dof / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// The SpamAssassin-style band of a probability: its symbol name and default score.
pub const BANDS: &[(&str, f64, f64)] = &[
    // (name, lower bound of the probability, default score)
    ("BAYES_00", 0.0, -4.0),
    ("BAYES_05", 0.01, -0.5),
    ("BAYES_20", 0.05, -0.001),
    ("BAYES_40", 0.20, -0.001),
    ("BAYES_50", 0.40, 0.8),
    ("BAYES_60", 0.60, 1.5),
    ("BAYES_80", 0.80, 2.0),
    ("BAYES_95", 0.95, 3.0),
    ("BAYES_99", 0.99, 5.0),
    ("BAYES_999", 0.999, 5.5),
];

/// The band a probability falls in.
pub fn band(probability: f64) -> (&'static str, f64) {
    let mut found = (BANDS[0].0, BANDS[0].2);
    for (name, lower, score) in BANDS {
        if probability >= *lower {
            found = (name, *score);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing() {
        let v = delta(3, 5) + delta(1, 0) - delta(0, 2);
        assert_eq!(unpack(v), (4, 3));
        assert_eq!(unpack(delta(0, 7)), (0, 7));
        assert_eq!(parse_counter(b"17179869189"), Some(delta(4, 5)));
    }

    #[test]
    fn combining() {
        let c = Classifier::default();
        assert!(c.combine(vec![0.99; 20]).probability > 0.99);
        assert!(c.combine(vec![0.01; 20]).probability < 0.01);
        let mixed = c.combine(vec![0.99, 0.01, 0.99, 0.01]).probability;
        assert!((mixed - 0.5).abs() < 0.1, "{mixed}");
        assert_eq!(c.combine(vec![0.5, 0.55]).tokens_used, 0);
        assert!(c.token_probability(10, 0, 100, 100) > 0.9);
        assert!(c.token_probability(0, 10, 100, 100) < 0.1);
        assert!((c.token_probability(0, 0, 100, 100) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn bands() {
        assert_eq!(band(0.0).0, "BAYES_00");
        assert_eq!(band(0.5).0, "BAYES_50");
        assert_eq!(band(0.9995).0, "BAYES_999");
        assert_eq!(band(1.0).0, "BAYES_999");
    }

    #[test]
    fn chi2q_is_a_tail() {
        assert!((chi2q(0.0, 10) - 1.0).abs() < 1e-12);
        assert!(chi2q(1000.0, 10) < 1e-100);
    }
}
