//! `config-get`, `config-all`: the policy's configuration, as its `[[tenant.policy]]` entry
//! gives it (the same pairs `init` got).

use crate::policy::instance::HostState;

/// The value of `key` (the last one when given twice).
pub(super) fn get(state: &HostState, key: &str) -> Option<String> {
    state.io.config.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// Every pair, in order.
pub(super) fn all(state: &HostState) -> Vec<(String, String)> {
    state.io.config.clone()
}
