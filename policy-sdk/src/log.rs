//! Structured logging through the host: lines are tagged with the module's name and rate-limited.
//! Natively (in unit tests) they go to stderr.

#[cfg(target_arch = "wasm32")]
use crate::bindings::mcpgw::policy::{host, types::Level};

fn emit(level: u8, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let level = match level {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        host::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[policy level={level}] {message} {fields:?}");
}

/// Debug-level line.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    emit(1, message, fields)
}
/// Info-level line.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    emit(2, message, fields)
}
/// Warning.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    emit(3, message, fields)
}
/// Error.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    emit(4, message, fields)
}
