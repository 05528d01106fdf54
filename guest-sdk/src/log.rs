//! Structured logging into the relay's log. The host tags every line with the policy and the
//! tenant, and bounds how much one hook call may log.

use crate::__bindings::sluice::policy::host::{self, LogLevel};

fn emit(level: LogLevel, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    host::log(level, message, &fields);
}

/// Log at debug level with key/value fields.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    emit(LogLevel::Debug, message, fields);
}

/// Log at info level with key/value fields.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    emit(LogLevel::Info, message, fields);
}

/// Log at warn level with key/value fields.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    emit(LogLevel::Warn, message, fields);
}

/// Log at error level with key/value fields.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    emit(LogLevel::Error, message, fields);
}
