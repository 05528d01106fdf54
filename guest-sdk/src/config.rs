//! The policy's configuration: the key/value pairs the relay config (or `sluice policy test
//! --policy-config`) gives this policy, handed to [`crate::Policy::init`].

use std::str::FromStr;

/// Key/value configuration of one policy. Keys are unique; later duplicates win.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// Build a configuration by hand, e.g. in a native unit test of a policy.
    pub fn from_entries<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { pairs: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The raw value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as `T`, or `default` when unset. A value that does not parse
    /// is an error naming the key, suitable for returning from `init`.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => {
                raw.trim().parse().map_err(|e| format!("config key `{key}`: cannot parse {raw:?}: {e}"))
            }
        }
    }

    /// The value of `key` as a boolean (`true/false`, `yes/no`, `on/off`, `1/0`), or
    /// `default` when unset.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(format!("config key `{key}`: expected a boolean, got {v:?}")),
            },
        }
    }

    /// The value of `key` split on commas and white space, empty items dropped; empty when unset.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every key and value, in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}
