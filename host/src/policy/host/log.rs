//! `log`: a policy's structured log lines, tagged with the policy and its tenant, bounded per
//! call.

use crate::policy::bindings::host::LogLevel;
use crate::policy::instance::HostState;
use crate::policy::message::truncate_utf8;

/// Log bytes one hook call may write; beyond it lines are dropped (and that is logged once).
pub const LOG_BYTES_PER_CALL: usize = 16 * 1024;

/// Write one line to the relay's log, within the call's budget.
pub(super) fn write(state: &mut HostState, level: LogLevel, message: &str, fields: &[(String, String)]) {
    let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if state.budget.log_bytes + size > LOG_BYTES_PER_CALL {
        state.budget.log_truncated = true;
        return;
    }
    state.budget.log_bytes += size;
    let message = truncate_utf8(message, 2048);
    let fields = fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(" ");
    let (policy, tenant) = (&state.io.policy, &state.io.tenant);
    match level {
        LogLevel::Trace => tracing::trace!(policy = %policy, tenant = %tenant, fields = %fields, "{message}"),
        LogLevel::Debug => tracing::debug!(policy = %policy, tenant = %tenant, fields = %fields, "{message}"),
        LogLevel::Info => tracing::info!(policy = %policy, tenant = %tenant, fields = %fields, "{message}"),
        LogLevel::Warn => tracing::warn!(policy = %policy, tenant = %tenant, fields = %fields, "{message}"),
        LogLevel::Error => tracing::error!(policy = %policy, tenant = %tenant, fields = %fields, "{message}"),
    }
}
